"""The progress callback every long-running core function takes.

``progress(done, total)`` is called with the number of items finished so far (1-based, at most
``total``) and the total; ``None`` means nobody is listening. The ComfyUI nodes pass a callback
that drives the progress bar, the CLI one that drives tqdm.
"""
from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], None]
Progress = ProgressCallback | None


def offset_progress(progress: Progress, offset: int, total: int) -> Progress:
    """A callback for one part of a longer job: its ``(done, _)`` is reported to ``progress`` as
    ``(offset + done, total)``. None when ``progress`` is None, so the part can skip reporting."""
    if progress is None:
        return None

    def report(done: int, _part_total: int) -> None:
        progress(offset + done, total)

    return report


def report_progress(progress: Progress, done: int, total: int) -> None:
    """Call ``progress(done, total)`` if there is a callback."""
    if progress is not None:
        progress(done, total)
