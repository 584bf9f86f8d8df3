"""One generated clip against its reference: every metric of the evaluation, and the data the
figures draw. :func:`evaluate_clip` is what the ``eval`` command and ``talk --eval`` run."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..face import mesh_topology as mesh
from ..logs import get_logger
from . import lipsync, temporal
from .alignment import FramePairs, pair_frames
from .clips import DEFAULT_MAX_SIDE, Clip, matched_sizes, read_clip
from .image_metrics import box_mask, crop_box, mean_ssim, psnr_from_mse, ssim_map
from .landmarks import ClipLandmarks, detect_landmarks, landmark_distance, mouth_opening
from .regions import REGION_NAMES, face_box, lower_face_mask, region_masks
from .sharpness import cpbd
from .texture import TextureTotals

log = get_logger("eval")

SHEET_FRAMES = 6
SHEET_TILE = 128


@dataclass(frozen=True)
class EvalOptions:
    """``max_offset``: frames each way the sync search tries; ``max_side``: frames are evaluated
    at most this large; ``cpbd_frames``: CPBD is read on this many frames spread over the clip;
    ``phones``: a phone timing file for the bilabial check, or ``transcript`` (the spoken text,
    force-aligned to the audio), or ``recognise_phones``;
    ``weights``: user-supplied weight files by metric (``syncnet``, ``syncnet_v2``, ``inception``,
    ``lpips`` and its ``lpips_backbone``)."""

    max_offset: int = lipsync.DEFAULT_MAX_OFFSET
    max_side: int | None = DEFAULT_MAX_SIDE
    face_index: int = -1
    cpbd_frames: int = 12
    phones: str | None = None
    transcript: str | None = None
    recognise_phones: bool = False
    weights: dict = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class ClipReport:
    """What :func:`evaluate_clip` found: ``metrics`` (JSON-ready, by group), ``notes`` (what was
    skipped or adjusted, in words), and the series and pictures the figures draw."""

    name: str
    generated: str
    reference: str
    audio: str | None
    metrics: dict
    notes: list[str]
    fps: float
    mouth: np.ndarray  # [N] generated mouth opening (NaN: no face)
    envelope: np.ndarray | None  # [N] dB, or None without audio
    sync: lipsync.SyncResult | None
    sheet: np.ndarray | None  # [2 * T, k * T, 3] uint8: generated row over reference row
    heat: np.ndarray | None  # [H, W] float32 mean absolute difference (levels)
    heat_background: np.ndarray | None  # [H, W, 3] uint8: the reference frame under the heat map


def evaluate_clip(generated: str | os.PathLike, reference: str | os.PathLike,
                  audio: str | os.PathLike | None = None, options: EvalOptions = EvalOptions(),
                  name: str | None = None) -> ClipReport:
    """Evaluate the video ``generated`` against ``reference`` (a video, or the still image it
    was animated from); ``audio``: the speech it should be synced to (None: its own sound)."""
    gen = read_clip(generated, "--generated", options.max_side)
    if gen.still:
        raise ValueError(f"--generated {os.fspath(generated)!r} is an image; give the generated video")
    ref = read_clip(reference, "--reference", options.max_side)
    notes: list[str] = []
    ref, size_note = matched_sizes(gen, ref)
    if size_note:
        notes.append(size_note)
    if gen.scaled != 1.0:
        notes.append(f"frames were evaluated downscaled by {gen.scaled:.3f} (long side {options.max_side} px)")
    pairs = pair_frames(len(gen), gen.fps, len(ref), ref.fps)
    notes.extend(pairs.notes)

    gen_marks = detect_landmarks(gen.frames, options.face_index, video=True)
    used_ref = np.unique(pairs.reference)
    ref_marks = _reference_landmarks(ref, used_ref, options.face_index)
    g_marks, r_marks = gen_marks.take(pairs.generated), ref_marks.take(pairs.reference)
    with_face = g_marks.found & r_marks.found
    frames_info = {
        "generated_frames": len(gen), "reference_frames": len(ref), "compared": len(pairs),
        "with_face": int(with_face.sum()), "without_face": int((~with_face).sum()),
        "generated_fps": float(gen.fps), "reference_fps": None if ref.fps is None else float(ref.fps),
    }
    if (~with_face).any():
        notes.append(f"{int((~with_face).sum())} of {len(pairs)} compared frames have no face in the "
                     f"generated or the reference frame: face metrics exclude them")
    if not with_face.any():
        notes.append("no compared frame has a face in both clips: face, texture and landmark metrics are skipped")

    metrics: dict = {"frames": frames_info}
    (metrics["image"], metrics["texture"], metrics["regions"], heat,
     heat_background) = _pair_metrics(gen, ref, pairs, g_marks, r_marks, with_face, options)
    metrics["temporal"] = _temporal(gen, ref, pairs, gen_marks)
    mouth = mouth_opening(gen_marks.points)
    envelope, sync, metrics["lip_sync"], audio_used = _lip_sync(gen, audio, mouth, options, notes)
    if options.weights.get("syncnet_v2") and envelope is not None:
        metrics["lip_sync"].update(_syncnet_v2(gen, gen_marks, audio_used, options, notes))
    if options.weights.get("inception"):
        metrics["image"].update(_fid(gen, ref, pairs, options, notes))
    if options.weights.get("lpips"):
        metrics["image"].update(_lpips(gen, ref, pairs, r_marks, with_face, options, notes))
    if options.weights.get("syncnet") and envelope is not None:
        metrics["lip_sync"].update(_segsyncnet(gen, audio_used, options))
    if not ref.still:
        ref_mouth = mouth_opening(r_marks.points)
        metrics["lip_sync"]["mouth_motion_vs_reference"] = _finite(lipsync.pearson(mouth[pairs.generated], ref_mouth))
    sheet = _contact_sheet(gen, ref, pairs, g_marks, r_marks, with_face, mouth)
    return ClipReport(
        name=name or Path(generated).stem, generated=os.fspath(generated), reference=os.fspath(reference),
        audio=audio_used, metrics=metrics, notes=notes, fps=float(gen.fps), mouth=mouth,
        envelope=envelope, sync=sync, sheet=sheet, heat=heat, heat_background=heat_background,
    )


def _reference_landmarks(ref: Clip, used: np.ndarray, face_index: int) -> ClipLandmarks:
    """Landmarks of the reference frames in ``used`` (others stay NaN, they are never read)."""
    from .landmarks import NUM_LANDMARKS

    points = np.full((len(ref), NUM_LANDMARKS, 2), np.nan, np.float32)
    found = np.zeros(len(ref), bool)
    detected = detect_landmarks((ref.frames[i] for i in used), face_index, video=not ref.still)
    points[used], found[used] = detected.points, detected.found
    return ClipLandmarks(points, found)


def _pair_metrics(gen, ref, pairs, g_marks, r_marks, with_face, options):
    """One pass over the compared pairs: whole-frame and face-crop PSNR/SSIM, LMD, CPBD,
    texture, the mean difference per region and its heat map."""
    whole_error, whole_ssim = 0.0, []
    face_error, face_pixels, face_ssim = 0.0, 0, []
    heat = np.zeros(gen.size, np.float64)
    region_sums = dict.fromkeys(REGION_NAMES, 0.0)
    region_counts = dict.fromkeys(REGION_NAMES, 0)
    texture = TextureTotals()
    for k, (i, j) in enumerate(zip(pairs.generated, pairs.reference)):
        a, b = gen.frames[i], ref.frames[j]
        diff = a.astype(np.float32) - b.astype(np.float32)
        squared = (diff * diff).sum(axis=2, dtype=np.float64)
        whole_error += float(squared.mean()) / 3.0
        values = ssim_map(a, b)
        whole_ssim.append(mean_ssim(values))
        if not with_face[k]:
            continue
        g_points, r_points = g_marks.points[k], r_marks.points[k]
        box = face_box(r_points, ref.size)
        face_error += float(crop_box(squared, box).sum())
        face_pixels += 3 * (box[2] - box[0]) * (box[3] - box[1])
        face_ssim.append(mean_ssim(values, box_mask(ref.size, box)))
        absolute = np.abs(diff).mean(axis=2)
        heat += absolute
        for name, mask in region_masks(r_points, ref.size).items():
            region_sums[name] += float(absolute[mask].sum())
            region_counts[name] += int(mask.sum())
        changed = lower_face_mask(g_points, ref.size) | lower_face_mask(r_points, ref.size)
        texture.add(a, b, squared, values, changed, lower_face_mask(r_points, ref.size, margin=0.0))
    n_face = int(with_face.sum())
    image = {
        "psnr_db": psnr_from_mse(whole_error / len(pairs)),
        "ssim": float(np.mean(whole_ssim)),
        "face_psnr_db": psnr_from_mse(face_error / face_pixels) if face_pixels else math.nan,
        "face_ssim": float(np.mean(face_ssim)) if face_ssim else math.nan,
    }
    if n_face:
        g, r = g_marks.points[with_face], r_marks.points[with_face]
        image["lmd_mouth_px"] = float(landmark_distance(g, r, mesh.MOUTH_POINTS).mean())
        image["lmd_face_px"] = float(landmark_distance(g, r).mean())
        image["lmd_mouth_percent_eye_distance"] = float(
            landmark_distance(g, r, mesh.MOUTH_POINTS, per_face=True).mean())
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(options.cpbd_frames, len(pairs))).round().astype(int))
    image["cpbd"] = _nanmean([cpbd(gen.frames[pairs.generated[k]]) for k in picks])
    image["cpbd_reference"] = _nanmean([cpbd(ref.frames[pairs.reference[k]]) for k in picks])
    regions = {name: (region_sums[name] / region_counts[name] if region_counts[name] else math.nan)
               for name in REGION_NAMES}
    if not n_face:
        return image, texture.summary(), regions, None, None
    first = int(np.flatnonzero(with_face)[0])
    return (image, texture.summary(), regions, (heat / n_face).astype(np.float32),
            ref.frames[pairs.reference[first]])


def _temporal(gen: Clip, ref: Clip, pairs: FramePairs, gen_marks: ClipLandmarks) -> dict:
    """Frame-to-frame change outside the lower face, generated vs the reference's at the same
    times, and the flicker frames."""
    masks = _static_masks(gen_marks, gen.size)
    changes = temporal.frame_changes(gen.frames, masks)
    scores = temporal.flicker_scores(changes)
    # The reference's own change between the frames shown at the same times.
    ref_scores = np.zeros(len(gen))
    ref_changes = np.zeros(max(len(gen) - 1, 0))
    if not ref.still:
        at = np.full(len(gen), -1, np.int64)
        at[pairs.generated] = pairs.reference
        for i in range(len(gen) - 1):
            if at[i] >= 0 and at[i + 1] >= 0:
                ref_changes[i] = temporal.masked_change(ref.frames[at[i]], ref.frames[at[i + 1]], masks[i + 1])
            else:
                ref_changes[i] = math.nan
        ref_scores = temporal.flicker_scores(ref_changes)
    spikes = temporal.flicker_frames(scores, ref_scores)
    return {
        "static_change": _nanmean(changes),
        "static_change_reference": _nanmean(ref_changes) if len(ref_changes) else math.nan,
        "flicker_frames": [{"frame": s.frame, "score": round(s.score, 2),
                            "reference_score": None if s.reference_score is None else round(s.reference_score, 2)}
                           for s in spikes],
    }


def _static_masks(marks: ClipLandmarks, shape: tuple[int, int]) -> list[np.ndarray | None]:
    """Per frame the region outside its lower face; a frame without a face takes the nearest
    earlier (else later) frame's; None (the whole frame) when no frame has a face."""
    found = np.flatnonzero(marks.found)
    if len(found) == 0:
        return [None] * len(marks)
    masks: list[np.ndarray | None] = []
    cache: dict[int, np.ndarray] = {}
    for i in range(len(marks)):
        earlier = found[found <= i]
        source = int(earlier[-1]) if len(earlier) else int(found[0])
        if source not in cache:
            cache = {source: ~lower_face_mask(marks.points[source], shape)}
        masks.append(cache[source])
    return masks


def _lip_sync(gen: Clip, audio, mouth: np.ndarray, options: EvalOptions, notes: list[str]):
    from ..audio.io import load_audio

    if audio is None and not gen.has_audio:
        notes.append("lip sync skipped: the generated video has no sound track and no --audio was given")
        return None, None, {"skipped": "no audio"}, None
    source = os.fspath(audio) if audio is not None else gen.path
    wave = load_audio(source).samples
    envelope = lipsync.speech_envelope(wave, gen.fps, len(gen))
    spoken = lipsync.spoken_stretch(envelope)
    sync = lipsync.sync_offset(mouth[spoken], envelope[spoken], options.max_offset)
    if sync.note:
        notes.append(f"lip sync: {sync.note}")
    out = {
        "audio": source,
        "envelope_correlation": _finite(sync.correlation_at_zero),
        "best_offset_frames": sync.best_offset,
        "best_offset_correlation": _finite(sync.best_correlation),
        "frames_with_face": sync.frames_used,
        "spoken_frames": [spoken.start, spoken.stop],
        "envelope_correlation_whole_clip": _finite(lipsync.pearson(mouth, envelope)),
    }
    phones, phones_from = None, None
    if options.phones is not None:
        phones, phones_from = lipsync.read_phones(options.phones), "phone timing file"
    elif options.transcript is not None:
        from .transcript import align_transcript

        try:
            phones, phones_from = align_transcript(wave, options.transcript), "transcript, force-aligned"
        except ValueError as error:
            # One clip's transcript not matching its speech should not stop a folder's report.
            notes.append(f"bilabial closure not checked: {error}")
    elif options.recognise_phones:
        phones, phones_from = lipsync.recognised_phones(wave), "phones recognised in the audio"
    if phones is not None:
        closure = lipsync.bilabial_closure(mouth, gen.fps, phones)
        out["bilabials"] = closure.bilabials
        out["bilabials_closed"] = closure.closed
        out["bilabials_closed_share"] = closure.closed / closure.bilabials if closure.bilabials else None
        out["bilabials_missed_at_s"] = list(closure.missed_at)
        out["bilabial_local_opening"] = float(np.median(closure.local_ratios)) if closure.local_ratios else None
        out["bilabial_timing"] = phones_from
    elif options.transcript is None:
        notes.append("bilabial closure not checked: give --transcript, --phones FILE or --recognise-phones")
    return envelope, sync, out, source


def _syncnet_v2(gen: Clip, marks: ClipLandmarks, audio: str, options: EvalOptions, notes: list[str]) -> dict:
    """LSE-C / LSE-D with SyncNet v2 on the generated clip at 25 fps (the network's rate)."""
    from fractions import Fraction

    from ..audio.io import load_audio
    from . import syncnet_v2 as sn

    model = sn.load_syncnet_v2(options.weights["syncnet_v2"], options.device)
    found = np.flatnonzero(marks.found)
    if len(found) == 0:
        notes.append("LSE-C / LSE-D skipped: no generated frame has a face")
        return {}
    count = int(len(gen) * Fraction(sn.FPS) / gen.fps)
    index = np.minimum(np.round(np.arange(count) * float(gen.fps) / sn.FPS).astype(int), len(gen) - 1)
    if gen.fps != sn.FPS:
        notes.append(f"SyncNet v2 reads 25 fps: the {float(gen.fps):g} fps video was sampled at 25 fps by time")
    # A frame without a face takes the nearest frame's face box.
    nearest = found[np.abs(found[None, :] - index[:, None]).argmin(axis=1)]
    points = np.where(marks.found[index][:, None, None], marks.points[index], marks.points[nearest])
    crops = sn.face_crops(gen.frames[index], points)
    result = sn.syncnet_v2_score(model, crops, load_audio(audio).samples, options.max_offset,
                                 device=options.device)
    return {"lse_c": result.lse_c, "lse_d": result.lse_d, "lse_offset_frames": result.offset,
            "lse_windows": result.windows}


FID_FRAMES = 200  # frames of each clip the FID reads at most (spread evenly)


def _fid(gen: Clip, ref: Clip, pairs: FramePairs, options: EvalOptions, notes: list[str]) -> dict:
    from .fid import frechet_distance, inception_features, load_fid_inception

    model = load_fid_inception(options.weights["inception"], options.device)
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(FID_FRAMES, len(pairs))).round().astype(int))
    generated = inception_features(model, gen.frames[pairs.generated[picks]], device=options.device)
    reference = inception_features(model, ref.frames[np.unique(pairs.reference[picks])], device=options.device)
    notes.append(f"FID over {len(generated)} generated and {len(reference)} reference frames of this clip "
                 "(consecutive frames are alike: compare FIDs of like-sized sets only)")
    return {"fid": frechet_distance(generated, reference), "fid_frames": len(generated)}


LPIPS_FRAMES = 50  # compared pairs the LPIPS reads at most (spread evenly): two CNN passes each


def _lpips(gen: Clip, ref: Clip, pairs: FramePairs, r_marks: ClipLandmarks, with_face: np.ndarray,
           options: EvalOptions, notes: list[str]) -> dict:
    """LPIPS of whole frames (long side :data:`lpips.SIDE`) and of the reference's face crop."""
    import cv2

    from . import lpips

    model, net = lpips.load_lpips(options.weights["lpips"], options.weights.get("lpips_backbone"), options.device)
    picks = np.unique(np.linspace(0, len(pairs) - 1, min(LPIPS_FRAMES, len(pairs))).round().astype(int))
    height, width = gen.size
    scale = lpips.SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    whole = [np.stack([cv2.resize(frames[index[k]], size, interpolation=cv2.INTER_AREA) for k in picks])
             for frames, index in ((gen.frames, pairs.generated), (ref.frames, pairs.reference))]
    out = {"lpips": _nanmean(lpips.lpips_distances(model, *whole, device=options.device)), "lpips_net": net,
           "lpips_frames": len(picks)}
    faces = [int(k) for k in picks if with_face[k]]
    if faces:
        crops = [np.stack([cv2.resize(crop_box(frames[index[k]], face_box(r_marks.points[k], ref.size)),
                                      (lpips.SIDE, lpips.SIDE), interpolation=cv2.INTER_AREA) for k in faces])
                 for frames, index in ((gen.frames, pairs.generated), (ref.frames, pairs.reference))]
        out["lpips_face"] = _nanmean(lpips.lpips_distances(model, *crops, device=options.device))
    notes.append(f"LPIPS ({net}) over {len(picks)} frame pairs at {size[0]}x{size[1]} and {len(faces)} face crops "
                 f"at {lpips.SIDE}x{lpips.SIDE}")
    return out


def _segsyncnet(gen: Clip, audio: str, options: EvalOptions) -> dict:
    from ..audio.io import load_audio
    from .segsync import load_segsyncnet, segsync_score

    model = load_segsyncnet(options.weights["syncnet"], options.device)
    result = segsync_score(model, gen.frames, load_audio(audio).samples, gen.fps, options.max_offset,
                           options.device)
    return {"segsyncnet_confidence": result.confidence, "segsyncnet_offset_frames": result.offset,
            "segsyncnet_probability": result.probability_at_zero, "segsyncnet_windows": result.windows}


def _contact_sheet(gen, ref, pairs, g_marks, r_marks, with_face, mouth) -> np.ndarray | None:
    """Face crops of the frames where the generated mouth moves most (generated above reference)."""
    import cv2

    faces = np.flatnonzero(with_face)
    if len(faces) == 0:
        return None
    opening = mouth[pairs.generated]
    motion = np.abs(np.gradient(np.nan_to_num(opening, nan=np.nanmean(opening) if np.isfinite(opening).any() else 0.0)))
    order = [int(k) for k in faces[np.argsort(-motion[faces], kind="stable")]]
    spacing = max(1, int(round(gen.fps / 5)))
    chosen: list[int] = []
    for k in order:
        if all(abs(k - c) >= spacing for c in chosen):
            chosen.append(k)
        if len(chosen) == SHEET_FRAMES:
            break
    chosen.sort()
    rows = []
    for frames, index in ((gen.frames, pairs.generated), (ref.frames, pairs.reference)):
        tiles = [cv2.resize(crop_box(frames[index[k]], face_box(r_marks.points[k], ref.size)),
                            (SHEET_TILE, SHEET_TILE), interpolation=cv2.INTER_AREA) for k in chosen]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    for c, k in enumerate(chosen):
        cv2.putText(sheet, str(int(pairs.generated[k])), (c * SHEET_TILE + 4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    return sheet


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
