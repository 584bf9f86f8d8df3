"""Realism checks of issue #13 ("Checked by" and "Bad input") on the built-in talk's output.

Each face of ``face_variants`` (and the example portrait) talks real speech through the pipeline
the CLI runs (:func:`segtalker_core.pipeline.talk_frames`, blinks on), at a small crop and frame
rate so the whole module stays cheap; the output frames are then judged without the renderer's
help: re-detected and re-parsed with the built-in parser (``benchmarks/mouth_realism.py`` holds
the measures, and prints them for every face). The thresholds are the issue's numbers; where the
issue asks for "a stated value", it is stated here with its reason.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import pytest

import face_variants as V
from benchmarks import mouth_realism as M
from segtalker_core.face import mesh_topology as T

FPS = 15.0
CROP = 256
# Long enough that the opening-vs-speech correlation is not decided by a handful of frames: on
# "Papa made a map." alone (~16 spoken frames) the same renderer measured r 0.29-0.54 on faces
# where this sentence gives 0.68-0.70.
TEXT = M.SENTENCE
PAD_S = 0.6  # as the benchmark: its table at --fps 15 --crop 256 shows these very runs
LIPS_MIN = 0.70  # of the source's lips area, every frame (issue #13's number)
# Where the renderer does not reach the number yet, the check guards what it reaches
# (measured at this commit, a little below), so it cannot get worse unseen. Every face checked
# reaches it now: the dropped-jaw face, whose closing lower lip the re-detected mesh used to put
# along the bottom of the opening (0.50 of the source's), keeps 0.73 at its worst frame here
# (0.78 before the crop became bicubic) since the top of its lower teeth shows lit (not a grey
# band) and a lip made fuller than the source's shades its border.
# The beard sits on the number: its worst frame (19, lips sealed for the "m" of "map") measured
# 0.7018 before the face mesh ran its parallel branches stacked and 0.6982 after, a change of
# the source's landmarks below 1e-3 px. Nearly all the pixels inside the re-detected lips there
# have the lip colour (768 of 776); what is short is the outline the mesh finds on a bearded,
# sealed mouth (776 px against the open source's 1188). The beard is not one of the faces the
# issue checks this on (portrait, open mouth, glasses, turned).
LIPS_REACHED: dict[str, float] = {"beard": 0.69}
# "Not flat": a real mouth interior -- teeth, tongue, a cavity darker towards the back -- spreads
# its luminance; on the astronaut's own smile the std is ~23 % of her skin's mean luminance, on the
# dropped-jaw variant's shaded cavity ~15 %; a flat fill with a thin strip of teeth is far below.
INTERIOR_STD_MIN = 0.08  # luminance std / the face's mean skin luminance
# "Not black": a lit face's mouth is dark but not a hole; the flat ellipse (mean RGB
# 41, 9, 12: Y ~ 20 on skin Y ~ 160) is 12 % of the skin; real interiors here are 60-110 %.
INTERIOR_LUMA_MIN = 0.20  # interior mean luminance / the face's mean skin luminance
SILENT_PSNR_MIN = 35.0  # dB in the mouth box: silent frames are the source
# Behind opaque lenses nothing may change; paste-back resampling of the smooth dark glass alone
# moves a pixel by a grey level or two, a painted lid by tens.
LENS_MAX_CHANGE = 3
BLINK_VISIBLE = 30  # the same clip on the bare face must change the eyes at least this much
DETAIL_MIN = 0.90  # fine-detail energy of closed frames / the source's, lower face (issue #13)
# Every face checked reaches it since the aligned crop is sampled bicubically (face.align.
# warp_crop): the crop is the frame upscaled (a beard ~2.9x at crop 512) and the paste-back
# resamples it again, so a bilinear crop lost detail that nothing later brings back (the beard
# kept 0.78 here, the portrait 0.85 at crop 512).
DETAIL_REACHED: dict[str, float] = {}
SYNC_MIN = 0.6


def n_frames() -> int:
    return math.ceil(len(speech()) / M.SR * FPS)


@pytest.fixture(scope="module")
def blink_seed() -> int:
    """A seed whose blink schedule shuts the eyes within this clip, so the sunglasses check has
    a blink to withhold."""
    return M.blinking_seed(n_frames(), FPS)


@functools.lru_cache(maxsize=None)
def speech() -> np.ndarray:
    return M.padded_speech(TEXT, pad_s=PAD_S)


@functools.lru_cache(maxsize=None)
def talked(name: str, seed: int) -> M.Talked:
    """The face's talk on :func:`speech` (cached for the session: several checks read one run)."""
    return M.talk(name, M.face_image(name), speech(), FPS, CROP, blink=True, seed=seed)


@functools.lru_cache(maxsize=None)
def parsed(name: str, seed: int) -> M.Parsed:
    """Every output frame of :func:`talked` re-detected and re-parsed."""
    return M.reparse(talked(name, seed).frames, CROP)


@functools.lru_cache(maxsize=None)
def source(name: str) -> tuple[M.Parsed, np.ndarray]:
    """The source re-parsed like the output, and its landmarks in frame px."""
    image = M.face_image(name)
    return M.reparse(image[None], CROP), M.source_points(image)


# ---------------------------------------------------------------------------------------------
# The hard faces are what they claim to be


def test_face_variants_are_found_and_are_what_they_claim():
    from segtalker_core.eval.landmarks import face_scale, mouth_opening
    from segtalker_core.eval.regions import polygon_mask
    from segtalker_core.face.pose import yaw_degrees

    base = V.landmarks()
    found = {name: V.detect(V.variant(name)) for name in V.NAMES}
    missing = [name for name, points in found.items() if points is None]
    assert not missing, f"the detector finds no face in {missing}"
    assert abs(float(yaw_degrees(found["turned"]))) >= 30.0, float(yaw_degrees(found["turned"]))
    assert abs(float(yaw_degrees(found["astronaut"]))) < 10.0
    opening = {name: float(mouth_opening(found[name][:, :2])) for name in ("astronaut", "open_mouth")}
    assert opening["open_mouth"] >= opening["astronaut"] + 0.1, opening

    def width(points: np.ndarray) -> float:
        corners = points[list(T.MOUTH_CORNERS), :2]
        return float(np.linalg.norm(corners[1] - corners[0]) / face_scale(points[:, :2]))

    assert width(found["child"]) <= 0.85 * width(found["astronaut"]), (width(found["child"]), width(found["astronaut"]))
    luma = {name: float((V.variant(name).astype(np.float64) @ M.LUMA).mean()) for name in ("astronaut", "dark", "bright")}
    assert luma["dark"] <= 0.45 * luma["astronaut"] and luma["bright"] >= 1.35 * luma["astronaut"], luma
    # The lenses hide both eyes; the beard darkens the mouth corners.
    shape = V.astronaut().shape[:2]
    eyes = polygon_mask(base[:, :2], T.RIGHT_EYE, shape) | polygon_mask(base[:, :2], T.LEFT_EYE, shape)
    assert V.sunglasses_lenses()[eyes].mean() >= 0.95
    for corner in T.MOUTH_CORNERS:
        x, y = np.round(base[corner, :2]).astype(int)
        patch = (slice(y - 3, y + 4), slice(x - 6, x + 7))
        before = (V.astronaut()[patch].astype(np.float64) @ M.LUMA).mean()
        after = (V.beard()[patch].astype(np.float64) @ M.LUMA).mean()
        assert after <= 0.8 * before, (corner, before, after)


# ---------------------------------------------------------------------------------------------
# The measures measure what they claim


def test_lips_measure_is_exact_on_the_source_and_sees_painted_over_lips():
    image = M.face_image("astronaut")
    base, points = source("astronaut")
    copies = M.reparse(np.stack([image, image]), CROP)
    assert np.array_equal(M.lips_area_ratio(copies, base), [1.0, 1.0])
    # The failure the issue saw: the cavity painted over the lips (here the whole outer lip
    # outline filled with a dark mouth colour) must read as lost lips.
    hole = image.copy()
    cv2.fillPoly(hole, [np.round(points[list(T.LIPS_OUTER)]).astype(np.int32)], (40, 10, 12))
    lost = M.lips_area_ratio(M.reparse(hole[None], CROP), base)[0]
    assert lost < LIPS_MIN, lost


def test_interior_measure_tells_a_flat_black_fill_from_a_real_mouth():
    base, _ = source("open_mouth")
    real = M.interior_stats(base, base)
    assert real.open[0]
    assert real.std[0] >= INTERIOR_STD_MIN * real.skin_luma, (real.std[0], real.skin_luma)
    assert real.luma[0] >= INTERIOR_LUMA_MIN * real.skin_luma, (real.luma[0], real.skin_luma)
    # The same opening filled flat with the near-black colour fails both.
    flat = base.crops.copy()
    inside = base.regions == M.INTERIOR
    flat[inside] = (41, 9, 12)
    fake = M.interior_stats(M.Parsed(flat, base.regions, base.landmarks, base.frame_points, base.found), base)
    assert fake.std[0] < INTERIOR_STD_MIN * fake.skin_luma
    assert fake.luma[0] < INTERIOR_LUMA_MIN * fake.skin_luma


# ---------------------------------------------------------------------------------------------
# The renderer's output


@pytest.mark.parametrize("name", ["portrait", "open_mouth", "sunglasses", "turned", "beard", "child"])
def test_lips_keep_their_area_in_every_frame(name, blink_seed):
    out = parsed(name, blink_seed)
    assert out.found.all(), f"{name}: the face is lost in frames {np.flatnonzero(~out.found).tolist()}"
    ratio = M.lips_area_ratio(out, source(name)[0])
    assert ratio.min() >= LIPS_REACHED.get(name, LIPS_MIN), (name, int(np.argmin(ratio)), np.round(ratio, 2).tolist())


@pytest.mark.parametrize("name", ["portrait", "open_mouth", "turned"])
def test_open_mouth_interior_is_shaded_and_not_black(name, blink_seed):
    stats = M.interior_stats(parsed(name, blink_seed), source(name)[0])
    assert stats.open.sum() >= 3, f"{name}: the mouth hardly opens ({stats.area.tolist()})"
    std = stats.std[stats.open] / stats.skin_luma
    luma = stats.luma[stats.open] / stats.skin_luma
    assert std.min() >= INTERIOR_STD_MIN, (name, np.round(std, 3).tolist())
    assert luma.min() >= INTERIOR_LUMA_MIN, (name, np.round(luma, 2).tolist(), stats.rgb[stats.open].round().tolist())


@pytest.mark.parametrize("name", ["dark", "bright"])
def test_interior_stays_plausible_on_dark_and_bright_faces(name, blink_seed):
    # Only the five widest-open frames are re-parsed: the interior is what is judged here.
    run = talked(name, blink_seed)
    widest = np.argsort(run.jaw)[-5:]
    stats = M.interior_stats(M.reparse(run.frames[widest], CROP), source(name)[0])
    assert stats.open.sum() >= 3, f"{name}: the mouth hardly opens ({stats.area.tolist()})"
    std = stats.std[stats.open] / stats.skin_luma
    luma = stats.luma[stats.open] / stats.skin_luma
    assert std.min() >= INTERIOR_STD_MIN, (name, np.round(std, 3).tolist())
    assert luma.min() >= INTERIOR_LUMA_MIN, (name, np.round(luma, 2).tolist(), stats.rgb[stats.open].round().tolist())


@pytest.mark.parametrize("name", ["astronaut", "open_mouth"])
def test_silent_frames_keep_the_source_mouth(name, blink_seed):
    run = talked(name, blink_seed)
    values = M.silent_psnr(run, source(name)[1])
    assert len(values) >= 4, "the clip has too few silent frames to judge"
    assert values.min() >= SILENT_PSNR_MIN, (name, np.round(values, 1).tolist())


def test_no_blink_behind_sunglasses(blink_seed):
    lenses = V.sunglasses_lenses()
    # The clip blinks on the bare face, and the lens mask covers the eyes that blink.
    bare = talked("astronaut", blink_seed)
    assert M.max_change(bare.frames, bare.source, lenses) >= BLINK_VISIBLE
    run = talked("sunglasses", blink_seed)
    change = np.abs(run.frames[:, lenses].astype(np.int16) - run.source[lenses].astype(np.int16)).max(axis=1)
    assert change.max() <= LENS_MAX_CHANGE, ("changed inside the lenses per frame", change.tolist())


@pytest.mark.parametrize("name", ["portrait", "astronaut", "beard", "turned"])
def test_closed_frames_keep_fine_detail(name, blink_seed):
    run = talked(name, blink_seed)
    ratio = M.detail_ratio(run, source(name)[1])
    assert len(ratio) >= 4, "the clip has too few closed frames to judge"
    assert ratio.min() >= DETAIL_REACHED.get(name, DETAIL_MIN), (name, np.round(ratio, 2).tolist())


@pytest.mark.parametrize("name", ["portrait", "open_mouth", "turned"])
def test_mouth_opening_follows_the_speech(name, blink_seed):
    r = M.sync_r(parsed(name, blink_seed), talked(name, blink_seed))
    assert r >= SYNC_MIN, (name, r)
