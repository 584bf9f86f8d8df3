"""Lips keep their substance (issue #13 item 2): a closed source's lips are sampled where the mesh
puts them (only an open one's are moved to their own edge), and the closed-lip seal is an even
shadow, not a dotted line."""
from __future__ import annotations

import cv2
import numpy as np

from test_procedural_common import astronaut, params

from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural import mouth_interior as MI
from segtalker_core.procedural.renderer import RenderOptions, SourceFace


def test_closed_source_texture_is_the_reference():
    crop, landmarks, regions = astronaut()
    face = SourceFace(crop, landmarks, regions, RenderOptions(blink=False))
    closed = SourceFace(face.frame(np.zeros(5)).crop, face.frame(np.zeros(5)).landmarks,
                        face.frame(np.zeros(5)).regions, RenderOptions(blink=False))
    assert closed.seal == 0.0
    assert np.array_equal(closed.texture_offset, np.zeros_like(closed.texture_offset))


def _along(points: np.ndarray, start: float, stop: float, count: int) -> np.ndarray:
    """``count`` points evenly spaced along the polyline ``points`` [N, 2], from share ``start``
    to ``stop`` of its length."""
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    t = np.linspace(start, stop, count) * length[-1]
    return np.stack([np.interp(t, length, points[:, 0]), np.interp(t, length, points[:, 1])], 1)


def _step_energy(image: np.ndarray, line: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours within ~1.5 px of ``line``: the
    steps a pixel staircase or a row of dots along a mostly horizontal seam adds."""
    y = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    band = np.zeros(y.shape, np.uint8)
    cv2.polylines(band, [np.round(line * 16).astype(np.int32)], False, 1, 3, cv2.LINE_8, 4)
    both = band[:, :-1].astype(bool) & band[:, 1:].astype(bool)
    return float(np.abs(np.diff(y, axis=1))[both].mean())


def test_seal_is_a_smooth_shadow_along_the_lips():
    crop, landmarks, regions = astronaut()
    face = SourceFace(crop, landmarks, regions, RenderOptions(blink=False))
    pose = face.drive(params(closure=1.0))
    painted = face.paint(pose)
    original = MI.MouthInterior._seal_line
    try:
        MI.MouthInterior._seal_line = lambda self, image, driven, strength: None
        plain = face.paint(pose)
    finally:
        MI.MouthInterior._seal_line = original
    mid = 0.5 * (pose.landmarks[list(T.LIPS_INNER_UPPER), :2] + pose.landmarks[list(T.LIPS_INNER_LOWER), :2])
    middle = _along(mid, 0.15, 0.85, 200).astype(np.float32)
    ratio = (painted.astype(np.float32) + 0.5).sum(-1) / (plain.astype(np.float32) + 0.5).sum(-1)
    shade = cv2.remap(ratio, middle[None, :, 0], middle[None, :, 1], cv2.INTER_LINEAR)[0]
    # A shadow is there (the source's lips were apart: no seam of its own to warp) ...
    assert shade.mean() <= 0.9, shade.mean()
    # ... and smooth: the warp's staircase where the map jumps from lip to lip is softened, and
    # the shadow adds no dots (the former 1-px line blurred by under a pixel measured 1.14x the
    # plain warp's steps here; this one 0.85x).
    line = _along(mid, 0.04, 0.96, 300)
    assert _step_energy(painted, line) <= 0.95 * _step_energy(plain, line), (
        _step_energy(painted, line), _step_energy(plain, line))
