"""What the pack does when a dependency is not installed, on any Python.

Every requirement has wheels for Python 3.10-3.13 (measured for 3.13: ``.ci/run``'s second leg
installs requirements*.txt into ``.venv313``), except mediapipe 0.10.14, which the pack no longer
needs and the tests use only as the face models' reference. The others can still be missing where
a platform has no wheel (pocketsphinx is a compiled extension) or a user leaves them out
(tensorboard is a development requirement): each feature that needs one then says so and what
to do, or falls back, and these tests hold that. None needs the module really uninstalled: a
``None`` in ``sys.modules`` makes its import fail exactly as a missing package does.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "examples" / "portrait.png"
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def _block(monkeypatch, *names: str) -> None:
    """Make ``import name`` (and its submodules) fail with ImportError for this test."""
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture
def fresh_transcript_decoder():
    """The transcript's pocketsphinx decoder is cached per process: build it inside the test,
    and drop the test's outcome after it."""
    from segtalker_core.eval import transcript

    transcript._decoder.cache_clear()
    yield transcript
    transcript._decoder.cache_clear()


def test_transcript_alignment_without_pocketsphinx_says_it_needs_pocketsphinx(
        monkeypatch, fresh_transcript_decoder):
    _block(monkeypatch, "pocketsphinx")
    with pytest.raises(ValueError, match="transcript alignment needs pocketsphinx"):
        fresh_transcript_decoder.align_transcript(np.zeros(16000, np.float32), "hello there")


def test_phoneme_recogniser_without_pocketsphinx_is_unavailable_not_a_crash(monkeypatch):
    # Talk then falls back to the acoustic articulation (test_talk_acceptance proves the fallback).
    from segtalker_core.audio import PhonemeRecognizerUnavailable, phoneme_timeline

    _block(monkeypatch, "pocketsphinx")
    with pytest.raises(PhonemeRecognizerUnavailable, match="pocketsphinx is not installed"):
        phoneme_timeline(np.zeros(16000, np.float32))


def test_training_log_without_tensorboard_says_so_and_keeps_the_metrics(monkeypatch, tmp_path):
    import json

    from segtalker_core.train.run_log import RunLog

    _block(monkeypatch, "torch.utils.tensorboard", "tensorboard")
    log = RunLog(tmp_path, start_step=0, enabled=True)
    try:
        assert log.writer is None
        log.scalars(10, {"loss": 0.5}, "step 10/100 loss 0.5")
    finally:
        log.close()
    text = (tmp_path / "log.txt").read_text()
    assert "tensorboard is not installed (pip install tensorboard)" in text
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 10, "loss": 0.5}
    assert not (tmp_path / "tb").exists()


# A fresh interpreter in which mediapipe, TensorFlow, LiteRT and the tflite parser cannot be
# imported at all (the converter's packages; the runtime must need none of them): the nodes'
# modules import, and the portrait goes through detection, mesh and the built-in parser.
_NO_TFLITE_WORLD = r"""
import importlib.abc, sys
BLOCKED = ("mediapipe", "tensorflow", "tflite", "tflite_runtime", "ai_edge_litert", "jax")

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
sys.path.insert(0, sys.argv[1])
import cv2
import numpy as np
import torch
torch.set_num_threads(1)
import segtalker_core.pipeline, segtalker_core.cli
from segtalker_core.face.detect import FaceMeshDetector
from segtalker_core.parsing.landmark_parser import LandmarkParser
image = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
with FaceMeshDetector() as detector, LandmarkParser() as parser:
    faces = detector.detect(image)
    labels = parser.parse(image[None], faces[0].landmarks[None])
print(len(faces), faces[0].landmarks.shape[0], len(np.unique(labels)),
      sorted({m.split(".")[0] for m in sys.modules} & set(BLOCKED)))
"""


def test_the_runtime_needs_no_mediapipe_tensorflow_or_litert():
    done = subprocess.run([sys.executable, "-c", _NO_TFLITE_WORLD, str(REPO), str(PORTRAIT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    n_faces, n_points, n_labels, blocked_loaded = done.stdout.split(maxsplit=3)
    assert (n_faces, n_points) == ("1", "478")
    assert int(n_labels) >= 8  # background, skin, brows, eyes, nose, lips, hair, ...
    assert blocked_loaded.strip() == "[]"


def _requirements(path: Path, python: str) -> set[str]:
    """Lower-case project names that ``path`` installs on Python ``python`` (markers evaluated)."""
    from packaging.requirements import Requirement

    names = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"python_version": python}):
            names.add(req.name.lower())
    return names


@pytest.mark.parametrize("python", SUPPORTED)
def test_requirements_ask_for_mediapipe_only_where_it_has_wheels(python):
    """The pack's own requirements hold no mediapipe or TensorFlow on any supported Python; the
    test reference (requirements-dev) only where mediapipe 0.10.14 has wheels (<= 3.12), so
    ``pip install -r`` works on 3.13."""
    runtime = _requirements(REPO / "requirements.txt", python)
    assert not runtime & {"mediapipe", "tensorflow", "tflite", "tflite-runtime", "ai-edge-litert"}
    assert {"torch", "torchvision"}.isdisjoint(runtime)  # ComfyUI's torch stays untouched
    dev = _requirements(REPO / "requirements-dev.txt", python)
    assert ("mediapipe" in dev) == (python != "3.13")
