"""Run an iterator a few items ahead of its consumer, on a worker thread.

Why: decoding the next video chunk (FFmpeg releases the GIL) and computing the next generator
batch (torch kernels release it; on a GPU the worker mostly waits for the device) overlap the
host work on the current item (parsing, paste-back, encoding). Memory stays flat because the
worker starts an item only when fewer than ``depth`` are made and not yet taken.

The worker stops when the consumer stops (early ``break``, an error downstream, a cancel), and
an exception of the producer is raised in the consumer at the item where it happened.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any


def run_ahead(items: Iterable[Any], depth: int = 1, name: str = "segtalker-ahead") -> Iterator[Any]:
    """``items`` as they are, produced on a worker thread up to ``depth`` ahead of the caller.

    The worker starts an item only when fewer than ``depth`` are made and not
    yet taken, so at most ``depth`` items exist beyond the one the caller works on (with depth 1,
    two chunks in all: memory stays bounded and small). An error in the worker is raised in the
    caller where the item would have come; when the caller stops early (or raises), the worker
    is told to stop and is joined, and ``items`` is closed on the worker's thread.
    """
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    done = object()
    slots: "queue.Queue[Any]" = queue.Queue()
    # One permit per item that may exist ahead of the caller; taking an item gives one back.
    permits = threading.Semaphore(int(depth))
    stop = threading.Event()

    def wait_for_permit() -> bool:
        while not stop.is_set():
            if permits.acquire(timeout=0.1):
                return True
        return False

    def run() -> None:
        source = iter(items)
        try:
            while wait_for_permit():
                item = next(source, done)
                slots.put((None, item))
                if item is done:
                    return
                del item  # the caller owns it now: do not keep it alive here
            return
        except BaseException as error:  # raised in the caller
            slots.put((error, None))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    try:
        while True:
            error, item = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            permits.release()  # the worker may start the next item while this one is used
            # Handed over without a reference left in this frame: a suspended generator would
            # otherwise keep the caller's chunk alive until the next one is asked for.
            box = [item]
            del item
            yield box.pop()
    finally:
        stop.set()
        worker.join()
