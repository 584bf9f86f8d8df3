"""Frames are not copied where they need not be: uint8 input is held as it is, and a float batch
is converted block by block (no full-size float temporaries), bit-identical to the whole-array
formula."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core.face import image as I


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("scale", [1.0, 1.04, 255.0])
def test_blockwise_float_conversion_is_bit_identical(monkeypatch, dtype, scale):
    values = (np.random.default_rng(0).random((6, 21, 13, 3)) * scale - 0.005).astype(dtype)
    whole = np.round(I._unit_float(values, "x") * 255.0).astype(np.uint8)
    monkeypatch.setattr(I, "_BLOCK_ELEMENTS", 500)  # several blocks per frame batch
    assert np.array_equal(I.to_rgb_uint8_batch(values, "x"), whole)


def test_blockwise_conversion_still_refuses_nan_in_a_late_block(monkeypatch):
    values = np.zeros((8, 4, 4, 3), np.float32)
    values[7, 3, 3, 2] = np.nan
    monkeypatch.setattr(I, "_BLOCK_ELEMENTS", 48)
    with pytest.raises(ValueError, match="1 NaN/inf"):
        I.to_rgb_uint8_batch(values, "frames")


def test_uint8_frames_are_held_without_a_copy():
    from segtalker_core import pipeline
    from segtalker_core.video_io import read_video
    from video_clips import EXAMPLE_VIDEO

    frames, _ = read_video(EXAMPLE_VIDEO, max_frames=4)
    faces = pipeline.parse_faces(frames, input_name="clip")
    assert np.shares_memory(faces.frames, frames)
