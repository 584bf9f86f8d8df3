"""Shared inputs of the ``test_procedural_*`` tests (this module holds no tests).

The astronaut portrait of scikit-image is aligned to a 512 crop, parsed with the built-in parser,
and turned into two sources: the photo itself (a smile: lips apart, teeth showing) and a
closed-mouth version rendered from it at rest (driven landmarks and regions come with it). Results
are cached for the whole test session: detection and parsing run once.
"""
from __future__ import annotations

import functools

import numpy as np
import skimage.data

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.face.aligned import align_faces
from segtalker_core.face.detect import FaceMeshDetector
from segtalker_core.parsing.landmark_parser import LandmarkParser

SIZE = 512


@functools.lru_cache(maxsize=None)
def astronaut() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crop [S, S, 3] uint8, landmarks [478, 3], 12-region map [S, S]) of the photo."""
    aligned = align_faces(skimage.data.astronaut()[None], crop_size=SIZE)
    assert aligned.found[0]
    crop, landmarks = aligned.crops[0], aligned.landmarks[0]
    with LandmarkParser() as parser:
        regions = L.merge_to_regions(parser.parse_one(crop, landmarks))
    return _frozen(crop), _frozen(landmarks), _frozen(regions)


@functools.lru_cache(maxsize=None)
def closed_astronaut() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The photo rendered at rest (mouth closed): crop, its driven landmarks and regions."""
    from segtalker_core.procedural.renderer import RenderOptions, SourceFace

    frame = SourceFace(*astronaut(), RenderOptions(blink=False)).frame(np.zeros(5))
    return _frozen(frame.crop), _frozen(frame.landmarks), _frozen(frame.regions)


def detect(crop: np.ndarray) -> np.ndarray:
    """MediaPipe landmarks [478, 3] of a rendered crop (an independent judge of its shape)."""
    with FaceMeshDetector() as detector:
        faces = detector.detect(crop)
    assert len(faces) == 1, f"expected one face in the rendered crop, found {len(faces)}"
    return faces[0].landmarks


def iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(
        landmarks[list(T.LEFT_EYE), :2].mean(0) - landmarks[list(T.RIGHT_EYE), :2].mean(0)
    ))


def lip_gap(landmarks: np.ndarray) -> float:
    """Inner lip gap at the mouth centre, in inter-ocular distances."""
    return float(landmarks[T.LOWER_LIP_TOP, 1] - landmarks[T.UPPER_LIP_BOTTOM, 1]) / iod(landmarks)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def params(jaw=0.0, width=0.0, round_=0.0, closure=0.0, teeth=0.0) -> np.ndarray:
    return np.array([jaw, width, round_, closure, teeth], np.float64)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array
