"""Cold start of ``talk``: the numpy stand-ins for ``scipy.signal`` give its results, and the talk
path does not import the heavy modules it no longer needs (scipy.signal cost ~0.3 s and 38 MiB
of every start; matplotlib came in through mediapipe's ``solutions``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segtalker_core.audio import coarticulation, mel

ROOT = Path(__file__).resolve().parents[1]


def test_hann_window_equals_scipys_periodic_hann():
    import scipy.signal

    expected = scipy.signal.get_window("hann", mel.WIN, fftbins=True).astype(np.float64)
    assert mel._hann().dtype == np.float64 and mel._hann().shape == (mel.WIN,)
    np.testing.assert_array_equal(mel._hann(), expected)


@pytest.mark.parametrize("frames", [1, 2, 37, 400])
def test_decaying_sum_equals_lfilter_first_order(frames):
    import scipy.signal

    rng = np.random.default_rng(frames)
    x = rng.normal(size=(frames, 10))
    a = np.exp(-1.0 / (25.0 * rng.uniform(0.005, 0.1, size=10)))
    expected = np.stack([scipy.signal.lfilter([1.0], [1.0, -a[j]], x[:, j]) for j in range(10)], axis=1)
    np.testing.assert_array_equal(coarticulation._decaying_sum(x, a), expected)


def test_coarticulate_equals_the_lfilter_formulation():
    import scipy.signal

    rng = np.random.default_rng(3)
    targets = rng.uniform(-1, 1, size=(300, 5)).astype(np.float32)
    dominance = rng.uniform(0, 20, size=(300, 5)).astype(np.float32)
    w = np.maximum(dominance.astype(np.float64), 1e-6)
    a = np.exp(-1.0 / (25.0 * coarticulation.TAU_S.astype(np.float64)))

    def two_sided(x):
        cols = []
        for j in range(5):
            fwd = scipy.signal.lfilter([1.0], [1.0, -a[j]], x[:, j])
            bwd = scipy.signal.lfilter([1.0], [1.0, -a[j]], x[::-1, j])[::-1]
            cols.append(fwd + bwd - x[:, j])
        return np.stack(cols, axis=1)

    expected = (two_sided(w * targets) / two_sided(w)).astype(np.float32)
    np.testing.assert_array_equal(coarticulation.coarticulate(targets, dominance, 25.0), expected)


HEAVY = ("scipy.signal", "matplotlib", "mediapipe", "librosa", "tensorflow")


def test_talk_on_a_portrait_imports_no_heavy_module_it_does_not_use(tmp_path):
    # A whole talk run in a fresh process (short speech, small crop), then the modules it loaded.
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "tests"))
    from speech import speak_wave

    wave, rate = speak_wave("Papa.")
    sf.write(str(tmp_path / "s.wav"), wave, rate)
    code = (
        "import json, sys\n"
        "from segtalker_core.cli import main\n"
        f"rc = main(['talk', '--image', {str(ROOT / 'examples' / 'portrait.png')!r}, '--audio', "
        f"{str(tmp_path / 's.wav')!r}, '-o', {str(tmp_path / 'o.mp4')!r}, '--size', '256', '-q'])\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0
    loaded = [m for m in result["modules"] if m.split(".")[0] in {h.split(".")[0] for h in HEAVY}
              and any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], f"talk imported {loaded}"
    assert "torch" in result["modules"]  # the check sees the run's imports (face models are torch)
