"""Hard faces for the realism checks of issue #13, made from one real photo (this module holds no tests).

Every builder starts from scikit-image's astronaut portrait (a real photo: a smile with the teeth
showing) and returns a full RGB ``[H, W, 3]`` uint8 image in which the pack's face detector still
finds the face. The changes are placed from the photo's own face mesh, so they sit where a real
accessory, expression or exposure would:

* :func:`sunglasses` -- opaque dark lenses with a faint sheen, rims, a bridge and temple arms over
  both eyes (:func:`sunglasses_lenses` is the lens mask, where no blink may change a pixel);
* :func:`turned` -- the head re-rendered in 3D, turned ~40 degrees about the vertical axis through
  the head centre (the face mesh with its depth, texture-mapped in painter's order; hair and
  neck follow through a smooth field that fades out before the background);
* :func:`open_mouth` -- the jaw dropped: the lower lip and chin slide down and a shaded cavity
  opens between the teeth;
* :func:`dark`, :func:`bright` -- under- and over-exposed copies;
* :func:`beard` -- a dark strand-textured beard and moustache over the mouth corners and chin;
* :func:`child_mouth` -- the mouth shrunk to 0.7 of its size by a smooth local warp.

Everything is deterministic (seeded noise) and cached for the process: ask for a variant as often
as needed. Returned arrays are read-only.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import skimage.data
from scipy.spatial import Delaunay

from segtalker_core.face import mesh_topology as T
from segtalker_core.face.detect import FaceMeshDetector, select_face

NAMES = ("astronaut", "open_mouth", "sunglasses", "turned", "dark", "bright", "beard", "child")
TURN_DEGREES = 35.0
CHILD_SCALE = 0.7


# ---------------------------------------------------------------------------------------------
# The photo and its face


@functools.lru_cache(maxsize=None)
def astronaut() -> np.ndarray:
    """The photo itself ``[512, 512, 3]`` uint8."""
    return _frozen(skimage.data.astronaut())


def detect(image: np.ndarray) -> np.ndarray | None:
    """Landmarks ``[478, 3]`` (image px, z scaled like x) of the largest face, None if none."""
    with FaceMeshDetector() as detector:
        face = select_face(detector.detect(image))
    return None if face is None else face.landmarks.astype(np.float64)


@functools.lru_cache(maxsize=None)
def landmarks() -> np.ndarray:
    """The astronaut's face mesh ``[478, 3]`` in image px (detected once)."""
    found = detect(astronaut())
    assert found is not None, "the detector no longer finds the astronaut's face"
    return _frozen(found)


def variant(name: str) -> np.ndarray:
    """The image of a variant by its name in :data:`NAMES`."""
    builders = {
        "astronaut": astronaut, "open_mouth": open_mouth, "sunglasses": sunglasses, "turned": turned,
        "dark": dark, "bright": bright, "beard": beard, "child": child_mouth,
    }
    if name not in builders:
        raise ValueError(f"unknown face variant {name!r}; choose one of {', '.join(NAMES)}")
    return builders[name]()


def _iod(points: np.ndarray) -> float:
    """Inter-ocular distance (eye centre to eye centre), px."""
    right = points[list(T.RIGHT_EYE), :2].mean(0)
    left = points[list(T.LEFT_EYE), :2].mean(0)
    return float(np.linalg.norm(left - right))


def _polygon_mask(shape: tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    """Filled polygon ``[K, 2]`` as float32 ``[H, W]`` in 0..1 (anti-aliased edge)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _blend(image: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``image`` and ``layer`` (float, 0..255) mixed by ``alpha [H, W]`` -> uint8."""
    a = alpha[..., None]
    out = image.astype(np.float32) * (1 - a) + layer.astype(np.float32) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


# ---------------------------------------------------------------------------------------------
# Sunglasses


@functools.lru_cache(maxsize=None)
def _sunglasses() -> tuple[np.ndarray, np.ndarray]:
    image, points = astronaut(), landmarks()
    h, w = image.shape[:2]
    iod = _iod(points)
    lenses = np.zeros((h, w), np.float32)
    outlines = []
    for eye, brow in ((T.RIGHT_EYE, T.RIGHT_BROW_LOWER), (T.LEFT_EYE, T.LEFT_BROW_LOWER)):
        centre = points[list(eye), :2].mean(0)
        # A lens spans the eye socket: from the brow's lower edge to a little below the lower lid,
        # and a bit past both eye corners (sunglasses are bigger than the eye).
        eye_xy = points[list(eye), :2]
        half_w = 0.5 * (eye_xy[:, 0].max() - eye_xy[:, 0].min()) + 0.16 * iod
        top = points[list(brow), 1].mean() + 0.03 * iod
        bottom = eye_xy[:, 1].max() + 0.28 * iod
        cy = 0.5 * (top + bottom) + 0.02 * iod
        half_h = 0.5 * (bottom - top)
        angle = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        # A rounded rectangle-ish lens (superellipse), flatter at the top like aviators.
        c, s = np.cos(angle), np.sin(angle)
        px = centre[0] + half_w * np.sign(c) * np.abs(c) ** 0.7
        py = cy + half_h * np.sign(s) * np.abs(s) ** np.where(s < 0, 0.5, 0.9)
        outline = np.stack([px, py], 1)
        outlines.append(outline)
        lenses = np.maximum(lenses, _polygon_mask((h, w), outline))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Dark smoked glass: nearly opaque, a vertical gradient, a faint diagonal sheen and a little of
    # the face's own light through it (real lenses are never a flat fill).
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    top_y = min(o[:, 1].min() for o in outlines)
    bottom_y = max(o[:, 1].max() for o in outlines)
    t = np.clip((yy - top_y) / max(bottom_y - top_y, 1.0), 0, 1)
    base = 14.0 + 10.0 * t
    sheen_axis = (xx - points[168, 0]) * 0.6 + (yy - top_y) * 1.0
    sheen = 22.0 * np.exp(-((sheen_axis - 0.35 * iod) / (0.09 * iod)) ** 2)
    value = base + sheen + 0.05 * cv2.GaussianBlur(grey, (0, 0), 2.0)
    glass = np.stack([value * 0.95, value * 1.0, value * 1.08], -1)
    out = _blend(image, glass, lenses * 0.97)
    # Rims, bridge and the temple arms towards the ears: dark metal.
    frame_layer = np.zeros((h, w), np.uint8)
    thick = max(2, int(round(0.045 * iod)))
    for outline in outlines:
        cv2.polylines(frame_layer, [np.round(outline * 16).astype(np.int32)], True, 255, thick,
                      cv2.LINE_AA, shift=4)
    inner_r = outlines[0][np.argmax(outlines[0][:, 0])]
    inner_l = outlines[1][np.argmin(outlines[1][:, 0])]
    bridge_y = points[168, 1] - 0.02 * iod
    bridge = np.array([inner_r, [points[168, 0], bridge_y - 0.05 * iod], inner_l])
    cv2.polylines(frame_layer, [np.round(bridge * 16).astype(np.int32)], False, 255, thick,
                  cv2.LINE_AA, shift=4)
    for outline, ear, far in ((outlines[0], points[234], np.argmin), (outlines[1], points[454], np.argmax)):
        start = outline[far(outline[:, 0])]
        end = np.array([ear[0], ear[1] - 0.05 * iod])
        cv2.line(frame_layer, tuple(np.round(start * 16).astype(int)), tuple(np.round(end * 16).astype(int)),
                 255, thick, cv2.LINE_AA, shift=4)
    alpha = frame_layer.astype(np.float32) / 255.0
    out = _blend(out, np.full((h, w, 3), 28.0, np.float32), alpha)
    # The lens mask that must stay untouched: the glass inside the rims (rims excluded, where the
    # frame anti-aliasing mixes in skin).
    inside = (lenses > 0.99) & (frame_layer == 0)
    inside = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return _frozen(out), _frozen(inside)


def sunglasses() -> np.ndarray:
    """The astronaut wearing opaque dark sunglasses ``[512, 512, 3]`` uint8."""
    return _sunglasses()[0]


def sunglasses_lenses() -> np.ndarray:
    """``[512, 512]`` bool: the glass of :func:`sunglasses` (rims excluded): the eyes behind it
    cannot be seen, so nothing there may change."""
    return _sunglasses()[1]


# ---------------------------------------------------------------------------------------------
# Turned head


@functools.lru_cache(maxsize=None)
def turned(degrees: float = TURN_DEGREES) -> np.ndarray:
    """The astronaut's head turned ``degrees`` about the vertical axis through its centre
    (positive: towards the image left), re-rendered from the face mesh with depth."""
    image, points = astronaut(), landmarks()
    h, w = image.shape[:2]
    face_w = float(points[454, 0] - points[234, 0])
    centre = points[list(T.FACE_OVAL), :2].mean(0)
    # The head turns about an axis behind the face: the ears sit a little behind the cheek edges.
    axis_z = 0.5 * (points[234, 2] + points[454, 2]) + 0.1 * face_w
    theta = math.radians(degrees)
    dst = points.copy()
    dx, dz = points[:, 0] - centre[0], points[:, 2] - axis_z
    dst[:, 0] = centre[0] + dx * math.cos(theta) + dz * math.sin(theta)
    dst[:, 2] = axis_z - dx * math.sin(theta) + dz * math.cos(theta)
    tri = Delaunay(points[:, :2]).simplices
    ids, map_x, map_y = _render_mesh(image.shape, points, dst, tri)
    # Around the face (hair, ears, neck) the head follows the face's outline with a smooth field
    # that fades out over about a face width, so background and shoulders stay where they were
    # and the hair is stretched or pushed gently rather than torn into triangles.
    oval = list(T.FACE_OVAL)
    shift = points[oval, :2] - dst[oval, :2]  # dst -> src at the outline
    step = 4  # the field is smooth: computed on a coarse grid, then interpolated
    gy, gx = np.mgrid[0:h:step, 0:w:step].astype(np.float64)
    sigma = 0.25 * face_w
    total, moved, nearest = np.zeros(gx.shape), np.zeros(gx.shape + (2,)), np.full(gx.shape, np.inf)
    for (ox, oy), d in zip(dst[oval, :2], shift):
        dist2 = (gx - ox) ** 2 + (gy - oy) ** 2
        g = np.exp(-dist2 / (2 * sigma**2)) + 1e-12
        total += g
        moved += g[..., None] * d
        nearest = np.minimum(nearest, dist2)
    fall = np.clip(1 - np.sqrt(nearest) / (1.2 * face_w), 0, 1)
    field = moved / total[..., None] * (fall * fall * (3 - 2 * fall))[..., None]
    field = cv2.resize(field.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    outer_x, outer_y = xx + field[..., 0], yy + field[..., 1]
    map_x = np.where(ids >= 0, map_x, outer_x)
    map_y = np.where(ids >= 0, map_y, outer_y)
    out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return _frozen(out)


def _render_mesh(shape: tuple[int, ...], src: np.ndarray, dst: np.ndarray, tri: np.ndarray):
    """Texture-map triangles ``tri [M, 3]`` into an image of ``shape`` from ``src`` to ``dst`` vertices (``[V, 3]`` px with
    depth, larger z farther) with the painter's algorithm: a triangle-id buffer ``[H, W]`` (-1:
    no triangle) is drawn back to front, and every covered pixel gets the source position through
    its triangle's affine. Returns (ids, map_x, map_y), the maps for :func:`cv2.remap`."""
    h, w = shape[:2]
    s2, d2 = src[:, :2], dst[:, :2]

    def signed_area(p: np.ndarray) -> np.ndarray:
        a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    # Folded (back-facing) triangles are drawn too, in their depth order: the nearer front faces
    # cover them, and dropping them would open holes onto the unturned photo at the silhouette.
    # Only triangles squashed to a line are left out (no affine exists for them).
    drawable = np.abs(signed_area(d2)) > 1e-6
    order = np.argsort(-dst[tri].mean(axis=1)[:, 2])  # farthest first
    ids = np.full((h, w), -1, np.int32)
    for k in order:
        if drawable[k]:
            cv2.fillConvexPoly(ids, np.round(d2[tri[k]] * 16).astype(np.int32), int(k), cv2.LINE_8, shift=4)
    # Per triangle the affine dst -> src, applied to each pixel through its id.
    affines = np.zeros((len(tri), 2, 3), np.float64)
    for k in range(len(tri)):
        if drawable[k]:
            affines[k] = cv2.getAffineTransform(d2[tri[k]].astype(np.float32), s2[tri[k]].astype(np.float32))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    safe = np.maximum(ids, 0)
    a = affines[safe]
    map_x = a[..., 0, 0] * xx + a[..., 0, 1] * yy + a[..., 0, 2]
    map_y = a[..., 1, 0] * xx + a[..., 1, 1] * yy + a[..., 1, 2]
    return ids, map_x.astype(np.float32), map_y.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Open mouth


@functools.lru_cache(maxsize=None)
def open_mouth() -> np.ndarray:
    """The astronaut with her jaw dropped (a wide open mouth, upper teeth showing)."""
    image, points = astronaut(), landmarks()
    h, w = image.shape[:2]
    iod = _iod(points)
    drop = 0.30 * iod  # how far the lower lip falls at the centre
    upper = points[list(T.LIPS_INNER_UPPER), :2]
    lower = points[list(T.LIPS_INNER_LOWER), :2]
    x0, x1 = points[T.MOUTH_CORNERS[0], 0], points[T.MOUTH_CORNERS[1], 0]
    cx, half = 0.5 * (x0 + x1), 0.5 * (x1 - x0)
    xs = np.arange(w, dtype=np.float64)
    # Where the mouth splits: the middle of the source's own opening, column by column.
    order_u, order_l = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    y_up = np.interp(xs, upper[order_u, 0], upper[order_u, 1])
    y_lo = np.interp(xs, lower[order_l, 0], lower[order_l, 1])
    y_mid = 0.5 * (y_up + y_lo)
    # The lower lip falls most at the centre and not at all at the corners (a lens-shaped opening);
    # the chin falls with the jaw, which is wider, so the profile widens below the lips.
    u = (xs - cx) / half
    lip_drop = drop * np.clip(1 - u**2, 0, None) ** 0.8
    jaw_drop = drop * np.exp(-0.5 * ((xs - cx) / (1.6 * half)) ** 2)
    chin_y = points[T.CHIN, 1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    below = yy - y_mid[None, :]
    # Displacement down from the split line: lip profile at the lips, jaw profile from the lower lip
    # to the chin, fading out on the neck.
    lip_bottom = points[T.LOWER_LIP_BOTTOM, 1]
    blend = np.clip((yy - lip_bottom) / max(chin_y - lip_bottom, 1.0), 0, 1)
    shift = lip_drop[None, :] * (1 - blend) + jaw_drop[None, :] * blend
    fade = np.clip(1 - (yy - chin_y) / (0.8 * iod), 0, 1)
    shift = shift * np.where(yy > chin_y, fade**2 * (3 - 2 * fade), 1.0)
    side = np.clip(1 - (np.abs(xx - cx) - 1.6 * half) / (0.8 * half), 0, 1)
    shift *= side
    moved = below > 0
    map_y = np.where(moved, np.maximum(yy - shift, y_mid[None, :]), yy)
    warped = cv2.remap(image, xx.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT)
    # The new gap between the split line and where the lower part now starts is the cavity.
    gap_top = y_mid[None, :]
    gap_bottom = y_mid[None, :] + lip_drop[None, :]
    depth = np.clip((yy - gap_top) / np.maximum(gap_bottom - gap_top, 1e-3), 0, 1)
    inside = (yy >= gap_top) & (yy <= gap_bottom) & (np.abs(xx - cx) < half)
    # Colours from her own mouth: the darkest part of the visible interior, warmed towards red;
    # darkest in the throat (middle of the gap), a little lighter under the teeth and above the
    # tongue, whose colour comes from her lips.
    opening = _polygon_mask((h, w), points[list(T.MOUTH_OPENING), :2]) > 0.5
    interior = image[opening].astype(np.float32)
    luma = interior @ np.array([0.299, 0.587, 0.114], np.float32)
    dark_rgb = interior[luma <= np.percentile(luma, 20)].mean(0)
    lips = _polygon_mask((h, w), points[list(T.LOWER_LIP), :2]) > 0.5
    lip_rgb = image[lips].astype(np.float32).mean(0)
    throat = 0.55 * dark_rgb + np.array([18, 2, 2], np.float32)
    tongue = 0.6 * lip_rgb
    profile = np.exp(-((depth - 0.45) / 0.3) ** 2)
    tongue_w = np.clip((depth - 0.6) / 0.4, 0, 1) ** 1.5 * np.clip(1 - np.abs(xx - cx) / (0.75 * half), 0, 1)
    cavity = (throat[None, None] * (0.6 + 0.4 * (1 - profile[..., None]))) * (1 - tongue_w[..., None]) \
        + tongue[None, None] * tongue_w[..., None]
    rng = np.random.default_rng(13)
    cavity = cavity + rng.normal(0, 2.0, cavity.shape)
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.8)
    return _frozen(_blend(warped, cavity, alpha))


# ---------------------------------------------------------------------------------------------
# Exposure


@functools.lru_cache(maxsize=None)
def dark() -> np.ndarray:
    """A very dark copy (underexposed by about 2 stops, shadows crushed by a gamma of 1.6)."""
    x = astronaut().astype(np.float32) / 255.0
    return _frozen(np.round(255 * (0.45 * x) ** 1.6 * 0.45 ** -0.6).clip(0, 255).astype(np.uint8))


@functools.lru_cache(maxsize=None)
def bright() -> np.ndarray:
    """A very bright copy (overexposed: highlights clip, shadows lifted)."""
    x = astronaut().astype(np.float32) / 255.0
    return _frozen(np.round(255 * (1.0 - (1.0 - x) ** 2.6) ** 0.8).clip(0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Beard


@functools.lru_cache(maxsize=None)
def beard() -> np.ndarray:
    """The astronaut with a short dark beard and moustache over the mouth corners and chin."""
    image, points = astronaut(), landmarks()
    h, w = image.shape[:2]
    iod = _iod(points)
    rng = np.random.default_rng(7)
    # Where hair grows: the jaw below the nose base line, minus the middle of the lips (a beard
    # leaves the lips' centre free but covers their corners).
    jaw = points[list(T.JAW), :2]
    nose_y = points[T.NOSE_BOTTOM, 1]
    cheek_top = nose_y + 0.05 * iod
    region = _polygon_mask((h, w), jaw)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    region *= np.clip((yy - cheek_top) / (0.15 * iod), 0, 1)
    lips = points[list(T.LIPS_OUTER), :2]
    mouth_c = lips.mean(0)
    lip_core = mouth_c + np.array([0.62, 0.85]) * (lips - mouth_c)
    region *= 1 - _polygon_mask((h, w), lip_core)
    region = cv2.GaussianBlur(region, (0, 0), 0.04 * iod)
    # Strands: short curved lines growing down and outwards from the face's midline, drawn
    # anti-aliased one by one, each with its own shade; density follows the region, so the edge
    # thins out like a real beard line and skin shows between the hairs.
    strands = np.zeros((h, w), np.float32)
    colour = np.zeros((h, w, 3), np.float32)
    ys, xs = np.nonzero(region > 0.05)
    picks = rng.integers(0, len(ys), int(len(ys) * 0.5))
    palette = np.array([[52, 36, 26], [70, 50, 36], [34, 25, 20], [96, 72, 52]], np.float32)
    for y, x in zip(ys[picks], xs[picks]):
        if rng.random() > region[y, x] ** 1.5:
            continue
        out = np.sign(x - mouth_c[0]) * min(abs(x - mouth_c[0]) / (0.6 * iod), 1.0)
        angle = math.pi / 2 - 0.7 * out + rng.normal(0, 0.3)
        length = rng.uniform(0.12, 0.25) * iod
        bend = rng.normal(0, 0.35)
        pts = [np.array([x + rng.random(), y + rng.random()])]
        for step in range(1, 4):
            a = angle + bend * step / 3
            pts.append(pts[-1] + length / 3 * np.array([math.cos(a), math.sin(a)]))
        line = np.round(np.array(pts) * 16).astype(np.int32)
        shade = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.2)
        x0, y0 = int(max(x - 0.3 * iod, 0)), int(max(y - 0.3 * iod, 0))
        x1, y1 = int(min(x + 0.3 * iod + 2, w)), int(min(y + 0.3 * iod + 2, h))
        part = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.polylines(part, [line - np.array([x0 * 16, y0 * 16])], False, rng.uniform(0.5, 0.9), 1,
                      cv2.LINE_AA, shift=4)
        strands[y0:y1, x0:x1] = np.maximum(strands[y0:y1, x0:x1], part)
        colour[y0:y1, x0:x1] = np.where(part[..., None] > 0.3, shade, colour[y0:y1, x0:x1])
    coverage = np.clip(strands, 0, 1) * region
    # Under the hairs the skin looks a little darker (shadowed, denser hair behind them).
    shadow = cv2.GaussianBlur(region * 0.3, (0, 0), 0.02 * iod)
    shaded = image.astype(np.float32) * (1 - shadow[..., None])
    return _frozen(_blend(shaded, colour, coverage))


# ---------------------------------------------------------------------------------------------
# Child's small mouth


@functools.lru_cache(maxsize=None)
def child_mouth(scale: float = CHILD_SCALE) -> np.ndarray:
    """The astronaut with her mouth shrunk to ``scale`` of its size around its centre; the skin
    around follows smoothly (a radial warp that is the identity beyond twice the mouth's size)."""
    image, points = astronaut(), landmarks()
    h, w = image.shape[:2]
    lips = points[list(T.LIPS_OUTER), :2]
    centre = lips.mean(0)
    a = 0.5 * (lips[:, 0].max() - lips[:, 0].min()) * 1.05
    b = 0.5 * (lips[:, 1].max() - lips[:, 1].min()) * 1.1
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    r = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    # Output radius r samples the source at r * f(r): 1/scale inside the mouth, easing to 1 at
    # r = 2 (still monotone there, so nothing folds over).
    # Vertically the mouth shrinks less (a child's lips are narrow more than thin), which also
    # keeps the nose above from being pulled down.
    t = np.clip((r - 1.0) / 1.0, 0, 1)
    ease = t * t * (3 - 2 * t)
    factor_x = (1.0 / scale) * (1 - ease) + ease
    factor_y = (1.0 / (0.5 + 0.5 * scale)) * (1 - ease) + ease
    # Only skin moves: the warp fades out towards the face's outline, so the jaw line and the
    # background beside it stay put.
    iod = _iod(points)
    face = _polygon_mask((h, w), points[list(T.FACE_OVAL), :2])
    face = cv2.erode(face, np.ones((3, 3), np.uint8), iterations=max(1, int(0.08 * iod)))
    face = cv2.GaussianBlur(face, (0, 0), 0.1 * iod).astype(np.float64)
    map_x = (xx + dx * (factor_x - 1) * face).astype(np.float32)
    map_y = (yy + dy * (factor_y - 1) * face).astype(np.float32)
    return _frozen(cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
