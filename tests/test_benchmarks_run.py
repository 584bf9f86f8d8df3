"""Every ``benchmarks/*.py`` runs in its ``--quick`` mode and prints its table.

Speed is not checked here (benchmarks print timings; unit tests never assert them): this only
makes a signature change that breaks a benchmark fail CI instead of going unseen. The folder is
listed, so a new script without a ``--quick`` mode (argparse exits 2 on the unknown option) or
without an entry below fails. Each run is a fresh process, as ``run_all.py`` runs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"

# Strings each script's quick output must hold: its table header or row names.
EXPECTED: dict[str, tuple[str, ...]] = {
    "audio.py": ("| stage | time |", "| articulation auto"),
    "face_models.py": ("|",),
    "follow_map.py": ("| maps rendered with |", "| own hints (the rig's render) |"),
    "head_motion.py": ("| frame | moving box |", "| 1920 x 1080 |"),
    "mask_guided_regions.py": ("| regions present |", "| 12 |"),
    "models.py": ("layer64-plain", "tsg128"),
    "mouth_realism.py": ("speech: 'Papa.'",),
    "mouth_bank.py": ("| clip | bank off ms/frame |", "| smile / closed |"),
    "mouth_sheet.py": ("| source | teeth | jaw |", "| closed |"),
    "parsing.py": ("|",),
    "paste.py": ("| step | ms/frame |", "| encode 1080p"),
    "render.py": ("| source | stage |", "| astronaut (teeth) | drive + paint |"),
    "run_all.py": ("audio: ok",),
    "style_refinement.py": ("g64-fast",),
    "talk.py": ("| talk CLI, one process per run", "| portrait 512, 1 s |",
                "| dubbing 1080p streamed from an mp4, 1 s |", "| dubbing 1080p, a 0.4 s clip held and ping-ponged, 1 s |",
                "| learned G64, random bundle, 0.5 s |",
                "| path, audio | frames | peak RSS MiB |"),
    "train.py": ("syncnet", "tsg", "sgi"),
}

# Extra arguments beside --quick.
EXTRA: dict[str, list[str]] = {
    # run_all --quick would run every other benchmark a second time: one of them, into a temp file.
    "run_all.py": ["--only", "audio", "-o", "{tmp}/RESULTS.md"],
}

# Not run, and why. comfy_video_memory boots a fresh ComfyUI server for each graph (~1 GB and a
# minute or more each on two cores, 4 s clips of 1080p through IMAGE batches at ~2 GB/s of
# video); the ComfyUI tests cover its graphs. Here only its --quick option is checked.
NOT_RUN = {"comfy_video_memory.py"}


def test_every_benchmark_is_listed_here():
    scripts = sorted(p.name for p in BENCH.glob("*.py"))
    assert scripts, BENCH
    missing = [s for s in scripts if s not in EXPECTED and s not in NOT_RUN]
    assert missing == [], f"benchmarks without an entry in {Path(__file__).name}: {missing}"


@pytest.mark.parametrize("script", sorted(NOT_RUN))
def test_benchmark_not_run_here_still_has_a_quick_mode(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--quick" in done.stdout


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_runs_in_quick_mode_and_prints_its_table(script, tmp_path):
    path = BENCH / script
    assert path.is_file(), f"{script} is listed but not in benchmarks/"
    extra = [a.replace("{tmp}", str(tmp_path)) for a in EXTRA.get(script, [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(path), "--quick", *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} --quick exited {done.returncode}:\n{done.stderr[-3000:]}"
    for text in EXPECTED[script]:
        assert text in done.stdout, f"{script} --quick printed no {text!r}:\n{done.stdout[-3000:]}"
    assert "n/a" not in done.stdout, f"{script} --quick could not run a row:\n{done.stdout[-3000:]}"
