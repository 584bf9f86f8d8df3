"""Silence MediaPipe's start-up chatter on stderr without hiding real errors.

MediaPipe's C++ side (TFLite, absl, glog) prints a few lines straight to file descriptor 2 the
first time a graph runs: ``Created TensorFlow Lite XNNPACK delegate``, ``All log messages before
absl::InitializeLog()`` and one ``Feedback manager requires a model with a single signature`` per
model. They reach the ComfyUI server log and the CLI on every parse and mean nothing to a user.

Measured with mediapipe 0.10.14: ``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` change nothing
(even set before the import). The lines are written by the graph's worker threads while it
opens, which starts when the solution is created and may still be going on after the constructor
returns (seen on a loaded machine); it is over once the first ``process()`` returned. So the
solution is created *and* run once on a blank image inside one window
(:func:`segtalker_core.face.detect.open_solution`): :func:`quiet_native_stderr` points fd 2 at a
temporary file, then restores it, drops the known lines and writes everything else back, in
order: a real error printed in the window still shows, only a little later.

While the window is open, anything else in the process that writes to fd 2 is delayed the same
way (not lost); the window lasts one model load and one frame.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

# One pattern per known line; a line matching none of them is written back.
KNOWN_NOISE: tuple[re.Pattern[bytes], ...] = (
    re.compile(rb"Created TensorFlow Lite XNNPACK delegate"),
    re.compile(rb"All log messages before absl::InitializeLog\(\) is called"),
    re.compile(rb"Feedback manager requires a model with a single signature"),
)

_STDERR_FD = 2
_lock = threading.RLock()
_depth = 0  # nested windows share the outermost redirect


def filter_noise(data: bytes) -> bytes:
    """``data`` without the lines that match :data:`KNOWN_NOISE` (line endings kept)."""
    kept = [line for line in data.splitlines(keepends=True)
            if not any(p.search(line) for p in KNOWN_NOISE)]
    return b"".join(kept)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold what is written to fd 2 inside the block; afterwards write it back without the known
    MediaPipe lines. A no-op where fd 2 cannot be redirected (no stderr, odd platforms)."""
    global _depth
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            saved = os.dup(_STDERR_FD)
        except OSError:
            yield
            return
        _flush_python_stderr()
        held = tempfile.TemporaryFile()
        os.dup2(held.fileno(), _STDERR_FD)
        _depth = 1
        try:
            yield
        finally:
            _depth = 0
            _flush_python_stderr()
            os.dup2(saved, _STDERR_FD)
            os.close(saved)
            held.seek(0)
            rest = filter_noise(held.read())
            held.close()
            while rest:  # os.write may write part of a large buffer
                rest = rest[os.write(_STDERR_FD, rest):]


def _flush_python_stderr() -> None:
    # Python buffers sys.stderr text; flush so it lands on the side of the switch it was written.
    with contextlib.suppress(Exception):
        sys.stderr.flush()
