"""The hostile-input table: the CLI run as a careless or hostile user would, case by case.

    .venv/bin/python tools/hostile_inputs.py                 # every case, one process each
    .venv/bin/python tools/hostile_inputs.py -k swap -k fps  # cases whose name contains a word
    .venv/bin/python tools/hostile_inputs.py --list

Each case runs ``python -m segtalker_core ...`` in a fresh folder of its own, with input files
made from ``examples/`` (portrait, speech, video) and damaged on purpose. The table printed is

    case | exit code | message (last stderr line) | files left | verdict

where *files left* lists what is in the folder afterwards, marking pre-existing files that are
byte-identical ("=") and anything new ("+", with its size). A case passes when the exit code, the
message and the files left are what the case expects: a refused run leaves every input and any
earlier output untouched and no temporary (``.partial-``) file, except after ``kill -9``, where a
temporary file may remain but nothing at the output's name.

The same table is run by ``tests/test_hostile_inputs.py`` (each case a test), so the script and the
tests cannot disagree. Exit status: 0 when every selected case passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:  # the setups and checks read files with the pack's own code
    sys.path.insert(0, str(REPO_DIR))
EXAMPLES = REPO_DIR / "examples"
PARTIAL_MARK = ".partial-"

Setup = Callable[[Path], None]
Check = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class Case:
    """One hostile run. Paths in ``argv`` are relative to the case's folder (its working dir)."""

    name: str
    argv: tuple[str, ...]
    setup: Setup  # makes the input files in the folder
    code: int = 2  # expected exit code
    message: str = ""  # regex the last stderr line must match ("" = anything)
    stderr: str = ""  # regex that must match somewhere in stderr (a warning of a run that goes on)
    makes: tuple[str, ...] = ()  # files that must exist afterwards (new or replaced)
    signal_after_start: int | None = None  # sent once a .partial- file appears
    check: Check | None = None  # more checks on the folder; returns a failure text or None
    partial_may_remain: bool = False  # only after SIGKILL
    timeout: float = 300.0
    tmpfs: tuple[str, str, bool] | None = None  # (folder, size, read_only) mounted for the run


class NotApplicable(Exception):
    """The case cannot run on this machine (e.g. mounting a tmpfs needs root)."""


@dataclass
class Outcome:
    case: Case
    code: int | None
    message: str
    files: str
    failures: list[str] = field(default_factory=list)
    not_applicable: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures


# -- input files --------------------------------------------------------------------------------

def _copy(name: str, as_name: str | None = None) -> Setup:
    def setup(folder: Path) -> None:
        shutil.copyfile(EXAMPLES / name, folder / (as_name or name))
    return setup


def _all(*setups: Setup) -> Setup:
    def setup(folder: Path) -> None:
        for step in setups:
            step(folder)
    return setup


def _speech(seconds: float, name: str = "speech.wav", rate: int | None = None,
            damage: str | None = None) -> Setup:
    """The example speech cut to ``seconds`` (looped when longer), optionally damaged."""
    def setup(folder: Path) -> None:
        import soundfile as sf

        wave, sr = sf.read(str(EXAMPLES / "speech.wav"), dtype="float32", always_2d=False)
        n = int(seconds * sr)
        wave = np.resize(wave, n).astype(np.float32)
        if damage == "nan-some":
            wave[::50] = np.nan
        elif damage == "nan-all":
            wave[:] = np.nan
        elif damage == "inf-some":
            wave[::97] = np.inf
        sf.write(str(folder / name), wave, rate or sr, subtype="FLOAT")
    return setup


def _text(name: str, content: str) -> Setup:
    def setup(folder: Path) -> None:
        (folder / name).write_text(content)
    return setup


def _good_output(name: str) -> Setup:
    """A previous good result at the output's name; a failed or stopped run must keep it."""
    def setup(folder: Path) -> None:
        (folder / name).write_bytes(b"previous good output " * 100)
    return setup


def _truncated(name: str, source: str, keep: float) -> Setup:
    def setup(folder: Path) -> None:
        data = (EXAMPLES / source).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return setup


def _jpeg(name: str, exif_orientation: int | None = None, size: tuple[int, int] | None = None) -> Setup:
    """The portrait as a JPEG, optionally stored sideways with an EXIF orientation tag."""
    def setup(folder: Path) -> None:
        from PIL import Image

        image = Image.open(EXAMPLES / "portrait.png").convert("RGB")
        if size is not None:
            image = image.resize(size, Image.LANCZOS)
        exif = Image.Exif()
        if exif_orientation is not None:
            # Orientation 6 = "rotate 90 CW to display": store the pixels turned 90 CCW.
            image = image.transpose(Image.ROTATE_90)
            exif[0x0112] = exif_orientation
        image.save(folder / name, "JPEG", quality=92, exif=exif)
    return setup


def _symlink(link: str, target: str) -> Setup:
    def setup(folder: Path) -> None:
        os.symlink(target, folder / link)
    return setup


def _hardlink(link: str, target: str) -> Setup:
    def setup(folder: Path) -> None:
        os.link(folder / target, folder / link)
    return setup


def _folder(name: str) -> Setup:
    def setup(folder: Path) -> None:
        (folder / name).mkdir()
    return setup


def _pth_state_dict(name: str, kind: str) -> Setup:
    """Small ``.pth`` files: a BiSeNet-keyed file with a wrong shape, or one with NaN weights."""
    def setup(folder: Path) -> None:
        import torch

        from segtalker_core.parsing.bisenet import build_bisenet  # the real layout, random weights

        state = build_bisenet().state_dict()
        key = next(k for k, v in state.items() if v.ndim == 4)
        if kind == "wrong-shape":
            state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
        elif kind == "nan":
            state[key] = torch.full_like(state[key], float("nan"))
        torch.save(state, folder / name)
    return setup


def _mount_tmpfs(folder: Path, size: str, read_only: bool) -> None:
    """A small (or read-only) file system at ``folder``: a disk that fills up, a target that
    cannot be written, for real rather than simulated. Needs root."""
    folder.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise NotApplicable("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise NotApplicable(f"mount -t tmpfs refused: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


PORTRAIT = _copy("portrait.png")
# Short clips keep the table fast (each case is a whole CLI run): 0.4 s is 10 frames at 25 fps,
# enough for a run that must succeed; the stopped runs need one that is still writing when the
# signal lands (their first frame is written after ~1 s; 8 s are 200 frames).
SPEECH = _speech(0.4)
LONG_SPEECH = _speech(8, "long.wav")
VIDEO = _copy("video.mp4")
TALK_IMAGE = ("talk", "--image", "portrait.png", "--audio", "speech.wav", "-q")


def _faststart_clip_cut(name: str, keep: float) -> Setup:
    """The example video rewritten with its index first (as the pack, phones and most web
    exports write it), then cut: the index survives, the later frames are gone."""
    def setup(folder: Path) -> None:
        from segtalker_core.video_io import read_video, write_video

        frames, fps = read_video(EXAMPLES / "video.mp4")
        whole = folder / ("whole-" + name)
        write_video(whole, frames, fps)
        data = whole.read_bytes()
        whole.unlink()
        (folder / name).write_bytes(data[: int(len(data) * keep)])
    return setup


def _sideways_clip(name: str) -> Setup:
    """A 400x300 clip stored lying on its side, with the display matrix that turns it upright to
    300x400 (what a phone held upright records)."""
    def setup(folder: Path) -> None:
        import av

        from segtalker_core.video_io import read_video

        frames, _ = read_video(EXAMPLES / "video.mp4", max_frames=25)
        upright = frames[:, :, 50:350]  # 400 tall, 300 wide
        stored = np.ascontiguousarray(np.rot90(upright, k=-1, axes=(1, 2)))  # turned 90 clockwise
        with av.open(str(folder / name), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = stored.shape[2], stored.shape[1], "yuv420p"
            stream.set_display_rotation(90)  # counter-clockwise: undoes the stored clockwise turn
            for frame in stored:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return setup


def _clip_with_sound(folder: Path) -> None:
    """``clip.mp4``: 10 frames of the example video with the first 0.4 s of the speech."""
    import soundfile as sf

    from segtalker_core.video_io import read_video, write_video

    frames, fps = read_video(EXAMPLES / "video.mp4", max_frames=10)
    wave, sr = sf.read(str(EXAMPLES / "speech.wav"), dtype="float32")
    write_video(folder / "clip.mp4", frames, fps, audio=wave[: sr * 2 // 5][None], sample_rate=sr)


# -- checks on the folder -------------------------------------------------------------------------

def _video_size(name: str, width: int, height: int) -> Check:
    def check(folder: Path) -> str | None:
        from segtalker_core.video_io import probe_video

        info = probe_video(folder / name)
        if (info.width, info.height) != (width, height):
            return f"{name} is {info.width}x{info.height}, expected {width}x{height}"
        return None
    return check


def _upright(name: str) -> Check:
    """The talking portrait from a sideways-stored EXIF photo must be portrait-shaped like the
    original (taller than wide for the 3:4 example), not lying on its side."""
    def check(folder: Path) -> str | None:
        from segtalker_core.video_io import probe_video

        info = probe_video(folder / name)
        if info.height <= info.width:
            return f"{name} is {info.width}x{info.height}: sideways (EXIF orientation ignored)"
        return None
    return check


def _container(name: str, magic: bytes, at: int = 0) -> Check:
    def check(folder: Path) -> str | None:
        head = (folder / name).read_bytes()[: at + len(magic)]
        if head[at:] != magic:
            return f"{name} does not start with {magic!r} at byte {at}: wrong container for its name"
        return None
    return check


def _mode(name: str, mode: int) -> Check:
    def check(folder: Path) -> str | None:
        got = (folder / name).stat().st_mode & 0o777
        return None if got == mode else f"{name} has mode {got:o}, expected {mode:o}"
    return check


def _same_frames(a: str, b: str) -> Check:
    def check(folder: Path) -> str | None:
        from segtalker_core.video_io import probe_video

        fa, fb = probe_video(folder / a).frame_count, probe_video(folder / b).frame_count
        return None if fa == fb else f"{a} has {fa} frames, {b} {fb}: the audio lengths disagree"
    return check


# -- the table ----------------------------------------------------------------------------------

CASES: tuple[Case, ...] = (
    # Outputs that would destroy an input.
    Case("talk -o is the --image", (*TALK_IMAGE[:5], "-o", "portrait.png"), _all(PORTRAIT, SPEECH),
         message=r"same file as the --image"),
    Case("talk -o is the --audio", ("talk", "--image", "portrait.png", "--audio", "speech.wav",
                                    "-o", "speech.wav"), _all(PORTRAIT, SPEECH),
         message=r"same file as the --audio"),
    Case("talk -o is the --video", ("talk", "--video", "video.mp4", "--audio", "speech.wav",
                                    "-o", "video.mp4"), _all(VIDEO, SPEECH),
         message=r"same file as the --video"),
    Case("talk -o is a symlink to the --image", (*TALK_IMAGE, "-o", "link.png"),
         _all(PORTRAIT, SPEECH, _symlink("link.png", "portrait.png")), message=r"same file"),
    Case("talk -o is a hard link to the --audio", (*TALK_IMAGE, "-o", "hard.wav"),
         _all(PORTRAIT, SPEECH, _hardlink("hard.wav", "speech.wav")), message=r"same file"),
    Case("talk -o is a --swap reference", (*TALK_IMAGE, "--swap", "lips=ref.png", "-o", "ref.png"),
         _all(PORTRAIT, SPEECH, _copy("reference_face.png", "ref.png")),
         message=r"same file as the --swap lips reference"),
    Case("convert X.pth -o X.pth", ("convert", "net.pth", "-o", "net.pth"),
         _pth_state_dict("net.pth", "good"), message=r"same file"),
    Case("parse --labels is the --image", ("parse", "--image", "portrait.png", "-o", "prev.png",
                                           "--labels", "portrait.png"), PORTRAIT, message=r"same file"),
    # Stopped or failing runs keep an earlier good output and leave no temporary file.
    Case("Ctrl-C during talk keeps the old output", (*TALK_IMAGE[:3], "--audio", "long.wav", "-q",
                                                     "-o", "out.mp4"),
         _all(PORTRAIT, LONG_SPEECH, _good_output("out.mp4")), code=130,
         message=r"interrupt", signal_after_start=signal.SIGINT),
    Case("SIGTERM during talk keeps the old output", (*TALK_IMAGE[:3], "--audio", "long.wav", "-q",
                                                      "-o", "out.mp4"),
         _all(PORTRAIT, LONG_SPEECH, _good_output("out.mp4")), code=143,
         message=r"SIGTERM|terminated", signal_after_start=signal.SIGTERM),
    Case("SIGHUP during talk keeps the old output", (*TALK_IMAGE[:3], "--audio", "long.wav", "-q",
                                                     "-o", "out.mp4"),
         _all(PORTRAIT, LONG_SPEECH, _good_output("out.mp4")), code=129,
         message=r"SIGHUP|hang", signal_after_start=signal.SIGHUP),
    Case("kill -9 during talk: nothing at the output's name", (*TALK_IMAGE[:3], "--audio", "long.wav",
                                                              "-q", "-o", "out.mp4"),
         _all(PORTRAIT, LONG_SPEECH), code=-signal.SIGKILL,
         signal_after_start=signal.SIGKILL, partial_may_remain=True),
    # Output paths that cannot be written.
    Case("talk -o is a folder", (*TALK_IMAGE, "-o", "outdir"), _all(PORTRAIT, SPEECH, _folder("outdir")),
         message=r"folder"),
    Case("talk -o is empty", (*TALK_IMAGE, "-o", ""), _all(PORTRAIT, SPEECH), message=r"empty"),
    Case("talk -o in a missing folder", (*TALK_IMAGE, "-o", "missing/out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"does not exist"),
    Case("talk -o /dev/full", (*TALK_IMAGE, "-o", "/dev/full"), _all(PORTRAIT, SPEECH),
         message=r"not a regular file"),
    Case("talk -o on a disk that fills up", (*TALK_IMAGE[:3], "--audio", "long.wav", "-q", "-o",
                                              "small/out.mp4"),
         _all(PORTRAIT, LONG_SPEECH), message=r"(disk|space).*full|full.*disk|no space",
         tmpfs=("small", "100k", False)),
    Case("talk -o on a read-only file system", (*TALK_IMAGE, "-o", "ro/out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"read-only", tmpfs=("ro", "1m", True)),
    Case("talk -o .gif", (*TALK_IMAGE, "-o", "out.gif"), _all(PORTRAIT, SPEECH), message=r"\.mp4"),
    Case("talk -o .webm is WebM", (*TALK_IMAGE, "-o", "out.webm"), _all(PORTRAIT, SPEECH), code=0,
         makes=("out.webm",), check=_container("out.webm", b"\x1a\x45\xdf\xa3")),
    Case("talk -o .mov is QuickTime", (*TALK_IMAGE, "-o", "out.mov"), _all(PORTRAIT, SPEECH), code=0,
         makes=("out.mov",), check=_container("out.mov", b"ftypqt", at=4)),
    Case("talk output mode follows the umask", (*TALK_IMAGE, "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         code=0, makes=("out.mp4",), check=_mode("out.mp4", 0o644)),
    Case("parse -o unknown image extension", ("parse", "--image", "portrait.png", "-o", "prev.xyz"),
         PORTRAIT, message=r"\.png"),
    Case("parse --labels to a missing folder", ("parse", "--image", "portrait.png", "-o", "prev.png",
                                               "--labels", "missing/labels.png"), PORTRAIT,
         message=r"does not exist"),
    Case("parse --labels as JPEG", ("parse", "--image", "portrait.png", "-o", "prev.png", "--labels",
                                    "labels.jpg"), PORTRAIT, message=r"PNG"),
    # Inputs that are not what they claim.
    Case("--image is a text file", (*TALK_IMAGE[:2], "notes.png", *TALK_IMAGE[3:], "-o", "out.mp4"),
         _all(_text("notes.png", "not an image"), SPEECH), message=r"notes\.png"),
    Case("--image is missing", (*TALK_IMAGE, "-o", "out.mp4"), SPEECH, message=r"portrait\.png"),
    Case("--image is a truncated JPEG", (*TALK_IMAGE[:2], "cut.jpg", *TALK_IMAGE[3:], "-o", "out.mp4"),
         _all(_jpeg("whole.jpg"), lambda f: (f / "cut.jpg").write_bytes((f / "whole.jpg").read_bytes()[:20000]),
              SPEECH), message=r"cut\.jpg.*(truncated|corrupt)"),
    Case("--audio is a text file", (*TALK_IMAGE[:4], "notes.wav", "-q", "-o", "out.mp4"),
         _all(PORTRAIT, _text("notes.wav", "not audio")), message=r"notes\.wav"),
    Case("--video cut short: the frames that decode, with a warning",
         ("talk", "--video", "cut.mp4", "--audio", "speech.wav", "-q", "-o", "out.mp4"),
         _all(_faststart_clip_cut("cut.mp4", 0.6), _speech(2.0)), code=0, makes=("out.mp4",),
         stderr=r"cut\.mp4.*truncated or damaged: \d+ of its \d+ frames decoded"),
    Case("--video with its index cut off", ("talk", "--video", "cut.mp4", "--audio", "speech.wav", "-q",
                                            "-o", "out.mp4"),
         _all(_truncated("cut.mp4", "video.mp4", 0.6), SPEECH), message=r"cut\.mp4.*truncated or corrupt"),
    Case("a phone video stored sideways is dubbed upright",
         ("talk", "--video", "phone.mp4", "--audio", "speech.wav", "-q", "-o", "out.mp4"),
         _all(_sideways_clip("phone.mp4"), SPEECH), code=0, makes=("out.mp4",),
         check=_video_size("out.mp4", 300, 400)),
    Case("--parser is a text file", (*TALK_IMAGE, "--parser", "notes.pth", "-o", "out.mp4"),
         _all(PORTRAIT, SPEECH, _text("notes.pth", "not a checkpoint")), message=r"notes\.pth"),
    Case("--parser has NaN weights", (*TALK_IMAGE, "--parser", "nan.pth", "-o", "out.mp4"),
         _all(PORTRAIT, SPEECH, _pth_state_dict("nan.pth", "nan")), message=r"nan\.pth.*(NaN|inf)"),
    Case("convert a file with a wrong tensor shape", ("convert", "bad.pth", "-o", "bad.safetensors"),
         _pth_state_dict("bad.pth", "wrong-shape"), message=r"shape"),
    Case("convert a file with NaN weights", ("convert", "nan.pth", "-o", "nan.safetensors"),
         _pth_state_dict("nan.pth", "nan"), message=r"(NaN|inf)"),
    Case("convert writes mode 0644", ("convert", "net.pth", "-o", "net.safetensors"),
         _pth_state_dict("net.pth", "good"), code=0, makes=("net.safetensors",),
         check=_mode("net.safetensors", 0o644)),
    Case("--swap without =IMAGE", (*TALK_IMAGE, "--swap", "lips", "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"--swap"),
    Case("--swap reference missing", (*TALK_IMAGE, "--swap", "lips=nope.png", "-o", "out.mp4"),
         _all(PORTRAIT, SPEECH), message=r"nope\.png"),
    Case("--swap unknown region", (*TALK_IMAGE, "--swap", "wings=portrait.png", "-o", "out.mp4"),
         _all(PORTRAIT, SPEECH), message=r"wings"),
    # Options out of range.
    Case("--fps 0", (*TALK_IMAGE, "--fps", "0", "-o", "out.mp4"), _all(PORTRAIT, SPEECH), message=r"fps"),
    Case("--fps 0.001", (*TALK_IMAGE, "--fps", "0.001", "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"fps"),
    Case("--fps 1000", (*TALK_IMAGE, "--fps", "1000", "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"fps"),
    Case("--size 100000", (*TALK_IMAGE, "--size", "100000", "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"size"),
    # 0 is "automatic"; a negative batch is the refused one.
    Case("--batch-size -1", (*TALK_IMAGE, "--batch-size", "-1", "-o", "out.mp4"), _all(PORTRAIT, SPEECH),
         message=r"batch"),
    Case("audio at 1 Hz", (*TALK_IMAGE, "-o", "out.mp4"), _all(PORTRAIT, _speech(1.0, rate=1)),
         message=r"(sample rate|Hz)"),
    Case("audio with some NaN samples", (*TALK_IMAGE, "-o", "out.mp4"),
         _all(PORTRAIT, _speech(0.4, damage="nan-some")), code=0, makes=("out.mp4",)),
    Case("audio that is all NaN", (*TALK_IMAGE, "-o", "out.mp4"),
         _all(PORTRAIT, _speech(1.0, damage="nan-all")), message=r"speech\.wav"),
    # Orientation and size.
    Case("EXIF-rotated phone photo renders upright", (*TALK_IMAGE[:2], "phone.jpg", *TALK_IMAGE[3:], "-o",
                                                      "out.mp4"),
         _all(_jpeg("phone.jpg", exif_orientation=6, size=(384, 512)), SPEECH), code=0, makes=("out.mp4",),
         check=_upright("out.mp4")),
    Case("an 8000x8000 portrait is capped at --max-size", (*TALK_IMAGE[:2], "huge.jpg", *TALK_IMAGE[3:],
                                                          "-o", "out.mp4"),
         _all(_jpeg("huge.jpg", size=(8000, 8000)), _speech(0.12)), code=0, makes=("out.mp4",),
         check=_video_size("out.mp4", 3840, 3840)),
    # A video given as the speech keeps the speech's length (AAC priming trimmed).
    Case("a video as --audio gives the frames its sound lasts",
         ("talk", "--image", "portrait.png", "--audio", "clip.mp4", "-q", "-o", "out.mp4"),
         _all(PORTRAIT, lambda f: _clip_with_sound(f)), code=0, makes=("out.mp4",),
         check=_same_frames("out.mp4", "clip.mp4")),
)


# -- running ------------------------------------------------------------------------------------

def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: _digest(p) for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


def _wait_for_partial(folder: Path, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(PARTIAL_MARK in p.name and p.stat().st_size > 0 for p in folder.iterdir()):
            return True
        time.sleep(0.05)
    return False


def run_case(case: Case, root: Path) -> Outcome:
    """Run ``case`` in a new folder under ``root`` and judge what it did."""
    folder = Path(tempfile.mkdtemp(prefix=re.sub(r"\W+", "_", case.name)[:40] + "-", dir=root))
    case.setup(folder)
    if case.tmpfs is None:
        return _run_in(case, folder)
    mount_point = folder / case.tmpfs[0]
    try:
        _mount_tmpfs(mount_point, case.tmpfs[1], case.tmpfs[2])
    except NotApplicable as why:
        return Outcome(case, None, "", "", not_applicable=str(why))
    try:
        outcome = _run_in(case, folder)
        if case.tmpfs[2] is False:
            left = sorted(p.name for p in mount_point.iterdir())
            if left:
                outcome.failures.append(f"left on the full disk: {', '.join(left)}")
            outcome.files += f" {case.tmpfs[0]}/[{' '.join(left)}]"
        return outcome
    finally:
        _unmount(mount_point)


def _run_in(case: Case, folder: Path) -> Outcome:
    before = _snapshot(folder)
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR)}
    cmd = [sys.executable, "-m", "segtalker_core", *case.argv]
    old_umask = os.umask(0o022)  # the child inherits it: "mode follows the umask" is 0644
    try:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.umask(old_umask)
    failures: list[str] = []
    if case.signal_after_start is not None:
        if _wait_for_partial(folder, proc, case.timeout):
            proc.send_signal(case.signal_after_start)
        else:
            failures.append("the run never started writing (no .partial- file appeared)")
    try:
        _, stderr = proc.communicate(timeout=case.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        failures.append(f"timed out after {case.timeout:g} s")
    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    after = _snapshot(folder)
    failures += _judge(case, proc.returncode, message, lines, before, after, folder)
    return Outcome(case, proc.returncode, message, _files_left(before, after), failures)


def _judge(case: Case, code: int | None, message: str, lines: list[str], before: dict[str, str],
           after: dict[str, str], folder: Path) -> list[str]:
    failures = []
    if code != case.code:
        failures.append(f"exit code {code}, expected {case.code}")
    if case.code == 2:
        if not message.startswith("error: "):
            failures.append("the last stderr line is not 'error: ...'")
        if any(line.startswith("Traceback") for line in lines):
            failures.append("a traceback was printed")
    if case.message and not re.search(case.message, message, re.IGNORECASE):
        failures.append(f"message does not match /{case.message}/")
    if case.stderr and not re.search(case.stderr, "\n".join(lines), re.IGNORECASE):
        failures.append(f"no stderr line matches /{case.stderr}/")
    for name, digest in before.items():
        if name in case.makes:
            continue
        if after.get(name) != digest:
            failures.append(f"{name} was {'changed' if name in after else 'deleted'}")
    for name in after.keys() - before.keys():
        if case.tmpfs is not None and name == case.tmpfs[0]:
            continue
        if PARTIAL_MARK in name:
            if not case.partial_may_remain:
                failures.append(f"temporary file {name} was left")
        elif name not in case.makes:
            failures.append(f"unexpected new file {name}")
    for name in case.makes:
        if name not in after:
            failures.append(f"{name} was not written")
    if case.partial_may_remain:
        output = case.argv[case.argv.index("-o") + 1]
        if output in after and after[output] != before.get(output):
            failures.append(f"a file appeared at the output's name {output} after kill -9")
    if not failures and case.check is not None:
        problem = case.check(folder)
        if problem:
            failures.append(problem)
    return failures


def _files_left(before: dict[str, str], after: dict[str, str]) -> str:
    parts = []
    for name in sorted(after):
        if name in before and before[name] == after[name]:
            parts.append(f"={name}")
        elif name in before:
            parts.append(f"~{name}")
        else:
            parts.append(f"+{name}")
    parts += [f"-{name}" for name in sorted(before.keys() - after.keys())]
    return " ".join(parts)


def select(words: list[str]) -> list[Case]:
    if not words:
        return list(CASES)
    return [c for c in CASES if any(w.lower() in c.name.lower() for w in words)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", default=[], help="run cases whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--keep", action="store_true", help="keep the case folders (printed)")
    args = parser.parse_args(argv)
    cases = select(args.k)
    if args.list:
        for case in cases:
            print(case.name)
        return 0
    root = Path(tempfile.mkdtemp(prefix="segtalker-hostile-"))
    outcomes = []
    print("| case | exit | message | files left | verdict |")
    print("|---|---|---|---|---|")
    try:
        for case in cases:
            outcome = run_case(case, root)
            outcomes.append(outcome)
            if outcome.not_applicable:
                print(f"| {case.name} | - | - | - | n/a: {outcome.not_applicable} |", flush=True)
                continue
            verdict = "ok" if outcome.passed else "FAIL: " + "; ".join(outcome.failures)
            print(f"| {case.name} | {outcome.code} | {outcome.message[:150]} | {outcome.files} | "
                  f"{verdict} |", flush=True)
    finally:
        if args.keep:
            print(f"case folders kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    failed = [o for o in outcomes if not o.passed and not o.not_applicable]
    skipped = sum(1 for o in outcomes if o.not_applicable)
    print(f"\n{len(outcomes) - len(failed) - skipped} of {len(outcomes)} cases as expected"
          + (f", {skipped} not applicable here" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
