"""The CLI's error boundary: every expected failure is one ``error: ...`` line and exit code 2,
bad options too (argparse, worded the same), Ctrl-C is 130, SIGTERM / SIGHUP are 128 + N, and
no failed or stopped run loses an input or an earlier output, or leaves a temporary file.

The table (:data:`CASES`) runs ``cli.main`` in-process in a folder of its own; the signal cases run
``python -m segtalker_core`` as a real process and signal it while it writes.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from segtalker_core import cli, cli_options
from segtalker_core.atomic_files import PARTIAL_MARK

REPO_DIR = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_DIR / "examples"
GOOD_OUTPUT = b"an earlier good result " * 50

Setup = Callable[[Path], None]


# -- input files (each a setup step run in the case's folder) ------------------------------------

def portrait(folder: Path, name: str = "portrait.png") -> None:
    shutil.copyfile(EXAMPLES / "portrait.png", folder / name)


def speech(folder: Path, name: str = "speech.wav", seconds: float = 0.3) -> None:
    import soundfile as sf

    wave, rate = sf.read(str(EXAMPLES / "speech.wav"), dtype="float32")
    sf.write(str(folder / name), wave[: int(seconds * rate)], rate)


def video(folder: Path) -> None:
    shutil.copyfile(EXAMPLES / "video.mp4", folder / "video.mp4")


def text(name: str) -> Setup:
    return lambda folder: (folder / name).write_text("not what the name says")


def good_output(name: str) -> Setup:
    return lambda folder: (folder / name).write_bytes(GOOD_OUTPUT)


def truncated_jpeg(name: str) -> Setup:
    def setup(folder: Path) -> None:
        from PIL import Image

        Image.open(EXAMPLES / "portrait.png").convert("RGB").save(folder / "whole.jpg", quality=92)
        data = (folder / "whole.jpg").read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
        (folder / "whole.jpg").unlink()
    return setup


def symlink(link: str, target: str) -> Setup:
    return lambda folder: os.symlink(target, folder / link)


def hardlink(link: str, target: str) -> Setup:
    return lambda folder: os.link(folder / target, folder / link)


def folder_named(name: str) -> Setup:
    return lambda folder: (folder / name).mkdir()


TALK = ("talk", "--image", "portrait.png", "--audio", "speech.wav", "-q", "--size", "64")
PARSE = ("parse", "--image", "portrait.png", "--size", "64")


@dataclass(frozen=True)
class Case:
    """``argv`` runs in a folder made by ``setup``; paths in it are relative to that folder."""

    name: str
    argv: tuple[str, ...]
    setup: tuple[Setup, ...]
    message: str  # a substring of the one error line
    code: int = 2


CASES = (
    # Outputs that would destroy an input: refused before anything is loaded.
    Case("talk -o is the --image", (*TALK, "-o", "portrait.png"), (portrait, speech),
         "-o 'portrait.png' is the same file as the --image"),
    Case("talk -o is the --audio", (*TALK, "-o", "speech.wav"), (portrait, speech),
         "same file as the --audio"),
    Case("talk -o is the --video", ("talk", "--video", "video.mp4", "--audio", "speech.wav", "-o",
                                    "video.mp4"), (video, speech), "same file as the --video"),
    Case("talk -o is a symlink to the --image", (*TALK, "-o", "link.png"),
         (portrait, speech, symlink("link.png", "portrait.png")), "same file as the --image"),
    Case("talk -o is a hard link to the --audio", (*TALK, "-o", "hard.wav"),
         (portrait, speech, hardlink("hard.wav", "speech.wav")), "same file as the --audio"),
    Case("talk -o is a --swap reference", (*TALK, "--swap", "lips=ref.png", "-o", "ref.png"),
         (portrait, speech, lambda f: portrait(f, "ref.png")), "same file as the --swap lips reference"),
    Case("talk -o is the --parser weights", (*TALK, "--parser", "net.pth", "-o", "net.pth"),
         (portrait, speech, text("net.pth")), "same file as the --parser"),
    Case("parse -o is the --image", (*PARSE, "-o", "portrait.png"), (portrait,), "same file as the --image"),
    Case("parse --labels is the --image", (*PARSE, "-o", "prev.png", "--labels", "portrait.png"),
         (portrait,), "--labels 'portrait.png' is the same file as the --image"),
    Case("parse --labels is -o", (*PARSE, "-o", "prev.png", "--labels", "prev.png"),
         (portrait, good_output("prev.png")), "same file as the -o"),
    # Outputs that cannot be written: refused before any work, an earlier file kept.
    Case("talk -o is a folder", (*TALK, "-o", "outdir"), (portrait, speech, folder_named("outdir")),
         "-o 'outdir' is a folder"),
    Case("talk -o is empty", (*TALK, "-o", ""), (portrait, speech), "-o is empty"),
    Case("talk -o in a missing folder", (*TALK, "-o", "missing/out.mp4"), (portrait, speech),
         "the folder 'missing' does not exist"),
    Case("talk -o /dev/full", (*TALK, "-o", "/dev/full"), (portrait, speech), "is not a regular file"),
    Case("talk -o .gif", (*TALK, "-o", "out.gif"), (portrait, speech),
         "-o 'out.gif' has the extension '.gif': a video can be written as .mp4"),
    Case("talk -o without extension", (*TALK, "-o", "out"), (portrait, speech), "-o 'out' has no extension"),
    Case("parse -o unknown extension", (*PARSE, "-o", "prev.xyz"), (portrait,),
         "-o 'prev.xyz' has .xyz, which is not an image type"),
    Case("parse -o no extension", (*PARSE, "-o", "prev"), (portrait,), "has no extension"),
    Case("parse --labels as JPEG", (*PARSE, "-o", "prev.png", "--labels", "labels.jpg"),
         (portrait, good_output("prev.png")), "label maps are written only as PNG"),
    Case("parse --labels to a missing folder", (*PARSE, "-o", "prev.png", "--labels", "missing/l.png"),
         (portrait, good_output("prev.png")), "the folder 'missing' does not exist"),
    # Inputs that are not what they claim.
    Case("--image is missing", (*TALK, "-o", "out.mp4"), (speech,), "--image 'portrait.png' does not exist"),
    Case("--image is a folder", (*TALK, "-o", "out.mp4"), (speech, folder_named("portrait.png")),
         "--image 'portrait.png' is a folder"),
    Case("--image is a text file", (*TALK, "-o", "out.mp4"), (speech, text("portrait.png")),
         "--image 'portrait.png' is not an image that can be read"),
    Case("--image is a truncated JPEG", ("talk", "--image", "cut.jpg", *TALK[3:], "-o", "out.mp4"),
         (speech, truncated_jpeg("cut.jpg"), good_output("out.mp4")),
         "--image 'cut.jpg' is truncated or corrupt"),
    Case("parse --image is a truncated JPEG", ("parse", "--image", "cut.jpg", "-o", "prev.png"),
         (truncated_jpeg("cut.jpg"),), "--image 'cut.jpg' is truncated or corrupt"),
    Case("--swap without =IMAGE", (*TALK, "--swap", "lips", "-o", "out.mp4"), (portrait, speech),
         "--swap takes REGIONS=IMAGE"),
    Case("--swap with an empty region", (*TALK, "--swap", "=portrait.png", "-o", "out.mp4"),
         (portrait, speech), "--swap takes REGIONS=IMAGE"),
    Case("--swap unknown region", (*TALK, "--swap", "wings=portrait.png", "-o", "out.mp4"),
         (portrait, speech), "unknown region 'wings'"),
    Case("--swap reference missing", (*TALK, "--swap", "lips=nope.png", "-o", "out.mp4"),
         (portrait, speech), "--swap lips reference 'nope.png' does not exist"),
    Case("--swap reference is a text file", (*TALK, "--swap", "lips=notes.png", "-o", "out.mp4"),
         (portrait, speech, text("notes.png")), "--swap lips reference 'notes.png' is not an image"),
    Case("--audio is missing", (*TALK[:4], "nope.wav", "-q", "-o", "out.mp4"), (portrait,), "nope.wav"),
    Case("--video is a text file", ("talk", "--video", "notes.mp4", "--audio", "speech.wav", "-q", "-o",
                                    "out.mp4"), (speech, text("notes.mp4")), "notes.mp4"),
    # Options out of range: refused by argparse, before anything runs, in the same one-line form.
    Case("--fps 0", (*TALK, "--fps", "0", "-o", "out.mp4"), (portrait, speech),
         "argument --fps: must be within 1..120"),
    Case("--fps 0.001", (*TALK, "--fps", "0.001", "-o", "out.mp4"), (portrait, speech),
         "argument --fps: must be within 1..120"),
    Case("--fps 1000", (*TALK, "--fps", "1000", "-o", "out.mp4"), (portrait, speech),
         "argument --fps: must be within 1..120"),
    Case("--fps nan", (*TALK, "--fps", "nan", "-o", "out.mp4"), (portrait, speech),
         "argument --fps: must be within"),
    Case("--fps abc", (*TALK, "--fps", "abc", "-o", "out.mp4"), (portrait, speech),
         "argument --fps: must be a number, got 'abc'"),
    Case("--size 32", ("talk", "--image", "portrait.png", "--audio", "speech.wav", "--size", "32", "-o",
                       "out.mp4"), (portrait, speech), "argument --size: 32 is too small"),
    Case("--size 100000", ("talk", "--image", "portrait.png", "--audio", "speech.wav", "--size",
                           "100000", "-o", "out.mp4"), (portrait, speech),
         "argument --size: 100000 is too large (at most 2048): a 100000x100000 face crop needs about"),
    Case("parse --size 4096", ("parse", "--image", "portrait.png", "--size", "4096", "-o", "p.png"),
         (portrait,), "argument --size: 4096 is too large"),
    Case("--batch-size -1", (*TALK, "--batch-size", "-1", "-o", "out.mp4"), (portrait, speech),
         "argument --batch-size: must be 0 (automatic: picked from the device's free memory) or"),
    Case("--strength 3", (*TALK, "--strength", "3", "-o", "out.mp4"), (portrait, speech),
         "argument --strength: must be within 0..2"),
    Case("--strength -0.5", (*TALK, "--strength", "-0.5", "-o", "out.mp4"), (portrait, speech),
         "argument --strength: must be within 0..2"),
    Case("--head-motion 1.5", (*TALK, "--head-motion", "1.5", "-o", "out.mp4"), (portrait, speech),
         "argument --head-motion: must be within 0..1"),
    Case("--head-motion nan", (*TALK, "--head-motion", "nan", "-o", "out.mp4"), (portrait, speech),
         "argument --head-motion: must be within 0..1"),
    Case("--face-index -2", (*TALK, "--face-index", "-2", "-o", "out.mp4"), (portrait, speech),
         "argument --face-index: must be -1"),
    Case("--max-size 32", (*TALK, "--max-size", "32", "-o", "out.mp4"), (portrait, speech),
         "argument --max-size: 32 is too small"),
    Case("--max-size big", (*TALK, "--max-size", "big", "-o", "out.mp4"), (portrait, speech),
         "argument --max-size: must be a whole number"),
    Case("random-bundle --resolution 100", ("random-bundle", "bundles", "--resolution", "100"), (),
         "argument --resolution: invalid choice: 100"),
    Case("a required option missing", ("talk", "--image", "portrait.png", "-o", "out.mp4"), (portrait,),
         "the following arguments are required: --audio; 'python -m segtalker_core talk --help' lists"),
    Case("an unknown command", ("tlak", "--image", "portrait.png"), (portrait,),
         "argument command: invalid choice: 'tlak'"),
)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


def _run_main(argv) -> int:
    try:
        return cli.main(list(argv))
    except SystemExit as stop:  # argparse's usage error ends the process from parse_args
        return stop.code


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_failure_is_one_clean_line_and_loses_nothing(case, tmp_path, monkeypatch, capsys):
    for setup in case.setup:
        setup(tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = _run_main(case.argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert case.message in errors[0], err
    after = _snapshot(tmp_path)
    assert after == before  # inputs and earlier outputs byte-identical, nothing new, no temporary


def test_output_in_a_folder_without_write_permission(tmp_path, monkeypatch, capsys):
    """EACCES when the output's temporary file is created, as a non-root user gets in a folder
    that is not theirs. Simulated for every user (root may write anywhere); the hostile-input
    table writes onto a real read-only file system."""
    import errno

    from segtalker_core import atomic_files

    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if atomic_files.PARTIAL_MARK in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    portrait(tmp_path)
    (tmp_path / "locked").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(atomic_files.os, "open", refusing_open)
    code = _run_main(("parse", "--image", "portrait.png", "--size", "64", "-o", "locked/prev.png"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no permission" in err and "locked/prev.png" in err and ".partial-" not in err, err
    assert list((tmp_path / "locked").iterdir()) == []


# -- options that are accepted ------------------------------------------------------------------

@pytest.mark.parametrize("given,expected", [(None, 3840), ("0", None), ("none", None), ("None", None),
                                            ("1920", 1920)])
def test_max_size_values(given, expected):
    argv = ["talk", "--image", "a.png", "--audio", "b.wav", "-o", "c.mp4"]
    args = cli.build_parser().parse_args(argv + ([] if given is None else ["--max-size", given]))
    assert args.max_size == expected


@pytest.mark.parametrize("option,value,expected", [
    ("--fps", "1", 1.0), ("--fps", "120", 120.0), ("--fps", "29.97", 29.97), ("--size", "64", 64),
    ("--size", "2048", 2048), ("--strength", "0", 0.0), ("--strength", "2", 2.0),
    ("--face-index", "-1", -1), ("--batch-size", "1", 1), ("--head-motion", "0", 0.0),
    ("--head-motion", "1", 1.0),
])
def test_range_ends_are_accepted(option, value, expected):
    args = cli.build_parser().parse_args(["talk", "--image", "a.png", "--audio", "b.wav", "-o", "c.mp4",
                                          option, value])
    assert getattr(args, option[2:].replace("-", "_")) == expected


def test_bundle_resolutions_match_the_writer():
    from segtalker_core.models.random_bundle import RESOLUTIONS

    assert cli.BUNDLE_RESOLUTIONS == RESOLUTIONS


def test_crop_memory_estimate_grows_with_the_square():
    assert "about 67.1 MB while each frame is drawn, and 21 MB for every frame held" in cli_options.crop_memory_text(2048)


# -- the error boundary, one kind of failure at a time -------------------------------------------

def _fail_with(monkeypatch, error: BaseException):
    """Make ``describe`` raise ``error``; returns the argv that runs it."""
    def run(args):
        raise error
    monkeypatch.setattr(cli, "cmd_describe", run)
    return ["describe", "weights.safetensors"]


def _ffmpeg_error():
    import av

    return av.error.InvalidDataError(errno.EINVAL, "Invalid data found when processing input", "clip.mp4")


def _safetensors_error():
    from safetensors import SafetensorError

    return SafetensorError("Error while deserializing header: HeaderTooLarge")


class _OwnWords(OSError):
    """An OSError that words its own message (as the video writer's OutputWriteError does)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename!r}: the disk is full ({self.strerror})"


def _ffmpeg_disk_full():
    import av

    return av.error.OSError(errno.ENOSPC, "No space left on device", ".out.mp4.partial-12345678.mp4")


def _torch_oom():
    import torch

    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


BOUNDARY = [
    (lambda: ValueError("--tsg: not a TSG bundle\n(it is an encoder)"), 2,
     "error: --tsg: not a TSG bundle (it is an encoder)"),
    (lambda: FileNotFoundError("audio file 'a.wav' does not exist (check the path)."), 2,
     "error: audio file 'a.wav' does not exist"),
    (lambda: OSError(errno.ENOSPC, "No space left on device", "out/.clip.mp4.partial-0a1b2c3d.mp4"), 2,
     "error: 'out/clip.mp4': the disk is full; free some space or write elsewhere (No space left on device)"),
    (lambda: PermissionError(errno.EACCES, "Permission denied", "x.png"), 2, "error: 'x.png': no permission"),
    (lambda: OSError(errno.EPERM, "Operation not permitted", "x.png"), 2, "error: 'x.png': no permission"),
    (lambda: OSError(errno.EROFS, "Read-only file system", "ro/x.mp4"), 2,
     "error: 'ro/x.mp4': the file system is read-only"),
    (lambda: IsADirectoryError(errno.EISDIR, "Is a directory", "d"), 2, "error: 'd': it is a folder"),
    (lambda: FileNotFoundError(errno.ENOENT, "No such file or directory", "gone.wav"), 2,
     "error: 'gone.wav': it does not exist; check the path"),
    (lambda: OSError(errno.EIO, "Input/output error", "disk.png"), 2,
     "error: 'disk.png': the drive failed to read or write it"),
    (lambda: OSError("nothing was written to 'x.mp4'"), 2, "error: nothing was written to 'x.mp4'"),
    (lambda: _OwnWords(errno.ENOSPC, "No space left on device", "x.mp4"), 2,
     "error: cannot write 'x.mp4': the disk is full (No space left on device)"),
    (_ffmpeg_disk_full, 2, "error: 'out.mp4': the disk is full"),
    (lambda: MemoryError(), 2, "error: out of memory"),
    (_torch_oom, 2, "error: out of memory (CUDA out of memory. Tried to allocate 20.00 GiB)"),
    (lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"), 2,
     "error: out of memory"),
    (_ffmpeg_error, 2, "error: 'clip.mp4': FFmpeg cannot process it (Invalid data found when processing input)"),
    (_safetensors_error, 2, "error: a weight file is not a readable .safetensors file"),
    (lambda: SystemExit("error: cannot read image 'x.png'"), 2, "error: cannot read image 'x.png'"),
    (lambda: SystemExit("no such thing"), 2, "error: no such thing"),
    (lambda: TypeError("unsupported operand"), 1,
     "error: internal error: TypeError: unsupported operand. This is a bug: rerun with -v"),
    (lambda: KeyboardInterrupt(), 130, "error: interrupted (Ctrl-C)"),
    (lambda: cli.Terminated(signal.SIGTERM), 143, "error: stopped by SIGTERM"),
    (lambda: cli.Terminated(signal.SIGHUP), 129, "error: stopped by SIGHUP"),
]


@pytest.mark.parametrize("make,code,message", BOUNDARY, ids=[m for _, _, m in BOUNDARY])
def test_error_boundary(make, code, message, monkeypatch, capsys):
    assert _run_main(_fail_with(monkeypatch, make())) == code
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, err


def test_out_of_memory_hints_name_the_talk_options(monkeypatch, capsys):
    def run(args):
        raise MemoryError()
    monkeypatch.setattr(cli, "cmd_talk", run)
    assert cli.main(["talk", "--image", "a.png", "--audio", "b.wav", "-o", "c.mp4", "--size", "1024",
                     "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    for hint in ("--size (now 1024)", "--batch-size 1", "--max-size 1920", "--device cpu"):
        assert hint in err, err


def test_an_exit_status_passes_through(monkeypatch):
    with pytest.raises(SystemExit) as stop:
        cli.main(_fail_with(monkeypatch, SystemExit(3)))
    assert stop.value.code == 3


@pytest.mark.parametrize("where", ["before the command", "after the command", "at the end"])
def test_verbose_anywhere_shows_the_traceback_with_the_same_exit_code(where, monkeypatch, capsys):
    argv = _fail_with(monkeypatch, ValueError("bad weights"))
    argv = {"before the command": ["-v", *argv], "after the command": [argv[0], "-v", *argv[1:]],
            "at the end": [*argv, "--verbose"]}[where]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ValueError: bad weights" in err
    assert err.splitlines()[-1] == "error: bad weights"


def test_without_verbose_no_traceback(monkeypatch, capsys):
    assert cli.main(_fail_with(monkeypatch, ValueError("bad weights"))) == 2
    assert capsys.readouterr().err == "error: bad weights\n"


# -- signals in-process: handlers while main runs, restored after ----------------------------------

def _command(monkeypatch, run):
    monkeypatch.setattr(cli, "cmd_describe", run)
    return ["describe", "x"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_runs_the_cleanup_and_exits_128_plus_n(signum, monkeypatch, capsys):
    cleaned = []

    def run(args):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
            cleaned.append("not stopped")
        finally:
            os.kill(os.getpid(), signum)  # a second signal during cleanup is ignored
            cleaned.append("cleanup finished")
        return 0

    before = signal.getsignal(signum)
    assert cli.main(_command(monkeypatch, run)) == 128 + signum
    assert cleaned == ["cleanup finished"]
    assert signal.getsignal(signum) is before  # restored
    assert capsys.readouterr().err == f"error: stopped by {signal.Signals(signum).name}; " \
                                      "unfinished outputs were removed\n"


def test_an_ignored_sighup_stays_ignored(monkeypatch):
    seen = {}

    def run(args):
        seen["hup"] = signal.getsignal(signal.SIGHUP)
        seen["term"] = signal.getsignal(signal.SIGTERM)
        return 0

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        assert cli.main(_command(monkeypatch, run)) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert seen["hup"] is signal.SIG_IGN and callable(seen["term"])


def test_off_the_main_thread_no_handlers_are_installed(monkeypatch):
    import threading

    seen, codes = {}, []

    def run(args):
        seen["term"] = signal.getsignal(signal.SIGTERM)
        return 0

    argv = _command(monkeypatch, run)
    worker = threading.Thread(target=lambda: codes.append(cli.main(argv)))
    worker.start()
    worker.join()
    assert codes == [0] and seen["term"] is signal.getsignal(signal.SIGTERM)


# -- successful runs through the new readers and writers ------------------------------------------

def test_parse_writes_preview_and_exact_labels_with_the_umask_mode(tmp_path, monkeypatch, capsys):
    from PIL import Image

    portrait(tmp_path)
    good_output("labels.png")(tmp_path)  # an earlier label map is replaced
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert cli.main(["parse", "--image", "portrait.png", "--size", "64", "-o", "prev.jpg",
                         "--labels", "labels.png"]) == 0
    finally:
        os.umask(old)
    assert "wrote prev.jpg and labels.png" in capsys.readouterr().out
    with Image.open(tmp_path / "prev.jpg") as preview:
        assert preview.format == "JPEG" and preview.size == (64, 64)
    with Image.open(tmp_path / "labels.png") as labels:
        values = np.asarray(labels)
    assert labels.mode == "L" and values.shape == (64, 64) and 0 < values.max() <= 18
    for name in ("prev.jpg", "labels.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png", "portrait.png", "prev.jpg"]


def test_talk_renders_an_exif_rotated_photo_upright(tmp_path, monkeypatch):
    from PIL import Image

    from segtalker_core.video_io import probe_video

    image = Image.open(EXAMPLES / "portrait.png").convert("RGB").resize((300, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to show": stored lying on its side
    image.transpose(Image.ROTATE_90).save(tmp_path / "phone.jpg", quality=92, exif=exif)
    speech(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["talk", "--image", "phone.jpg", "--audio", "speech.wav", "-q", "--size", "64",
                     "-o", "out.mp4"]) == 0
    info = probe_video(tmp_path / "out.mp4")
    assert (info.width, info.height) == (300, 400)


# -- signals to a real run: nothing lost, nothing half-written ------------------------------------

@pytest.fixture(scope="module")
def long_run_folder(tmp_path_factory):
    """The portrait and 30 s of a voiced synthetic sound: a talk run that writes for a while."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("long")
    portrait(folder)
    rate = 16000
    t = np.arange(30 * rate) / rate
    syllables = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))  # four "syllables" a second
    voice = np.sin(2 * np.pi * 140 * t) + 0.3 * np.random.default_rng(0).standard_normal(len(t))
    sf.write(str(folder / "long.wav"), (0.3 * syllables * voice).astype(np.float32), rate)
    return folder


def _default_signals() -> None:
    # The child must see SIGINT and SIGHUP at their defaults even if this test runs in the
    # background or under nohup (which ignore them, and a child inherits that).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _talk_process(folder: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "segtalker_core", "talk", "--image", "portrait.png", "--audio",
            "long.wav", "--phonemes", "acoustic", "--size", "64", "-q", "-o", "out/out.mp4"]
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    return subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals)


def _wait_until_writing(out: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the run's temporary output holds encoded data (so the signal lands mid-write)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(PARTIAL_MARK in p.name and p.stat().st_size > 0 for p in out.iterdir()):
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing: {proc.communicate()[1]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never started writing (no .partial- file with data appeared)")


@pytest.mark.parametrize("signum,code,words", [
    (signal.SIGINT, 130, "error: interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "error: stopped by SIGTERM"),
    (signal.SIGHUP, 129, "error: stopped by SIGHUP"),
    (signal.SIGKILL, -signal.SIGKILL, None),
], ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_signal_during_talk_keeps_the_earlier_output(long_run_folder, signum, code, words):
    out = long_run_folder / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "out.mp4").write_bytes(GOOD_OUTPUT)
    proc = _talk_process(long_run_folder)
    try:
        _wait_until_writing(out, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert (out / "out.mp4").read_bytes() == GOOD_OUTPUT
    left = sorted(p.name for p in out.iterdir() if p.name != "out.mp4")
    if words is None:  # kill -9: no cleanup runs; only the temporary file may remain
        assert all(PARTIAL_MARK in name for name in left), left
    else:
        assert left == [], left
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1].startswith(words) and "Traceback" not in err, err
