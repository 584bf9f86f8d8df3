"""A chunked dub reads, tracks and parses the next chunk on a worker thread while it renders this
one: the same frames as in line, the chunks consumed on that thread, the worker gone when the
caller stops early, its errors raised in the caller; the file-to-file dub runs its kernels on one
thread each on a small machine and restores the counts afterwards."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

import video_clips as V
import segtalker_core.run_ahead as run_ahead_module
from segtalker_core import kernel_threads, pipeline, talk_file
from segtalker_core.audio.io import load_audio, read_audio_file

CROP = 128


@pytest.fixture(scope="module")
def speech():
    wave, rate = read_audio_file(V.SPEECH)
    return load_audio(wave[..., int(1.0 * rate) : int(1.6 * rate)], sample_rate=rate, name="audio")


@pytest.fixture(scope="module")
def frames():
    return V.example_frames(16)


def _tracking_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("segtalker-tracking")]


def test_frames_equal_those_tracked_in_line(speech, frames, monkeypatch):
    ahead = list(pipeline.iter_talk_chunks(iter([frames[:8], frames[8:]]), speech, 25.0, crop_size=CROP))

    def in_line(items, depth=1, name=""):
        yield from items

    with monkeypatch.context() as m:
        m.setattr(run_ahead_module, "run_ahead", in_line)
        inline = list(pipeline.iter_talk_chunks(iter([frames[:8], frames[8:]]), speech, 25.0, crop_size=CROP))
    assert len(ahead) == len(inline) == 15  # ceil(0.6 s * 25)
    for a, b in zip(ahead, inline):
        np.testing.assert_array_equal(a, b)


def test_the_chunks_are_read_on_the_tracking_worker(speech, frames):
    readers = []

    def chunks():
        for chunk in (frames[:8], frames[8:]):
            readers.append(threading.current_thread().name)
            yield chunk

    out = list(pipeline.iter_talk_chunks(chunks(), speech, 25.0, crop_size=CROP))
    assert len(out) == 15
    assert readers and all(name.startswith("segtalker-tracking") for name in readers)
    assert not _tracking_threads()


def test_stopping_early_joins_the_worker_before_the_source_is_closed(speech, frames):
    def chunks():
        for start in range(0, 16, 4):
            yield frames[start : start + 4]

    source = chunks()
    dub = pipeline.iter_talk_chunks(source, speech, 25.0, crop_size=CROP)
    assert next(dub).shape == frames.shape[1:]
    dub.close()
    assert not _tracking_threads()
    source.close()  # what talk_file does next: no worker is running the generator any more


def test_an_error_while_reading_is_raised_in_the_caller(speech, frames):
    def chunks():
        yield frames[:8]
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="the disk went away"):
        list(pipeline.iter_talk_chunks(chunks(), speech, 25.0, crop_size=CROP))
    assert not _tracking_threads()


def test_a_streamed_file_dub_limits_kernel_threads_and_restores_them(tmp_path):
    speech = V.speech_clip(tmp_path / "speech.wav", 0.3)
    video = V.write_clip(tmp_path / "video.mp4", V.example_frames(10))
    before = cv2.getNumThreads(), torch.get_num_threads()
    during = []
    result = talk_file.talk_video_file(
        video, str(speech), tmp_path / "dub.mp4",
        progress=lambda done, total: during.append((cv2.getNumThreads(), torch.get_num_threads())))
    assert result.streamed and result.frames == 8  # ceil(0.3 s * 25)
    share = kernel_threads.share_of_cores(3)
    assert during and set(during) == {(share, share)}
    assert (cv2.getNumThreads(), torch.get_num_threads()) == before


def test_kernel_threads_restore_the_counts_after_an_error():
    before = cv2.getNumThreads(), torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with kernel_threads.kernel_threads(1):
            assert (cv2.getNumThreads(), torch.get_num_threads()) == (1, 1)
            raise RuntimeError("inside")
    assert (cv2.getNumThreads(), torch.get_num_threads()) == before


def test_share_of_cores_splits_the_cores_and_refuses_nonsense(monkeypatch):
    monkeypatch.setattr(kernel_threads, "available_cores", lambda: 16)
    assert kernel_threads.share_of_cores(3) == 5
    monkeypatch.setattr(kernel_threads, "available_cores", lambda: 2)
    assert kernel_threads.share_of_cores(3) == 1
    with pytest.raises(ValueError, match="busy_threads must be >= 1"):
        kernel_threads.share_of_cores(0)
    with pytest.raises(ValueError, match="count must be >= 1"):
        with kernel_threads.kernel_threads(0):
            pass
