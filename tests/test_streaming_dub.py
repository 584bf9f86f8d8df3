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


def test_dub_frames_equal_the_pre_optimisation_path(frames, monkeypatch):
    """A streamed dub (chunks decoded ahead on a thread, band-window paste masks) gives the very
    frames of the old path: chunks read in the caller's thread and the whole-crop paste mask
    (test_paste_window's reference, the code before the change)."""
    from test_paste_window import reference_paste_mask
    from video_clips import SPEECH

    from segtalker_core.audio.io import load_audio, read_audio_file
    from segtalker_core.video_io import prefetched

    wave, rate = read_audio_file(SPEECH)
    speech = load_audio(wave[..., int(1.0 * rate) : int(1.8 * rate)], sample_rate=rate, name="audio")
    chunks = [frames[i : i + CHUNK] for i in range(0, 24, CHUNK)]
    new = list(pipeline.iter_talk_chunks(prefetched(iter(chunks)), speech, 25.0, crop_size=CROP))
    monkeypatch.setattr("segtalker_core.face.paste.changed_paste_mask", reference_paste_mask)
    old = list(pipeline.iter_talk_chunks(iter(chunks), speech, 25.0, crop_size=CROP))
    assert len(new) == len(old) == 20
    changed = sum(not np.array_equal(f, frames[i]) for i, f in enumerate(old))
    assert changed >= 10  # the mouth moved: the masks compared are real ones
    for i, (a, b) in enumerate(zip(new, old)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")
