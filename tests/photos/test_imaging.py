"""imaging.process on its own (no processes): the colour modes a phone or an
editor produces come out as sRGB RGB, RGBA or greyscale with no metadata,
and the limits hold on the header alone."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms

from services.photos import imaging
from tests.photos import images


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def saved(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def test_cmyk_comes_out_rgb_with_its_colour() -> None:
    out = opened(imaging.process(images.cmyk_jpeg()).full)
    assert out.mode == "RGB"
    r, g, b = out.getpixel((10, 10))
    assert r > 200 and g < 60 and b < 60, (r, g, b)  # magenta + yellow ink: red


def test_embedded_profile_is_applied_then_dropped() -> None:
    lab_source = Image.new("RGB", (50, 50), (200, 100, 50))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    encoded = imaging.process(saved(lab_source, "PNG", icc_profile=srgb))
    out = opened(encoded.full)
    assert "icc_profile" not in out.info
    assert all(abs(a - b) <= 6 for a, b in zip(out.getpixel((5, 5)), (200, 100, 50), strict=True))


def test_a_broken_profile_is_ignored_not_fatal() -> None:
    data = saved(Image.new("RGB", (40, 40), (1, 2, 3)), "PNG", icc_profile=b"not a profile")
    assert "icc_profile" not in opened(imaging.process(data).full).info


@pytest.mark.parametrize(
    "mode,extension,out_mode",
    [("LA", "webp", "RGBA"), ("L", "jpg", "L"), ("I;16", "jpg", "L"), ("1", "jpg", "L")],
)
def test_modes(mode: str, extension: str, out_mode: str) -> None:
    image = Image.new(mode, (64, 48))
    if mode == "LA":
        image.putpixel((0, 0), (255, 0))  # one transparent pixel: the alpha is real
    encoded = imaging.process(saved(image, "PNG"))
    assert encoded.extension == extension
    assert opened(encoded.full).mode == out_mode


def test_palette_transparency_is_kept_as_webp() -> None:
    image = Image.new("P", (30, 30), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    encoded = imaging.process(saved(image, "PNG", transparency=0))
    out = opened(encoded.full)
    assert encoded.content_type == "image/webp" and out.mode == "RGBA"
    r, g, b, a = out.getpixel((5, 5))
    assert out.getpixel((0, 0))[3] == 0 and (r, a) == (255, 255) and g < 8 and b < 8


def test_animated_webp_keeps_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = saved(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    r, _, b = opened(imaging.process(data).full).getpixel((20, 20))
    assert r > 200 and b < 50


def test_bytes_after_a_jpeg_without_markup_are_accepted() -> None:
    # Phones append a second image or a video after the JPEG's end (MPF, motion
    # photos); only markup or script riding along is refused. Nothing of the
    # upload's bytes survives the re-encode either way.
    data = images.phone_jpeg(64, 64) + b"\x00ftypmp42" + bytes(range(256)) * 4
    out = imaging.process(data).full
    assert b"ftypmp42" not in out


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_limits_are_checked_before_decoding() -> None:
    with pytest.raises(imaging.Rejected) as refused:
        imaging.process(images.bomb_png(200_000, 200_000))
    assert refused.value.status == 422
    with pytest.raises(imaging.Rejected) as refused:
        imaging.process(images.bomb_png(6400, 6300))  # 40.3 MP: just over
    assert refused.value.status == 422


def test_sizes_are_bounded() -> None:
    encoded = imaging.process(images.png_rgb(4000, 3000))
    assert opened(encoded.full).size == (2048, 1536)
    assert opened(encoded.thumbnail).size == (300, 225)
    small = imaging.process(images.png_rgb(200, 100))
    assert opened(small.full).size == (200, 100) and opened(small.thumbnail).size == (200, 100)
