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


def test_seal_shadow_is_even_along_the_lips():
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
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(mid, axis=0), axis=1))])
    t = np.linspace(0.15, 0.85, 200) * length[-1]
    line = np.stack([np.interp(t, length, mid[:, 0]), np.interp(t, length, mid[:, 1])], 1).astype(np.float32)
    ratio = (painted.astype(np.float32) + 0.5).sum(-1) / (plain.astype(np.float32) + 0.5).sum(-1)
    along = cv2.remap(ratio, line[None, :, 0], line[None, :, 1], cv2.INTER_LINEAR)[0]
    # A shadow is there (the source's lips were apart: no seam of its own to warp) ...
    assert along.mean() <= 0.9, along.mean()
    # ... and even: the former 1-px line blurred by under a pixel varied 0.82-0.89 along the
    # middle of the mouth (dots), this one within a few percent.
    assert along.max() - along.min() <= 0.045, (along.min(), along.max())
