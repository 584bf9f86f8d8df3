"""Blinks: a seeded natural schedule, lids that meet, eyes covered by lid skin."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.blink import (
    BlinkConfig, blink_schedule, close_eye_regions, close_eyelids, paint_eyelids,
)
from test_procedural_common import closed_astronaut, iod

FPS = 25.0
EYES = L.region_index("eyes")


def runs(closure: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) frame ranges where the lids are not fully open."""
    on = np.concatenate([[0], (closure > 0).astype(int), [0]])
    edges = np.flatnonzero(np.diff(on))
    return list(zip(edges[::2], edges[1::2]))


def test_schedule_is_deterministic_per_seed():
    a, b = blink_schedule(600, FPS, seed=3), blink_schedule(600, FPS, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, blink_schedule(600, FPS, seed=4))
    assert a.dtype == np.float32 and a.shape == (600,)


@pytest.mark.parametrize("seed", range(5))
def test_blinks_are_natural(seed):
    closure = blink_schedule(int(30 * FPS), FPS, seed=seed)  # 30 s
    blinks = runs(closure)
    assert 5 <= len(blinks) <= 10  # one every 3-5 s
    for start, end in blinks:
        assert 3 <= end - start <= 7  # 0.15-0.25 s at 25 fps
        assert closure[start:end].max() == 1.0  # fully shut at least once
    starts = np.array([s for s, _ in blinks]) / FPS
    assert np.diff(starts).min() >= 3.0 - 0.3
    margin = int(0.5 * FPS)
    assert np.all(closure[:margin] == 0) and np.all(closure[-margin:] == 0)
    assert closure.min() >= 0.0 and closure.max() <= 1.0


def test_short_clips_and_bad_arguments():
    assert np.all(blink_schedule(10, FPS) == 0)  # 0.4 s: no room outside the margins
    assert blink_schedule(0, FPS).shape == (0,)
    with pytest.raises(ValueError, match="fps"):
        blink_schedule(10, 0.0)
    with pytest.raises(ValueError, match="interval"):
        blink_schedule(10, FPS, config=BlinkConfig(interval_s=(5.0, 3.0)))


def test_closed_lids_meet_and_the_rest_stays():
    landmarks = closed_astronaut()[1]
    shut = close_eyelids(landmarks, 1.0)
    for upper, lower in ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER), (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER)):
        np.testing.assert_allclose(shut[list(upper), :2], shut[list(lower), :2], atol=1e-3)
        # The upper lid travels most of the way down.
        drop = shut[upper[4], 1] - landmarks[upper[4], 1]
        rise = landmarks[lower[4], 1] - shut[lower[4], 1]
        assert drop > 3 * rise > 0
    lids = set(T.RIGHT_EYE) | set(T.LEFT_EYE)
    others = [i for i in range(478) if i not in lids]
    assert np.array_equal(shut[others], landmarks[others])
    half = close_eyelids(landmarks[None], np.array([0.5]))[0]
    gap = lambda lm: lm[T.LEFT_EYE_LOWER[4], 1] - lm[T.LEFT_EYE_UPPER[4], 1]
    assert gap(half) == pytest.approx(0.5 * gap(landmarks), rel=1e-4)


def test_eye_region_shrinks_during_a_blink():
    crop, landmarks, regions = closed_astronaut()
    scale = iod(landmarks)
    open_area = int((regions == EYES).sum())
    areas = []
    for c in (0.0, 0.5, 1.0):
        out = close_eye_regions(regions.copy(), landmarks, close_eyelids(landmarks, c), scale)
        areas.append(int((out == EYES).sum()))
        assert np.array_equal(out[regions != EYES], regions[regions != EYES])
    assert areas[0] == open_area
    assert areas[2] < 0.15 * open_area < areas[1] < open_area


def test_painted_lids_cover_the_eyes_with_skin():
    crop, landmarks, regions = closed_astronaut()
    scale = iod(landmarks)
    out = paint_eyelids(crop.copy(), crop, landmarks, close_eyelids(landmarks, 1.0), scale)
    eyes = regions == EYES
    skin = crop[regions == L.region_index("skin")].astype(float).mean(axis=0)
    before = np.abs(crop[eyes].astype(float).mean(axis=0) - skin).sum()
    after = np.abs(out[eyes].astype(float).mean(axis=0) - skin).sum()
    assert after < 0.4 * before  # the dark iris and white sclera are gone under skin-coloured lids
    changed = np.any(out != crop, axis=-1)
    rows = np.nonzero(changed.any(axis=1))[0]
    eye_rows = np.nonzero(eyes.any(axis=1))[0]
    assert rows.min() >= eye_rows.min() - 0.1 * scale and rows.max() <= eye_rows.max() + 0.1 * scale
    # Open lids paint nothing.
    assert np.array_equal(paint_eyelids(crop.copy(), crop, landmarks, landmarks, scale), crop)
