"""The one logger name of the node pack: ``"segtalker"``, with a child per part (``"segtalker.audio"``).

Runtime messages about the user's input (a clipped value, a transposed array, a missing face) go
through logging rather than ``warnings.warn``: a long-running ComfyUI shows a given
``warnings.warn`` only once per process, so the second run with the same bad input would be
silent. Children propagate to ``"segtalker"``, so one handler or level there covers them all.
"""
from __future__ import annotations

import logging

LOGGER_NAME = "segtalker"


def get_logger(part: str | None = None) -> logging.Logger:
    """``"segtalker"``, or its child ``"segtalker.<part>"``."""
    return logging.getLogger(LOGGER_NAME if part is None else f"{LOGGER_NAME}.{part}")
