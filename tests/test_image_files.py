"""Image files: EXIF orientation, truncated and fake images, formats by extension, exact label
PNGs, atomic writes with the umask's mode."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image, ImageFile

from segtalker_core.image_files import (IMAGE_FORMATS, read_image, write_image, write_label_png,
                                        _jpeg_reaches_end, _png_reaches_end)

RNG = np.random.default_rng(0)


def _photo(height: int = 48, width: int = 32) -> np.ndarray:
    """A smooth, asymmetric picture (JPEG keeps it close), taller than wide."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)],
                    axis=-1).astype(np.uint8)


# What a viewer shows for each EXIF orientation, from the stored pixels.
SHOWN = {
    3: lambda a: np.rot90(a, 2),  # upside down
    6: lambda a: np.rot90(a, -1),  # stored turned left: turn 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),  # stored turned right: turn 90 degrees anticlockwise
}


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_exif_orientation_is_applied(tmp_path, orientation):
    stored = _photo()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone{orientation}.jpg"
    Image.fromarray(stored).save(path, "JPEG", quality=98, exif=exif)
    pixels = read_image(path, "--image")
    upright = SHOWN[orientation](stored)
    assert pixels.shape == upright.shape and pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - upright).mean() < 3  # JPEG noise, not a turned picture


def test_png_pixels_are_exact_and_grey_16_bit_and_alpha_follow_to_rgb_uint8(tmp_path):
    from segtalker_core.face.image import to_rgb_uint8

    rgb = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)

    grey16 = RNG.integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey16.png"), to_rgb_uint8(grey16))

    rgba = RNG.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), to_rgb_uint8(rgba))

    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))


def test_16_bit_colour_png_reads_within_one_level(tmp_path):
    import cv2

    from segtalker_core.face.image import to_rgb_uint8

    rgb16 = RNG.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])  # cv2 writes BGR
    got = read_image(tmp_path / "rgb16.png").astype(int)
    assert np.abs(got - to_rgb_uint8(rgb16)).max() <= 1


def _encoded(fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
@pytest.mark.parametrize("pillow_check", ["on", "off process-wide"])
def test_truncated_image_is_an_error_naming_the_file(tmp_path, monkeypatch, fmt, suffix, pillow_check):
    # ComfyUI switches Pillow's own check off for a moment (node_helpers.pillow); the answer must
    # not depend on it.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pillow_check != "on")
    data = _encoded(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"--image '.*cut\.(jpg|png)' is truncated or corrupt"):
        read_image(path, "--image")
    assert ImageFile.LOAD_TRUNCATED_IMAGES == (pillow_check != "on")  # left as it was
    path.write_bytes(data)
    assert read_image(path, "--image").shape == (64, 64, 3)


def test_end_marker_checks():
    for data, reaches_end in ((_encoded("PNG"), _png_reaches_end), (_encoded("JPEG"), _jpeg_reaches_end)):
        assert reaches_end(data)
        assert not reaches_end(data[: len(data) // 2])
        assert not reaches_end(b"not an image")
    jpeg = _encoded("JPEG")
    assert _jpeg_reaches_end(jpeg + b"\xff\xda trailer some phones append")


@pytest.mark.parametrize("setup,error,words", [
    (lambda p: None, FileNotFoundError, "does not exist"),
    (lambda p: p.mkdir(), ValueError, "is a folder"),
    (lambda p: p.write_text("not an image"), ValueError, "is not an image that can be read"),
    (lambda p: p.write_bytes(b""), ValueError, "is not an image that can be read"),
])
def test_not_an_image_is_a_clear_error(tmp_path, setup, error, words):
    path = tmp_path / "face.png"
    setup(path)
    with pytest.raises(error, match=rf"--swap lips reference '.*face\.png' {words}"):
        read_image(path, "--swap lips reference")


@pytest.mark.parametrize("suffix", sorted(IMAGE_FORMATS))
def test_write_image_picks_the_format_from_the_extension(tmp_path, suffix):
    rgb = _photo()
    path = write_image(tmp_path / f"out{suffix}", rgb)
    with Image.open(path) as image:
        assert image.format == IMAGE_FORMATS[suffix] and image.size == (32, 48)
    assert np.abs(read_image(path).astype(int) - rgb).mean() < 3
    assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]  # no temporary file left


@pytest.mark.parametrize("name", ["out.xyz", "out", "out.gif"])
def test_unknown_extension_is_refused_before_writing(tmp_path, name):
    with pytest.raises(ValueError, match=r"-o '.*' has .*not an image type.*\.png"):
        write_image(tmp_path / name, _photo(), what="-o")
    assert list(tmp_path.iterdir()) == []


def test_write_never_replaces_an_input_and_keeps_an_old_file_on_failure(tmp_path):
    source = tmp_path / "in.png"
    write_image(source, _photo())
    before = source.read_bytes()
    with pytest.raises(ValueError, match="same file as the --image"):
        write_image(source, _photo(), inputs={"--image": source}, what="-o")
    with pytest.raises(ValueError):  # not an image: refused while encoding, the old file stays
        write_image(source, np.zeros((4, 4, 7)), what="-o")
    assert source.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["in.png"]


def test_write_to_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_image(tmp_path / "missing" / "out.png", _photo())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_label_png(tmp_path / "missing" / "labels.png", np.zeros((4, 4), np.uint8))


def test_label_png_round_trip_is_exact(tmp_path):
    labels = RNG.integers(0, 19, (33, 17)).astype(np.int64)
    path = write_label_png(tmp_path / "labels.png", labels)
    with Image.open(path) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), labels)


@pytest.mark.parametrize("name", ["labels.jpg", "labels.webp", "labels"])
def test_label_map_only_as_png(tmp_path, name):
    with pytest.raises(ValueError, match=r"--labels .* only as PNG.*lossless"):
        write_label_png(tmp_path / name, np.zeros((4, 4), np.uint8), what="--labels")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("labels,error", [
    (np.full((4, 4), 19), ValueError),
    (np.full((4, 4), -1), ValueError),
    (np.zeros((4, 4, 3), np.uint8), ValueError),
    (np.zeros((4, 4), np.float32), TypeError),
])
def test_label_values_outside_the_classes_are_refused(tmp_path, labels, error):
    with pytest.raises(error):
        write_label_png(tmp_path / "labels.png", labels)
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        image = write_image(tmp_path / "out.png", _photo())
        labels = write_label_png(tmp_path / "labels.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert image.stat().st_mode & 0o777 == 0o644
    assert labels.stat().st_mode & 0o777 == 0o644
