"""The speech's articulation runs on a worker thread while the faces are parsed: same frames as
computed in line, and bad options are still refused before any parsing."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import video_clips as V
from segtalker_core import pipeline
from segtalker_core.audio.io import load_audio, read_audio_file


@pytest.fixture(scope="module")
def speech():
    wave, rate = read_audio_file(V.SPEECH)
    return load_audio(wave[..., int(1.0 * rate) : int(1.6 * rate)], sample_rate=rate, name="audio")


def _in_line(monkeypatch):
    """Make the articulation run in the caller's thread, as before the change."""
    from concurrent.futures import Future

    def ahead(audio, fps, method, strength):
        done = Future()
        done.set_result(pipeline._articulation(audio, fps, method, strength))
        return done

    monkeypatch.setattr(pipeline, "_articulation_ahead", ahead)


def test_articulation_runs_on_a_worker_thread(speech, monkeypatch):
    threads = []
    real = pipeline._articulation

    def spy(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(pipeline, "_articulation", spy)
    track = pipeline._articulation_ahead(speech, 25.0, "auto", 1.0).result()
    assert len(track) == 15  # ceil(0.6 s * 25)
    assert threads and threads[0].startswith("segtalker-articulation")


@pytest.mark.parametrize("streamed", [False, True])
def test_frames_equal_those_of_the_articulation_in_line(speech, monkeypatch, streamed):
    frames = V.example_frames(16)
    crop = 128

    def talk():
        if streamed:
            chunks = iter([frames[:8], frames[8:]])
            return list(pipeline.iter_talk_chunks(chunks, speech, 25.0, crop_size=crop))
        return list(pipeline.iter_talk(frames[:1], speech, 25.0, crop_size=crop))

    ahead = talk()
    with monkeypatch.context() as m:
        _in_line(m)
        in_line = talk()
    assert len(ahead) == len(in_line) == 15
    assert sum(not np.array_equal(f, frames[0]) for f in in_line) >= 3  # the mouth moved
    for i, (a, b) in enumerate(zip(ahead, in_line)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {i}")


@pytest.mark.parametrize("options, message", [({"method": "visemes"}, "method must be one of"),
                                              ({"strength": 3.0}, "strength must be between 0 and 2")])
def test_bad_options_are_refused_before_the_faces_are_parsed(speech, monkeypatch, options, message):
    def parse(*args, **kwargs):
        raise AssertionError("parsed before the options were checked")

    monkeypatch.setattr(pipeline, "parse_faces", parse)
    with pytest.raises(ValueError, match=message):
        next(pipeline.iter_talk(V.example_frames(1), speech, 25.0, **options))
