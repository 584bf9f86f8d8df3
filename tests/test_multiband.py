"""Multi-band paste-back (``face.multiband``, ``paste_face(blend="multiband")``): the frame is
exact beyond the footprint's reach, texture inside survives, and a shading mismatch along the feather
is spread wider (a gentler seam) than by one alpha blend."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.face import paste as P
from segtalker_core.face.multiband import multiband_blend, reach
from test_paste import frame_alpha, paint_mouth, scene  # noqa: F401  (scene is a fixture)


def disc_alpha(size: int = 300, radius: float = 100.0, feather: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    alpha = np.clip((radius - np.hypot(yy - size / 2, xx - size / 2)) / feather, 0.0, 1.0)
    alpha[alpha < 1 / 512] = 0.0
    return alpha.astype(np.float32)


def linear(fg, bg, alpha):
    a = alpha[..., None]
    return np.clip(np.rint(a * fg + (1 - a) * bg), 0, 255).astype(np.uint8)


def textured(size: int, level: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-25, 26, (size, size, 3))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def test_the_frame_is_exact_where_the_mask_is_zero_and_the_paste_inside():
    alpha = disc_alpha()
    fg, bg = textured(300, 170, 1), textured(300, 80, 2)
    out = multiband_blend(fg, bg, alpha)
    near = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((2 * reach() + 1,) * 2)) > 0
    assert np.array_equal(out[~near], bg[~near])
    assert not np.array_equal(out[alpha == 0], bg[alpha == 0])  # the coarse bands do reach out
    # Well inside (every band's weight is 1 there) the pasted texture is kept, pixel for pixel.
    core = cv2.erode((alpha >= 1).astype(np.uint8), np.ones((41, 41))) > 0
    assert core.sum() > 10000
    assert np.abs(out[core].astype(int) - fg[core]).max() <= 1


def test_one_band_is_the_plain_alpha_blend():
    alpha = disc_alpha()
    fg, bg = textured(300, 170, 1), textured(300, 80, 2)
    assert np.array_equal(multiband_blend(fg, bg, alpha, bands=1), linear(fg, bg, alpha))


def test_a_shading_step_is_spread_over_a_wider_transition():
    """A paste 90 levels brighter than the frame, over a 6 px feather: one alpha blend makes a
    6 px step (the halo); the coarse bands spread it over tens of pixels, so the steepest
    change across the seam is markedly lower."""
    alpha = disc_alpha(feather=6.0)
    fg, bg = np.full((300, 300, 3), 170, np.uint8), np.full((300, 300, 3), 80, np.uint8)
    row = 150
    steep_linear = np.abs(np.diff(linear(fg, bg, alpha)[row, :, 0].astype(int))).max()
    steep_multi = np.abs(np.diff(multiband_blend(fg, bg, alpha)[row, :, 0].astype(int))).max()
    assert steep_multi < 0.7 * steep_linear, (steep_multi, steep_linear)


def test_mismatched_shapes_and_bad_band_counts_are_refused():
    alpha = disc_alpha()
    fg = bg = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(ValueError, match="same pixels"):
        multiband_blend(fg, bg[:200], alpha)
    with pytest.raises(ValueError, match="bands must be at least 1"):
        multiband_blend(fg, bg, alpha, bands=0)


def test_a_tiny_box_uses_fewer_levels_and_still_blends():
    alpha = disc_alpha(size=12, radius=4, feather=2)
    fg, bg = np.full((12, 12, 3), 200, np.uint8), np.full((12, 12, 3), 50, np.uint8)
    out = multiband_blend(fg, bg, alpha, bands=6)
    assert out[6, 6, 0] > 150 and out[0, 0, 0] < 80  # one level at 12 px: close to the alpha blend


def test_paste_face_multiband_touches_only_the_footprint(scene):  # noqa: F811
    frame, matrix, crop, regions = scene
    painted, mouth = paint_mouth(crop, regions)
    mask = P.face_blend_mask(regions, 4)
    out = P.paste_face(frame, painted, matrix, mask, blend="multiband")
    footprint = frame_alpha(mask, matrix, frame.shape) > 0
    reached = cv2.dilate(footprint.astype(np.uint8), np.ones((2 * reach() + 3,) * 2)) > 0
    changed = np.any(out != frame, axis=-1)
    assert changed.any() and not (changed & ~reached).any()
    mouth_in_frame = frame_alpha(mouth.astype(np.float32), matrix, frame.shape) > 0.99
    assert np.abs(out[mouth_in_frame].astype(int) - frame[mouth_in_frame]).mean() > 50
    assert np.array_equal(frame, skimage.data.astronaut())  # the input is not written


def test_paste_face_refuses_an_unknown_blend(scene):  # noqa: F811
    frame, matrix, crop, regions = scene
    with pytest.raises(ValueError, match="blend must be one of linear, multiband"):
        P.paste_face(frame, crop, matrix, P.face_blend_mask(regions, 4), blend="poisson")


def test_reach_grows_with_the_bands():
    assert reach(1) < reach(2) < reach(4) == 24


def test_the_dub_takes_multiband_from_its_settings(tmp_path):
    import video_clips as C

    from segtalker_core import talk_file
    from segtalker_core.video_io import read_video

    speech = C.speech_clip(tmp_path / "speech.wav", 0.4)
    portrait = C.example_frames(1)[0]
    results = {}
    for blend in ("linear", "multiband"):
        out = talk_file.talk_image_file(portrait, str(speech), tmp_path / f"{blend}.mp4",
                                        settings=talk_file.TalkSettings(blend=blend, blink=False))
        results[blend] = read_video(out.path)[0]
    assert results["linear"].shape == results["multiband"].shape
    assert not np.array_equal(results["linear"], results["multiband"])
    with pytest.raises(ValueError, match="blend must be one of linear, multiband"):
        talk_file.TalkSettings(blend="poisson")
