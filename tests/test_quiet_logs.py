"""A run prints nothing on stderr but real problems (issue #8.6): no start-up lines from native
libraries, while errors still get there.

Run in subprocesses: native code writes to file descriptor 2 directly, which pytest's capture of
``sys.stderr`` would not see.
"""
from __future__ import annotations

import subprocess
import sys

import video_clips as V


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=V.REPO_DIR, capture_output=True, text=True,
                          timeout=300)


def test_parse_prints_nothing_on_stderr(tmp_path):
    done = run_python("-m", "segtalker_core", "parse", "--image", str(V.REPO_DIR / "examples" / "portrait.png"),
                      "-o", str(tmp_path / "preview.png"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_video_parse_prints_nothing_on_stderr():
    # Video mode: the tracking face mesh, the detector for windows, and the selfie model.
    script = (
        "import video_clips as V; from segtalker_core import pipeline;"
        "faces = pipeline.parse_faces(V.example_frames(6), input_name='clip');"
        "print(int(faces.found.sum()))"
    )
    done = run_python("-c", f"import sys; sys.path[:0] = ['.', 'tests']; {script}")
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr
    assert done.stderr == ""


def test_cli_errors_still_reach_stderr(tmp_path):
    done = run_python("-m", "segtalker_core", "parse", "--image", str(tmp_path / "missing.png"),
                      "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2, done.stderr
    assert "error: --image" in done.stderr and "missing.png" in done.stderr
