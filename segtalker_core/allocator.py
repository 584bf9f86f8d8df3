"""The CPU allocator setting the CLI applies before a learned run.

Why: glibc serves blocks above its mmap threshold (128 KiB to start, raised adaptively up to
32 MiB as blocks are freed) with a fresh ``mmap`` and returns them with ``munmap``; every batch
of the generator allocates and frees feature maps of tens of MB, so each forward pass maps,
page-faults (zero-fills) and unmaps them again. Measured on this project's G256 generator at
batch 4: 1.2 s/frame by default, 0.59 s/frame with a fixed threshold (a profile of the
generator alone; the end-to-end effect on ``talk`` is not measured yet).
``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` (the adaptive rule's own ceiling on 64-bit) fixes the
threshold, which also turns off the adaptive rule, so freed maps up to 32 MiB go back
to the heap and are reused; ``M_TRIM_THRESHOLD`` keeps the heap's top from being trimmed after
every batch for the same reason. The price: freed
memory stays in the process (bounded by one batch's working set, which the run reuses).

Only the CLI applies it (a process-wide, irreversible choice that a host application such as
ComfyUI makes for itself); other C libraries (musl, macOS, Windows) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("segtalker")

# glibc malloc.h parameter numbers (stable ABI since glibc 2.0).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 32 << 20  # where glibc's adaptive rule stops raising it on 64-bit

_applied = False


def keep_freed_blocks(threshold: int = THRESHOLD_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds to ``threshold`` bytes; True when applied (or
    already), False where the C library is not glibc or refuses (nothing changed then)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_version = libc.gnu_get_libc_version  # only glibc has it: musl's mallopt is a stub
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    gnu_version.restype = ctypes.c_char_p
    ok = mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, threshold) == 1
    if ok:
        _applied = True
        log.debug("glibc %s: mmap/trim thresholds fixed at %d bytes", gnu_version().decode(),
                  threshold)
    return ok
