"""What happens to an uploaded image's bytes, all of it CPU-bound and run in an
executor (views.py): decided from the bytes alone (Pillow decodes them as JPEG,
PNG or WebP or the upload is refused), checked for size before any pixel is
decoded, then re-encoded from pixels only (orientation applied, colour
converted to sRGB, every metadata block dropped) as the stored image, bounded
to 2048 px, and its thumbnail, bounded to 300 px. No byte of the upload is
ever stored or served as it came."""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageFile, ImageOps

MAX_PIXELS = 40_000_000
MAX_ASPECT = 20  # longer side at most 20x the shorter: a panorama, not a 1 x 100,000 strip
FULL_PX = 2048
THUMB_PX = 300
FORMATS = ("JPEG", "PNG", "WEBP")

# A backstop behind the explicit check in `_check_size`: Pillow refuses to
# open anything past twice this and warns past it (made an error below).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Past it Pillow only warns; here that is a refusal. A process-wide filter, not
# warnings.catch_warnings per call, which is not thread-safe.
warnings.simplefilter("error", Image.DecompressionBombWarning)
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is refused, never padded grey

# Markup or script that a browser or interpreter would act on if it ever met
# these bytes as a document: a polyglot is refused even when the image part
# decodes (the stored file is re-encoded anyway; this keeps the upload honest).
_ACTIVE_CONTENT = re.compile(rb"(?i)<(?:script|html|svg|body|iframe|\?php|!doctype)[\s>/]")
_PNG_END = b"IEND\xaeB`\x82"

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


class Rejected(Exception):
    """An upload refused: the status (415, 422) and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Encoded:
    full: bytes
    thumbnail: bytes
    extension: str  # "jpg" or "webp": opaque photos as JPEG, transparency kept as WebP
    content_type: str


NOT_AN_IMAGE = "the body is not a JPEG, PNG or WebP image"
TOO_MANY_PIXELS = f"image too large: over {MAX_PIXELS // 1_000_000} megapixels"


def process(data: bytes) -> Encoded:
    """The stored image and thumbnail for an upload, or Rejected."""
    if _ACTIVE_CONTENT.search(data):
        raise Rejected(415, f"{NOT_AN_IMAGE} (it carries markup or script)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Rejected(422, TOO_MANY_PIXELS) from None
    except Exception:  # any failure to recognise it: not one of ours
        raise Rejected(415, NOT_AN_IMAGE) from None
    with image:
        _check_container(image.format, data)
        _check_size(*image.size)
        # Shrunk first, then turned and colour-converted: those two then work
        # on at most 4 megapixels instead of up to 40.
        pixels = _upright(_bounded(_decode(image), FULL_PX))
        return _encode(_to_srgb(pixels, image.info.get("icc_profile")))


def _decode(image: ImageFile.ImageFile) -> Image.Image:
    if image.format == "JPEG":
        _draft(image)
    try:
        image.seek(0)  # an animated PNG or WebP: its first frame
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Rejected(422, TOO_MANY_PIXELS) from None
    except Exception:  # truncated or corrupt pixel data
        raise Rejected(415, f"{NOT_AN_IMAGE} (it does not decode)") from None
    return image


def _draft(image: ImageFile.ImageFile) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale, the smallest that keeps the
    long side within 2% of FULL_PX: a 12-megapixel phone photo (4032 px)
    decodes straight to 2016 px and needs no resize, about a quarter of the
    time. Never below that (Pillow's own choice for a 4096 px square, given
    a box, would be 1024 px)."""
    width, height = image.size
    for scale in (8, 4, 2):
        if max(width, height) / scale >= FULL_PX * 0.98:
            image.draft(None, (width // scale, height // scale))
            return


def _upright(image: Image.Image) -> Image.Image:
    """EXIF orientation applied; an orientation tag Pillow cannot read is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: the pixels as stored
        return image


def _check_container(fmt: str | None, data: bytes) -> None:
    """PNG ends at IEND and a WebP at its RIFF length: bytes past that are
    another file riding along (a polyglot) or a sign of a broken one."""
    if fmt == "PNG" and not data.endswith(_PNG_END):
        raise Rejected(415, f"{NOT_AN_IMAGE} (data after or missing the PNG end)")
    if fmt == "WEBP" and struct.unpack_from("<I", data, 4)[0] + 8 != len(data):
        raise Rejected(415, f"{NOT_AN_IMAGE} (WebP length does not match)")


def _check_size(width: int, height: int) -> None:
    """From the header alone: nothing this big is ever decoded into memory."""
    if width < 1 or height < 1:
        raise Rejected(415, f"{NOT_AN_IMAGE} (empty image)")
    if width * height > MAX_PIXELS:
        raise Rejected(422, f"{TOO_MANY_PIXELS} ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise Rejected(422, f"image aspect ratio {width}x{height} is over {MAX_ASPECT}:1")


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Pixels in sRGB, in RGB or RGBA (L for greyscale), no profile attached."""
    alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale PNG
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if alpha else "RGB")
    if image.mode == "LA":
        image = image.convert("RGBA")
    if icc and image.mode in ("RGB", "RGBA", "CMYK", "L"):
        grey = image.mode == "L"
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            image = ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode)
            if grey:
                image = image.convert("L")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken or mismatched profile: the pixels as they are
    if image.mode == "CMYK":
        image = image.convert("RGB")
    if image.mode == "RGB" and alpha:
        image = image.convert("RGBA")
    if image.mode == "RGBA" and image.getextrema()[3] == (255, 255):
        image = image.convert("RGB")  # an alpha channel with nothing transparent
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    return image


def _encode(full: Image.Image) -> Encoded:
    thumb = _bounded(full, THUMB_PX)
    if full.mode == "RGBA":
        return Encoded(_save(full, "WEBP"), _save(thumb, "WEBP"), "webp", "image/webp")
    return Encoded(_save(full, "JPEG"), _save(thumb, "JPEG"), "jpg", "image/jpeg")


def _bounded(image: Image.Image, px: int) -> Image.Image:
    """At most `px` on the long side, the aspect ratio kept (a new image)."""
    width, height = image.size
    if max(width, height) <= px:
        return image
    ratio = px / max(width, height)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    # reducing_gap: a cheap box reduction first, LANCZOS for the last factor of 2.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _save(image: Image.Image, fmt: str) -> bytes:
    # A fresh info dict: no EXIF, XMP, ICC or comment rides into the output.
    image.info = {}
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    else:
        image.save(out, "WEBP", quality=85, method=4)
    return out.getvalue()
