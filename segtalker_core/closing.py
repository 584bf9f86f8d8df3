"""Objects that hold native resources (MediaPipe graphs) and release them in ``close()``."""
from __future__ import annotations


class Closing:
    """``with`` support and a best-effort ``close()`` when garbage-collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: MediaPipe may already be gone
            pass
