"""How many threads OpenCV's and torch's kernels may use while the pipeline runs its own.

Why: a streamed dub keeps the cores busy with its own threads (the worker that reads, tracks
and parses the next chunk; the renderer; the video encoder). On a small machine the kernels'
own thread pools then only oversubscribe the cores: their threads wait for each other and for
the GIL. Measured on 2 cores (the CLI dubbing 10 s of 1080p streamed from an mp4): the tracking
worker alone took 32.8 s against 33.6 s without it, while the worker with one kernel thread each
took 26.2-31.4 s against 30.0-34.6 s for neither (4 interleaved pairs; CPU 42-50 s against
45-50 s), with the same output bytes.

The setting is process-wide, so only code that owns the process for the call's duration (the
file-to-file ``talk``) applies it, and restores the previous counts afterwards.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def share_of_cores(busy_threads: int) -> int:
    """Kernel threads each of ``busy_threads`` concurrently busy threads may use: the cores
    split between them, at least one."""
    if busy_threads < 1:
        raise ValueError(f"busy_threads must be >= 1, got {busy_threads}")
    return max(1, available_cores() // busy_threads)


@contextlib.contextmanager
def kernel_threads(count: int) -> Iterator[None]:
    """OpenCV and torch (CPU intra-op) limited to ``count`` threads inside the block."""
    import cv2
    import torch

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    before = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(count)
    torch.set_num_threads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before[0])
        torch.set_num_threads(before[1])
