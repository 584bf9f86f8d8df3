"""Video files in and out under hostile conditions (issue #9: nothing lost, nothing half-written,
every error a clean message).

Writing: a failed, interrupted, killed or concurrent write never leaves a broken file at the
output's name and never touches a file already there; a full disk is one clean error. Containers
follow the extension and decode back. Reading: rotated phone video comes out upright, a file cut
short is refused (nothing decodes) or dubbed with what decodes (one warning). The dub refuses an
output that is an input, an fps outside 1..120, and caps the working size.
"""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import video_clips as C
from segtalker_core import talk_file
from segtalker_core import video_io as V
from segtalker_core.audio.io import read_audio_file

SR = 16000


def tone(seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * channels).astype(np.float32)


def gradient(i: int = 0, height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4 + i) % 256, (y * 5) % 256, np.full_like(x, 128)], -1).astype(np.uint8)


def write_good(path: Path, frames: int = 6) -> bytes:
    V.write_video(path, [gradient(i) for i in range(frames)], 25)
    return path.read_bytes()


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    return C.speech_clip(tmp_path_factory.mktemp("speech") / "speech.wav", 0.5)


# -------------------------------------------------------------------------------------------
# Atomic writes


class Terminated(BaseException):
    """Like the CLI's: what a SIGTERM handler raises (no ``except Exception`` catches it)."""


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt(), Terminated(15)],
                         ids=["ValueError", "KeyboardInterrupt", "signal-BaseException"])
def test_a_failed_write_keeps_the_file_at_the_target_and_leaves_no_temporary(tmp_path, error):
    target = tmp_path / "out.mp4"
    before = write_good(target)
    with pytest.raises(type(error)):
        with V.VideoWriter(target, 25, audio=tone(1.0), sample_rate=SR) as writer:
            for i in range(5):
                writer.write(gradient(i))
            assert writer.temp_path and Path(writer.temp_path).exists()  # written elsewhere
            assert target.read_bytes() == before
            raise error
    assert target.read_bytes() == before
    assert C.partial_files(tmp_path) == []


def test_abort_removes_only_the_temporary_file(tmp_path):
    target = tmp_path / "out.mp4"
    before = write_good(target)
    writer = V.Mp4Writer(target, 25)  # the old name still works
    writer.write(gradient(0))
    writer.abort()
    writer.abort()  # twice is harmless
    assert target.read_bytes() == before and C.partial_files(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.write(gradient(1))


def test_the_file_appears_only_on_close(tmp_path):
    target = tmp_path / "late.mp4"
    writer = V.VideoWriter(target, 25)
    writer.write(gradient(0))
    assert not target.exists() and len(C.partial_files(tmp_path)) == 1
    summary = writer.close()
    assert target.exists() and C.partial_files(tmp_path) == []
    assert summary.path == str(target) and V.probe_video(target).frame_count == 1


def test_background_writer_joins_its_worker_before_the_writer_aborts(tmp_path):
    """The caller's block raises while the worker is encoding: the worker must have stopped
    before abort closes the file under it."""
    events: list[str] = []

    class SlowWriter(V.VideoWriter):
        def write(self, frames):
            events.append("write start")
            threading.Event().wait(0.05)
            super().write(frames)
            events.append("write end")

        def abort(self):
            events.append("abort")
            super().abort()

    target = tmp_path / "bg.mp4"
    with pytest.raises(KeyboardInterrupt):
        with SlowWriter(target, 25) as writer:
            with V.BackgroundWriter(writer, max_pending=2) as background:
                for i in range(6):
                    background.write(gradient(i))
                raise KeyboardInterrupt
    assert background._thread.is_alive() is False
    assert events[-1] == "abort" and events.count("abort") == 1
    assert events.count("write start") == events.count("write end")  # none cut off
    assert not target.exists() and C.partial_files(tmp_path) == []


def test_an_error_in_the_worker_is_raised_in_the_caller_and_nothing_is_left(tmp_path):
    target = tmp_path / "worker.mp4"
    with pytest.raises(ValueError, match="one size"):
        with V.VideoWriter(target, 25) as writer:
            with V.BackgroundWriter(writer) as background:
                background.write(gradient(0))
                background.write(gradient(1, 32, 32))  # another size: the worker fails
                for i in range(20):
                    background.write(gradient(i))
    assert not target.exists() and C.partial_files(tmp_path) == []


@pytest.mark.parametrize("fail_at", ["first packet", "mid-stream", "flush at close"])
def test_disk_full_is_one_clean_error_naming_the_output(tmp_path, monkeypatch, fail_at):
    """The muxer's ENOSPC (as FFmpeg raises it, naming the temporary file) becomes an
    OutputWriteError that names the output and says the disk is full; nothing at the name."""
    target = tmp_path / "full.mp4"
    before = write_good(target)
    muxed = {"n": 0, "closing": False}
    real_mux, real_close = V.VideoWriter._mux, V.VideoWriter.close

    def mux(self, packet):
        muxed["n"] += 1
        hit = {"first packet": muxed["n"] == 1, "mid-stream": muxed["n"] == 8,
               "flush at close": muxed["closing"]}[fail_at]
        if hit:
            raise OSError(errno.ENOSPC, "No space left on device", self.temp_path)
        real_mux(self, packet)

    def close(self):
        muxed["closing"] = True
        return real_close(self)

    monkeypatch.setattr(V.VideoWriter, "_mux", mux)
    monkeypatch.setattr(V.VideoWriter, "close", close)
    with pytest.raises(OSError) as caught:
        V.write_video(target, [gradient(i) for i in range(30)], 25, audio=tone(1.2),
                      sample_rate=SR)
    error = caught.value
    assert isinstance(error, V.OutputWriteError) and error.errno == errno.ENOSPC
    assert error.filename == str(target)  # the output's name, not the temporary one
    assert "disk is full" in str(error) and str(target) in str(error)
    assert target.read_bytes() == before and C.partial_files(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 200 kB tmpfs (needs root and mount permission; skipped otherwise: the monkeypatched
    test above covers the same behaviour)."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); "
                    "test_disk_full_is_one_clean_error_naming_the_output covers it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_real_full_disk_leaves_nothing(small_disk, suffix):
    target = small_disk / f"out{suffix}"
    with pytest.raises(V.OutputWriteError, match="disk is full") as caught:
        V.write_video(target, C.noise_frames(40), 25, audio=tone(1.6), sample_rate=SR)
    assert caught.value.filename == str(target)
    assert list(small_disk.iterdir()) == []  # neither the output nor a temporary file


def test_two_writers_of_one_target_leave_one_complete_file(tmp_path):
    target = tmp_path / "race.mp4"
    counts = (12, 20)
    start = threading.Barrier(len(counts))
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with V.VideoWriter(target, 25, audio=tone(n / 25), sample_rate=SR) as writer:
                start.wait()
                for i in range(n):
                    writer.write(gradient(i))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    info = V.probe_video(target)
    frames, _ = V.read_video(target)
    assert info.frame_count in counts and len(frames) == info.frame_count
    assert C.partial_files(tmp_path) == []


def test_a_killed_writer_leaves_only_a_partial_file(tmp_path):
    """kill -9 cannot be cleaned up after: what remains must be a .partial- file, and the name
    itself keeps what it held (here: nothing)."""
    target = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from segtalker_core.video_io import VideoWriter
        writer = VideoWriter({str(target)!r}, 25)
        rng = np.random.default_rng(0)
        for i in range(100000):
            writer.write(rng.integers(0, 256, (64, 64, 3), np.uint8))
            if i == 5:
                print("writing", flush=True)
            time.sleep(0.01)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=str(C.REPO_DIR),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.strip() == "writing", process.stderr.read()
        process.kill()  # SIGKILL: no handler, no finally
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert leftovers and all(p in C.partial_files(tmp_path) for p in leftovers)
    assert all(p.name.startswith(".killed.mp4.partial-") for p in leftovers)


# -------------------------------------------------------------------------------------------
# Containers follow the extension


@pytest.mark.parametrize("suffix,video_codec,audio_codec", [
    (".mp4", "h264", "aac"), (".mov", "h264", "aac"), (".mkv", "h264", "aac"),
    (".webm", "vp9", "opus"), (".MP4", "h264", "aac"),
])
def test_each_container_decodes_back(tmp_path, suffix, video_codec, audio_codec):
    import av

    path = tmp_path / f"clip{suffix}"
    frames = [gradient(i * 20) for i in range(5)]
    summary = V.write_video(path, frames, 25, audio=tone(0.2), sample_rate=SR)
    assert summary.frames == 5
    info = V.probe_video(path)
    assert (info.width, info.height, info.has_audio) == (64, 48, True)
    assert info.fps == 25 and info.frame_count == 5
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == video_codec
        assert container.streams.audio[0].codec_context.name == audio_codec
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    decoded, _ = V.read_video(path)
    assert decoded.shape == (5, 48, 64, 3)
    assert np.abs(decoded.astype(int) - np.stack(frames)).mean() < 4
    wave, rate = read_audio_file(path)
    assert rate == (48000 if suffix == ".webm" else SR)
    # 5 frames at 25 fps: 0.2 s of sound (within one codec frame: AAC 1024, Opus 20 ms)
    assert abs(wave.shape[1] / rate - 0.2) <= 1024 / SR


@pytest.mark.parametrize("suffix,moov_first", [(".mp4", True), (".mov", True)])
def test_faststart_puts_the_index_first_in_mp4_and_mov(tmp_path, suffix, moov_first):
    path = tmp_path / f"fast{suffix}"
    V.write_video(path, [gradient(i) for i in range(5)], 25)
    data = path.read_bytes()
    assert (data.index(b"moov") < data.index(b"mdat")) is moov_first


@pytest.mark.parametrize("name", ["out.gif", "out.avi", "out", "out.mp3", "out.mp4.part"])
def test_other_extensions_are_refused_before_any_work(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"\.mp4, \.mov, \.mkv \(H\.264 \+ AAC\) or \.webm "
                                         r"\(VP9 \+ Opus\)"):
        V.VideoWriter(path, 25)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="can be written as"):
        # refused before the (missing) video is even looked at
        talk_file.talk_video_file(tmp_path / "missing.mp4", None, path)


# -------------------------------------------------------------------------------------------
# Frame rates


@pytest.mark.parametrize("fps", [0, -1, 0.5, 121, 1000, float("nan"), float("inf"), None, True])
def test_fps_outside_1_to_120_is_refused(tmp_path, fps):
    with pytest.raises(ValueError, match=r"fps must be within 1\.\.120 frames per second"):
        V.VideoWriter(tmp_path / "x.mp4", fps)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fps,expected", [(1, Fraction(1)), (120, Fraction(120)),
                                          (29.97, Fraction(30000, 1001))])
def test_fps_at_the_ends_of_the_range_is_written(tmp_path, fps, expected):
    summary = V.write_video(tmp_path / "ok.mp4", [gradient(0), gradient(1)], fps)
    assert summary.fps == expected and V.probe_video(tmp_path / "ok.mp4").fps == expected


def test_talk_functions_refuse_fps_0_instead_of_a_default(tmp_path, speech):
    frames = C.example_frames(5)
    video = C.write_clip(tmp_path / "v.mp4", frames)
    with pytest.raises(ValueError, match=r"fps must be within 1\.\.120.*got 0"):
        talk_file.talk_image_file(frames[0], str(speech), tmp_path / "a.mp4", fps=0)
    with pytest.raises(ValueError, match=r"fps must be within 1\.\.120.*got 0"):
        talk_file.talk_video_file(video, str(speech), tmp_path / "b.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


@pytest.mark.parametrize("rate", [240, Fraction(1, 2)])
def test_a_video_whose_own_fps_is_outside_the_range_needs_fps(tmp_path, speech, rate):
    video = C.write_raw_clip(tmp_path / "odd_rate.mp4", C.example_frames(4), rate=rate)
    with pytest.raises(ValueError, match=r"reports .* fps, outside 1\.\.120.*give the frame rate"):
        talk_file.talk_video_file(video, str(speech), tmp_path / "out.mp4")
    result = talk_file.talk_video_file(video, str(speech), tmp_path / "out.mp4", fps=25)
    assert result.frames == 13


# -------------------------------------------------------------------------------------------
# Rotation (display matrix)

needs_display_matrix = pytest.mark.skipif(not C.can_write_display_matrix(),
                                          reason="this PyAV cannot write a display matrix")


def corner_marks(height: int = 32, width: int = 48) -> np.ndarray:
    """Red top-left, green top-right, blue bottom-left: every turn and mirror looks different."""
    image = np.full((height, width, 3), 40, np.uint8)
    image[:8, :8] = (255, 0, 0)
    image[:8, -8:] = (0, 255, 0)
    image[-8:, :8] = (0, 0, 255)
    return image


@needs_display_matrix
@pytest.mark.parametrize("degrees", [0, 90, 180, 270, -90])
@pytest.mark.parametrize("hflip,vflip", [(False, False), (True, False), (False, True)])
def test_rotated_video_reads_upright_at_its_displayed_size(tmp_path, degrees, hflip, vflip):
    stored = corner_marks()
    path = C.write_raw_clip(tmp_path / "rotated.mp4", np.stack([stored] * 3),
                            rotation=(degrees, hflip, vflip))
    shown = C.turned(stored, degrees, hflip, vflip)
    info = V.probe_video(path)
    assert (info.height, info.width) == shown.shape[:2]
    frames, _ = V.read_video(path)
    assert frames.shape == (3,) + shown.shape
    assert np.abs(frames[0].astype(int) - shown).mean() < 6


@pytest.mark.parametrize("matrix,expected", [
    ((65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30), V.Orientation()),
    ((0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), V.Orientation(transpose=True, flip_cols=True, rotation=270)),
    ((0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30), V.Orientation(transpose=True, flip_rows=True, rotation=90)),
    ((-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), V.Orientation(flip_rows=True, flip_cols=True, rotation=180)),
    ((0, 0, 0, 0, 0, 0, 0, 0, 0), V.Orientation()),  # degenerate: used as stored
])
def test_orientation_from_display_matrix(matrix, expected):
    assert V.orientation_from_matrix(matrix) == expected


@needs_display_matrix
def test_the_dub_of_a_rotated_video_is_upright(tmp_path, speech):
    upright = C.example_frames(16)[:, :, 40:360]  # 400 high, 320 wide: the turn shows in the size
    stored = np.stack([np.rot90(f, k=-1) for f in upright])  # as a phone stores it: sideways
    video = C.write_raw_clip(tmp_path / "phone.mp4", stored, rotation=(90, False, False))
    result = talk_file.talk_video_file(video, str(speech), tmp_path / "dub.mp4")
    dubbed, _ = V.read_video(result.path)
    assert dubbed.shape[1:] == (400, 320, 3)
    # Away from the mouth nothing changes: the dub matches the upright frames, not the stored.
    top = slice(0, 150)
    assert np.abs(dubbed[:, top].astype(int) - upright[: len(dubbed), top]).mean() < 8


# -------------------------------------------------------------------------------------------
# Truncated and corrupt files


@pytest.fixture(scope="module")
def fifty_frames(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("truncated")
    frames = C.example_frames(50)
    speech = C.speech_clip(folder / "speech.wav", 2.0)
    front = folder / "moov_first.mp4"
    back = folder / "moov_last.mp4"
    V.write_video(front, frames, 25, audio=read_audio_file(speech)[0], sample_rate=SR)
    V.write_video(back, frames, 25, settings=V.EncodeSettings(faststart=False))
    return {"front": front, "back": back, "speech": speech, "folder": folder}


def corrupt_files(folder: Path, fifty: dict[str, Path]) -> dict[str, Path]:
    random_bytes = folder / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {
        "index at the end, cut at 60%": C.truncated_copy(fifty["back"], folder / "back60.mp4", 0.6),
        "index at the end, cut at 99%": C.truncated_copy(fifty["back"], folder / "back99.mp4", 0.99),
        "index in front, cut inside the index": C.truncated_copy(fifty["front"], folder / "tiny.mp4", 0.002),
        "random bytes": random_bytes,
        "empty file": empty,
    }


@pytest.mark.parametrize("case", ["index at the end, cut at 60%", "index at the end, cut at 99%",
                                  "index in front, cut inside the index", "random bytes",
                                  "empty file"])
def test_a_video_that_does_not_open_is_a_clear_error(tmp_path, fifty_frames, case):
    path = corrupt_files(tmp_path, fifty_frames)[case]
    with pytest.raises(ValueError, match=r"is truncated or corrupt.*re-export it") as caught:
        V.probe_video(path)
    assert str(path) in str(caught.value)
    with pytest.raises(ValueError, match="is truncated or corrupt"):
        talk_file.talk_video_file(path, str(fifty_frames["speech"]), tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_a_video_cut_short_reads_what_decodes_with_one_warning(tmp_path, fifty_frames, caplog):
    cut = C.truncated_copy(fifty_frames["front"], tmp_path / "cut.mp4", 0.6)
    info = V.probe_video(cut)
    assert info.frame_count == 50  # what the index promises
    with caplog.at_level(logging.WARNING, logger="segtalker.video"):
        frames, _ = V.read_video(cut)
    warnings = [r for r in caplog.records if r.name == "segtalker.video"]
    assert len(warnings) == 1, caplog.text
    assert 10 < len(frames) < 50
    assert f"{len(frames)} of its 50 frames decoded" in warnings[0].getMessage()
    assert "truncated or damaged" in warnings[0].getMessage()


def test_a_read_that_stops_before_the_damage_is_not_warned_about(tmp_path, fifty_frames, caplog):
    cut = C.truncated_copy(fifty_frames["front"], tmp_path / "cut.mp4", 0.6)
    with caplog.at_level(logging.WARNING, logger="segtalker.video"):
        frames, _ = V.read_video(cut, max_frames=8)
    assert len(frames) == 8 and caplog.records == []


def test_a_dub_of_a_video_cut_short_goes_on_with_the_frames_that_decode(tmp_path, fifty_frames,
                                                                       caplog):
    cut = C.truncated_copy(fifty_frames["front"], tmp_path / "cut.mp4", 0.6)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        # 2 s of speech needs 50 frames; fewer decode: they are ping-ponged, as a short video's
        result = talk_file.talk_video_file(cut, str(fifty_frames["speech"]), tmp_path / "dub.mp4")
    assert result.frames == 50 and not result.streamed
    assert V.probe_video(result.path).frame_count == 50
    assert sum("frames decoded" in r.getMessage() for r in caplog.records) == 1


def test_a_dub_that_needs_only_the_intact_part_streams_it(tmp_path, fifty_frames, caplog):
    cut = C.truncated_copy(fifty_frames["front"], tmp_path / "cut.mp4", 0.6)
    short_speech = C.speech_clip(tmp_path / "short.wav", 0.4)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        result = talk_file.talk_video_file(cut, str(short_speech), tmp_path / "dub.mp4")
    assert result.streamed and result.frames == 10
    assert "frames decoded" not in caplog.text


def test_a_video_damaged_in_the_middle_does_not_crash(tmp_path, fifty_frames, caplog):
    """Garbage over a stretch of the picture data: the decoder conceals or stops; either way the
    reader gives frames, and says so if it stopped early, never raises."""
    data = bytearray(fifty_frames["front"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4000] = np.random.default_rng(2).integers(0, 256, 4000, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="segtalker.video"):
        frames, _ = V.read_video(damaged)
    assert 0 < len(frames) <= 50
    if len(frames) < 50:
        assert f"{len(frames)} of its 50 frames decoded" in caplog.text


class FailingDemuxer:
    """A container whose demuxer raises FFmpeg's InvalidDataError after ``good`` packets, as a
    damaged stretch of a file makes it; everything else is the real container's."""

    def __init__(self, real, good: int) -> None:
        self._real, self._good = real, good

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()

    def demux(self, *streams):
        import av

        for i, packet in enumerate(self._real.demux(*streams)):
            if i == self._good:
                raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")
            yield packet


def test_a_decoder_error_mid_stream_stops_with_the_warning(fifty_frames, monkeypatch, caplog):
    real_open = V._open_input
    monkeypatch.setattr(V, "_open_input", lambda path: FailingDemuxer(real_open(path), 20))
    with caplog.at_level(logging.WARNING, logger="segtalker.video"):
        frames, _ = V.read_video(fifty_frames["front"])
    assert 0 < len(frames) <= 20  # what decoded before the error, decoder's held frames included
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"{len(frames)} of its 50 frames decoded" in message
    assert "the decoder stopped: Invalid data found when processing input" in message


# -------------------------------------------------------------------------------------------
# The output is never an input


def link(kind: str, source: Path, name: Path) -> Path:
    if kind == "same path":
        return source
    if kind == "symlink":
        name.symlink_to(source)
    else:
        os.link(source, name)
    return name


@pytest.mark.parametrize("kind", ["same path", "symlink", "hard link"])
@pytest.mark.parametrize("victim", ["video", "audio"])
def test_the_dub_refuses_to_write_over_an_input(tmp_path, monkeypatch, speech, kind, victim):
    video = C.write_clip(tmp_path / "in.mp4", C.example_frames(5), audio=speech)
    audio_mp4 = C.write_clip(tmp_path / "speech.mp4", C.example_frames(13), audio=speech)
    source = video if victim == "video" else audio_mp4
    before = source.read_bytes()
    out = link(kind, source, tmp_path / "out.mp4")
    portrait = C.example_frames(1)[0]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the input was opened before the output was checked")

    monkeypatch.setattr(V, "probe_video", no_decoding)
    with pytest.raises(ValueError, match=f"is the same file as the {victim} "):
        talk_file.talk_video_file(video, str(audio_mp4), out)
    if victim == "audio":
        with pytest.raises(ValueError, match="is the same file as the audio "):
            talk_file.talk_image_file(portrait, str(audio_mp4), out)
    assert source.read_bytes() == before


def test_the_callers_names_for_the_inputs_are_used(tmp_path, speech):
    video = C.write_clip(tmp_path / "in.mp4", C.example_frames(5))
    with pytest.raises(ValueError, match=r"output .* is the same file as the --video "):
        talk_file.talk_video_file(video, str(speech), video,
                                  inputs={"--video": video, "--audio": speech})
    speech_mp4 = C.write_clip(tmp_path / "speech.mp4", C.example_frames(13), audio=speech)
    with pytest.raises(ValueError, match=r"is the same file as the --audio "):
        talk_file.talk_image_file(C.example_frames(1)[0], str(speech_mp4), speech_mp4,
                                  inputs={"--audio": speech_mp4})


def test_the_writer_itself_refuses_an_input(tmp_path):
    video = tmp_path / "in.mp4"
    before = write_good(video)
    with pytest.raises(ValueError, match="same file as the --video"):
        V.VideoWriter(video, 25, inputs={"--video": video}, what="-o")
    assert video.read_bytes() == before


# -------------------------------------------------------------------------------------------
# Working size cap


@pytest.mark.parametrize("size", [63, 0, -1, 3.5, True, "4k"])
def test_max_size_must_be_a_whole_number_of_at_least_64_or_none(size):
    with pytest.raises(ValueError, match=r"max_size must be a whole number of pixels >= 64"):
        talk_file.TalkSettings(max_size=size)


@pytest.mark.parametrize("size", [64, 3840, None])
def test_max_size_accepts(size):
    assert talk_file.TalkSettings(max_size=size).max_size == size


def test_max_size_default_is_4k():
    assert talk_file.TalkSettings().max_size == 3840


@pytest.mark.parametrize("width,height,cap,expected", [
    (8000, 8000, 3840, (3840, 3840)),
    (8000, 4500, 3840, (3840, 2160)),
    (4500, 8000, 3840, (2160, 3840)),
    (3840, 2160, 3840, (3840, 2160)),  # fits: untouched
    (4000, 3000, None, (4000, 3000)),  # no cap
    (1001, 3999, 1000, (250, 1000)),
    (5000, 5000, 999, (998, 998)),  # an odd cap: the even size below it
    (7, 3, 5, (4, 2)),  # cap 5: even sides of at most 4
])
def test_working_size(width, height, cap, expected):
    size = talk_file.working_size(width, height, cap)
    assert size == expected
    assert all(side % 2 == 0 for side in size) or size == (width, height)


def test_a_portrait_above_the_cap_is_downscaled_with_one_warning(tmp_path, speech, caplog):
    import cv2

    portrait = cv2.resize(C.example_frames(1)[0], (800, 800), interpolation=cv2.INTER_CUBIC)
    settings = talk_file.TalkSettings(max_size=400)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        result = talk_file.talk_image_file(portrait, str(speech), tmp_path / "big.mp4",
                                           settings=settings, input_name="big.png")
    info = V.probe_video(result.path)
    assert (info.width, info.height) == (400, 400)
    warnings = [r.getMessage() for r in caplog.records if "working size" in r.getMessage()]
    assert len(warnings) == 1 and "big.png" in warnings[0]
    assert "800x800" in warnings[0] and "400x400" in warnings[0]


def test_a_swap_reference_above_the_cap_is_downscaled_too(tmp_path, speech, caplog):
    """A huge reference photo is parsed like the portrait; it is capped the same way (and the
    warning does not claim it is written at that size: only the portrait is)."""
    import cv2

    from segtalker_core.face.image import to_rgb_uint8

    reference = cv2.resize(cv2.cvtColor(cv2.imread(str(C.REPO_DIR / "examples" / "reference_face.png")),
                                        cv2.COLOR_BGR2RGB), (900, 900), interpolation=cv2.INTER_CUBIC)
    settings = talk_file.TalkSettings(max_size=450, swaps=((["lips"], to_rgb_uint8(reference)),))
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        result = talk_file.talk_image_file(C.example_frames(1)[0], str(speech), tmp_path / "out.mp4",
                                           settings=settings, input_name="face.png")
    assert V.probe_video(result.path).frame_count == result.frames
    warnings = [r.getMessage() for r in caplog.records if "working size" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the 400x400 portrait fits; only the reference is capped
    assert "swap reference 1" in warnings[0] and "900x900" in warnings[0] and "450x450" in warnings[0]
    assert "written at that size" not in warnings[0]


@pytest.mark.parametrize("seconds,streamed", [(0.4, True), (1.0, False)])
def test_a_video_above_the_cap_is_downscaled_chunk_by_chunk(tmp_path, caplog, seconds, streamed):
    import cv2

    frames = np.stack([cv2.resize(f, (800, 600), interpolation=cv2.INTER_CUBIC)
                       for f in C.example_frames(20)])
    video = C.write_clip(tmp_path / "big.mp4", frames)
    speech = C.speech_clip(tmp_path / "speech.wav", seconds)
    settings = talk_file.TalkSettings(max_size=400)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        result = talk_file.talk_video_file(video, str(speech), tmp_path / "out.mp4",
                                           settings=settings, input_name="big.mp4")
    assert result.streamed is streamed
    info = V.probe_video(result.path)
    assert (info.width, info.height) == (400, 300)
    warnings = [r.getMessage() for r in caplog.records if "working size" in r.getMessage()]
    assert len(warnings) == 1 and "big.mp4" in warnings[0] and "800x600" in warnings[0]


# -------------------------------------------------------------------------------------------
# Speech from a video file: as many frames as the same speech as wav


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".webm", ".mkv"])
def test_speech_from_a_video_file_gives_the_frames_of_the_same_speech_as_wav(tmp_path, suffix):
    """The container's audio (AAC/Opus priming and padding) must not add frames: a video of 13
    frames made from 0.52 s of speech gives 13 frames when it is the speech, as the wav does."""
    from segtalker_core import pipeline

    speech = C.speech_clip(tmp_path / "speech.wav", 0.52)  # exactly 13 frames at 25 fps
    wave, rate = read_audio_file(speech)
    clip = tmp_path / f"speech{suffix}"
    V.write_video(clip, C.example_frames(13), 25, audio=wave, sample_rate=rate)
    assert pipeline.audio_frame_count(str(speech), 25) == 13
    assert pipeline.audio_frame_count(str(clip), 25) == 13
