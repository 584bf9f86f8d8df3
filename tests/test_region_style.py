"""Built-in style codes: region statistics, swapping toward a reference, feathered recolouring."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.containers import FaceTrack, StyleCodes
from segtalker_core.procedural import region_style as RS

R = {name: i for i, name in enumerate(L.REGIONS_12)}
SIZE = 128


def face_regions(size: int = SIZE) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)

    def ellipse(cx, cy, ax, ay, region):
        cv2.ellipse(m, (round(cx * size), round(cy * size)),
                    (round(ax * size), round(ay * size)), 0, 0, 360, R[region], -1)

    ellipse(.5, .30, .36, .24, "hair")
    ellipse(.5, .58, .27, .33, "skin")
    for x in (.373, .623):
        ellipse(x, .41, .07, .02, "brows")
        ellipse(x, .476, .05, .025, "eyes")
    ellipse(.5, .58, .05, .08, "nose")
    ellipse(.5, .75, .14, .05, "lips")
    return m


def paint(regions: np.ndarray, colours: dict[str, tuple], texture: float, seed: int) -> np.ndarray:
    """Flat region colours times a smooth luminance texture (so every region has a std)."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, regions.shape).astype(np.float32), (0, 0), 1.5)
    image = np.zeros(regions.shape + (3,), np.float32)
    base = {"background": (40, 60, 80), "skin": (225, 180, 150), "nose": (215, 170, 140),
            "eyes": (240, 240, 235), "brows": (90, 60, 40), "hair": (120, 80, 40),
            "lips": (200, 90, 100)}
    base.update(colours)
    for name, colour in base.items():
        image[regions == R[name]] = colour
    image *= 1.0 + texture * noise[..., None] / max(noise.std(), 1e-6)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def faces():
    regions = face_regions()
    source = paint(regions, {}, 0.05, seed=1)
    reference = paint(regions, {"lips": (120, 30, 150), "hair": (230, 200, 120)}, 0.1, seed=2)
    return source, reference, regions


def lab_mean(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return RS.rgb_to_lab(image)[mask].mean(axis=0)


def test_stats_match_region_colours_and_validity(faces):
    source, _, regions = faces
    stats, valid = RS.region_lab_stats(source, regions)
    assert stats.shape == (12, 6) and stats.dtype == np.float32
    present = {R[n] for n in ("background", "skin", "nose", "eyes", "brows", "hair", "lips")}
    assert {int(r) for r in np.flatnonzero(valid)} == present
    lips = regions == R["lips"]
    np.testing.assert_allclose(stats[R["lips"], :3], lab_mean(source, lips), atol=1.5)
    assert stats[R["lips"], 3] > 0.5  # the texture gives L a spread

    # A region smaller than min_pixels is invalid.
    tiny = regions.copy()
    tiny[10:14, 10:14] = R["earrings"]
    _, valid = RS.region_lab_stats(source, tiny, min_pixels=20)
    assert not valid[R["earrings"]]
    _, valid = RS.region_lab_stats(source, tiny, min_pixels=16)
    assert valid[R["earrings"]]


def test_stats_ignore_the_mixed_border_pixels():
    regions = np.full((64, 64), R["skin"], np.uint8)
    regions[20:44, 20:44] = R["lips"]
    image = np.full((64, 64, 3), (230, 190, 160), np.uint8)
    image[20:44, 20:44] = (180, 40, 60)
    image[19:45, 19:45][[0, -1]] = (0, 0, 0)  # dark seam pixels on the lips' edge rows
    image[20:44, 20:44][[0, -1]] = (0, 0, 0)
    stats, _ = RS.region_lab_stats(image, regions)
    expected = RS.rgb_to_lab(np.array([[[180, 40, 60]]], np.uint8))[0, 0]
    np.testing.assert_allclose(stats[R["lips"], :3], expected, atol=0.5)


def test_swap_moves_lip_colour_toward_the_reference(faces):
    source, reference, regions = faces
    style = RS.style_from_crops(source[None], regions[None])
    ref_style = RS.style_from_crops(reference[None], regions[None])
    lips = regions == R["lips"]
    goal = lab_mean(reference, lips)
    before = np.linalg.norm(lab_mean(source, lips) - goal)
    assert before > 30  # the two looks really differ

    shrink = {}
    for strength in (1.0, 0.5):
        swapped = RS.swap_regions(style, ref_style, ["lips"], strength)
        out = RS.apply_style_edit(source, regions, swapped)
        shrink[strength] = 1 - np.linalg.norm(lab_mean(out, lips) - goal) / before
    assert shrink[1.0] > 0.8
    assert 0.35 < shrink[0.5] < 0.65


def test_pixels_beyond_the_feather_are_untouched(faces):
    source, reference, regions = faces
    style = RS.style_from_crops(source[None], regions[None])
    ref_style = RS.style_from_crops(reference[None], regions[None])
    swapped = RS.swap_regions(style, ref_style, "lips", 1.0)
    out = RS.apply_style_edit(source, regions, swapped, feather=4)
    lips = (regions == R["lips"]).astype(np.uint8)
    near = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))) > 0
    assert np.array_equal(out[~near], source[~near])
    assert (out[lips > 0] != source[lips > 0]).any()
    # The feather: just outside the lips the change is partial, and it fades with distance.
    skin_ring = near & (lips == 0)
    assert (out[skin_ring] != source[skin_ring]).any()


def test_strength_zero_is_identity(faces):
    source, reference, regions = faces
    style = RS.style_from_crops(source[None], regions[None])
    ref_style = RS.style_from_crops(reference[None], regions[None])
    swapped = RS.swap_regions(style, ref_style, ["lips", "hair"], 0.0)
    np.testing.assert_array_equal(swapped.region_stats, style.region_stats)
    assert np.array_equal(RS.apply_style_edit(source, regions, swapped), source)


def test_missing_reference_region_warns_and_keeps_the_source(faces, caplog):
    source, reference, regions = faces
    no_lips = regions.copy()
    no_lips[no_lips == R["lips"]] = R["skin"]
    style = RS.style_from_crops(source[None], regions[None])
    ref_style = RS.style_from_crops(reference[None], no_lips[None])
    with caplog.at_level("WARNING", logger="segtalker"):
        swapped = RS.swap_regions(style, ref_style, ["lips", "hair"], 1.0)
    assert "the reference face has no lips; those regions keep the source's style" in caplog.text
    np.testing.assert_array_equal(swapped.region_stats[:, R["lips"]],
                                  style.region_stats[:, R["lips"]])
    out = RS.apply_style_edit(source, regions, swapped)
    lips = regions == R["lips"]
    assert np.array_equal(out[lips], source[lips])
    hair = cv2.erode((regions == R["hair"]).astype(np.uint8), np.ones((9, 9))) > 0
    assert (out[hair] != source[hair]).any()  # the other region still swapped


def test_two_regions_at_once_and_chained_swaps_start_from_the_source(faces):
    source, reference, regions = faces
    style = RS.style_from_crops(source[None], regions[None])
    ref_style = RS.style_from_crops(reference[None], regions[None])
    half = RS.swap_regions(style, ref_style, ["lips"], 0.5)
    both = RS.swap_regions(half, ref_style, ["lips", "hair"], 1.0)
    assert both.meta["edited_regions"] == [R["lips"], R["hair"]]
    np.testing.assert_array_equal(both.meta["source_stats"], style.region_stats)
    out = RS.apply_style_edit(source, regions, both)
    for name in ("lips", "hair"):
        mask = cv2.erode((regions == R[name]).astype(np.uint8), np.ones((5, 5))) > 0
        goal = lab_mean(reference, mask)
        assert np.linalg.norm(lab_mean(out, mask) - goal) < 0.2 * np.linalg.norm(
            lab_mean(source, mask) - goal)


def test_region_the_source_lacks_uses_the_rendered_crops_own_colours(faces):
    source, reference, regions = faces
    closed = regions  # the source shows no mouth interior
    opened = regions.copy()
    opened[90:98, 52:76] = R["mouth_interior"]  # a rendered frame with the mouth open
    rendered = source.copy()
    rendered[opened == R["mouth_interior"]] = (150, 60, 70)
    ref_regions = opened
    ref_image = reference.copy()
    ref_image[ref_regions == R["mouth_interior"]] = (60, 20, 30)
    style = RS.style_from_crops(source[None], closed[None])
    ref_style = RS.style_from_crops(ref_image[None], ref_regions[None])
    assert not style.valid[0, R["mouth_interior"]] and ref_style.valid[0, R["mouth_interior"]]
    swapped = RS.swap_regions(style, ref_style, ["mouth_interior"], 1.0)
    out = RS.apply_style_edit(rendered, opened, swapped)
    inside = opened == R["mouth_interior"]
    goal = lab_mean(ref_image, inside)
    assert np.linalg.norm(lab_mean(out, inside) - goal) < 0.2 * np.linalg.norm(
        lab_mean(rendered, inside) - goal)


def test_style_from_faces_marks_frames_without_a_face(faces):
    source, _, regions = faces
    n = 2
    track = FaceTrack(
        frames=np.zeros((n, 64, 64, 3), np.uint8),
        crops=np.stack([source, np.zeros_like(source)]),
        labels=L.REGIONS_TO_BISENET[np.stack([regions, np.zeros_like(regions)])],
        landmarks=np.full((n, 478, 3), np.nan, np.float32),
        transforms=np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, 1, 1)),
        found=np.array([True, False]),
    )
    style = RS.style_from_faces(track)
    assert style.kind == "builtin" and style.region_stats.shape == (2, 12, 6)
    assert style.valid[0, R["lips"]] and not style.valid[1].any()
    one = RS.style_from_faces(track, 0)
    assert one.region_stats.shape == (1, 12, 6) and one.crops.shape == (1, SIZE, SIZE, 3)


def test_learned_codes_are_interpolated_per_region(caplog):
    import torch
    codes = torch.zeros(1, 12, 3, 8)
    ref_codes = torch.ones(1, 12, 3, 8)
    valid = np.ones((1, 12), bool)
    ref_valid = valid.copy()
    ref_valid[0, R["hair"]] = False
    style = StyleCodes(kind="learned", valid=valid, codes=codes, encoder_id="enc-a")
    reference = StyleCodes(kind="learned", valid=ref_valid, codes=ref_codes, encoder_id="enc-a")
    with caplog.at_level("WARNING", logger="segtalker"):
        swapped = RS.swap_regions(style, reference, ["lips", "hair"], 0.25)
    assert "the reference face has no hair; those regions keep the source's style" in caplog.text
    assert torch.allclose(swapped.codes[:, R["lips"]], torch.full((1, 3, 8), 0.25))
    assert torch.equal(swapped.codes[:, R["hair"]], codes[:, R["hair"]])
    assert torch.equal(style.codes, torch.zeros(1, 12, 3, 8))  # input untouched
    other = StyleCodes(kind="learned", valid=valid, codes=ref_codes, encoder_id="enc-b")
    with pytest.raises(ValueError, match="encoder"):
        RS.swap_regions(style, other, ["lips"], 1.0)


def test_bad_inputs(faces):
    source, reference, regions = faces
    style = RS.style_from_crops(source[None], regions[None])
    with pytest.raises(ValueError, match="strength"):
        RS.swap_regions(style, style, ["lips"], 1.5)
    with pytest.raises(ValueError, match="unknown region"):
        RS.swap_regions(style, style, ["lipz"], 1.0)
    with pytest.raises(ValueError, match="19-class"):
        RS.region_lab_stats(source, np.full(regions.shape, 17, np.uint8))
    learned = StyleCodes(kind="learned", valid=np.ones((1, 12), bool), codes=np.zeros((1, 12, 2, 4)))
    with pytest.raises(ValueError, match="same encoder"):
        RS.swap_regions(style, learned, ["lips"], 1.0)


# ---------------------------------------------------------------------------------------------
# Recolouring with texture: colour moves, the fine lightness detail stays, the edge is soft


def lightness_detail(image: np.ndarray) -> np.ndarray:
    lightness = RS.rgb_to_lab(image)[..., 0]
    return lightness - cv2.GaussianBlur(lightness, (0, 0), 1.0)


def grainy(image: np.ndarray, seed: int) -> np.ndarray:
    """Fine grain (creases, pores) on top of the smooth texture of :func:`paint`."""
    rng = np.random.default_rng(seed)
    grain = cv2.GaussianBlur(rng.normal(0, 6, image.shape[:2]).astype(np.float32), (0, 0), 0.7)
    return np.clip(image + grain[..., None], 0, 255).astype(np.uint8)


def lips_core(regions: np.ndarray, feather: float) -> np.ndarray:
    """Lip pixels past the soft edge (where the transfer has full weight)."""
    radius = int(np.ceil(feather / 2)) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode((regions == R["lips"]).astype(np.uint8), kernel) > 0


def test_a_flat_lipstick_keeps_the_lips_detail_and_takes_its_colour(faces):
    _, _, regions = faces
    source = grainy(paint(regions, {}, 0.05, seed=1), seed=3)
    flat = paint(regions, {"lips": (150, 40, 120)}, 0.0, seed=2)  # no lightness spread at all
    style = RS.style_from_crops(source[None], regions[None])
    swapped = RS.swap_regions(style, RS.style_from_crops(flat[None], regions[None]), "lips", 1.0)
    out = RS.apply_style_edit(source, regions, swapped, feather=4.0)
    core = lips_core(regions, 4.0)
    before, after = lightness_detail(source)[core], lightness_detail(out)[core]
    assert np.corrcoef(before, after)[0, 1] >= 0.9
    # The detail keeps its strength (scaling the whole lightness by the std ratio, clipped at
    # 1/1.5, left two thirds of it: the flat band).
    assert 0.85 <= after.std() / before.std() <= 1.15
    np.testing.assert_allclose(lab_mean(out, core)[1:], lab_mean(flat, core)[1:], atol=3.0)
    assert abs(lab_mean(out, core)[0] - lab_mean(flat, core)[0]) < 3.0


def test_the_recolouring_fades_in_across_the_lip_edge(faces):
    _, _, regions = faces
    source = paint(regions, {}, 0.05, seed=1)
    reference = paint(regions, {"lips": (120, 30, 150)}, 0.05, seed=2)
    style = RS.style_from_crops(source[None], regions[None])
    swapped = RS.swap_regions(style, RS.style_from_crops(reference[None], regions[None]), "lips", 1.0)
    feather = 6.0
    out = RS.apply_style_edit(source, regions, swapped, feather=feather)
    # How far each pixel went, in chroma, relative to the lips' core: the effective weight.
    change = np.linalg.norm(RS.rgb_to_lab(out)[..., 1:] - RS.rgb_to_lab(source)[..., 1:], axis=-1)
    weight = change / np.median(change[lips_core(regions, feather)])
    lips = (regions == R["lips"]).astype(np.uint8)
    edge = (lips > 0) & (cv2.erode(lips, np.ones((3, 3), np.uint8)) == 0)
    # The lip's own edge pixels (half lip, half skin) are only partly recoloured: no rim ...
    assert 0.3 <= np.median(weight[edge]) <= 0.8
    # ... and the weight never jumps between neighbours near the edge.
    near = cv2.dilate(lips, np.ones((9, 9), np.uint8)) > cv2.erode(lips, np.ones((9, 9), np.uint8))
    steps = [np.abs(np.diff(weight, axis=a))[near[1:] if a == 0 else near[:, 1:]] for a in (0, 1)]
    assert max(s.max() for s in steps) <= 2.5 / feather


def test_two_touching_regions_recolour_without_a_seam_between_them(faces):
    _, _, regions = faces
    opened = regions.copy()
    opened[93:97, 50:78] = R["mouth_interior"]  # inside the lips
    weights = RS.region_weights(opened, ["lips", "mouth_interior"], feather=4.0)
    total = weights[R["lips"]] + weights[R["mouth_interior"]]
    # Around the shared border (well inside the lips), the two shares add up to full weight.
    border = cv2.dilate((opened == R["mouth_interior"]).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    union = np.isin(opened, [R["lips"], R["mouth_interior"]]).astype(np.uint8)
    border &= cv2.erode(union, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))) > 0
    assert border.sum() > 40
    np.testing.assert_allclose(total[border], 1.0, atol=1e-5)
    assert total.max() <= 1.0 + 1e-6
