"""Mouth realism of the built-in talk (issue #13): the measures of "Checked by", per hard face.

    .venv/bin/python benchmarks/mouth_realism.py --out out/mouth_realism          # all faces
    .venv/bin/python benchmarks/mouth_realism.py --faces astronaut sunglasses --fps 15 --crop 256

Each face (the example portrait and the astronaut variants of ``tests/face_variants.py``) talks
real speech (espeak-ng, padded with digital silence) through the plain-Python pipeline
(:func:`segtalker_core.pipeline.talk_frames`, what the CLI ``talk`` streams), and the output
frames are judged independently of the renderer: every output frame is re-detected and re-parsed
with the built-in parser. Columns:

* ``lips min %``: the smallest lips area over all frames, in percent of the source's own (100 on
  a copy of the source): pixels of the re-parsed lips region (aligned crop) that have the
  source's lip colour (the face mesh alone keeps its lips where a cavity was painted over them);
* ``int std`` / ``int Y``: over the frames with a visible opening, the smallest luminance std
  (Rec. 601 Y, 0..255) inside the re-parsed mouth interior and its mean Y, both also in percent
  of the face's skin Y (``int std %skin`` / ``int Y %skin``) so dark and bright faces compare;
  ``int RGB``: the interior's mean colour;
* ``silent dB``: the lowest PSNR, in the mouth box of the source, between a frame in silence
  (no sound within :data:`SILENCE_MARGIN_S`) and the source frame;
* ``lens max``: the largest absolute pixel change inside the sunglasses' lenses over all frames
  (only for the sunglasses face: the eyes cannot be seen there, so a blink must change nothing);
* ``detail min %``: on closed frames (articulated jaw below :data:`CLOSED_JAW`), the smallest
  ratio of fine-detail energy (luminance minus its Gaussian blur of sigma 1 px, squared, mean) in
  the lower face (lips excluded) to the source's;
* ``sync r``: Pearson correlation of the re-detected mouth opening with the speech envelope
  (:mod:`segtalker_core.eval.lipsync`, best of +-2 frames) over the spoken stretch.

``--out DIR`` also writes one contact sheet per face (``DIR/mouth_<face>.png``): the source's
mouth ("before") and the output's at rest and at increasing jaw openings ("after").
The helpers are imported by ``tests/test_talk_realism.py``, which asserts the issue's thresholds.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from segtalker_core import labels as L  # noqa: E402
from segtalker_core.eval.landmarks import face_scale, mouth_opening  # noqa: E402
from segtalker_core.eval.lipsync import speech_envelope, sync_offset  # noqa: E402
from segtalker_core.eval.regions import lower_face_mask, polygon_mask  # noqa: E402
from segtalker_core.face import mesh_topology as T  # noqa: E402

SR = 16000
LIPS = L.region_index("lips")
INTERIOR = L.region_index("mouth_interior")
SKIN = L.region_index("skin")
SILENCE_MARGIN_S = 0.2  # the articulation smooths and anticipates: frames this near sound may move
CLOSED_JAW = 0.05  # articulated jaw opening below which a frame counts as closed
OPEN_MIN_SHARE = 0.0015  # of the crop area: a re-parsed interior at least this big is an opening
MOUTH_BOX_MARGIN = 0.35  # eye-corner distances around the source's outer lips
SYNC_MAX_OFFSET = 2  # frames
LIP_COLOUR_SIGMA = 3.0  # Mahalanobis distance in Lab within which a pixel has the lips' colour
LUMA = np.array([0.299, 0.587, 0.114])
FACES = ("portrait", "astronaut", "open_mouth", "sunglasses", "turned", "dark", "bright", "beard",
         "child")
SENTENCE = "Papa made a map of the bay by the mill."


# ---------------------------------------------------------------------------------------------
# Inputs and the talk


def face_image(name: str) -> np.ndarray:
    """A face by name (:data:`FACES`): the example portrait or a ``face_variants`` image."""
    if name == "portrait":
        bgr = cv2.imread(str(ROOT / "examples" / "portrait.png"))
        assert bgr is not None, "examples/portrait.png is missing"
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    import face_variants

    return face_variants.variant(name)


def padded_speech(text: str, pad_s: float = 0.6, rate: int = 160) -> np.ndarray:
    """espeak-ng speech (16 kHz mono) with ``pad_s`` of digital silence at both ends."""
    from speech import speak_wave

    wave, _ = speak_wave(text, rate=rate)
    pad = np.zeros(int(round(pad_s * SR)), np.float32)
    return np.concatenate([pad, wave, pad])


@dataclass(frozen=True)
class Talked:
    """One talk: ``source [H, W, 3]`` uint8, ``frames [T, H, W, 3]`` uint8, ``wave [N]`` 16 kHz,
    ``jaw [T]`` the articulated jaw opening that drove each frame."""

    name: str
    source: np.ndarray
    frames: np.ndarray
    wave: np.ndarray
    fps: float
    jaw: np.ndarray

    def __post_init__(self) -> None:
        t = len(self.frames)
        assert self.frames.shape[1:] == self.source.shape, (self.frames.shape, self.source.shape)
        assert self.jaw.shape == (t,), (self.jaw.shape, t)


def talk(name: str, source: np.ndarray, wave: np.ndarray, fps: float, crop_size: int = 512,
         blink: bool = True, seed: int = 0) -> Talked:
    """The built-in talk of ``source`` on ``wave`` (the pipeline the CLI ``talk`` runs)."""
    from segtalker_core import pipeline
    from segtalker_core.audio.articulation import articulation_from_audio
    from segtalker_core.audio.io import load_audio

    audio = load_audio(wave, sample_rate=SR)
    frames = pipeline.talk_frames(source[None], audio, fps, crop_size=crop_size, blink=blink, seed=seed)
    # The same articulation the pipeline computes (method "auto", strength 1): which frames it
    # drove closed.
    track = articulation_from_audio(audio, fps, n_frames=len(frames))
    return Talked(name, source, frames, wave, float(fps), track.params[:, 0].astype(np.float64))


def blinking_seed(n_frames: int, fps: float) -> int:
    """The first blink seed whose schedule shuts the eyes within ``n_frames``: natural blinks
    are 3-5 s apart, so a short clip with an arbitrary seed may hold none, and a check that no
    blink shows behind sunglasses needs one to withhold."""
    from segtalker_core.procedural.blink import blink_schedule

    for seed in range(1000):
        if blink_schedule(n_frames, fps, seed).max() >= 1.0:
            return seed
    raise ValueError(f"no blink seed shuts the eyes within {n_frames} frames at {fps} fps")


# ---------------------------------------------------------------------------------------------
# Re-parsing the output


@dataclass(frozen=True)
class Parsed:
    """Re-detected and re-parsed frames: aligned ``crops [N, S, S, 3]``, 12-region maps
    ``regions [N, S, S]``, ``landmarks [N, 478, 3]`` crop px and ``frame_points [N, 478, 2]``
    frame px (NaN where ``found [N]`` is False)."""

    crops: np.ndarray
    regions: np.ndarray
    landmarks: np.ndarray
    frame_points: np.ndarray
    found: np.ndarray


def reparse(frames: np.ndarray, crop_size: int = 256) -> Parsed:
    """Detect, align and parse every frame on its own (image mode: no tracking, no smoothing,
    so a frame is judged by what it shows). The selfie model is left out: only face regions
    (lips, interior, skin) are measured."""
    from segtalker_core.face.aligned import align_faces
    from segtalker_core.parsing.landmark_parser import LandmarkParser, LandmarkParserSettings

    aligned = align_faces(frames, crop_size=crop_size, video=False)
    with LandmarkParser(LandmarkParserSettings(use_selfie=False)) as parser:
        labels = parser.parse(aligned.crops, aligned.landmarks)
    return Parsed(aligned.crops, L.merge_to_regions(labels), aligned.landmarks,
                  aligned.frame_landmarks[..., :2], aligned.found)


# ---------------------------------------------------------------------------------------------
# Measures


def silent_frames(wave: np.ndarray, fps: float, n_frames: int, margin_s: float = SILENCE_MARGIN_S) -> np.ndarray:
    """``[n_frames]`` bool: frames with no sample above 1e-4 within ``margin_s`` of them."""
    loud = np.flatnonzero(np.abs(wave) > 1e-4) / SR
    start = np.arange(n_frames) / fps
    if len(loud) == 0:
        return np.ones(n_frames, bool)
    lo, hi = loud[0] - margin_s, loud[-1] + margin_s
    return (start + 1.0 / fps <= lo) | (start >= hi)


@dataclass(frozen=True)
class LipColour:
    """A Gaussian of the source's lip colours in Lab: ``mean [3]``, ``inverse`` covariance ``[3, 3]``."""

    mean: np.ndarray
    inverse: np.ndarray

    @staticmethod
    def fit(parsed: Parsed) -> "LipColour":
        lab = _lab(parsed.crops[0])[parsed.regions[0] == LIPS]
        assert len(lab) > 20, "the source has (almost) no lips in its parsing"
        covariance = np.cov(lab.T) + np.eye(3) * 1.0  # a floor: a very even lip colour
        return LipColour(lab.mean(0), np.linalg.inv(covariance))

    def matches(self, lab: np.ndarray) -> np.ndarray:
        """``[..., 3]`` Lab -> bool: within :data:`LIP_COLOUR_SIGMA` of the source's lips."""
        d = lab - self.mean
        return np.einsum("...i,ij,...j->...", d, self.inverse, d) <= LIP_COLOUR_SIGMA**2


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).astype(np.float64)


def lips_area(parsed: Parsed, colour: LipColour) -> np.ndarray:
    """``[N]`` lip pixels per frame: inside the re-parsed lips (grown 1 % of the crop, so lips a
    little off the detected outline still count) and of the source's lip colour. Both are needed:
    the face mesh keeps drawing lips from the face's shape when their texture is painted over."""
    size = parsed.regions.shape[1]
    radius = max(1, int(round(0.01 * size)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    out = np.zeros(len(parsed.regions))
    for i in range(len(parsed.regions)):
        where = cv2.dilate((parsed.regions[i] == LIPS).astype(np.uint8), kernel).astype(bool)
        out[i] = colour.matches(_lab(parsed.crops[i])[where]).sum()
    return out


def lips_area_ratio(parsed: Parsed, source: Parsed) -> np.ndarray:
    """``[N]`` lips area (:func:`lips_area`) of each re-parsed frame over the source's (NaN: no
    face found)."""
    colour = LipColour.fit(source)
    base = float(lips_area(source, colour)[0])
    return np.where(parsed.found, lips_area(parsed, colour) / base, np.nan)


@dataclass(frozen=True)
class InteriorStats:
    """Per frame: interior ``area [N]`` px, luminance ``std [N]`` and mean ``luma [N]`` (0..255),
    ``rgb [N, 3]`` mean colour (NaN without an opening), and the face's ``skin_luma`` (source)."""

    area: np.ndarray
    std: np.ndarray
    luma: np.ndarray
    rgb: np.ndarray
    skin_luma: float

    @property
    def open(self) -> np.ndarray:
        return np.isfinite(self.std)


def interior_stats(parsed: Parsed, source: Parsed) -> InteriorStats:
    """Luminance spread and colour inside each frame's re-parsed mouth interior (eroded 1 px, so
    the lips' edge does not count as texture); frames whose opening is under
    :data:`OPEN_MIN_SHARE` of the crop get NaN."""
    n, size = parsed.regions.shape[:2]
    kernel = np.ones((3, 3), np.uint8)
    area, std, luma, rgb = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan), np.full((n, 3), np.nan)
    for i in range(n):
        inside = cv2.erode((parsed.regions[i] == INTERIOR).astype(np.uint8), kernel).astype(bool)
        area[i] = inside.sum()
        if area[i] < OPEN_MIN_SHARE * size * size:
            continue
        pixels = parsed.crops[i][inside].astype(np.float64)
        y = pixels @ LUMA
        std[i], luma[i], rgb[i] = y.std(), y.mean(), pixels.mean(0)
    skin = source.crops[0][source.regions[0] == SKIN].astype(np.float64) @ LUMA
    return InteriorStats(area, std, luma, rgb, float(skin.mean()))


def source_points(image: np.ndarray) -> np.ndarray:
    """Landmarks ``[478, 2]`` of the face in ``image`` (frame px)."""
    from segtalker_core.face.detect import FaceMeshDetector, select_face

    with FaceMeshDetector() as detector:
        face = select_face(detector.detect(image))
    assert face is not None, "no face found in the source"
    return face.landmarks[:, :2].astype(np.float64)


def mouth_box(points: np.ndarray, shape: tuple[int, int], margin: float = MOUTH_BOX_MARGIN) -> tuple[slice, slice]:
    """(rows, cols) slices of the outer lips' box grown by ``margin`` eye-corner distances."""
    lips = points[list(T.LIPS_OUTER)]
    grow = margin * float(face_scale(points))
    h, w = shape
    x0, y0 = np.floor(lips.min(0) - grow).astype(int)
    x1, y1 = np.ceil(lips.max(0) + grow).astype(int)
    return slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def silent_psnr(talked: Talked, points: np.ndarray) -> np.ndarray:
    """PSNR (dB) in the source's mouth box of each silent frame against the source ``[K]``."""
    rows, cols = mouth_box(points, talked.source.shape[:2])
    silent = silent_frames(talked.wave, talked.fps, len(talked.frames))
    return np.array([psnr(talked.frames[t][rows, cols], talked.source[rows, cols])
                     for t in np.flatnonzero(silent)])


def max_change(frames: np.ndarray, source: np.ndarray, mask: np.ndarray) -> int:
    """The largest absolute pixel change over all ``frames`` inside ``mask [H, W]`` bool."""
    assert mask.shape == source.shape[:2] and mask.any(), mask.shape
    return int(np.abs(frames[:, mask].astype(np.int16) - source[mask].astype(np.int16)).max())


def detail_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Lower face (jaw, chin, cheeks, the band past the jaw line) without the lips: where the
    warp moves skin, stubble, hair and jewellery but no mouth content should differ."""
    lips = polygon_mask(points, T.LIPS_OUTER, shape, 0.15 * float(face_scale(points)))
    return lower_face_mask(points, shape) & ~lips


def detail_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared luminance detail (image minus its Gaussian blur, sigma 1 px) inside ``mask``."""
    y = image.astype(np.float64) @ LUMA
    fine = y - cv2.GaussianBlur(y, (0, 0), 1.0)
    return float(np.mean(fine[mask] ** 2))


def detail_ratio(talked: Talked, points: np.ndarray) -> np.ndarray:
    """``[K]`` fine-detail energy of each closed frame over the source's, lower face."""
    mask = detail_mask(points, talked.source.shape[:2])
    base = detail_energy(talked.source, mask)
    closed = np.flatnonzero(talked.jaw < CLOSED_JAW)
    return np.array([detail_energy(talked.frames[t], mask) / base for t in closed])


def spoken_span(wave: np.ndarray, fps: float, n_frames: int) -> slice:
    """Frames from the first to the last that hold a sample of sound."""
    loud = np.flatnonzero(np.abs(wave) > 1e-4)
    if len(loud) == 0:
        return slice(0, 0)
    return slice(int(loud[0] / SR * fps), min(int(math.ceil(loud[-1] / SR * fps)), n_frames))


def sync_r(parsed: Parsed, talked: Talked) -> float:
    """Best correlation (within +-:data:`SYNC_MAX_OFFSET` frames) of the re-detected mouth
    opening with the speech envelope, over the spoken stretch only: in the silent pads a source
    whose lips are parted at rest stays open (as it should), which says nothing about sync."""
    opening = mouth_opening(parsed.frame_points.astype(np.float64))
    envelope = speech_envelope(talked.wave, talked.fps, len(talked.frames))
    span = spoken_span(talked.wave, talked.fps, len(talked.frames))
    return float(sync_offset(opening[span], envelope[span], SYNC_MAX_OFFSET).best_correlation)


# ---------------------------------------------------------------------------------------------
# Contact sheet


def contact_sheet(talked: Talked, points: np.ndarray, tile_h: int = 180) -> np.ndarray:
    """One row of mouth crops ``[tile_h + 24, W, 3]`` uint8: the source ("before"), then the
    output at rest and at the 25/50/75/90 % and largest jaw openings of the clip ("after")."""
    rows, cols = mouth_box(points, talked.source.shape[:2], margin=0.45)
    silent = np.flatnonzero(silent_frames(talked.wave, talked.fps, len(talked.frames)))
    order = np.argsort(talked.jaw)
    picks = [("source", talked.source)]
    if len(silent):
        picks.append((f"rest t={silent[0]}", talked.frames[silent[0]]))
    for q in (0.25, 0.5, 0.75, 0.9, 1.0):
        t = int(order[min(int(round(q * (len(order) - 1))), len(order) - 1)])
        picks.append((f"t={t} jaw={talked.jaw[t]:.2f}", talked.frames[t]))
    tiles = []
    for label, image in picks:
        crop = image[rows, cols]
        scale = tile_h / crop.shape[0]
        crop = cv2.resize(crop, (int(round(crop.shape[1] * scale)), tile_h), interpolation=cv2.INTER_CUBIC)
        band = np.full((24, crop.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([band, crop]))
        tiles.append(np.full((tile_h + 24, 4, 3), 255, np.uint8))
    return np.hstack(tiles[:-1])


# ---------------------------------------------------------------------------------------------
# The benchmark


@dataclass(frozen=True)
class Row:
    face: str
    frames: int
    lips_min: float
    interior_std: float
    interior_luma: float
    skin_luma: float
    interior_rgb: tuple[float, float, float]
    open_frames: int
    silent_psnr: float
    lens_max: float
    detail_min: float
    sync: float
    seconds: float


def measure(talked: Talked, crop_size: int, lenses: np.ndarray | None = None) -> Row:
    """All measures of one talk (the output re-parsed at ``crop_size``)."""
    start = time.perf_counter()
    parsed = reparse(talked.frames, crop_size)
    source = reparse(talked.source[None], crop_size)
    points = source_points(talked.source)
    stats = interior_stats(parsed, source)
    opened = stats.open
    rgb = tuple(np.nanmean(stats.rgb[opened], axis=0)) if opened.any() else (math.nan,) * 3
    silent = silent_psnr(talked, points)
    detail = detail_ratio(talked, points)
    return Row(
        face=talked.name, frames=len(talked.frames),
        lips_min=float(np.nanmin(lips_area_ratio(parsed, source))),
        interior_std=float(np.nanmin(stats.std)) if opened.any() else math.nan,
        interior_luma=float(np.nanmean(stats.luma)) if opened.any() else math.nan,
        skin_luma=stats.skin_luma, interior_rgb=rgb, open_frames=int(opened.sum()),
        silent_psnr=float(silent.min()) if len(silent) else math.nan,
        lens_max=float(max_change(talked.frames, talked.source, lenses)) if lenses is not None else math.nan,
        detail_min=float(detail.min()) if len(detail) else math.nan,
        sync=sync_r(parsed, talked), seconds=time.perf_counter() - start,
    )


def format_table(rows: list[Row]) -> str:
    head = ("face", "frames", "lips min %", "int std", "int std %skin", "int Y", "int Y %skin",
            "int RGB", "open fr", "silent dB", "lens max", "detail min %", "sync r")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rgb = "-" if math.isnan(r.interior_rgb[0]) else "%d,%d,%d" % tuple(round(c) for c in r.interior_rgb)
        cells = (r.face, str(r.frames), f"{100 * r.lips_min:.0f}", f"{r.interior_std:.1f}",
                 f"{100 * r.interior_std / r.skin_luma:.1f}", f"{r.interior_luma:.0f}",
                 f"{100 * r.interior_luma / r.skin_luma:.0f}", rgb, str(r.open_frames),
                 f"{r.silent_psnr:.1f}", "-" if math.isnan(r.lens_max) else f"{r.lens_max:.0f}",
                 f"{100 * r.detail_min:.0f}", f"{r.sync:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", nargs="+", default=list(FACES), choices=FACES)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--crop", type=int, default=512, help="crop size of the talk and the re-parse")
    parser.add_argument("--text", default=SENTENCE)
    parser.add_argument("--seed", type=int, default=None,
                        help="blink seed (default: the first whose blinks fall within the clip)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the contact sheets")
    parser.add_argument("--quick", action="store_true",
                        help="one face, one word, crop 256: only shows that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        # a one-word clip is too short for the blink-seed search: any fixed seed will do
        args.faces, args.text, args.crop = [FACES[0]], "Papa.", 256
        args.seed = 0 if args.seed is None else args.seed
    wave = padded_speech(args.text)
    seed = args.seed if args.seed is not None else blinking_seed(math.ceil(len(wave) / SR * args.fps), args.fps)
    rows = []
    for name in args.faces:
        image = face_image(name)
        start = time.perf_counter()
        talked = talk(name, image, wave, args.fps, args.crop, blink=True, seed=seed)
        talk_s = time.perf_counter() - start
        lenses = None
        if name == "sunglasses":
            import face_variants

            lenses = face_variants.sunglasses_lenses()
        row = measure(talked, args.crop, lenses)
        rows.append(row)
        print(f"{name}: talk {talk_s:.1f} s, measures {row.seconds:.1f} s", flush=True)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            sheet = contact_sheet(talked, source_points(image))
            path = args.out / f"mouth_{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
            print(f"  contact sheet: {path}")
    print()
    print(f"speech: {args.text!r} padded with 0.6 s of silence; {args.fps:g} fps; crop {args.crop}; "
          f"blink seed {seed}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
