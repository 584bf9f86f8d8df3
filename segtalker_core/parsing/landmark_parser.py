"""The built-in face parser: face-mesh landmarks + MediaPipe selfie segmentation -> 19-class map.

No weight file to download: the selfie-segmentation model (MediaPipe's, re-implemented in PyTorch
in :mod:`segtalker_core.face.torch_models.selfie`) ships with the pack in
``segtalker_core/face/weights/``, and the face regions are polygons of the face mesh (:mod:`segtalker_core.face.mesh_topology`)
filled with ``cv2.fillPoly`` (sub-pixel vertices, no anti-aliasing). Output is BiSeNet order
(:data:`segtalker_core.labels.BISENET_19`). Classes produced: background, skin, l/r brow, l/r eye,
nose, mouth (interior, only when the lips are apart), u_lip, l_lip, neck, cloth, hair. Never
produced: eye_g, ears, ear_r, neck_l, hat (they fall into skin/hair/cloth).

How the regions are decided (all lengths relative to the face, so any crop size works):

* face features: polygons of the mesh, painted in the order skin (face oval) < forehead hair <
  nose < brows < eyes < lips < mouth interior;
* person / background: selfie segmentation of the crop (run at 256 px, the model's input size);
* outside the face oval, person pixels are split along the face's own vertical axis
  (forehead 10 -> chin 152): above the chin -> hair, except a neck band under the jaw; below the
  chin -> neck inside the neck band down to where skin colour ends (row-wise fraction of
  skin-coloured pixels drops below one half, capped at 0.6 face heights), cloth beyond;
* inside the oval above the brows, pixels whose colour is far from the cheeks' skin colour are
  hair (fringes); the face mesh's oval reaches the hairline, the skin does not always.

Left / right. ``l_*`` means the **person's left, which is the image right** of an ordinary photo.
Source: the official CelebAMask-HQ repository (switchablenorms/CelebAMask-HQ), whose four sample
masks ``MaskGAN_demo/samples/{0,1,2,3}.png`` (label ids of ``g_mask.py``) put ``l_eye``, ``l_brow``
and ``l_ear`` at x ≈ 310-410 of 512 and ``r_*`` at x ≈ 80-195, in all four faces. The BiSeNet
checkpoint ``79999_iter.pth`` was trained on those masks by face-parsing.PyTorch, whose
``HorizontalFlip`` augmentation meant to swap l/r labels but compares a PIL image with ints, so the
swap does nothing (zllrunning/face-parsing.PyTorch PR #26 and issue #57): half of its training
images had the labels mirrored. The checkpoint's own l/r outputs are therefore not reliably tied to
a side; we follow the data set's (most cited) convention. MediaPipe's ``LEFT_*`` points are the
person's left too, so ``LEFT_EYE`` -> ``l_eye``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..closing import Closing
from ..face import mesh_topology as T
from ..labels import BISENET_19
from ..logs import get_logger
from ..masks import dilate, erode

log = get_logger("parsing")

_ID = {name: index for index, name in enumerate(BISENET_19)}


class DegenerateFaceError(ValueError):
    """Landmarks that do not span a face (e.g. all points collapsed onto one)."""

# Sub-pixel polygon vertices for cv2.fillPoly.
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class LandmarkParserSettings:
    """Tunables, as fractions of the face (``face_h``: forehead-to-chin, ``face_w``: cheek span).

    ``person_threshold``: selfie-mask probability above which a pixel is the person.
    ``neck_width``: neck band width / face width. ``max_neck``: longest neck / face height.
    ``skin_sigma``: a colour is skin-like when its z-scores against the cheeks' Lab statistics
    have a root mean square below this (likewise hair-like against the hair's statistics).
    ``mouth_open``: lip gap / mouth width above which the mouth interior is drawn.
    ``use_selfie``: without it the person mask is unknown and only face regions are drawn.
    """

    person_threshold: float = 0.5
    neck_width: float = 0.72
    max_neck: float = 0.6
    skin_sigma: float = 3.0
    mouth_open: float = 0.04
    use_selfie: bool = True


class LandmarkParser(Closing):
    """The built-in :class:`~segtalker_core.parsing.base.FaceParser` (``name = "builtin"``).

    The selfie-segmentation model is created on first use and kept for the parser's life; call
    :meth:`close` (or use ``with``) to free it.
    """

    name = "builtin"

    def __init__(self, settings: LandmarkParserSettings | None = None) -> None:
        self.settings = settings or LandmarkParserSettings()
        self._selfie = None

    def parse(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """``crops [N, S, S, 3]`` uint8 + ``landmarks [N, 478, 3]`` crop px -> ``[N, S, S]`` uint8.

        A crop whose landmarks are not all finite (no face) gets an all-background map.
        """
        crops = np.asarray(crops)
        landmarks = np.asarray(landmarks)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(
                f"crops must be square RGB crops [N, S, S, 3], got shape {crops.shape}"
            )
        if crops.dtype != np.uint8:
            raise TypeError(f"crops must be uint8, got {crops.dtype}; see face.to_rgb_uint8")
        if landmarks.shape != (len(crops), T.NUM_POINTS, 3):
            raise ValueError(
                f"landmarks must be [N, {T.NUM_POINTS}, 3] matching {len(crops)} crops, got "
                f"{landmarks.shape}"
            )
        out = np.zeros(crops.shape[:3], dtype=np.uint8)
        for i in range(len(crops)):
            if not np.isfinite(landmarks[i, :, :2]).all():
                continue
            try:
                out[i] = self.parse_one(crops[i], landmarks[i])
            except DegenerateFaceError as error:
                log.warning("crop %d: %s; labelled as background", i, error)
        return out

    def parse_one(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """One crop ``[S, S, 3]`` + its landmarks ``[478, 2+]`` -> label map ``[S, S]`` uint8."""
        size = crop.shape[0]
        xy = np.asarray(landmarks[:, :2], dtype=np.float32)
        geometry = _FaceGeometry.from_landmarks(xy)
        labels = np.zeros((size, size), dtype=np.uint8)
        oval = _fill((size, size), xy, T.FACE_OVAL)
        along, across = geometry.coordinates(size)
        # Colour decisions (and the selfie model) work on a 256 px copy: the model's input size,
        # and colour statistics need no more; the score maps are upsampled smoothly.
        small = cv2.resize(crop, (_WORK, _WORK), interpolation=cv2.INTER_AREA)
        colours = _ColourScores.measure(small, xy * (_WORK / size), self._person_small(small),
                                        self.settings, size)

        if self.settings.use_selfie:
            body = colours.person & ~oval
            self._paint_body(labels, body, geometry, along, across, colours)

        labels[oval] = _ID["skin"]
        labels[self._fringe(oval, geometry, along, colours)] = _ID["hair"]
        _paint(labels, xy, T.NOSE_OUTLINE, "nose")
        _paint(labels, xy, T.RIGHT_BROW, "r_brow")
        _paint(labels, xy, T.LEFT_BROW, "l_brow")
        _paint(labels, xy, T.RIGHT_EYE, "r_eye")
        _paint(labels, xy, T.LEFT_EYE, "l_eye")
        _paint(labels, xy, T.UPPER_LIP, "u_lip")
        _paint(labels, xy, T.LOWER_LIP, "l_lip")
        if self._mouth_is_open(xy):
            _paint(labels, xy, T.MOUTH_OPENING, "mouth")
        return labels

    # -- person / body --------------------------------------------------------------------------

    def _person_small(self, small: np.ndarray) -> np.ndarray | None:
        """Selfie-segmentation probability ``[256, 256]`` float32, or None without selfie."""
        if not self.settings.use_selfie:
            return None
        if self._selfie is None:
            from ..face.torch_models.loading import selfie_segmenter  # heavy: first parse only

            self._selfie = selfie_segmenter()
        import torch

        image = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            return self._selfie(image)[0].numpy()

    def _paint_body(self, labels: np.ndarray, body: np.ndarray, g: "_FaceGeometry",
                    along: np.ndarray, across: np.ndarray, colours: "_ColourScores") -> None:
        """Hair / neck / cloth for person pixels outside the face oval."""
        band = np.abs(across) < 0.5 * self.settings.neck_width * g.face_w
        below_jaw = along > g.jaw_level
        neck_end = self._neck_end(body & band & (along > 0), along, colours.skin_like, g)
        neck = body & band & below_jaw & (along < neck_end)
        above_chin = along < 0
        # Beside the jaw, above the chin: long hair, the side of the neck, or a collar; colour
        # decides (skin-coloured and nearer skin than hair: neck; hair-coloured: hair; else cloth).
        beside_jaw = body & above_chin & below_jaw & ~band
        labels[body & above_chin] = _ID["hair"]
        labels[beside_jaw & ~colours.hair_like] = _ID["cloth"]
        labels[body & ~above_chin] = _ID["cloth"]
        labels[neck | (beside_jaw & colours.skin_like & ~colours.hair_not_skin)] = _ID["neck"]

    def _neck_end(self, candidates: np.ndarray, along: np.ndarray, skin_like: np.ndarray,
                  g: "_FaceGeometry") -> float:
        """Distance below the chin where the skin-coloured neck gives way to clothing."""
        longest = self.settings.max_neck * g.face_h
        step = max(1.0, g.face_h / 40.0)
        bins = np.arange(0.0, longest + step, step)
        index = np.digitize(along[candidates], bins) - 1
        inside = (index >= 0) & (index < len(bins) - 1)
        index = index[inside]
        total = np.bincount(index, minlength=len(bins) - 1)
        skin = np.bincount(index, weights=skin_like[candidates][inside], minlength=len(bins) - 1)
        for b in range(len(bins) - 1):
            if total[b] == 0 or skin[b] < 0.5 * total[b]:
                return float(bins[b])
        return float(longest)

    def _fringe(self, oval: np.ndarray, g: "_FaceGeometry", along: np.ndarray,
                colours: "_ColourScores") -> np.ndarray:
        """Hair over the forehead: pixels inside the oval above the brows that look like hair."""
        forehead = oval & (along < g.brow_level) & colours.hair_not_skin
        radius = max(1, int(round(g.face_h / 60.0)))
        return dilate(erode(forehead, radius), radius)  # opening: drops specks thinner than 2r

    # -- mouth -------------------------------------------------------------------------------

    def _mouth_is_open(self, xy: np.ndarray) -> bool:
        upper = xy[list(T.LIPS_INNER_UPPER[2:-2])]
        lower = xy[list(T.LIPS_INNER_LOWER[2:-2])]
        gap = float(np.linalg.norm(lower - upper, axis=1).mean())
        width = float(np.linalg.norm(xy[T.MOUTH_CORNERS[1]] - xy[T.MOUTH_CORNERS[0]]))
        return gap > max(1.0, self.settings.mouth_open * width)

    def close(self) -> None:
        self._selfie = None  # the network itself stays cached (torch_models.loading)



_WORK = 256  # side of the copy used for selfie segmentation and colour statistics


@dataclass(frozen=True)
class _LabGaussian:
    """Per-channel Gaussian colour model in Lab; ``distance2`` is a squared z-score sum."""

    mean: np.ndarray  # [3]
    std: np.ndarray  # [3]

    @staticmethod
    def fit(samples: np.ndarray, floor: tuple[float, float, float]) -> "_LabGaussian | None":
        if len(samples) < 32:
            return None
        # A few thousand pixels pin mean and spread down; more only cost time.
        samples = samples[:: max(1, len(samples) // 4096)].astype(np.float32)
        return _LabGaussian(samples.mean(axis=0),
                            np.maximum(samples.std(axis=0), np.asarray(floor, np.float32)))

    def distance2(self, lab: np.ndarray) -> np.ndarray:
        # Look-up tables on the uint8 channels: far cheaper than float arithmetic per pixel.
        values = np.arange(256, dtype=np.float32)
        tables = ((values[None, :] - self.mean[:, None]) / self.std[:, None]) ** 2
        return tables[0][lab[..., 0]] + tables[1][lab[..., 1]] + tables[2][lab[..., 2]]


@dataclass(frozen=True)
class _ColourScores:
    """Per-pixel colour decisions at crop size (all ``[S, S]`` bool)."""

    person: np.ndarray  # selfie segmentation says person
    skin_like: np.ndarray  # close to the cheeks' colour
    hair_like: np.ndarray  # close to the colour of the hair above the head
    hair_not_skin: np.ndarray  # closer to the hair colour than to the skin colour

    @staticmethod
    def measure(small: np.ndarray, xy: np.ndarray, person_prob: np.ndarray | None,
                settings: LandmarkParserSettings, size: int) -> "_ColourScores":
        """``small``: the crop at 256 px, ``xy``: landmarks at that scale."""
        work = small.shape[0]
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
        oval = _fill((work, work), xy, T.FACE_OVAL)
        cheeks = _fill((work, work), xy, _CHEEK_RIGHT) | _fill((work, work), xy, _CHEEK_LEFT)
        cheeks &= oval
        # Lighting varies over a face more than hue does: floor the spread, widest on lightness.
        skin = _LabGaussian.fit(lab[cheeks], floor=(12.0, 3.0, 3.0))
        if person_prob is None:
            person_small = np.zeros((work, work), dtype=bool)
        else:
            person_small = person_prob > settings.person_threshold
        g = _FaceGeometry.from_landmarks(xy)
        along, _ = g.coordinates(work)
        hair = _LabGaussian.fit(lab[person_small & ~oval & (along < g.brow_level)],
                                floor=(12.0, 3.0, 3.0))

        limit = 3.0 * settings.skin_sigma ** 2
        # One resize of the stacked score maps (person probability, skin and hair distances) is
        # much cheaper than three; bilinear upsampling gives smooth region borders.
        zeros = np.zeros((work, work), dtype=np.float32)
        stacked = np.dstack([
            person_prob if person_prob is not None else zeros,
            skin.distance2(lab) if skin is not None else zeros,
            hair.distance2(lab) if hair is not None else zeros,
        ])
        prob, d_skin, d_hair = cv2.split(
            cv2.resize(stacked, (size, size), interpolation=cv2.INTER_LINEAR))
        everywhere = np.ones((size, size), dtype=bool)
        return _ColourScores(
            person=prob > settings.person_threshold,
            skin_like=(d_skin < limit) if skin is not None else everywhere,
            hair_like=(d_hair < limit) if hair is not None else everywhere,
            hair_not_skin=(d_hair < d_skin) if hair is not None and skin is not None
            else ~everywhere,
        )


# Cheek patches (below the eyes, beside the nose, above the mouth corners): the cleanest skin.
_CHEEK_RIGHT = (117, 118, 101, 36, 206, 207, 187, 123)
_CHEEK_LEFT = (346, 347, 330, 266, 426, 427, 411, 352)


@dataclass(frozen=True)
class _FaceGeometry:
    """The face's own axes: origin at the chin, ``down`` from forehead to chin."""

    chin: np.ndarray  # [2]
    down: np.ndarray  # [2] unit
    face_h: float
    face_w: float
    jaw_level: float  # `along` of the mouth corners (negative: above the chin)
    brow_level: float  # `along` of the brows' upper edge

    @staticmethod
    def from_landmarks(xy: np.ndarray) -> "_FaceGeometry":
        chin, top = xy[T.CHIN].astype(np.float64), xy[T.FOREHEAD_TOP].astype(np.float64)
        axis = chin - top
        face_h = float(np.hypot(*axis))
        if face_h < 1.0:
            raise DegenerateFaceError("degenerate landmarks: forehead and chin coincide")
        down = axis / face_h
        left, right = xy[T.CHEEK_EXTREMES[0]], xy[T.CHEEK_EXTREMES[1]]
        face_w = float(np.hypot(*(right - left)))


        def along(indices: tuple[int, ...]) -> np.ndarray:
            return (xy[list(indices)] - chin) @ down

        return _FaceGeometry(
            chin=chin, down=down, face_h=face_h, face_w=face_w,
            jaw_level=float(along(T.MOUTH_CORNERS).mean()),
            brow_level=float(along(T.RIGHT_BROW_UPPER + T.LEFT_BROW_UPPER).min()),
        )

    def coordinates(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: distance below the chin along ``down``, and sideways offset."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] == size:
            return cached[1], cached[2]
        grid = np.arange(size, dtype=np.float32)
        dx = grid[None, :] - np.float32(self.chin[0])
        dy = grid[:, None] - np.float32(self.chin[1])
        ux, uy = np.float32(self.down[0]), np.float32(self.down[1])
        along = dx * ux + dy * uy
        across = dx * uy - dy * ux
        object.__setattr__(self, "_cache", (size, along, across))
        return along, across


def _fill(shape: tuple[int, int], xy: np.ndarray, polygon: tuple[int, ...]) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.uint8)
    vertices = np.round(xy[list(polygon)] * _ONE).astype(np.int32)
    cv2.fillPoly(canvas, [vertices], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def _paint(labels: np.ndarray, xy: np.ndarray, polygon: tuple[int, ...], name: str) -> None:
    vertices = np.round(xy[list(polygon)] * _ONE).astype(np.int32)
    cv2.fillPoly(labels, [vertices], _ID[name], lineType=cv2.LINE_8, shift=_SHIFT)
