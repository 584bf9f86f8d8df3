"""mp4 writer/reader: frame count, size, colours, audio length and alignment, odd sizes, NTSC rates."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from segtalker_core import video_io as V
from segtalker_core.audio.io import read_audio_file

SR = 16000


def pattern(i: int, height: int = 96, width: int = 128) -> np.ndarray:
    """Smooth colour gradients that drift with i (compresses well, so PSNR must be high)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / width * 2 * np.pi + i * 0.1)
    g = 128 + 100 * np.cos(y / height * 2 * np.pi - i * 0.07)
    b = 60 + 150 * (x + y) / (width + height)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def tone(seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * 330 * t)
    return np.stack([wave * (c + 1) / channels for c in range(channels)]).astype(np.float32)


def audio_stream_seconds(path: str) -> float:
    import av

    with av.open(path) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_roundtrip_frames_and_audio(tmp_path):
    path = str(tmp_path / "out.mp4")
    frames = [pattern(i) for i in range(50)]
    with V.Mp4Writer(path, 25, audio=tone(2.0), sample_rate=SR) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.summary.frames == 50 and writer.summary.audio_samples == 2 * SR

    info = V.probe_video(path)
    assert (info.width, info.height, info.frame_count, info.fps) == (128, 96, 50, Fraction(25))
    assert info.has_audio and info.audio_sample_rate == SR
    assert abs(audio_stream_seconds(path) - 2.0) <= 1024 / SR

    decoded, fps = V.read_video(path)
    assert decoded.shape == (50, 96, 128, 3) and fps == 25
    assert min(psnr(a, b) for a, b in zip(decoded, frames)) > 30

    wave, rate = read_audio_file(path)
    assert rate == SR and abs(wave.shape[1] - 2 * SR) <= 1024
    # Same phase as written: the priming delay of AAC is compensated.
    reference = tone(2.0)[0, : wave.shape[1]]
    assert np.corrcoef(wave[0, 2000:30000], reference[2000:30000])[0, 1] > 0.99


def test_audio_is_trimmed_or_padded_to_video_length(tmp_path):
    long_path, short_path = str(tmp_path / "long.mp4"), str(tmp_path / "short.mp4")
    V.write_mp4(long_path, [pattern(i) for i in range(25)], 25, audio=tone(3.0), sample_rate=SR)
    V.write_mp4(short_path, [pattern(i) for i in range(50)], 25, audio=tone(0.5), sample_rate=SR)
    assert abs(audio_stream_seconds(long_path) - 1.0) <= 1024 / SR
    assert abs(audio_stream_seconds(short_path) - 2.0) <= 1024 / SR
    wave, _ = read_audio_file(short_path)
    assert np.abs(wave[0, SR // 2 + 1024:]).max() < 1e-3  # the padding is silence
    assert np.abs(wave[0, 1000:7000]).max() > 0.25  # the tone itself survived


def test_comfy_stereo_layout_is_accepted(tmp_path):
    path = str(tmp_path / "stereo.mp4")
    V.write_mp4(path, [pattern(i) for i in range(10)], 25, audio=tone(0.4, 2)[None],
                sample_rate=SR)
    wave, _ = read_audio_file(path)
    assert wave.shape[0] == 2
    # Channel 2 was written twice as loud as channel 1.
    ratio = np.abs(wave[1, 1000:5000]).mean() / np.abs(wave[0, 1000:5000]).mean()
    assert 1.8 < ratio < 2.2


@pytest.mark.parametrize("policy,expected", [("pad", (64, 50)), ("crop", (62, 48))])
def test_odd_size_is_made_even_with_a_warning(tmp_path, caplog, policy, expected):
    path = str(tmp_path / f"odd_{policy}.mp4")
    frames = [pattern(i, 49, 63) for i in range(6)]
    with caplog.at_level("WARNING", logger="segtalker"):
        summary = V.write_mp4(path, frames, 25, settings=V.EncodeSettings(odd_size=policy))
    assert "H.264 yuv420p needs even sizes" in caplog.text
    assert (summary.width, summary.height) == expected and summary.size_note
    decoded, _ = V.read_video(path)
    assert decoded.shape == (6, expected[1], expected[0], 3)
    assert psnr(decoded[0, :48, :62], frames[0][:48, :62]) > 30


def test_writer_audio_follows_the_one_audio_policy(caplog):
    """The writer's waveform goes through audio.io.as_channels: [T, C] transposed, integers
    scaled by their dtype's range, NaN zeroed with a logged warning; then clipped for AAC."""
    stereo = tone(0.1, 2)
    np.testing.assert_array_equal(V.as_waveform(stereo.T), stereo)
    pcm = np.array([[-32768, 0, 16384, 32767]], np.int16)
    np.testing.assert_allclose(V.as_waveform(pcm), [[-1.0, 0.0, 0.5, 32767 / 32768]])
    pcm32 = np.array([-(2**31), 2**30], np.int32)
    np.testing.assert_allclose(V.as_waveform(pcm32), [[-1.0, 0.5]])
    with caplog.at_level("WARNING", logger="segtalker"):
        wave = V.as_waveform(np.array([0.5, np.nan, 2.0], np.float32), "speech")
    # The wording is audio.io's; what matters here is that the input is named and NaN said.
    assert "speech" in caplog.text and "NaN" in caplog.text
    np.testing.assert_array_equal(wave, [[0.5, 0.0, 1.0]])


def test_ntsc_rate_is_exact(tmp_path):
    path = str(tmp_path / "ntsc.mp4")
    summary = V.write_mp4(path, [pattern(i) for i in range(30)], 29.97, audio=tone(1.0),
                          sample_rate=SR)
    assert summary.fps == Fraction(30000, 1001)
    info = V.probe_video(path)
    assert info.fps == Fraction(30000, 1001) and info.frame_count == 30
    # 30 frames at 29.97 fps last 1.001 s; the audio follows the video's duration.
    assert summary.audio_samples == V.audio_samples_for_frames(30, SR, 29.97) == 16016
    assert abs(audio_stream_seconds(path) - 1.001) <= 1024 / SR


@pytest.mark.parametrize(
    "fps,expected",
    [(29.97, Fraction(30000, 1001)), (23.976, Fraction(24000, 1001)), (59.94, Fraction(60000, 1001)),
     (25, Fraction(25)), (30.0, Fraction(30)), (12.5, Fraction(25, 2))],
)
def test_fps_fraction(fps, expected):
    assert V.fps_fraction(fps) == expected


def test_writer_without_audio(tmp_path):
    path = str(tmp_path / "silent.mp4")
    V.write_mp4(path, np.stack([pattern(i) for i in range(8)]), 25)
    info = V.probe_video(path)
    assert not info.has_audio and info.frame_count == 8
    with pytest.raises(ValueError, match="no audio track"):
        read_audio_file(path)


def test_reader_chunks_return_every_frame_in_order(tmp_path):
    path = str(tmp_path / "chunks.mp4")
    # Frame i has brightness 4 * i, so order and completeness can be read back.
    frames = [np.full((32, 48, 3), 4 * i + 20, np.uint8) for i in range(50)]
    V.write_mp4(path, frames, 25)
    with V.VideoReader(path, chunk_size=16) as reader:
        chunks = list(reader)
    assert [len(c) for c in chunks] == [16, 16, 16, 2]
    levels = np.concatenate(chunks).reshape(50, -1).mean(axis=1)
    np.testing.assert_allclose(levels, 4 * np.arange(50) + 20, atol=2)

    with V.VideoReader(path, chunk_size=16, max_frames=20) as reader:
        assert [len(c) for c in reader] == [16, 4]


def test_float_and_rgba_frames_follow_the_image_policy(tmp_path):
    path = str(tmp_path / "float.mp4")
    frame = pattern(0)
    rgba = np.concatenate([frame, np.full(frame.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    rgba[:, :64, 3] = 0  # transparent half: composited on black, like every image input
    V.write_mp4(path, [frame.astype(np.float32) / 255.0, rgba], 25)
    decoded, _ = V.read_video(path)
    assert psnr(decoded[0], frame) > 30
    assert decoded[1, 8:-8, 8:56].max() < 24 and psnr(decoded[1, :, 72:], frame[:, 72:]) > 30


def test_bad_input_errors(tmp_path):
    path = str(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="one size"):
        with V.Mp4Writer(path, 25) as writer:
            writer.write(pattern(0))
            writer.write(pattern(1, 64, 64))
    assert not os.path.exists(path)  # a half-written file is removed

    with pytest.raises(ValueError, match="no frames"):
        V.Mp4Writer(path, 25).close()
    with pytest.raises(ValueError, match="sample_rate"):
        V.Mp4Writer(path, 25, audio=tone(1.0))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        V.write_mp4(path, [np.zeros((32, 32), np.uint8)], 25)
    float_frame = np.full((32, 32, 3), 0.5, np.float32)
    float_frame[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="frame 0 contains 1 NaN"):
        V.write_mp4(path, [float_frame], 25)
    with pytest.raises(ValueError, match="5 channels"):
        V.write_mp4(path, [np.zeros((32, 32, 5), np.uint8)], 25)
    with pytest.raises(ValueError, match="fps"):
        V.fps_fraction(0)
    with pytest.raises(FileNotFoundError, match="not found"):
        V.probe_video(tmp_path / "missing.mp4")


def test_prefetched_gives_the_items_in_order_and_raises_the_workers_error_in_the_caller():
    from segtalker_core.video_io import prefetched

    assert list(prefetched(iter(range(7)), depth=2)) == list(range(7))

    def failing():
        yield 1
        raise RuntimeError("decoder broke")

    got = []
    with pytest.raises(RuntimeError, match="decoder broke"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]


def test_prefetched_stops_its_worker_and_closes_the_source_when_the_caller_stops_early():
    import threading

    from segtalker_core.video_io import prefetched

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    items = prefetched(endless())
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()  # joins the worker: the source is closed when close() returns
    assert closed.is_set()
    assert not any(t.name == "video-decoder" for t in threading.enumerate())


def test_reader_chunks_are_separate_arrays_holding_the_frames_in_order(tmp_path):
    from video_clips import noise_frames, write_raw_clip

    from segtalker_core.video_io import VideoReader

    path = write_raw_clip(tmp_path / "clip.mp4", noise_frames(7, 32, 48))
    with VideoReader(path, chunk_size=3) as reader:
        chunks = list(reader)
        frames = list(VideoReader(path).frames())
    assert [len(c) for c in chunks] == [3, 3, 1]
    # A chunk the caller keeps is never overwritten by the next one.
    assert not any(np.shares_memory(a, b) for i, a in enumerate(chunks) for b in chunks[i + 1:])
    np.testing.assert_array_equal(np.concatenate(chunks), np.stack(frames))


def test_prefetched_makes_at_most_depth_items_ahead_of_the_caller():
    import time

    from segtalker_core.video_io import prefetched

    made = []

    def counted():
        for n in range(6):
            made.append(n)
            yield n

    items = prefetched(counted(), depth=1)
    for taken in range(4):
        assert next(items) == taken
        time.sleep(0.3)  # give the worker every chance to run ahead
        assert len(made) <= taken + 2, (taken, made)
    items.close()


def test_prefetched_keeps_no_reference_to_an_item_the_caller_dropped():
    import gc
    import weakref

    from segtalker_core.video_io import prefetched

    class Chunk:
        pass

    items = prefetched(Chunk() for _ in range(3))
    first = next(items)
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # the generator, suspended, does not hold the chunk handed out
    items.close()
