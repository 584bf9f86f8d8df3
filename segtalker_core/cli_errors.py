"""The CLI's error boundary: every failure as one ``error: ...`` line and an exit code.

Expected failures (bad input, file-system errors, PyAV and safetensors errors, out of memory)
get a message that names the input, what is wrong and what to do, and exit code 2; anything else
is a bug (exit 1, ``-v`` for the traceback). Ctrl-C is 130; SIGTERM and SIGHUP are raised as
:class:`Terminated` (so every ``with`` block and ``finally`` removes its unfinished output) and
exit with 128 + the signal's number.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager

EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report Ctrl-C


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived. Raised in the main thread (a BaseException, so no ``except
    Exception`` swallows it) so that every ``with`` block and ``finally`` runs: unfinished
    output files are removed, as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


# Hints by errno for file-system errors: what the user can do about each.
_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free some space or write elsewhere",
    errno.EFBIG: "the file is too large for this file system; write elsewhere",
    errno.EACCES: "no permission; check the permissions of the file and its folder, or use another path",
    errno.EPERM: "no permission; check the permissions of the file and its folder, or use another path",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.EISDIR: "it is a folder; give a file",
    errno.ENOTDIR: "a part of the path is not a folder; check the path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENAMETOOLONG: "the name is too long; use a shorter path",
    errno.EMFILE: "too many files are open; close other programs and retry",
    errno.EIO: "the drive failed to read or write it; is it failing, or was it removed?",
}

_OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory")


def one_line(text: str) -> str:
    """``text`` with its lines joined: the error is one line, whatever the message held."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _shown_path(filename) -> str:
    """The name to show for a file an error came from: a temporary ``.NAME.partial-XXXX.EXT``
    file is shown as the output ``NAME`` it was about to become."""
    from .atomic_files import PARTIAL_MARK

    text = os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)
    folder, name = os.path.split(text)
    if name.startswith(".") and PARTIAL_MARK in name:
        name = name[1:name.index(PARTIAL_MARK)]
    return repr(os.path.join(folder, name))


def os_error_message(error: OSError) -> str:
    """A file-system error as ``'FILE': what to do (the system's words)``. An OSError that words
    its own message (ours, or the video writer's OutputWriteError) keeps it."""
    if error.errno is None or error.strerror is None or type(error).__str__ is not OSError.__str__:
        return one_line(str(error))
    return _errno_text(error)


def _errno_text(error: OSError) -> str:
    files = [_shown_path(name) for name in (error.filename, getattr(error, "filename2", None))
             if name is not None]
    hint = _ERRNO_HINTS.get(error.errno)
    what = f"{hint} ({error.strerror})" if hint else error.strerror
    return f"{' and '.join(files)}: {what}" if files else what


def _ffmpeg_message(error) -> str:
    """A PyAV error: the file, FFmpeg's words, and the hint its errno has (if a file-system one)."""
    if isinstance(error, OSError) and error.errno in _ERRNO_HINTS and error.strerror:
        return _errno_text(error)
    filename = getattr(error, "filename", None)
    words = getattr(error, "strerror", None) or str(error)
    where = f"{_shown_path(filename)}: " if filename else ""
    return (f"{where}FFmpeg cannot process it ({one_line(words)}); check that it is a complete "
            "media file of a supported type")


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError (numpy too), torch's OutOfMemoryError, or a RuntimeError that says so (the CPU
    allocator's "can't allocate memory", MPS's "out of memory")."""
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")  # only when it was imported: the check must not load it
    if torch is not None and isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(error, RuntimeError) and any(t in str(error).lower() for t in _OUT_OF_MEMORY_TEXTS)


def _memory_hints(args: argparse.Namespace) -> str:
    hints = []
    if getattr(args, "size", None) is not None:
        hints.append(f"a smaller --size (now {args.size})")
    if getattr(args, "command", None) == "talk":
        hints.append("--batch-size 1")
        if args.max_size is None or args.max_size > 1920:
            hints.append("--max-size 1920")
        if args.device != "cpu":
            hints.append("--device cpu")
    return ("try " + ", ".join(hints)) if hints else "close other programs or use a machine with more memory"


def first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def failure_message(error: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message for an expected failure, or None for an unexpected one (a bug)."""
    if isinstance(error, SystemExit):
        text = str(error.code)
        return one_line(text[len("error:"):] if text.startswith("error:") else text)
    if is_out_of_memory(error):
        return f"out of memory ({first_line(error)}); {_memory_hints(args)}"
    av = sys.modules.get("av")
    if av is not None and isinstance(error, av.error.FFmpegError):
        return _ffmpeg_message(error)
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and isinstance(error, getattr(safetensors, "SafetensorError", ())):
        return (f"a weight file is not a readable .safetensors file ({one_line(str(error))}); "
                "download or convert it again")
    if isinstance(error, OSError):
        return os_error_message(error)
    if isinstance(error, ValueError):
        return one_line(str(error)) or type(error).__name__
    return None


@contextmanager
def stop_signals_raise():
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Only signals left at their default (which would kill the process with no cleanup) are taken:
    one ignored on purpose (``nohup`` ignores SIGHUP) or handled by a host program stays so.
    A second signal while the first one's cleanup runs is ignored, so the cleanup finishes.
    The previous handlers are restored afterwards. Off the main thread nothing is installed
    (Python allows handlers only there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def raise_terminated(signum, frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise Terminated(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)  # Windows has no SIGHUP
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def report(message: str, error: BaseException, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(error)
    print(f"error: {message}", file=sys.stderr, flush=True)
