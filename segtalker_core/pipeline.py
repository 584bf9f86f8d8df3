"""The stage functions shared by the ComfyUI nodes and the CLI.

Each function takes and returns the core types of :mod:`segtalker_core.containers` (numpy uint8
images, label maps) and a :class:`LoadedModel` where a stage has a learned twin. ``progress`` is
an optional ``progress(done, total)`` callback, called once per frame.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import labels as L
from .containers import FaceTrack, SegmentationFrame, StyleCodes, TalkingSegmentation
from .progress import Progress
from .model_handle import ENCODER, GENERATOR, PARSER, TSG, LoadedModel, require_component

log = logging.getLogger("segtalker")


__all__ = [
    "LoadedModel",
    "NoFaceError",
    "require_component",
    "builtin_parser_model",
    "load_model",
    "parse_faces",
    "faces_preview",
    "segmentation_preview",
    "region_mask",
]


class NoFaceError(ValueError):
    """No face in any frame of an input."""


# ---------------------------------------------------------------------------------------------
# Models


def builtin_parser_model() -> LoadedModel:
    """The MediaPipe-landmark parser (no weight files); MediaPipe loads on first use."""
    from .parsing.landmark_parser import LandmarkParser

    return LoadedModel(
        component=PARSER,
        runner=LandmarkParser(),
        source="builtin",
        description="built-in parser: MediaPipe face mesh + selfie segmentation, rasterised to 19 classes",
    )


def load_model(path: str, device="cpu", dtype=None, *, slot: str | None = None,
               precision: str = "auto") -> LoadedModel:
    """Load any SegTalker weight file: a BiSeNet parser checkpoint or a learned component bundle.

    What the file is comes from its header; ``slot`` refuses a file of another component before
    its tensors are read; ``precision`` (auto / fp32 / bf16 / fp16) is what runs compute in, the
    weights stay as stored. See :func:`segtalker_core.model_loading.load_model`.
    """
    from .model_loading import load_model as _load_model

    return _load_model(path, device, dtype, slot=slot, precision=precision)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_faces(
    frames: np.ndarray,
    parser: LoadedModel | None = None,
    crop_size: int = 512,
    face_index: int = -1,
    smoothing: float = 0.5,
    video: bool | None = None,
    input_name: str = "image",
    progress: Progress = None,
    detector=None,
    require_face: bool = True,
) -> FaceTrack:
    """Frames ``[N, H, W, 3]`` (any dtype/channels ``to_rgb_uint8_batch`` takes) -> FaceTrack.

    A batch of more than one frame is treated as consecutive video frames (MediaPipe tracking,
    transforms smoothed with a Gaussian of ``4 * smoothing`` frames). Frames without a face keep
    their slot; when no frame has a face, :class:`NoFaceError` names ``input_name`` (unless
    ``require_face`` is False: a chunk of a longer video). ``detector``: a FaceMeshDetector to reuse
    (its tracking carries over between calls).
    """
    from .face.aligned import align_faces
    from .face.image import to_rgb_uint8_batch

    parser = parser or builtin_parser_model()
    require_component(parser, (PARSER,), slot="parser")
    rgb = to_rgb_uint8_batch(frames, input_name)
    n = len(rgb)
    video = n > 1 if video is None else video

    def detection_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done // 2, n)

    device = parser_device(parser)
    with contextlib.ExitStack() as owned:
        if detector is None and device is not None:
            from .face.detect import FaceMeshDetector

            # The face mesh runs where the parser runs (align_faces' own detector is the CPU's).
            detector = owned.enter_context(FaceMeshDetector(video=video, device=device))
        aligned = align_faces(
            rgb, crop_size=crop_size, face_index=face_index, video=video, smoothing=_smoothing(smoothing, video),
            detector=detector, progress=detection_progress,
        )
    if require_face and not aligned.found.any():
        raise NoFaceError(
            f"no face was found in any of the {n} frame(s) of input '{input_name}'; use a "
            "photo or video where one face is clearly visible (frontal or three-quarter view)"
        )
    return _parse_aligned(rgb, aligned, parser, input_name, progress)


def iter_face_tracks(
    frame_chunks,  # iterable of [n, H, W, 3] consecutive video frames
    parser: LoadedModel | None = None,
    crop_size: int = 512,
    face_index: int = -1,
    smoothing: float = 0.5,
    input_name: str = "video",
    max_frames: int | None = None,
):
    """Parse a video that arrives in chunks: a :class:`FaceTrack` per run of finished frames.

    The face tracker and the crop smoothing carry over between chunks (the crop of a frame near a
    chunk's end waits for the next chunk, so smoothing sees both sides), so the tracks join
    without a jump. Frames past ``max_frames`` are not read. Raises :class:`NoFaceError` at the
    end when no frame had a face.
    """
    from .face.aligned import StreamingAligner
    from .face.detect import FaceMeshDetector

    parser = parser or builtin_parser_model()
    require_component(parser, (PARSER,), slot="parser")
    any_face = False
    read = 0

    def track(released) -> FaceTrack:
        nonlocal any_face
        rgb, aligned = released
        any_face |= bool(aligned.found.any())
        return _parse_aligned(rgb, aligned, parser, input_name)

    with FaceMeshDetector(video=True, device=parser_device(parser)) as detector:
        aligner = StreamingAligner(detector, crop_size, face_index, _smoothing(smoothing, True))
        for chunk in frame_chunks:
            if max_frames is not None:
                chunk = chunk[: max_frames - read]
            if len(chunk):
                read += len(chunk)
                released = aligner.push(chunk)
                chunk = None  # the aligner holds what it needs of it
                if released is not None:
                    yield track(released)
                    released = None  # the track's frames go as soon as the caller drops it
            if max_frames is not None and read >= max_frames:
                break  # do not decode frames nobody needs
        released = aligner.flush()
        if released is not None:
            yield track(released)
    if not any_face:
        raise NoFaceError(f"no face was found in any frame of input '{input_name}'")


def parser_device(parser: LoadedModel | None):
    """Where ``parser`` runs (its placed device, else its runner's), the device the face mesh
    that finds its crops should run on too; None: not said (the CPU, the detector's default)."""
    if parser is None:
        return None
    device = parser.device if parser.device is not None else getattr(parser.runner, "device", None)
    return None if device is None else _torch_device(device)


def _torch_device(device):
    import torch

    return torch.device(device)


def _smoothing(strength: float, video: bool):
    """Crop smoothing of a parse: a Gaussian of ``4 * strength`` frames for video."""
    from .face.smoothing import Smoothing

    return Smoothing("gaussian", sigma=4.0 * strength) if video and strength > 0 else Smoothing("none")


def _parse_aligned(rgb: np.ndarray, aligned, parser: LoadedModel, input_name: str, progress: Progress = None) -> FaceTrack:
    """The parsed :class:`FaceTrack` of frames ``rgb`` [N, H, W, 3] aligned as ``aligned``."""
    n = len(rgb)
    _warn_if_turned(aligned.landmarks, aligned.found, input_name)
    missing = int((~aligned.found).sum())
    if missing:
        log.warning("no face in %d of %d frames of '%s'; those frames pass through unchanged", missing, n, input_name)
    crop_size = aligned.crop_size
    labels = np.zeros((n, crop_size, crop_size), dtype=np.uint8)
    found = np.flatnonzero(aligned.found)
    batch = max(1, int(getattr(parser.runner, "batch_size", 1)))
    for start in range(0, len(found), batch):
        index = found[start : start + batch]
        labels[index] = parser.runner.parse(aligned.crops[index], aligned.landmarks[index])
        if progress is not None:
            progress(n // 2 + (start + len(index)) * (n - n // 2) // len(found), n)
    if progress is not None:
        progress(n, n)
    return FaceTrack(
        frames=rgb,
        crops=aligned.crops,
        labels=labels,
        landmarks=aligned.landmarks,
        transforms=aligned.transforms,
        found=aligned.found,
        parser=getattr(parser.runner, "name", parser.component),
    )


def _warn_if_turned(landmarks: np.ndarray, found: np.ndarray, input_name: str) -> None:
    from .face.pose import MAX_FRONTAL_YAW_DEG, turned_frames

    turned, worst = turned_frames(landmarks, found)
    if len(turned):
        log.warning(
            "the face in %d frame(s) of '%s' is turned up to %.0f degrees (profile-ish; the built-in "
            "backends are made for faces within about %.0f degrees of frontal): the result is best effort",
            len(turned), input_name, worst, MAX_FRONTAL_YAW_DEG,
        )


def faces_preview(faces: FaceTrack, opacity: float = 0.6) -> np.ndarray:
    """Crops with the parsing colours over them, ``[N, S, S, 3]`` uint8 (frames without a face: black)."""
    colours = L.colorize_bisenet(faces.labels).astype(np.float32)
    blended = (1.0 - opacity) * faces.crops.astype(np.float32) + opacity * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def segmentation_preview(segmentation: TalkingSegmentation) -> np.ndarray:
    """Region colours of every frame of a talking segmentation, ``[T, S, S, 3]`` uint8."""
    return L.colorize_regions(segmentation.regions)


# ---------------------------------------------------------------------------------------------
# Masks


def region_mask(
    faces: FaceTrack | None = None,
    segmentation: TalkingSegmentation | None = None,
    regions: list[str] | tuple[str, ...] = ("lips",),
    dilate_px: int = 0,
    feather_px: int = 0,
    space: str = "crop",
) -> np.ndarray:
    """Float masks ``[N, S, S]`` (crop space) or ``[N, H, W]`` (frame space) of the chosen regions.

    From ``segmentation`` when given (one mask per output frame), else from ``faces``. In frame
    space the crop mask is warped back with each frame's inverse crop transform; frames without a
    face get an empty mask.
    """
    from .masks import frame_space_masks, shape_mask

    if segmentation is None and faces is None:
        raise ValueError("connect either 'faces' or 'segmentation' to make a mask")
    if space not in ("crop", "frame"):
        raise ValueError(f"space must be 'crop' or 'frame', got {space!r}")
    indices = L.parse_region_list(list(regions))
    if not indices:
        raise ValueError(f"no region selected; choose at least one of: {', '.join(L.REGIONS_12)}")
    if segmentation is not None:
        region_maps, track, source_index = segmentation.regions, segmentation.faces, segmentation.source_index
    else:
        region_maps, track, source_index = faces.regions, faces, np.arange(len(faces))
    masks = shape_mask(np.isin(region_maps, indices), dilate_px, feather_px)
    masks[~track.found[source_index]] = 0.0
    if space == "crop":
        return masks
    return frame_space_masks(masks, track.transforms[source_index], track.frame_size)


# ---------------------------------------------------------------------------------------------
# Audio


def load_audio_for_comfy(path: str) -> dict:
    """A ComfyUI AUDIO dict (``waveform [1, C, T]`` at the file's own rate) from any audio/video file."""
    from .audio.io import audio_dict_from_file

    return audio_dict_from_file(path)


def audio_frame_count(audio, fps: float, input_name: str = "audio") -> int:
    """Video frames the audio needs: ``ceil(duration * fps)`` (at least 1)."""
    from .audio.timing import frame_count

    return frame_count(load_mono(audio, input_name).duration, fps)


def load_mono(audio, input_name: str = "audio"):
    """Any audio input -> 16 kHz mono ``MonoAudio``; decode once and pass it on to the stages."""
    from .audio.io import MonoAudio, load_audio

    if isinstance(audio, MonoAudio):
        return audio
    try:
        return load_audio(audio, name=input_name)
    except (TypeError, ValueError) as error:
        raise audio_input_error(error, input_name) from error


def audio_input_error(error: Exception, input_name: str) -> ValueError:
    """An audio reader's error as one naming the input once (a mapping or array error already
    does; a file error gets ``input 'NAME':`` in front)."""
    if f"'{input_name}'" in str(error):
        return ValueError(str(error))
    return ValueError(f"input '{input_name}': {error}")


# ---------------------------------------------------------------------------------------------
# Talking segmentation


@dataclass
class SegmentationStream:
    """A talking segmentation as it is made (:func:`stream_talking_segmentation`): ``frames``
    yields one :class:`SegmentationFrame` per output frame, once, while only what is small is
    known up front: the frame count, the articulation ``mouth_params`` ``[T, 5]`` float32 (what
    a collected segmentation's are), the rate and the provenance ``meta``."""

    frames: Iterator[SegmentationFrame]
    faces: FaceTrack
    fps: float
    mouth_params: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.mouth_params)


def iter_talking_segmentation(
    faces: FaceTrack,
    audio,
    fps: float,
    model: LoadedModel | None = None,
    strength: float = 1.0,
    method: str = "auto",
    video_mode: str = "pingpong",
    blink: bool = True,
    seed: int = 0,
    progress: Progress = None,
    batch_size: int | None = None,
):
    """FACES + speech -> one :class:`SegmentationFrame` per video frame (``ceil(duration * fps)``).

    The face track is repeated (portrait), looped/ping-ponged (video shorter than the audio) or cut
    (longer). Built-in: the viseme rig drives the face's landmarks and re-rasterises the mouth
    regions. Learned (``model`` is a TSG): the network predicts the mouth area from mel windows,
    a chunk of frames at a time (:data:`.learned.TSG_CHUNK`), so the maps held do not grow with
    the audio. Either way each frame carries the built-in articulation as a hint for the built-in
    renderer. The inputs are checked at the call; the frames come as the iterator is read.
    ``batch_size``: as for :func:`talking_segmentation`.
    """
    return stream_talking_segmentation(faces, audio, fps, model, strength, method, video_mode, blink,
                                       seed, progress, batch_size).frames


def stream_talking_segmentation(
    faces: FaceTrack,
    audio,
    fps: float,
    model: LoadedModel | None = None,
    strength: float = 1.0,
    method: str = "auto",
    video_mode: str = "pingpong",
    blink: bool = True,
    seed: int = 0,
    progress: Progress = None,
    batch_size: int | None = None,
) -> SegmentationStream:
    """:func:`iter_talking_segmentation` with what a consumer needs before the frames come (the
    count, the articulation, the meta a collected segmentation would carry)."""
    frames, meta, params = _talking_segmentation(faces, audio, fps, model, strength, method, video_mode,
                                                 blink, seed, progress, batch_size)
    return SegmentationStream(frames, faces, float(fps), params, meta)


def talking_segmentation(
    faces: FaceTrack,
    audio,
    fps: float,
    model: LoadedModel | None = None,
    strength: float = 1.0,
    method: str = "auto",
    video_mode: str = "pingpong",
    blink: bool = True,
    seed: int = 0,
    progress: Progress = None,
    batch_size: int | None = None,
) -> TalkingSegmentation:
    """:func:`iter_talking_segmentation` collected into the ``SEGTALKER_SEGMENTATION`` socket.
    ``batch_size``: frames per TSG forward pass; 0 or None: automatic (from the device's free
    memory, the TSG's default on a CPU: :func:`.working_memory.pick_batch_size`)."""
    frames, meta, _ = _talking_segmentation(faces, audio, fps, model, strength, method, video_mode, blink, seed,
                                            progress, batch_size)
    return TalkingSegmentation.collect(frames, faces, fps, meta)


def _talking_segmentation(faces, audio, fps, model, strength, method, video_mode, blink, seed, progress,
                          batch_size=None):
    """(iterator of frames, provenance meta, articulation [T, 5] float32) of a talking
    segmentation; inputs checked now."""
    from . import builtin
    from .frame_schedule import source_indices
    from .working_memory import batch_size_choice

    if not isinstance(faces, FaceTrack):
        raise TypeError(f"input 'faces' must be SEGTALKER_FACES from SegTalker Face Parse, got {type(faces).__name__}")
    batch_size = batch_size_choice(batch_size, "batch_size")
    mono = load_mono(audio, "audio")
    if model is not None and not model.is_builtin:
        require_component(model, (TSG,), slot="tsg")
    articulation = _articulation(mono, fps, method, strength)
    n_frames = len(articulation)
    index = source_indices(len(faces), n_frames, video_mode)
    meta = {"articulation": articulation.method, "seed": int(seed)}
    params = np.asarray(articulation.params, np.float32)
    if model is None or model.is_builtin:
        meta.update(backend="builtin", blink=bool(blink))
        frames = builtin.iter_talking_segmentation(faces, articulation.params, fps, index, blink=blink, seed=seed)
        return _reporting(frames, n_frames, progress), meta, params
    meta.update(backend="tsg", model=model.source, tsg_resolution=int(model.runner.resolution), blink=False)

    def tsg_frames():
        from .learned import iter_tsg_segmentation

        t = 0
        blocks = iter_tsg_segmentation(faces, mono, fps, n_frames, index, model, batch_size=batch_size,
                                       progress=progress)
        for block in blocks:
            for regions in block:
                yield SegmentationFrame(regions, int(index[t]), articulation.params[t])
                t += 1
            block = regions = None  # the chunk goes once its last frame is dropped downstream
        assert t == n_frames, (t, n_frames)

    return tsg_frames(), meta, params


def _reporting(items, total: int, progress: Progress):
    """``items`` as they come, calling ``progress(done, total)`` after each."""
    for done, item in enumerate(items, 1):
        yield item
        if progress is not None:
            progress(done, total)


def edit_segmentation(
    segmentation: TalkingSegmentation,
    region: str,
    shape_from: FaceTrack | None = None,
    mask: np.ndarray | None = None,
    fill: str = "skin",
    mask_space: str = "frame",
) -> TalkingSegmentation:
    """Give ``region`` a new shape in every frame, from another face's parsing or a painted mask
    (``mask_space``: painted on the original frames, or in crop space)."""
    from .segmentation_edit import edit_region

    return edit_region(segmentation, region, shape_from=shape_from, mask=mask, fill=fill, mask_space=mask_space)


# ---------------------------------------------------------------------------------------------
# Style


def encode_style(faces: FaceTrack, model: LoadedModel | None = None, frame: int = 0,
                 refine=None) -> StyleCodes:
    """Style codes of one frame of ``faces`` (one reference for the whole video: no flicker).
    ``refine``: a :class:`.style_refinement.StyleRefinement` (learned encoder only; None: off)."""
    if not isinstance(faces, FaceTrack):
        raise TypeError(f"input 'faces' must be SEGTALKER_FACES, got {type(faces).__name__}")
    if not 0 <= frame < len(faces):
        raise ValueError(f"input 'frame' is {frame}, but the faces have frames 0..{len(faces) - 1}")
    if not faces.found[frame]:
        first = int(np.argmax(faces.found))
        log.warning("frame %d has no face; encoding the style of frame %d instead", frame, first)
        frame = first
    if model is None or model.is_builtin:
        from . import builtin

        if refine is not None and refine.config.enabled:
            raise ValueError("refining the style codes needs the learned encoder: connect the "
                             "encoder bundle, or set the optimisation steps to 0")
        return builtin.encode_style(faces, frame)
    from .learned import encode_style_learned

    require_component(model, (ENCODER,), slot="encoder")
    return encode_style_learned(faces, model, frame, refine)


def swap_style(style: StyleCodes, reference: StyleCodes, regions, strength: float = 1.0) -> StyleCodes:
    """``style`` whose chosen regions take ``reference``'s look (``strength`` 0..1 interpolates)."""
    from .procedural.region_style import swap_regions

    regions = list(regions)
    if not regions:
        raise ValueError(f"no region selected; choose at least one of: {', '.join(L.REGIONS_12)}")
    return swap_regions(style, reference, regions, strength)


# ---------------------------------------------------------------------------------------------
# Synthesis and paste-back


def iter_synthesize(
    frames,  # iterable of SegmentationFrame
    faces: FaceTrack,
    style: StyleCodes | None = None,
    portrait: bool | None = None,
    activity: np.ndarray | None = None,
    mouth_bank=None,  # MouthBankConfig | MouthBank | None: a video's own mouths (builtin.FrameDriver)
):
    """``(crop [S, S, 3] uint8, frame)`` per segmentation frame: the built-in renderer, streaming.

    The crop shows what the frame's map says (the built-in renderer follows the map; the
    articulation it carries is only a hint). ``portrait``: whether ``faces`` is one still face
    (default: it has one frame). ``activity`` [T]: the speech activity of the whole articulation
    track (:func:`builtin.articulation_activity`), so a hint puts a portrait's mouth where the rig
    put it (without it, each frame's is judged alone); :func:`segmentation_activity` gives it.
    ``mouth_bank``: for a video, the bank of its own open mouths (a shared
    :class:`~.procedural.mouth_bank.MouthBank` carries one chunk's mouths into the next).
    """
    from . import builtin

    return builtin.iter_synthesize(frames, faces, style, portrait, activity, mouth_bank)


def segmentation_activity(segmentation: TalkingSegmentation) -> np.ndarray | None:
    """Speech activity ``[T]`` of a segmentation's articulation (None when it carries none)."""
    from . import builtin

    return builtin.articulation_activity(segmentation.mouth_params, segmentation.fps)


def synthesize(
    segmentation: TalkingSegmentation,
    style: StyleCodes | None = None,
    model: LoadedModel | None = None,
    background: str = "source",
    seed: int = 0,
    progress: Progress = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """``[T, S, S, 3]`` uint8 face crops, one per segmentation frame. ``batch_size``: frames per
    generator forward pass; 0 or None: automatic (:func:`.working_memory.pick_batch_size`)."""
    from .working_memory import batch_size_choice

    batch_size = batch_size_choice(batch_size, "batch_size")
    if not isinstance(segmentation, TalkingSegmentation):
        raise TypeError(f"input 'segmentation' must be SEGTALKER_SEGMENTATION, got {type(segmentation).__name__}")
    if background not in ("source", "generated"):
        raise ValueError(f"background must be 'source' or 'generated', got {background!r}")
    if model is None or model.is_builtin:
        if background != "source":
            log.warning("the built-in renderer keeps the source background; background=%r needs a learned generator", background)
        s = segmentation.faces.crop_size
        out = np.empty((len(segmentation), s, s, 3), np.uint8)
        pairs = iter_synthesize(segmentation.frames(), segmentation.faces, style,
                                activity=segmentation_activity(segmentation))
        for t, (crop, _) in enumerate(_reporting(pairs, len(segmentation), progress)):
            out[t] = crop
        return out
    from .learned import synthesize_learned

    _check_generator_inputs(model, style)
    return synthesize_learned(segmentation, style, model, background=background, seed=seed,
                              batch_size=batch_size, progress=progress)


def iter_synthesize_with_model(
    frames,  # iterable of SegmentationFrame
    faces: FaceTrack,
    style: StyleCodes,
    model: LoadedModel,
    background: str = "source",
    seed: int = 0,
    batch_size: int | None = None,
    tsg_resolution: int | None = None,
):
    """``(crop [S, S, 3] uint8, frame)`` per segmentation frame from the learned generator,
    streaming (the learned twin of :func:`iter_synthesize`): frames are gathered into batches,
    the next batch computed on a worker thread while the caller pastes this one back
    (:func:`.learned.iter_synthesize_learned`), so the crops held do not grow with the clip.
    The crops are :func:`synthesize`'s at the same ``batch_size`` (0 or None: automatic).
    ``tsg_resolution``: the TSG's, when the maps came from one (a warning when it differs from
    the generator's)."""
    from .learned import iter_synthesize_learned
    from .working_memory import batch_size_choice

    batch_size = batch_size_choice(batch_size, "batch_size")
    if background not in ("source", "generated"):
        raise ValueError(f"background must be 'source' or 'generated', got {background!r}")
    _check_generator_inputs(model, style)
    return iter_synthesize_learned(frames, faces, style, model, background=background, seed=seed,
                                   batch_size=batch_size, tsg_resolution=tsg_resolution)


def _check_generator_inputs(model: LoadedModel, style: StyleCodes | None) -> None:
    require_component(model, (GENERATOR,), slot="generator")
    if style is None:
        raise ValueError("a learned generator needs style codes: connect SegTalker Encode Style (with the encoder bundle)")


def iter_paste_back(
    pairs,  # iterable of (crop [S, S, 3] uint8, SegmentationFrame)
    faces: FaceTrack,
    feather_px: float = 12.0,
    blend: str = "linear",  # "linear" or "multiband" (face.paste.paste_face)
    motion=None,  # procedural.head_warp.MovingPortrait (portrait_motion) or None: no head motion
):
    """Full-resolution frames ``[H, W, 3]`` uint8, one per crop (feeds a video writer without
    holding the video). A frame whose source has no face passes through unchanged. ``motion``
    moves the person of the pasted frame ``t`` (the ``t``-th pair) by its idle head motion."""
    from .face.paste import changed_paste_mask, paste_face

    for t, (crop, frame) in enumerate(pairs):
        i = frame.source_index
        if faces.found[i]:
            mask = changed_paste_mask(crop, frame.regions, faces.crops[i], faces.regions[i], feather_px)
            pasted = paste_face(faces.frames[i], crop, faces.transforms[i], mask, blend=blend)
            yield pasted if motion is None else motion.apply(pasted, t)
        else:
            yield faces.frames[i].copy()


def portrait_motion(faces: FaceTrack, num_frames: int, fps: float, seed: int = 0,
                    strength: float = 0.0, speech: np.ndarray | None = None,
                    input_name: str = "head_motion"):
    """The idle head motion of a talking portrait (:mod:`.procedural.head_motion`, applied by
    :mod:`.procedural.head_warp`) for :func:`iter_paste_back`, or None when there is none to
    make: ``strength`` 0, or ``faces`` is a video (more than one frame: it has its own head
    motion) or has no face. ``speech``: ``[num_frames]`` jaw opening per output frame (nods on
    its stressed syllables). ``strength`` outside 0..1 is a ValueError naming ``input_name``.
    The person mask is made here, once (the selfie segmenter on the whole portrait)."""
    from .procedural.head_motion import check_strength, head_motion_schedule
    from .procedural.head_warp import MovingPortrait, portrait_warp

    strength = check_strength(strength, input_name)
    if strength == 0.0 or len(faces) != 1 or not faces.found[0]:
        return None
    motion = head_motion_schedule(num_frames, fps, seed, strength, speech, input_name)
    warp = portrait_warp(faces.frames[0], faces.labels[0], faces.landmarks[0], faces.transforms[0])
    return MovingPortrait(warp, motion)


def paste_back(crops: np.ndarray, segmentation: TalkingSegmentation, feather_px: float = 12.0,
               progress: Progress = None, blend: str = "linear", head_motion: float = 0.0) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 original frames with the crops blended in. ``head_motion`` 0..1:
    idle head motion of a portrait (:func:`portrait_motion`; the segmentation's seed, fps and
    jaw opening), 0: none."""
    if len(crops) != len(segmentation):
        raise ValueError(
            f"input 'crops' has {len(crops)} images but the segmentation has {len(segmentation)} frames; "
            "connect the crops that SegTalker Synthesize made from this segmentation"
        )
    s = segmentation.faces.crop_size
    if crops.shape[1:3] != (s, s):
        raise ValueError(f"input 'crops' are {crops.shape[2]}x{crops.shape[1]}, but the faces were cropped at {s}x{s}")
    h, w = segmentation.faces.frame_size
    out = np.empty((len(crops), h, w, 3), np.uint8)
    speech = None if segmentation.mouth_params is None else segmentation.mouth_params[:, 0]
    motion = portrait_motion(segmentation.faces, len(segmentation), segmentation.fps,
                             int(segmentation.meta.get("seed", 0)), head_motion, speech)
    pasted = iter_paste_back(zip(crops, segmentation.frames()), segmentation.faces, feather_px, blend, motion)
    for t, frame in enumerate(_reporting(pasted, len(crops), progress)):
        out[t] = frame
    return out


# ---------------------------------------------------------------------------------------------
# The whole chain (built-in)


def _swapped_style(faces: FaceTrack, swaps, crop_size: int) -> StyleCodes | None:
    """Built-in style of ``faces`` with ``swaps`` ``[(regions, reference_image), ...]`` applied."""
    style = None
    for k, (regions, reference_image) in enumerate(swaps or []):
        reference = parse_faces(reference_image[None], crop_size=crop_size, input_name=f"swap reference {k + 1}")
        style = swap_style(style or encode_style(faces), encode_style(reference), regions, 1.0)
    return style


def iter_talk_track(
    faces: FaceTrack,
    params: np.ndarray,  # [T, 5] articulation of the output frames
    fps: float,
    source_index: np.ndarray,  # [T]
    style: StyleCodes | None,
    blink: bool,
    seed: int,
    portrait: bool | None,
    blend: str = "linear",  # paste-back: "linear" or "multiband"
    head_motion: float = 0.0,  # 0..1 idle head motion of a portrait (portrait_motion); 0: none
    own_rest: bool = True,  # a portrait rests with its own mouth (False: closed lips)
    mouth_bank=None,  # MouthBankConfig | MouthBank | None: a video's own mouths (builtin.FrameDriver)
):
    """The built-in stages chained on one parsed face track -- talking segmentation, synthesis,
    paste-back -- streaming full-resolution frames ``[H, W, 3]`` uint8, one at a time. The rig
    poses each frame once: its pose travels with the segmentation frame to the renderer."""
    from . import builtin

    motion = None
    if portrait or (portrait is None and len(faces) == 1):
        motion = portrait_motion(faces, len(params), fps, seed, head_motion, params[:, 0])
    frames = builtin.iter_talking_segmentation(faces, params, fps, source_index, blink, seed, portrait, own_rest,
                                               mouth_bank)
    return iter_paste_back(iter_synthesize(frames, faces, style, portrait), faces, blend=blend, motion=motion)


def iter_talk(
    frames: np.ndarray,
    audio,
    fps: float,
    strength: float = 1.0,
    video_mode: str = "pingpong",
    blink: bool = True,
    seed: int = 0,
    method: str = "auto",
    crop_size: int = 512,
    swaps: list[tuple[list[str], np.ndarray]] | None = None,
    input_name: str = "image",
    progress: Progress = None,
    parser: LoadedModel | None = None,
    face_index: int = -1,
    blend: str = "linear",
    head_motion: float = 0.0,
    own_rest: bool = True,
):
    """Portrait or video frames + speech -> output frames, yielded one at a time (built-in chain).

    The same stages as the nodes (parse -> talking segmentation -> synthesis -> paste-back),
    streamed: per frame only a few mouth parameters are kept (the input frames are held; for a
    long video use :func:`iter_talk_chunks`). ``swaps``: ``[(regions, reference_image), ...]``
    local style edits from reference faces. ``head_motion`` 0..1: idle head motion of a portrait
    (from ``seed``, nodding on the speech's stressed syllables; a video keeps its own), 0: none.
    ``own_rest``: a portrait's mouth at silence is its own (parted lips stay parted); False drives
    it from closed lips, as a video's frames are.
    """
    from .frame_schedule import source_indices
    from .procedural.head_motion import check_strength

    check_strength(head_motion)
    pending = _articulation_ahead(audio, fps, method, strength)
    faces = parse_faces(frames, parser, crop_size=crop_size, face_index=face_index, input_name=input_name)
    style = _swapped_style(faces, swaps, crop_size)
    articulation = pending.result()
    index = source_indices(len(faces), len(articulation), video_mode)
    stream = iter_talk_track(faces, articulation.params, articulation.fps, index, style, blink, seed, None,
                             blend, head_motion, own_rest)
    yield from _reporting(stream, len(articulation), progress)


def iter_talk_chunks(
    frame_chunks,  # iterable of [n, H, W, 3] uint8 consecutive video frames
    audio,
    fps: float,
    strength: float = 1.0,
    method: str = "auto",
    crop_size: int = 512,
    swaps: list[tuple[list[str], np.ndarray]] | None = None,
    input_name: str = "video",
    progress: Progress = None,
    parser: LoadedModel | None = None,
    face_index: int = -1,
    blend: str = "linear",
):
    """Dub a video at least as long as the audio, reading it chunk by chunk.

    Only two chunks of input frames (plus a few held back for the crop smoothing) are held at a
    time, so memory does not grow with the length: the one being rendered, and the next one,
    which a worker thread reads from ``frame_chunks``, tracks and parses meanwhile (so
    ``frame_chunks`` is consumed on that thread). The face tracker and the crop smoothing carry
    over between chunks (:func:`iter_face_tracks`). Input frames beyond the audio are not read.
    If no frame has a face, :class:`NoFaceError` is raised at the end (a video writer then discards its
    partial file). One mouth bank serves every chunk, so the clip's own open mouths seen in one
    chunk paint the mouths of the next (a chunk may have no open mouth of its own).
    """
    from .procedural.mouth_bank import MouthBank
    from .run_ahead import run_ahead

    mono = load_mono(audio, "audio")  # decoded once: the frame count and the worker share it
    pending = _articulation_ahead(mono, fps, method, strength)
    n_frames = audio_frame_count(mono, fps)
    articulation = None
    style = None
    bank = MouthBank()
    done = 0
    # The next chunk is read, tracked and parsed on a worker while this one is rendered: the
    # face models, OpenCV and FFmpeg release the GIL, and the two halves cost about the same.
    # It pays where the kernels do not oversubscribe the cores as well (talk_file limits them,
    # kernel_threads; on 2 cores the worker alone was within noise of none).
    tracks = run_ahead(
        iter_face_tracks(frame_chunks, parser, crop_size=crop_size, face_index=face_index,
                         input_name=input_name, max_frames=n_frames),
        depth=1,
        name="segtalker-tracking",
    )
    try:
        for faces in tracks:
            if articulation is None:  # done by now, while the first chunk was decoded and parsed
                articulation = pending.result()
            if swaps and style is None and faces.found.any():
                style = _swapped_style(faces, swaps, crop_size)
            n = len(faces)
            stream = iter_talk_track(
                faces, articulation.params[done : done + n], articulation.fps, np.arange(n), style,
                blink=False, seed=0, portrait=False, blend=blend, mouth_bank=bank,
            )
            for frame in stream:
                yield frame
                done += 1
                if progress is not None:
                    progress(done, n_frames)
            # Let this run's frames, crops and per-frame renderers go before the next chunk is
            # taken (the loop variables would keep them alive until then).
            faces = stream = frame = None
    finally:
        # Stops and joins the worker before the caller closes what it reads from (a file).
        tracks.close()
    if done < n_frames:
        raise ValueError(
            f"input '{input_name}' ended after {done} frames but the audio needs {n_frames} (the "
            f"file promised more: is it cut short?); give at most {done / fps:.2f} s of audio, or "
            "re-encode the video (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) so that it is looped "
            "or ping-ponged (--video-mode); from Python, iter_talk does that on frames in memory"
        )


def speech_articulation(audio, fps: float, method: str = "auto", strength: float = 1.0):
    """The articulation track (``.params`` ``[T, 5]``, ``T = ceil(duration * fps)``) of the
    speech that the talking segmentation follows, computed once for a whole run."""
    return _articulation(audio, fps, method, strength)


def _articulation(audio, fps: float, method: str, strength: float):
    from .audio.articulation import articulation_from_audio
    from .audio.timing import frame_count

    mono = load_mono(audio, "audio")
    n_frames = frame_count(mono.duration, fps)
    return articulation_from_audio(mono, fps, n_frames=n_frames, method=method, strength=strength)


def _articulation_ahead(audio, fps: float, method: str, strength: float):
    """:func:`_articulation` on a worker thread, as a ``concurrent.futures.Future``: the speech
    recogniser and the spectral features (C and numpy, which release the GIL for much of their
    work) run while the faces are parsed (torch releases it too), which brings the first frame
    forward. The audio and the
    options are checked here, so bad input is still an error before any parsing."""
    from concurrent.futures import ThreadPoolExecutor

    from .audio.articulation import check_options

    mono = load_mono(audio, "audio")
    check_options(method, strength)
    pool = ThreadPoolExecutor(1, thread_name_prefix="segtalker-articulation")
    try:
        return pool.submit(_articulation, mono, fps, method, strength)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one job


def talk_frames(frames: np.ndarray, audio, fps: float, progress: Progress = None, **options) -> np.ndarray:
    """:func:`iter_talk` collected into ``[T, H, W, 3]`` uint8."""
    mono = load_mono(audio)
    n = audio_frame_count(mono, fps)
    out = None
    for t, frame in enumerate(iter_talk(frames, mono, fps, progress=progress, **options)):
        if out is None:
            out = np.empty((n,) + frame.shape, np.uint8)
        out[t] = frame
    return out
