"""Blink only where eyes are visible: the per-eye gate from parsing and appearance, and lids
painted through it (nothing changes over sunglasses or goggles)."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.procedural.blink import (
    EyeClosureReader, close_eye_regions, close_eyelids, paint_eyelids,
)
from segtalker_core.procedural.eye_visibility import BlinkGate, GateConfig, eye_visibility
import eye_cover_faces as F
from test_procedural_common import astronaut, iod

EYES = L.region_index("eyes")


@functools.lru_cache(maxsize=None)
def nearly_closed() -> F.CoveredFace:
    """The astronaut with lids painted 80 % shut: its landmarks are the shut lids'."""
    crop, landmarks, regions = astronaut()
    shut = close_eyelids(landmarks, 0.8)
    painted = paint_eyelids(crop.copy(), crop, landmarks, shut, iod(landmarks))
    return F.CoveredFace(painted, shut, regions, np.zeros(regions.shape, bool))


def blink(face: F.CoveredFace, gate: BlinkGate) -> tuple[np.ndarray, np.ndarray]:
    """A fully shut frame of ``face`` through ``gate``: (crop, regions)."""
    driven = close_eyelids(face.landmarks, 1.0, gate.strengths)
    scale = iod(face.landmarks)
    crop = paint_eyelids(face.crop.copy(), face.crop, face.landmarks, driven, scale, gate.protect)
    regions = close_eye_regions(face.regions.copy(), face.landmarks, driven, scale)
    return crop, regions


def test_open_eyes_blink_fully():
    crop, landmarks, regions = astronaut()
    gate = eye_visibility(crop, landmarks, regions)
    assert gate.strengths == (1.0, 1.0) and gate.reasons == ("", "")
    assert gate.describe() == "blink: right 1.00, left 1.00"
    # ... and clear glasses (frames labelled eyeglasses) do not stop the blink.
    glasses = F.clear_glasses(crop, landmarks, regions)
    assert min(eye_visibility(glasses.crop, glasses.landmarks, glasses.regions).strengths) >= 0.9


@pytest.mark.parametrize("label", [True, False], ids=["labelled", "appearance-only"])
def test_sunglasses_get_no_blink(label):
    face = F.sunglasses(*astronaut(), label=label)
    gate = eye_visibility(face.crop, face.landmarks, face.regions)
    assert gate.strengths == (0.0, 0.0) and not gate.blinks
    assert all("dark lens" in r and "flat" in r for r in gate.reasons), gate.reasons
    out, regions = blink(face, gate)
    assert np.array_equal(out[face.cover], face.crop[face.cover])
    assert np.array_equal(regions, face.regions)  # the map keeps its eyes too


def test_dark_skin_and_dim_light_decide_like_light_skin():
    """A near-black lens on dark skin is barely darker than the cheek: the eye must still be
    judged by how light an eye is under this light, not by how light the skin is."""
    crop, landmarks, regions = astronaut()
    dark = F.darker_skin(crop, regions)
    assert eye_visibility(dark, landmarks, regions).strengths == (1.0, 1.0)
    face = F.sunglasses(dark, landmarks, regions, label=False)
    assert eye_visibility(face.crop, face.landmarks, face.regions).strengths == (0.0, 0.0)
    # An under-exposed photo (half the light, shadows crushed by a gamma of 2) darkens eyes and
    # skin alike: its eyes still blink.
    under = np.round(255 * (crop / 255.0) ** 2.0 * 0.5).astype(np.uint8)
    assert eye_visibility(under, landmarks, regions).strengths == (1.0, 1.0)


def test_goggles_get_no_blink():
    crop, landmarks, regions = astronaut()
    for colour in ((190, 192, 198), (220, 120, 40)):
        face = F.goggles(crop, landmarks, regions, colour)
        gate = eye_visibility(face.crop, face.landmarks, face.regions)
        assert gate.strengths == (0.0, 0.0), (colour, gate.describe())
        out, _ = blink(face, gate)
        assert np.array_equal(out[face.cover], face.crop[face.cover])


def test_tinted_lenses_tone_the_blink_down():
    crop, landmarks, regions = astronaut()
    dark = F.tinted(crop, landmarks, regions)
    assert max(eye_visibility(dark.crop, dark.landmarks, dark.regions).strengths) <= 0.5
    # A lighter tint keeps more of the eye, so it keeps more of the blink (never more than none).
    light = F.tinted(crop, landmarks, regions, factor=0.6)
    light_gate = eye_visibility(light.crop, light.landmarks, light.regions)
    dark_gate = eye_visibility(dark.crop, dark.landmarks, dark.regions)
    assert all(l >= d for l, d in zip(light_gate.strengths, dark_gate.strengths))
    assert min(light_gate.strengths) < 1.0


def test_nearly_closed_eyes_barely_blink():
    face = nearly_closed()
    gate = eye_visibility(face.crop, face.landmarks, face.regions)
    assert max(gate.strengths) <= 0.2, gate.describe()
    assert any("nearly closed" in r for r in gate.reasons)


def test_protected_pixels_are_never_painted():
    """Frames of clear glasses lie in front of the lids: a full blink keeps them."""
    face = F.clear_glasses(*astronaut())
    gate = eye_visibility(face.crop, face.landmarks, face.regions)
    out, _ = blink(face, gate)
    assert np.array_equal(out[face.cover], face.crop[face.cover])
    eyes = face.regions == EYES
    assert np.abs(out[eyes].astype(int) - face.crop[eyes]).mean() > 10  # the eyes did close


def test_one_eye_can_blink_alone():
    crop, landmarks, regions = astronaut()
    scale = iod(landmarks)
    driven = close_eyelids(landmarks, 1.0, (0.0, 1.0))
    out = paint_eyelids(crop.copy(), crop, landmarks, driven, scale)
    changed = np.any(out != crop, axis=-1)
    middle = 0.5 * (landmarks[33, 0] + landmarks[263, 0])
    xs = np.nonzero(changed.any(axis=0))[0]
    assert xs.size and xs.min() > middle  # only the person's left eye (image right) changed
    assert np.array_equal(close_eyelids(landmarks, 0.7, (1.0, 1.0)), close_eyelids(landmarks, 0.7))
    with pytest.raises(ValueError, match="strength"):
        close_eyelids(landmarks, 1.0, (1.5, 0.0))


def test_gate_is_deterministic_and_checks_its_inputs():
    face = F.sunglasses(*astronaut(), label=False)
    a = eye_visibility(face.crop, face.landmarks, face.regions)
    b = eye_visibility(face.crop.copy(), face.landmarks.copy(), face.regions.copy())
    assert a.strengths == b.strengths and a.cues == b.cues and a.reasons == b.reasons
    # Thresholds move the decision: a gate that accepts any contrast and any darkness blinks.
    lax = GateConfig(texture=(0.0, 0.01), darkness=(0.0, 0.01))
    assert min(eye_visibility(face.crop, face.landmarks, face.regions, lax).strengths) > 0.5
    with pytest.raises(ValueError, match="regions12"):
        eye_visibility(face.crop, face.landmarks, face.regions[:10])
    with pytest.raises(ValueError, match="crop"):
        eye_visibility(face.crop.astype(np.float32), face.landmarks, face.regions)


def test_closure_reader_reads_the_closure_it_was_driven_with():
    crop, landmarks, regions = astronaut()
    scale = iod(landmarks)
    strength = (0.5, 0.5)
    reader = EyeClosureReader(regions, landmarks, scale, strength=strength)
    driven = close_eyelids(landmarks, 0.8, strength)
    shut = close_eye_regions(regions.copy(), landmarks, driven, scale)
    assert reader.read(shut) == pytest.approx(0.8, abs=0.08)
    # Read without the gate, the same map looks only half as shut (it would be gated twice).
    assert EyeClosureReader(regions, landmarks, scale).read(shut) < 0.6
    off = EyeClosureReader(regions, landmarks, scale, strength=(0.0, 0.0))
    assert off.read(regions) == 0.0
