"""Run an iterator a few items ahead of its consumer, on a worker thread.

Why: the learned path alternates device work (a generator batch) with host work (paste-back,
encoding) that does not depend on the next batch. Pulling the next batch on a worker while the
consumer pastes the current one overlaps the two: torch kernels release the GIL, and on a GPU
the worker mostly waits for the device. A bounded queue (``depth`` items) keeps memory flat.

The worker stops when the consumer stops (it closes the generator: early ``break``, an error
downstream, a cancel), and an exception of the producer is raised in the consumer at the item
where it happened.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def run_ahead(items: Iterable[T], depth: int = 1, name: str = "segtalker-ahead") -> Iterator[T]:
    """``items`` in order, produced up to ``depth`` (>= 1) items ahead on a daemon thread."""
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        """Hand ``item`` over unless the consumer left (then give up)."""
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
