"""Batched runs that survive an out-of-memory error: halve the batch and retry, down to 1.

Why here and not in the nodes: the retry is plain control flow over a ``step(start, stop)``
callback, so the core tests it without a GPU (a monkeypatched forward raising the OOM error),
and the CLI gets it too. The step must be idempotent for its range (it writes its results into
a preallocated output), because a failed batch is run again as two halves.

An OOM of a batch of one is re-raised as it is: nothing smaller exists to try.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("segtalker")

# torch >= 2.5 has torch.OutOfMemoryError (what CUDA, XPU and MPS raise); older ones only the
# CUDA alias.
OUT_OF_MEMORY_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocator out-of-memory error (torch's OOM class, or a RuntimeError saying so, which
    is how some backends report it)."""
    if isinstance(exc, OUT_OF_MEMORY_ERRORS):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory() -> None:
    """Give the failed batch's blocks back before retrying (only where an allocator exists)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@dataclass
class AdaptiveBatch:
    """A batch size that halves on out-of-memory errors and stays halved for later calls.

    ``size``: the current batch size (>= 1). ``what`` names the run in the log line. Reuse one
    instance across calls of a run so a size that failed is not tried again on every chunk.
    """

    size: int
    what: str = "batch"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"batch size must be a positive integer, got {self.size!r}")

    def run(self, total: int, step: Callable[[int, int], None],
            release: Callable[[], None] = release_cached_memory) -> None:
        """Call ``step(start, stop)`` over ``range(total)`` in batches of ``self.size``.

        On an OOM error the batch size halves and the same ``start`` is tried again; other errors
        pass through unchanged.
        """
        start = 0
        while start < total:
            stop = min(start + self.size, total)
            try:
                step(start, stop)
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_out_of_memory(exc) or stop - start == 1:
                    raise
                failed = stop - start
            else:
                start = stop
                continue
            # Outside the except block, so the traceback (and the tensors it holds) is gone.
            self.size = max(1, failed // 2)
            log.warning("%s: out of memory with a batch of %d; retrying with %d",
                        self.what, failed, self.size)
            release()
