"""Image normalisation: every accepted layout and dtype becomes RGB uint8, the rest is refused."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from segtalker_core.face.image import to_rgb_uint8, to_rgb_uint8_batch

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def test_uint8_rgb_passes_through_unchanged():
    out = to_rgb_uint8(RGB)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("layout", ["hw", "hw1"])
def test_grey_is_replicated_to_three_channels(layout):
    grey = RGB[..., 0]
    out = to_rgb_uint8(grey if layout == "hw" else grey[..., None])
    assert out.shape == (5, 7, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_is_composited_on_black():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[0, 0, 3] = 255  # opaque: colour kept
    rgba[0, 1, 3] = 0  # transparent: black, whatever colour it stores
    rgba[1, 0, 3] = 128  # half: half the colour
    out = to_rgb_uint8(rgba)
    assert out.shape == (2, 2, 3)
    assert (out[0, 0] == 200).all()
    assert (out[0, 1] == 0).all()
    assert np.abs(out[1, 0].astype(int) - 100).max() <= 1


def test_grey_alpha_is_composited_too():
    la = np.stack([np.full((3, 3), 255, np.uint8), np.zeros((3, 3), np.uint8)], axis=-1)
    assert (to_rgb_uint8(la) == 0).all()


def test_uint16_maps_full_range_to_full_range():
    img = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = to_rgb_uint8(img)
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_float_unit_range_and_bool():
    img = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert to_rgb_uint8(img)[0, :, 0].tolist() == [0, 128, 255]
    mask = np.array([[False, True]])
    assert to_rgb_uint8(mask)[0, :, 1].tolist() == [0, 255]


def test_float_in_0_255_warns_and_rescales(caplog):
    img = RGB.astype(np.float64)
    with caplog.at_level("WARNING", logger="segtalker"):
        out = to_rgb_uint8(img, "portrait")
    np.testing.assert_array_equal(out, RGB)
    high = f"{RGB.max():.3g}"
    assert f"portrait is a float image with values up to {high}: taken as 0..255" in caplog.text


def test_small_float_overshoot_is_clipped_with_warning(caplog):
    img = np.array([[-0.05, 0.5, 1.05]], dtype=np.float32)
    with caplog.at_level("WARNING", logger="segtalker"):
        out = to_rgb_uint8(img)
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert "image has float values -0.05..1.05 slightly outside 0..1; they are clipped" in caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_refused_naming_the_input(bad):
    img = np.array([[bad, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="portrait contains 1 NaN/inf values"):
        to_rgb_uint8(img, "portrait")
    rgba = np.ones((2, 2, 4), np.float32)
    rgba[0, 0, 3] = bad  # in the alpha channel too
    with pytest.raises(ValueError, match="NaN"):
        to_rgb_uint8_batch(rgba[None], "frames")


def test_normalised_float_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="normalised"):
        to_rgb_uint8(np.full((4, 4, 3), -1.0, dtype=np.float32))


def test_wide_integer_types_accepted_only_in_byte_range():
    np.testing.assert_array_equal(to_rgb_uint8(RGB.astype(np.int64)), RGB)
    with pytest.raises(ValueError, match="0..255"):
        to_rgb_uint8(np.full((2, 2), 300, dtype=np.int32))


@pytest.mark.parametrize(
    "shape, match",
    [((5, 7, 5), "5 channels"), ((3, 5, 7), "7 channels"), ((2, 3, 4, 5, 3), "shape"),
     ((0, 4, 3), "empty"), ((4,), "shape")],
)
def test_bad_shapes_are_refused_naming_the_input(shape, match):
    with pytest.raises(ValueError, match=match) as info:
        to_rgb_uint8(np.zeros(shape, dtype=np.uint8), name="portrait")
    assert "portrait" in str(info.value)


def test_channels_first_gets_a_hint():
    with pytest.raises(ValueError, match="channels-first"):
        to_rgb_uint8(np.zeros((3, 64, 64), dtype=np.uint8))


def test_non_image_dtype_is_refused():
    with pytest.raises(TypeError, match="dtype"):
        to_rgb_uint8(np.zeros((2, 2), dtype=np.complex64))


def test_batch_layouts():
    frames = RNG.integers(0, 256, (2, 5, 7, 4), dtype=np.uint8)
    frames[..., 3] = 255
    out = to_rgb_uint8_batch(frames)
    assert out.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(out, frames[..., :3])
    assert to_rgb_uint8_batch(RGB).shape == (1, 5, 7, 3)  # one image = batch of one
    assert to_rgb_uint8_batch(np.zeros((2, 8, 9), np.uint8)).shape == (2, 8, 9, 3)  # grey batch
    with pytest.raises(ValueError, match="empty batch"):
        to_rgb_uint8_batch(np.zeros((0, 4, 4, 3), np.uint8))


def test_plain_uint8_and_unit_float_input_log_nothing(caplog):
    with warnings.catch_warnings(), caplog.at_level("DEBUG", logger="segtalker"):
        warnings.simplefilter("error")
        to_rgb_uint8(RGB)
        to_rgb_uint8(RGB.astype(np.float32) / 255.0)
    assert not caplog.records
