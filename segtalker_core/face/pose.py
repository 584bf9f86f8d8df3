"""Head yaw from face-mesh landmarks, to warn when a face is too turned for the built-in rig."""
from __future__ import annotations

import numpy as np

# Face-mesh points on the outer cheeks at eye level (person's right = image left, and left).
RIGHT_CHEEK = 234
LEFT_CHEEK = 454
NOSE_TIP = 1
# The built-in rig and the alignment assume a roughly frontal face; beyond this the far half of the
# mouth is foreshortened and hidden, and results degrade visibly.
MAX_FRONTAL_YAW_DEG = 40.0


def yaw_degrees(landmarks: np.ndarray) -> np.ndarray:
    """``[..., 478, 3]`` landmarks -> yaw in degrees ``[...]`` (0 frontal, +-90 profile).

    From where the nose tip sits between the two cheek edges: its offset from their midpoint over
    half their distance is about sin(yaw). (The mesh's z is too flat to read yaw from directly.)
    NaN landmarks (no face) give NaN.
    """
    right = landmarks[..., RIGHT_CHEEK, 0]
    left = landmarks[..., LEFT_CHEEK, 0]
    nose = landmarks[..., NOSE_TIP, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = (2.0 * nose - right - left) / (left - right)
    return np.degrees(np.arcsin(np.clip(offset, -1.0, 1.0)))


def turned_frames(landmarks: np.ndarray, found: np.ndarray, limit: float = MAX_FRONTAL_YAW_DEG) -> tuple[np.ndarray, float]:
    """Indices of frames whose face is turned more than ``limit`` degrees, and the largest yaw seen."""
    yaw = np.abs(yaw_degrees(landmarks))
    yaw = np.where(found, yaw, 0.0)
    return np.flatnonzero(yaw > limit), float(np.nanmax(yaw, initial=0.0))
