"""Idle head motion of portraits: the schedule (``procedural.head_motion``) and the warp that
applies it (``procedural.head_warp``): reproducible per seed, nothing at strength 0, bounded and
drift-free, nods on the stressed syllables; the person moves rigidly by the scheduled amount and
the far background stays bit for bit."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segtalker_core.procedural import head_motion as M
from segtalker_core.procedural.head_motion import HeadMotion, head_motion_schedule, nod_frames
from segtalker_core.procedural.head_warp import INTERPOLATION, PersonWarp

FPS = 25.0


def _syllables(n: int, strong: list[int], weak: list[int]) -> np.ndarray:
    """A jaw-opening track [n]: a bump of 0.9 at each strong frame, of 0.35 at each weak one."""
    frames = np.arange(n)
    drive = np.zeros(n)
    for centre, height in [(c, 0.9) for c in strong] + [(c, 0.35) for c in weak]:
        drive = np.maximum(drive, height * np.exp(-0.5 * ((frames - centre) / 2.0) ** 2))
    return drive.astype(np.float32)


def _motion(n: int, shift=(0.0, 0.0), roll=0.0, scale=0.0) -> HeadMotion:
    """``n`` frames: frame 0 still, every other frame the given motion."""
    shifts = np.tile(np.asarray(shift, np.float32), (n, 1))
    rolls, scales = np.full(n, roll, np.float32), np.full(n, scale, np.float32)
    shifts[0], rolls[0], scales[0] = 0.0, 0.0, 0.0
    return HeadMotion(shifts, rolls, scales, np.zeros(0, np.int32))


# ---------------------------------------------------------------------------------------------
# The schedule


def test_same_seed_same_motion_other_seed_other_motion():
    a = head_motion_schedule(200, FPS, seed=7, strength=0.8)
    b = head_motion_schedule(200, FPS, seed=7, strength=0.8)
    c = head_motion_schedule(200, FPS, seed=8, strength=0.8)
    for name in ("shift", "roll", "scale"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.allclose(getattr(a, name), getattr(c, name))


def test_strength_zero_is_exactly_still_and_strength_scales_linearly():
    still = head_motion_schedule(100, FPS, seed=3, strength=0.0, speech=_syllables(100, [50], []))
    assert not still.shift.any() and not still.roll.any() and not still.scale.any()
    assert all(still.is_still(t) for t in range(100))
    half, full = (head_motion_schedule(100, FPS, seed=3, strength=s) for s in (0.5, 1.0))
    np.testing.assert_allclose(half.roll, 0.5 * full.roll, atol=1e-6)
    np.testing.assert_allclose(half.shift, 0.5 * full.shift, atol=1e-7)


def test_long_clip_is_bounded_slow_and_does_not_drift():
    n = int(300 * FPS)  # five minutes
    motion = head_motion_schedule(n, FPS, seed=11, strength=1.0, speech=_syllables(n, list(range(40, n, 37)), []))
    channels = {"shift_x": motion.shift[:, 0], "shift_y": motion.shift[:, 1], "roll": motion.roll,
                "scale": motion.scale}
    for name, values in channels.items():
        peak = M.SWAY_PEAK[name] + (M.NOD_PEAK if name == "shift_y" else 0.0)
        assert np.abs(values).max() <= 2 * peak, name
        assert np.abs(values).max() >= 0.25 * M.SWAY_PEAK[name], name  # it does move
        assert abs(values.mean()) < 1e-3 * peak, name  # zero mean: the portrait's pose on average
        # No drift: every 30 s stretch stays centred (a slow sinusoid averages out).
        windows = values[: n - n % 750].reshape(-1, 750).mean(axis=1)
        assert np.abs(windows).max() < 0.35 * peak, name
        assert values[0] == 0.0 and values[-1] == 0.0, name  # starts and ends at the portrait's pose
    # Sway is slow: almost no power above 0.5 Hz (the horizontal channel has no nods in it).
    power = np.abs(np.fft.rfft(channels["shift_x"])) ** 2
    freqs = np.fft.rfftfreq(n, 1.0 / FPS)
    assert power[freqs > 0.5].sum() < 0.01 * power.sum()


def test_nods_fall_on_the_stressed_syllables():
    n = 150
    strong, weak = [20, 62, 110], [40, 85, 130]
    speech = _syllables(n, strong, weak)
    np.testing.assert_array_equal(nod_frames(speech, FPS), strong)
    with_speech = head_motion_schedule(n, FPS, seed=5, strength=1.0, speech=speech)
    without = head_motion_schedule(n, FPS, seed=5, strength=1.0)
    np.testing.assert_array_equal(with_speech.roll, without.roll)  # speech changes the nods only
    np.testing.assert_array_equal(with_speech.shift[:, 0], without.shift[:, 0])
    dips = with_speech.shift[:, 1] - without.shift[:, 1]
    for frame in strong:  # the head is lowest (y down) on the stressed syllable
        window = dips[frame - 8 : frame + 9]
        assert abs(int(np.argmax(window)) - 8) <= 1, (frame, window)
        assert window.max() - window.min() > 0.5 * M.NOD_PEAK
    for frame in weak:  # and does not nod on the weak ones
        assert dips[frame] - dips[frame - 6 : frame + 7].min() < 0.1 * M.NOD_PEAK


def test_nods_keep_their_spacing_and_silence_has_none():
    dense = _syllables(100, list(range(10, 90, 5)), [])  # a stressed syllable every 0.2 s
    nods = nod_frames(dense, FPS)
    assert len(nods) >= 3 and np.diff(nods).min() >= M.NOD_SPACING_S * FPS
    assert len(nod_frames(np.zeros(100, np.float32), FPS)) == 0


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "lots", True])
def test_strength_outside_0_to_1_is_refused_naming_the_input(bad):
    with pytest.raises(ValueError, match=r"input 'head_motion' must be a number within 0\.\.1"):
        head_motion_schedule(10, FPS, strength=bad)


# ---------------------------------------------------------------------------------------------
# The warp


def _scene(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(frame [S, S, 3] uint8 of smooth random texture, person mask [S, S]: a head-and-shoulders
    blob in the middle, the corners far from it)."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.float32), (0, 0), 2.0)
    frame = np.clip((texture - texture.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    person = np.zeros((size, size), np.uint8)
    cv2.ellipse(person, (size // 2, int(size * 0.4)), (size // 7, size // 5), 0, 0, 360, 1, -1)
    cv2.ellipse(person, (size // 2, size), (size // 3, size // 4), 0, 0, 360, 1, -1)
    return frame, person.astype(bool)


def test_a_shift_moves_the_person_by_the_scheduled_amount_and_keeps_the_far_background():
    frame, person = _scene()
    warp = PersonWarp.from_person(person, pivot=(128.0, 160.0), face_height=80.0)
    motion = _motion(2, shift=(3 / 80, -2 / 80))  # 3 px right, 2 px up
    assert warp.apply(frame, motion, 0) is frame  # a still frame is not touched at all
    moved = warp.apply(frame, motion, 1)
    head = (slice(70, 134), slice(100, 156))  # inside the head, where the weight is 1
    y0, _, x0, _ = warp.box
    assert (warp.weight[70 - y0 : 134 - y0, 100 - x0 : 156 - x0] == 1).all()
    grey = lambda image: cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)  # noqa: E731
    window = cv2.createHanningWindow((56, 64), cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(grey(frame[head]), grey(moved[head]), window)
    assert (round(dx), round(dy)) == (3, -2), (dx, dy)
    # Rigid: exactly, a few pixels in from the head's outline (the displacement is computed on a
    # grid COARSE times sparser: within one cell of the fade it blends in).
    np.testing.assert_array_equal(moved[80:124, 108:148], frame[82:126, 105:145])
    far = np.ones(person.shape, bool)
    y0, y1, x0, x1 = warp.box
    far[y0:y1, x0:x1] = warp.weight == 0  # outside the box, and inside it where the weight is 0
    assert far.mean() > 0.2  # the corners are far enough
    np.testing.assert_array_equal(moved[far], frame[far])
    assert not np.array_equal(moved[~far], frame[~far])


def test_a_roll_turns_the_head_rigidly_about_the_pivot():
    frame, person = _scene()
    pivot = (128.0, 160.0)
    warp = PersonWarp.from_person(person, pivot=pivot, face_height=80.0)
    moved = warp.apply(frame, _motion(2, roll=2.0, scale=0.01), 1)
    # The same rigid motion of the whole frame: clockwise 2 degrees, 1% larger, about the pivot.
    rigid = cv2.getRotationMatrix2D(pivot, -2.0, 1.01)
    expected = cv2.warpAffine(frame, rigid, frame.shape[1::-1], flags=INTERPOLATION)
    head = (slice(70, 134), slice(100, 156))
    difference = np.abs(moved[head].astype(int) - expected[head].astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 4  # rounding of two interpolations
    assert np.abs(frame[head].astype(int) - expected[head].astype(int)).mean() > 10  # it did turn
