"""Streamed dubbing joins its chunks without a seam: the crop smoothing sees across chunk ends."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segtalker_core import pipeline
from segtalker_core.face.align import affine_to_similarity
from segtalker_core.video_io import VideoReader

VIDEO = Path(__file__).resolve().parents[1] / "examples" / "video.mp4"
CROP = 128
CHUNK = 8


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    with VideoReader(str(VIDEO), chunk_size=64) as reader:
        return np.concatenate(list(reader))


def _streamed_transforms(frames: np.ndarray, chunk: int) -> tuple[np.ndarray, list[int]]:
    """(transforms [N, 2, 3] of the streamed tracks, the frame index where each chunk starts)."""
    chunks = (frames[i : i + chunk] for i in range(0, len(frames), chunk))
    tracks = list(pipeline.iter_face_tracks(chunks, crop_size=CROP))
    assert sum(len(t) for t in tracks) == len(frames)
    return np.concatenate([t.transforms for t in tracks]), list(range(chunk, len(frames), chunk))


def _steps(transforms: np.ndarray) -> np.ndarray:
    """Per frame pair, the largest move of a crop corner (frame px) from one frame to the next."""
    corners = np.array([[0, 0, 1], [CROP, 0, 1], [0, CROP, 1], [CROP, CROP, 1]], float)
    inverse = np.linalg.inv(np.concatenate([transforms, np.tile([[[0, 0, 1]]], (len(transforms), 1, 1))], axis=1))
    placed = np.einsum("nij,kj->nki", inverse[:, :2], corners)
    return np.linalg.norm(np.diff(placed, axis=0), axis=-1).max(axis=-1)


def test_chunk_boundaries_move_the_crop_no_more_than_inside_the_chunks(frames):
    transforms, starts = _streamed_transforms(frames, CHUNK)
    steps = _steps(transforms)  # steps[i]: frame i -> i + 1
    at_boundary = steps[[s - 1 for s in starts]]
    inside = np.delete(steps, [s - 1 for s in starts])
    assert at_boundary.max() <= inside.max(), (at_boundary.max(), inside.max())


def test_streamed_crops_equal_the_whole_clip_parse(frames):
    whole = pipeline.parse_faces(frames, crop_size=CROP, video=True)
    transforms, _ = _streamed_transforms(frames, CHUNK)
    np.testing.assert_allclose(
        affine_to_similarity(transforms, CROP), affine_to_similarity(whole.transforms, CROP), atol=1e-6,
    )


def test_a_stream_shorter_than_the_smoothing_window_is_complete(frames):
    transforms, _ = _streamed_transforms(frames[:5], 2)
    assert len(transforms) == 5
