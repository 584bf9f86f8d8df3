"""A small real training dataset, built inside the test session.

Talking clips are rendered by the pack's built-in chain (``talk_file.talk_image_file``) from two
"speakers" -- the example portrait and the astronaut photo of scikit-image (Eileen Collins,
public domain), each with its own espeak-ng sentences (``tests/speech.py``) -- encoded to mp4
(H.264 + AAC) under ``SRC/<speaker>/``, then prepared through the real CLI::

    python -m segtalker_core prepare SRC OUT --size 128 --split-by clip --val-fraction 0.34

so every speaker has one held-out clip in ``val`` and the rest in ``train``. The mouth in the
clips moves with the speech (the built-in rig is driven by the phonemes), which is what a
Seg-SyncNet (in sync vs shifted) and a TSG (mouth area vs audio) can learn from.

Usage::

    from train_data import build_prepared_dataset
    root = build_prepared_dataset(tmp_folder)      # -> the prepared folder (OUT)

``tests/conftest.py`` has the session fixture ``prepared_dataset`` that builds it once.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
PORTRAIT = REPO_DIR / "examples" / "portrait.png"

CROP_SIZE = 128  # of the prepared crops (tests train at 64..128)
RENDER_CROP = 128  # crop the built-in chain renders the face at (small: fast)
FRAME_SIZE = 256  # side of the rendered video frames
SPEECH_RATE = 165  # words per minute

# Each speaker's sentences (2-3 s each, about 375 frames in all), full of lip closures (b, p,
# m) and open vowels. The size is a trade: the face tracking and parsing of prepare cost about
# 0.1 s of CPU per frame and the build should stay near 40 s, while a small Seg-SyncNet probe
# (400 steps) reached 0.46-0.70 held-out accuracy on clips of two thirds this length and
# 0.63-0.79 on these. Which clip of a speaker is in val follows from the split's hash rank
# (splits.py); tests read the split from the index.
CLIPS: dict[str, tuple[str, ...]] = {
    "portrait": (
        "Papa made a map of the bay by the mill.",
        "We will meet you by the river when the rain stops.",
        "Bob may bake a big apple pie.",
    ),
    "astronaut": (
        "Please bring me the blue box from the kitchen.",
        "Mama and papa bought a boat.",
        "Open wide and say ah, then shut your mouth.",
    ),
}


@dataclass(frozen=True)
class BuiltDataset:
    src: Path  # the rendered mp4s, SRC/<speaker>/<n>.mp4
    root: Path  # the prepared folder


def speaker_image(speaker: str) -> np.ndarray:
    """``[FRAME_SIZE, FRAME_SIZE, 3]`` uint8 portrait of a test speaker."""
    import cv2

    if speaker == "portrait":
        from segtalker_core.image_files import read_image

        image = read_image(PORTRAIT)
    elif speaker == "astronaut":
        import skimage.data

        image = skimage.data.astronaut()[20:320, 60:360]  # the head and shoulders, square
    else:
        raise ValueError(f"unknown test speaker {speaker!r}")
    return cv2.resize(np.ascontiguousarray(image), (FRAME_SIZE, FRAME_SIZE),
                      interpolation=cv2.INTER_AREA)


def render_clip(image: np.ndarray, sentence: str, path: Path, seed: int = 0) -> Path:
    """One talking mp4 (25 fps, speech as AAC) of ``image`` saying ``sentence``."""
    import torch

    from segtalker_core import talk_file
    from speech import speak_wave

    wave, rate = speak_wave(sentence, rate=SPEECH_RATE)
    audio = {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}
    # Closed lips at rest: both speakers smile with their teeth showing, and a portrait keeps its
    # own mouth in the silences around each sentence -- open while the mel is quiet, which the
    # checks that read frame/mel alignment off the mouth following the loudness cannot use.
    settings = talk_file.TalkSettings(crop_size=RENDER_CROP, seed=seed, own_rest=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    talk_file.talk_image_file(image, audio, path, fps=25.0, settings=settings)
    return path


def render_sources(src: Path) -> list[Path]:
    """Every clip of :data:`CLIPS` under ``src/<speaker>/<n>.mp4``."""
    paths = []
    for speaker, sentences in CLIPS.items():
        image = speaker_image(speaker)
        for n, sentence in enumerate(sentences):
            paths.append(render_clip(image, sentence, src / speaker / f"{n}.mp4", seed=n))
    return paths


def prepare_command(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segtalker_core", "prepare", str(src), str(out),
            "--size", str(CROP_SIZE), "--split-by", "clip", "--val-fraction", "0.34", "-q",
            *extra]


def run_prepare(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The CLI, in a child process as a user runs it (stderr captured)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_DIR))
    return subprocess.run(prepare_command(src, out, *extra), cwd=REPO_DIR, env=env,
                          capture_output=True, text=True, timeout=600)


def run_prepare_here(src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The CLI's ``main`` in this process (no interpreter start-up): the exit code, and stderr
    with the ``segtalker`` log lines as the CLI prints them."""
    import contextlib
    import io
    import logging

    from segtalker_core.cli import main

    stderr = io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("segtalker")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stderr(stderr):
            code = main(prepare_command(src, out, *extra)[3:])
    finally:
        logger.removeHandler(handler)
    return subprocess.CompletedProcess(args=extra, returncode=code, stderr=stderr.getvalue())


def source_folder(root: Path) -> Path:
    """The rendered mp4s a prepared folder of :func:`build_prepared_dataset` was made from."""
    return Path(root).parent / "src"


def build_prepared_dataset(folder: Path) -> BuiltDataset:
    """Render the clips into ``folder/src`` and prepare them into ``folder/prepared`` (two
    worker processes: the test machines have two cores)."""
    src, out = folder / "src", folder / "prepared"
    render_sources(src)
    done = run_prepare(src, out, "--workers", "2")
    if done.returncode != 0:
        raise RuntimeError(f"prepare failed (exit {done.returncode}):\n{done.stderr}")
    return BuiltDataset(src=src, root=out)
