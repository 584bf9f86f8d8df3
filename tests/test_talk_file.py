"""The file-to-file dub (segtalker_core.talk_file): what the CLI's talk and SegTalker Talk Video run.

Bad input: a video without an audio stream (fine with speech given, a clear error without), a
variable-frame-rate video (dubbed at its average rate, with one warning).
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import video_clips as V
from segtalker_core import talk_file
from segtalker_core.video_io import probe_video, read_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    speech = V.speech_clip(d / "speech.wav", 0.5)
    frames = V.example_frames(20)
    return {
        "speech": speech,
        "silent": V.write_clip(d / "silent.mp4", frames),
        "with_sound": V.write_clip(d / "with_sound.mp4", frames, audio=speech),
        "vfr": V.write_vfr_clip(d / "vfr.mp4", frames, [40, 40, 80, 20]),
    }


def test_long_video_is_streamed_and_keeps_its_fps(clips, tmp_path):
    out = tmp_path / "dub.mp4"
    seen = []
    result = talk_file.talk_video_file(clips["silent"], str(clips["speech"]), out,
                                       progress=lambda done, total: seen.append((done, total)))
    assert result.streamed and result.frames == 13  # ceil(0.5 s * 25 fps)
    info = probe_video(out)
    assert (info.frame_count, info.fps, info.has_audio) == (13, 25, True)
    assert seen[-1] == (13, 13)


def test_a_streamed_video_is_decoded_in_chunks_within_the_byte_budget(clips, tmp_path, monkeypatch):
    import segtalker_core.video_io as video_io

    sizes = []

    class CountingReader(video_io.VideoReader):
        def __init__(self, path, chunk_size=32, **kwargs):
            super().__init__(path, chunk_size=chunk_size, **kwargs)
            sizes.append(chunk_size)

    monkeypatch.setattr(video_io, "VideoReader", CountingReader)
    result = talk_file.talk_video_file(clips["silent"], str(clips["speech"]), tmp_path / "dub.mp4")
    info = probe_video(clips["silent"])
    assert result.streamed and result.frames == 13
    assert sizes[-1] == talk_file.chunk_frames(info.width, info.height)


@pytest.mark.parametrize("width, height", [(1920, 1080), (3840, 2160), (7680, 4320), (1280, 720),
                                           (512, 512), (64, 64)])
def test_chunk_frames_fill_the_byte_budget_within_the_range(width, height):
    low, high = talk_file.CHUNK_FRAMES_RANGE
    n = talk_file.chunk_frames(width, height)
    frame = width * height * 3
    assert low <= n <= high
    assert n == low or n * frame <= talk_file.CHUNK_BYTES  # over budget only at the floor
    assert n == high or (n + 1) * frame > talk_file.CHUNK_BYTES  # the most that fit
    if (width, height) == (1920, 1080):
        assert n == 6  # what benchmarks/talk.py measured (peak RSS ~-200 MiB against 16)


def test_video_shorter_than_the_audio_is_held_and_ping_ponged(clips, tmp_path):
    short = V.write_clip(tmp_path / "short.mp4", V.example_frames(5))
    result = talk_file.talk_video_file(short, str(clips["speech"]), tmp_path / "out.mp4")
    assert not result.streamed and result.frames == 13


def test_video_without_audio_stream_and_no_speech_is_a_clear_error(clips, tmp_path):
    out = tmp_path / "never.mp4"
    with pytest.raises(ValueError, match="no audio stream.*Connect the speech"):
        talk_file.talk_video_file(clips["silent"], None, out)
    assert not out.exists()


def test_video_is_synced_to_its_own_sound_when_no_audio_is_given(clips, tmp_path):
    result = talk_file.talk_video_file(clips["with_sound"], None, tmp_path / "own.mp4")
    # write_clip pads the sound to the 20 frames, so the own track is as long as the video
    assert result.frames == 20 and probe_video(result.path).has_audio


def test_comfy_audio_mapping_is_accepted(clips, tmp_path):
    from segtalker_core.pipeline import load_audio_for_comfy

    audio = load_audio_for_comfy(str(clips["speech"]))
    result = talk_file.talk_video_file(clips["silent"], audio, tmp_path / "mapping.mp4")
    assert result.frames == 13


def test_variable_frame_rate_is_dubbed_at_its_average_rate_with_a_warning(clips, tmp_path, caplog):
    info = probe_video(clips["vfr"])
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        result = talk_file.talk_video_file(clips["vfr"], str(clips["speech"]), tmp_path / "vfr_out.mp4")
    warnings = [r.getMessage() for r in caplog.records if "variable frame rate" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "average" in warnings[0]
    assert result.fps == pytest.approx(float(info.fps))
    assert result.frames == int(np.ceil(0.5 * float(info.fps)))


def test_constant_rate_video_is_not_flagged(clips, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        talk_file.talk_video_file(clips["silent"], str(clips["speech"]), tmp_path / "cfr.mp4")
    assert "variable frame rate" not in caplog.text


def test_read_frames_allocates_once_and_matches_the_reader(clips):
    frames = talk_file.read_frames(clips["silent"])
    reference, _ = read_video(clips["silent"])
    assert frames.shape == reference.shape and np.array_equal(frames, reference)
    assert len(talk_file.read_frames(clips["silent"], max_frames=7)) == 7


def test_failed_dub_leaves_no_partial_file(clips, tmp_path):
    out = tmp_path / "cancelled.mp4"

    def cancel(done, total):
        if done == 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        talk_file.talk_video_file(clips["silent"], str(clips["speech"]), out, progress=cancel)
    assert not out.exists()
