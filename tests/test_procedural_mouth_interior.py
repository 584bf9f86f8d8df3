"""Mouth interior: cavity and teeth drawn only in the opening, teeth follow their jaw."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.mouth_interior import analyse_mouth, extract_source_teeth
from segtalker_core.procedural.mouth_segmentation import polygon_mask
from segtalker_core.procedural.renderer import RenderOptions, SourceFace
from segtalker_core.procedural.warp import Box
from test_procedural_common import astronaut, closed_astronaut, iod, params


def luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def opening(landmarks: np.ndarray, erode: int = 0) -> np.ndarray:
    mask = polygon_mask(landmarks[list(T.MOUTH_OPENING), :2], Box(0, 0, 512, 512))
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1,) * 2, np.uint8))
    return mask > 0


@pytest.fixture(scope="module")
def closed() -> SourceFace:
    return SourceFace(*closed_astronaut(), RenderOptions(blink=False))


def test_teeth_are_found_only_where_they_show():
    crop, landmarks, _ = astronaut()
    smile = analyse_mouth(crop, landmarks, iod(landmarks))
    assert smile.score > 0.8 and smile.teeth.sum() > 0.5 * smile.opening.sum()
    crop, landmarks, _ = closed_astronaut()
    assert analyse_mouth(crop, landmarks, iod(landmarks)).score == 0.0


def test_smile_teeth_hang_from_the_upper_jaw():
    crop, landmarks, _ = astronaut()
    mouth = analyse_mouth(crop, landmarks, iod(landmarks))
    teeth = extract_source_teeth(crop, mouth, iod(landmarks), np.zeros(2))
    assert teeth is not None
    # The smile shows the upper row: nearly all of its teeth pixels go with the upper jaw.
    assert (teeth.upper * mouth.teeth).sum() > 0.8 * mouth.teeth.sum()
    assert teeth.rgb.min() > 0.6  # bright, near-white teeth colour


def test_interior_is_drawn_only_in_and_around_the_opening(closed):
    source = closed
    p = params(jaw=0.7, teeth=1.0)
    driven = source.rig.drive(p)
    warped = source.mesh.field(driven, source.smooth).apply(source.crop)
    out = source.interior.composite(warped.copy(), driven, source.rig.jaw_offset(p)[0], 1.0)
    changed = np.any(out != warped, axis=-1)
    inside = opening(driven)
    near = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert changed[inside].mean() > 0.95
    assert not changed[~near].any()
    # Soft edge: just outside the polygon some pixels are partly blended.
    ring = near & ~inside
    assert 0 < changed[ring].mean() < 1


def painted(face: SourceFace, p: np.ndarray) -> np.ndarray:
    """The warped crop of a pose with the interior composited (no renderer fades)."""
    driven = face.rig.drive(p)
    warped = face.mesh.field(driven, face.smooth).apply(face.crop)
    return face.interior.composite(warped, driven, face.rig.jaw_offset(p)[0], p[4])


def test_teeth_visibility_brightens_the_opening(closed):
    p_hidden, p_shown = params(jaw=0.6, teeth=0.0), params(jaw=0.6, teeth=1.0)
    inside = opening(closed.rig.drive(p_shown), erode=2)
    dark = luma(painted(closed, p_hidden))[inside].mean()
    bright = luma(painted(closed, p_shown))[inside].mean()
    assert bright > dark + 20
    assert dark < 100  # a dark cavity when the lips hide the teeth


def test_lower_teeth_move_with_the_jaw_upper_teeth_stay(closed):
    def bright_rows(jaw):
        p = params(jaw=jaw, teeth=1.0)
        out = closed.frame(p).crop
        inside = opening(closed.rig.drive(p), erode=2)
        rows = np.nonzero((luma(out) > 150) & inside)[0]
        return rows

    small, large = bright_rows(0.5), bright_rows(1.0)
    # Upper teeth: the top of the bright band stays; lower teeth: the bottom goes down.
    assert abs(int(small.min()) - int(large.min())) <= 3
    drop = 0.5 * closed.rig.config.jaw_drop * closed.iod
    assert large.max() - small.max() > 0.6 * drop


def test_source_teeth_are_reused(closed):
    crop, landmarks, regions = astronaut()
    smile = SourceFace(crop, landmarks, regions, RenderOptions(blink=False))
    assert smile.interior.source is not None
    synthetic = SourceFace(crop, landmarks, regions, RenderOptions(blink=False, teeth_source="synthetic"))
    assert synthetic.interior.source is None
    # Re-opening the smile to its own opening shows its own teeth where the source showed them.
    p = smile.rig.reference_params
    mouth = analyse_mouth(crop, landmarks, iod(landmarks))
    teeth = np.zeros(crop.shape[:2], bool)
    teeth[mouth.box.slices] = mouth.teeth
    teeth &= opening(smile.rig.drive(p), erode=2)
    # The interior itself (the renderer shows the untouched source at exactly this pose).
    own = np.abs(painted(smile, p)[teeth].astype(float) - crop[teeth]).mean()
    drawn = np.abs(painted(synthetic, p)[teeth].astype(float) - crop[teeth]).mean()
    assert own < 12 and own < 0.5 * drawn


# --- What the interior looks like (issue 13): shading, teeth rows, tongue, lighting, grain ---


def darkened(source, gain: float):
    crop, landmarks, regions = source
    return (np.clip(crop * gain + 0.5, 0, 255).astype(np.uint8), landmarks, regions)


def lifted(source, share: float):
    """Over-exposed: every pixel ``share`` of the way to white."""
    crop, landmarks, regions = source
    out = crop.astype(np.float64) + share * (255.0 - crop)
    return (np.clip(out + 0.5, 0, 255).astype(np.uint8), landmarks, regions)


def layers(face: SourceFace, jaw: float, teeth: float):
    """The interior layers of a pose and the 2-px-eroded opening over their box (no lip pixels)."""
    p = params(jaw=jaw, teeth=teeth)
    driven = face.rig.drive(p)
    out = face.interior.layers(driven, face.rig.jaw_offset(p)[0], teeth, face.crop.shape[0])
    inner = cv2.erode(polygon_mask(driven[list(T.MOUTH_OPENING), :2], out.box), np.ones((5, 5), np.uint8)) > 0
    return out, inner


def cavity_only(out, inner):
    parts = (out.tongue, out.lower_teeth, out.upper_teeth, out.gums, out.source)
    return inner & np.all([part < 0.1 for part in parts], axis=0)


def skin_luma(face: SourceFace) -> float:
    return float(luma(face.crop[face.regions == 6]).mean())


def test_wide_open_mouth_is_a_shaded_red_cavity_not_a_flat_hole(closed):
    out, inner = layers(closed, jaw=1.0, teeth=0.0)
    y = luma(out.rgb[inner] * 255.0)
    # A flat fill (the old ellipse) had std ~15 inside, all of it from the tongue band's edge;
    # cavity depth shading, tongue shading and the teeth's edges give ~28.
    assert y.std() >= 20.0
    assert y.mean() > 25.0  # not a black hole (the old one averaged RGB ~41, 9, 12 on some faces)
    back = out.rgb[cavity_only(out, inner)] * 255.0
    assert len(back) > 0.05 * closed.iod**2
    r, g, b = back.mean(axis=0)
    assert r > 1.5 * g and r > 1.5 * b  # dark red-brown, not grey
    # Darker deep inside than near the lip edge, where light falls in.
    depth = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
    cav = cavity_only(out, inner)
    near, deep = cav & (depth < 4), cav & (depth > 10)
    assert luma(out.rgb[near]).mean() > 1.3 * luma(out.rgb[deep]).mean()


def test_lower_teeth_show_as_the_jaw_drops(closed):
    seen = {}
    for jaw in (0.0, 0.5, 1.0):
        out, inner = layers(closed, jaw=jaw, teeth=1.0)
        seen[jaw] = float(out.lower_teeth[inner].sum())
        if jaw == 1.0:
            lower = inner & (out.lower_teeth > 0.5)
            teeth_luma = luma(out.rgb[lower]).mean()
            assert teeth_luma > 2.5 * luma(out.rgb[cavity_only(out, inner)]).mean()
            # Partly hidden by the lower lip: far less than a crown's height shows at the midline.
            column = lower[:, lower.any(axis=0)].sum(axis=0)
            assert 2 <= np.median(column) < 0.5 * 0.14 * closed.iod
    # With the jaw shut the upper row covers the lower one (anti-aliasing leaves < 3 px).
    assert seen[0.0] < 3.0
    assert seen[0.5] > 0.004 * closed.iod**2 and seen[1.0] > 1.3 * seen[0.5]


def test_tongue_shows_with_the_opening_below_the_upper_teeth(closed):
    small, inner_small = layers(closed, jaw=0.2, teeth=1.0)
    wide, inner = layers(closed, jaw=1.0, teeth=1.0)
    assert wide.tongue[inner].sum() > 0.02 * closed.iod**2
    assert wide.tongue[inner].sum() > 3 * small.tongue[inner_small].sum()
    tongue = inner & (wide.tongue > 0.5)
    upper = inner & (wide.upper_teeth > 0.5)
    rows = np.arange(inner.shape[0])[:, None]
    columns = tongue.any(axis=0) & upper.any(axis=0)
    tongue_top = np.where(tongue, rows, 10**6).min(axis=0)[columns]
    teeth_bottom = np.where(upper, rows, -1).max(axis=0)[columns]
    assert np.all(tongue_top > teeth_bottom)
    r, g, b = (wide.rgb[tongue] * 255.0).mean(axis=0)
    assert r > 1.2 * g and r > 1.2 * b
    # Soft shading: the tongue is not one flat colour.
    assert luma(wide.rgb[tongue] * 255.0).std() > 6.0


def test_upper_lip_shades_the_teeth_under_it(closed):
    out, inner = layers(closed, jaw=0.6, teeth=1.0)
    upper = inner & (out.upper_teeth > 0.9)
    rows = np.arange(inner.shape[0])[:, None]
    first = np.where(inner, rows, 10**6).min(axis=0)  # first row under the upper lip, per column
    below = rows - first[None]
    y = luma(out.rgb * 255.0)
    assert y[upper & (below <= 1)].mean() < 0.85 * y[upper & (below >= 4) & (below <= 7)].mean()


@pytest.mark.parametrize("light", ["dark", "bright"])
def test_interior_stays_plausible_on_dark_and_bright_faces(closed, light):
    source = darkened(closed_astronaut(), 0.25) if light == "dark" else lifted(closed_astronaut(), 0.7)
    face = SourceFace(*source, RenderOptions(blink=False))
    normal, _ = layers(closed, jaw=1.0, teeth=1.0)
    out, inner = layers(face, jaw=1.0, teeth=1.0)
    rgb = out.rgb[inner] * 255.0
    y = luma(rgb)
    skin = skin_luma(face)
    # Never black: the interior follows the face's light (dark face: ~0.4 of its skin's luma).
    assert y.mean() > 0.25 * skin
    assert y.std() > 0.15 * skin  # not flat
    back = out.rgb[cavity_only(out, inner)] * 255.0
    redness = back[:, 0] - back[:, 1:].max(axis=1)
    assert redness.mean() > (4.0 if light == "dark" else 20.0)  # never grey
    if light == "dark":
        assert y.mean() < 0.5 * luma(normal.rgb[inner] * 255.0).mean()  # lit like the face


def test_small_child_mouth_gets_small_teeth_inside_it(closed):
    crop, landmarks, regions = closed_astronaut()
    small = np.array(landmarks, copy=True)
    lips = sorted(set(T.UPPER_LIP) | set(T.LOWER_LIP))
    centre = 0.5 * (small[T.UPPER_LIP_BOTTOM, :2] + small[T.LOWER_LIP_TOP, :2])
    small[lips, :2] = centre + 0.65 * (small[lips, :2] - centre)
    child = SourceFace(crop, small, regions, RenderOptions(blink=False))
    assert child.interior.geometry.upper_arch < 0.8 * closed.interior.geometry.upper_arch
    out, inner = layers(child, jaw=0.8, teeth=1.0)
    upper = inner & (out.upper_teeth > 0.5)
    width = inner.any(axis=0).sum()
    assert 0.5 * width < upper.any(axis=0).sum() <= width
    assert out.lower_teeth[inner].sum() > 0 and out.tongue[inner].sum() > 0
    back = out.rgb[cavity_only(out, inner)]
    assert len(back) > 0 and back[:, 0].mean() > 1.5 * back[:, 1].mean()


def test_grain_follows_the_source_noise_and_is_deterministic(closed):
    crop, landmarks, regions = closed_astronaut()
    noisy = np.clip(crop + np.random.default_rng(3).normal(0, 6.0, crop.shape) + 0.5, 0, 255).astype(np.uint8)
    clean_face, noisy_face = closed, SourceFace(noisy, landmarks, regions, RenderOptions(blink=False))
    assert noisy_face.palette.grain.mean() > 3 * clean_face.palette.grain.mean()

    def residual(image, where):  # fine detail: the image minus a 1.2 px blur, std in 0..255
        image = image.astype(np.float64)
        return float((image - cv2.GaussianBlur(image, (0, 0), 1.2))[where].std())

    def interior_residual(face):
        out, inner = layers(face, jaw=1.0, teeth=0.0)
        deep = cavity_only(out, inner) & (cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3) > 4)
        return residual(out.rgb * 255.0, deep)

    skin = cv2.erode((regions == 6).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    # The synthetic cavity is as grainy as the noisy photo's skin (within 20 %), and much
    # grainier than the clean photo's interior.
    assert abs(interior_residual(noisy_face) / residual(noisy, skin) - 1.0) < 0.2
    assert interior_residual(noisy_face) > 2.5 * interior_residual(clean_face)
    again = SourceFace(noisy, landmarks, regions, RenderOptions(blink=False))
    p = params(jaw=0.7, teeth=0.6)
    np.testing.assert_array_equal(noisy_face.frame(p).crop, again.frame(p).crop)


def test_gums_show_only_when_the_upper_lip_rises_past_the_teeth(closed):
    p = params(jaw=0.6, teeth=1.0)
    driven = closed.rig.drive(p)
    jaw = closed.rig.jaw_offset(p)[0]
    normal = closed.interior.layers(driven, jaw, 1.0, 512)
    # A gummy smile: the upper inner lip 0.2 IOD higher than the rig ever lifts it.
    lifted_lip = np.array(driven, copy=True)
    inner_upper = list(T.LIPS_INNER_UPPER)[1:-1]  # the corners stay
    lifted_lip[inner_upper, :2] -= 0.2 * closed.iod * closed.rig.frame.v_axis
    gummy = closed.interior.layers(lifted_lip, jaw, 1.0, 512)
    assert normal.gums.sum() < 0.001 * closed.iod**2
    gums = gummy.gums > 0.5
    assert gums.sum() > 0.01 * closed.iod**2
    rows = np.arange(gums.shape[0])[:, None]
    teeth = gummy.upper_teeth > 0.5
    both = gums.any(axis=0) & teeth.any(axis=0)
    # Above the upper teeth, pink: redder than the teeth and lighter than the cavity.
    gum_bottom = np.where(gums, rows, -1).max(axis=0)[both]
    teeth_top = np.where(teeth, rows, 10**6).min(axis=0)[both]
    assert np.mean(gum_bottom <= teeth_top + 1) > 0.5
    gum_rgb, teeth_rgb = gummy.rgb[gums].mean(axis=0), gummy.rgb[teeth].mean(axis=0)
    assert gum_rgb[0] / gum_rgb[1] > 1.2 * teeth_rgb[0] / teeth_rgb[1]
    assert luma(gum_rgb) > 2 * luma(closed.palette.cavity_deep)


def test_peeking_lower_teeth_show_their_lit_colour_not_the_cavity_blend():
    """A closing mouth lifts the lower lip over the lower row: the top of each column, which in
    the source falls softly into the dark cavity, takes that column's lit colour (no grey band
    between cavity and lip); rows below the first lit pixel and columns without lower teeth keep
    the source's own pixels."""
    from segtalker_core.procedural.mouth_interior import _lit_lower_edge

    rgb = np.full((12, 3, 3), 0.2, np.float32)  # dark cavity
    teeth = np.zeros((12, 3), bool)
    ramp = np.array([0.35, 0.55, 0.75, 0.9, 0.92, 0.9, 0.88], np.float32)  # soft top, lit body
    for x in (0, 1):
        rgb[4:11, x] = ramp[:, None]
        teeth[4:11, x] = True
    rgb[4:11, 1, 0] += 0.05  # columns keep their own colour (tooth gaps are columns)
    split = np.full(3, 3.0, np.float32)
    out = _lit_lower_edge(rgb, teeth, split)
    lit = rgb[7:11, 0].mean(axis=0)  # the brighter half of column 0's teeth
    assert np.allclose(out[3:7, 0], lit)
    assert np.allclose(out[3:7, 1], rgb[7:11, 1].mean(axis=0))
    assert np.array_equal(out[7:, :2], rgb[7:, :2])  # lit rows and below: the source's
    assert np.array_equal(out[:3], rgb[:3])  # above the split (upper jaw): untouched
    assert np.array_equal(out[:, 2], rgb[:, 2])  # no lower teeth in the column
