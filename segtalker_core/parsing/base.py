"""What every face parser offers, so the built-in and the BiSeNet parser are interchangeable."""
from __future__ import annotations

from typing import Protocol

import numpy as np


class FaceParser(Protocol):
    """Parses aligned face crops into 19-class BiSeNet-order label maps.

    ``crops``: ``[N, S, S, 3]`` uint8 RGB aligned crops; ``landmarks``: ``[N, 478, 3]`` float32
    face-mesh points in crop pixels (a parser may ignore them). Returns ``[N, S, S]`` uint8.
    """

    name: str

    def parse(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray: ...
