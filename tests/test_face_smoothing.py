"""Temporal smoothing of crop transforms: less jitter, constants untouched, gaps respected."""
from __future__ import annotations

import math

import numpy as np
import pytest

from segtalker_core.face.smoothing import OneEuroSmoother, Smoothing, smooth_similarity

N = 120


def _motion() -> np.ndarray:
    """A slow head motion: drifting centre, breathing scale, gentle nod; (cx, cy, half, angle)."""
    t = np.arange(N) / 25.0
    return np.stack([
        300 + 20 * np.sin(0.5 * t), 250 + 10 * np.cos(0.4 * t), 150 + 5 * np.sin(0.3 * t),
        0.1 * np.sin(0.6 * t),
    ], axis=1)


def _noisy(clean: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return clean + rng.normal(0, 1, clean.shape) * np.array([2.0, 2.0, 1.5, 0.01])


def _jitter(params: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """RMS error per parameter against the clean motion."""
    return np.sqrt(((params - clean) ** 2).mean(axis=0))


@pytest.mark.parametrize("method", ["gaussian", "one_euro"])
def test_smoothing_reduces_jitter_of_every_parameter(method):
    clean = _motion()
    noisy = _noisy(clean)
    smoothed = smooth_similarity(noisy, np.ones(N, bool), Smoothing(method))
    before, after = _jitter(noisy, clean), _jitter(smoothed, clean)
    assert (after < 0.6 * before).all(), (before, after)


@pytest.mark.parametrize("method", ["gaussian", "one_euro"])
def test_constant_sequence_is_unchanged(method):
    constant = np.tile([256.0, 240.0, 180.0, 0.05], (30, 1))
    out = smooth_similarity(constant, np.ones(30, bool), Smoothing(method))
    np.testing.assert_allclose(out, constant, rtol=0, atol=1e-9)


def test_none_returns_a_copy_of_the_input():
    noisy = _noisy(_motion())
    out = smooth_similarity(noisy, np.ones(N, bool), Smoothing("none"))
    np.testing.assert_array_equal(out, noisy)
    assert out is not noisy


@pytest.mark.parametrize("method", ["gaussian", "one_euro"])
def test_frames_without_face_do_not_pull_the_others(method):
    clean = _motion()
    noisy = _noisy(clean)
    valid = np.ones(N, bool)
    valid[40:50] = False
    noisy[40:50] = 0.0  # what align_faces stores for faceless frames: must not leak in
    out = smooth_similarity(noisy, valid, Smoothing(method))
    np.testing.assert_array_equal(out[~valid], noisy[~valid])
    assert np.abs(out[valid] - clean[valid]).max(axis=0)[0] < 10.0  # px, not dragged towards 0
    assert (np.abs(out[valid, 2] - clean[valid, 2]) < 5.0).all()


def test_gaussian_does_not_smooth_across_a_long_gap():
    """Two shots separated by a long faceless gap stay independent (a cut is not blended)."""
    params = np.zeros((40, 4))
    params[:15] = [100.0, 100.0, 50.0, 0.0]
    params[25:] = [400.0, 300.0, 80.0, 0.3]
    valid = np.ones(40, bool)
    valid[15:25] = False
    out = smooth_similarity(params, valid, Smoothing("gaussian", sigma=2.0))
    np.testing.assert_allclose(out[:15], params[:15], atol=1e-9)
    np.testing.assert_allclose(out[25:], params[25:], atol=1e-9)


def test_angle_wrapping_is_not_smoothed_into_a_spin():
    """An angle hovering around +-pi (upside-down face) must stay near pi, not average to 0."""
    rng = np.random.default_rng(1)
    angles = math.pi + rng.normal(0, 0.02, 50)
    angles = (angles + math.pi) % (2 * math.pi) - math.pi  # wraps between -pi and pi
    params = np.stack([np.full(50, 200.0), np.full(50, 200.0), np.full(50, 90.0), angles], axis=1)
    for method in ("gaussian", "one_euro"):
        out = smooth_similarity(params, np.ones(50, bool), Smoothing(method))
        assert (np.abs(np.cos(out[:, 3]) + 1) < 0.01).all(), method


def test_one_euro_state_carries_across_chunks():
    noisy = _noisy(_motion())
    valid = np.ones(N, bool)
    whole = OneEuroSmoother()(noisy, valid)
    chunked = OneEuroSmoother()
    parts = [chunked(noisy[i:i + 25], valid[i:i + 25]) for i in range(0, N, 25)]
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-9)


def test_one_euro_follows_fast_motion_with_little_lag():
    """A quick 100 px head move must be followed (beta raises the cut-off when moving)."""
    params = np.tile([200.0, 200.0, 100.0, 0.0], (60, 1))
    params[20:, 0] = np.clip(200 + 25 * np.arange(40), 200, 300)  # 4 frames to move 100 px
    out = smooth_similarity(params, np.ones(60, bool), Smoothing("one_euro"))
    assert out[30, 0] > 290  # caught up within 6 frames of the end of the move


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        Smoothing("kalman")
    with pytest.raises(ValueError, match="sigma"):
        Smoothing("gaussian", sigma=-1)
    assert Smoothing.coerce(None, video=True).method == "gaussian"
    assert Smoothing.coerce(None, video=False).method == "none"
