"""MediaPipe's C++ start-up lines do not reach stderr; real errors still do (issue #8.6).

Run in subprocesses: the lines are written to file descriptor 2 by C++ code, which pytest's
capture of sys.stderr would not see.
"""
from __future__ import annotations

import subprocess
import sys

import video_clips as V

NOISE = (
    "Created TensorFlow Lite XNNPACK delegate",
    "All log messages before absl::InitializeLog()",
    "Feedback manager requires a model with a single signature",
)


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=V.REPO_DIR, capture_output=True, text=True,
                          timeout=300)


def test_parse_prints_no_mediapipe_start_up_lines(tmp_path):
    done = run_python("-m", "segtalker_core", "parse", "--image", str(V.REPO_DIR / "examples" / "portrait.png"),
                      "-o", str(tmp_path / "preview.png"))
    assert done.returncode == 0, done.stderr
    assert not [line for line in NOISE if line in done.stderr], done.stderr


def test_video_parse_prints_no_mediapipe_start_up_lines():
    # Video mode: a tracking face mesh, a static one for windows, and the selfie model.
    script = (
        "import video_clips as V; from segtalker_core import pipeline;"
        "faces = pipeline.parse_faces(V.example_frames(6), input_name='clip');"
        "print(int(faces.found.sum()))"
    )
    done = run_python("-c", f"import sys; sys.path[:0] = ['.', 'tests']; {script}")
    assert done.returncode == 0 and done.stdout.strip() == "6", done.stderr
    assert not [line for line in NOISE if line in done.stderr], done.stderr


def test_other_stderr_output_in_the_window_still_shows_in_order():
    script = (
        "import os; from segtalker_core.native_logs import quiet_native_stderr\n"
        "with quiet_native_stderr():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'E0000 real error: model file is corrupt\\n')\n"
        "    os.write(2, b'W0000 inference_feedback_manager.cc:114] Feedback manager requires a model "
        "with a single signature inference.\\n')\n"
        "    import sys; print('python traceback line', file=sys.stderr)\n"
        "os.write(2, b'after the window\\n')\n"
    )
    done = run_python("-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "E0000 real error: model file is corrupt", "python traceback line", "after the window"]


def test_cli_errors_still_reach_stderr(tmp_path):
    done = run_python("-m", "segtalker_core", "parse", "--image", str(tmp_path / "missing.png"),
                      "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2, done.stderr
    assert "error: --image" in done.stderr and "missing.png" in done.stderr
