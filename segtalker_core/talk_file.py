"""Dub into an mp4 on disk, frame by frame: the CLI's ``talk`` and the SegTalker Talk Video node.

Memory stays flat with the length where the stages allow it:

* **Built-in chain, video at least as long as the audio**: the video is read chunk by chunk
  (:func:`pipeline.iter_talk_chunks`); frames past the audio are not decoded.
* **Built-in chain, portrait or shorter video**: the input frames are held (a loop or ping-pong
  needs them), the output is streamed (:func:`pipeline.iter_talk`).
* **Learned models** (a TSG, encoder or generator): the chain streams, so memory does not grow
  with the audio: the TSG makes its maps a chunk of frames at a time (:data:`.learned.TSG_CHUNK`),
  the generator draws them in batches of ``TalkModels.batch_size`` gathered as the maps come
  (the next batch on a worker thread while this one is pasted back), and each output frame goes
  through paste-back into the writer, never held. A video at least as long as the audio is read
  chunk by chunk as for the built-in chain (:func:`iter_talk_chunks_with_models`; the style and
  the TSG's identity map come from the first face); a portrait or a shorter video is held.

Frames are encoded on a worker thread (:class:`video_io.BackgroundWriter`) as they come, into a
temporary file renamed onto the output when complete: a run that fails or is cancelled leaves no
partial file and keeps a file that was at the output's name. The output is refused before any
work when it is one of the inputs (also through a link), has an extension no video is written as
(:data:`video_io.CONTAINERS`), or the frame rate is outside :data:`video_io.FPS_RANGE`.

Size: a portrait or video whose long side exceeds ``TalkSettings.max_size`` (3840, 4K) is
downscaled to it first (area interpolation, aspect kept, even sizes; one warning): an 8000x8000
portrait would need gigabytes and give an H.264 stream beyond what players decode. A streamed
video is downscaled chunk by chunk.

A video that breaks off (truncated, damaged) is dubbed with the frames that decode, with one
warning saying how many of how many; a video that does not open or of which no frame decodes is
an error saying it is truncated or corrupt.

Audio: the speech to lip-sync to (a file path, a ComfyUI AUDIO mapping or a :class:`MonoAudio`);
for a video, None means the video's own sound track (re-syncing a clip to its own speech), and a
video without one is an error that says to give the speech.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import pipeline
from .logs import get_logger
from .model_handle import LoadedModel
from .progress import Progress

log = get_logger("talk")

# A streamed video is decoded this many bytes of frames at a time. About three chunks are alive
# at once (the one being dubbed, the one being tracked and parsed, the aligner's copy), so at 1080p
# chunks of 16 frames held ~300 MB; 6 frames (37 MB) cut a 10 s dub's peak RSS from 1398 to
# ~1200 MiB at the same speed (8 frames: 1231; benchmarks/talk.py). A byte budget keeps 4K as
# flat as 1080p and lets small frames go in longer chunks (fewer, longer tracks).
CHUNK_BYTES = 40 * 2**20
CHUNK_FRAMES_RANGE = (4, 32)
# Threads a streamed built-in dub keeps busy (renderer, tracking worker, encoder; the decoder's
# FFmpeg threads besides): OpenCV and torch kernels get the cores' share of one (kernel_threads).
_BUILTIN_DUB_THREADS = 3
HELD_CHUNK_FRAMES = 16  # a held (looped) video is decoded into its one array this many at a time
DEFAULT_MAX_SIZE = 3840  # the long side of 4K: H.264 level 5.1's largest frames
MIN_MAX_SIZE = 64  # a smaller working size leaves no face to find

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TalkModels:
    """The models of a run; None (or a built-in model) is the built-in backend of that stage.
    ``batch_size``: frames per forward pass of the learned TSG / generator; None or 0:
    automatic (from the device's free memory, their default on a CPU:
    :func:`.working_memory.pick_batch_size`); a negative one is refused, naming it."""

    parser: LoadedModel | None = None
    tsg: LoadedModel | None = None
    encoder: LoadedModel | None = None
    generator: LoadedModel | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None:  # None needs no check (and no torch import: cold start)
            from .working_memory import batch_size_choice

            object.__setattr__(self, "batch_size", batch_size_choice(self.batch_size, "batch_size"))

    @property
    def learned(self) -> bool:
        """Whether any stage past parsing runs a learned model (then the input is held)."""
        return any(_learned(m) for m in (self.tsg, self.encoder, self.generator))


@dataclass(frozen=True)
class TalkSettings:
    """How to animate. ``swaps``: ``[(regions, reference_image uint8 [H, W, 3]), ...]`` local
    style edits; ``blink`` applies to portraits only (a video keeps its own blinks)."""

    strength: float = 1.0
    method: str = "auto"  # phonemes: auto / phonemes / acoustic
    video_mode: str = "pingpong"  # a video shorter than the audio: loop or pingpong
    blink: bool = True
    seed: int = 0
    crop_size: int = 512
    face_index: int = -1
    swaps: tuple = field(default_factory=tuple)
    max_size: int | None = DEFAULT_MAX_SIZE  # long side of the working size, pixels; None: no cap
    blend: str = "linear"  # paste-back: "linear" or "multiband" (Laplacian pyramid, as E4S)
    # Idle head motion of a portrait, 0..1 (procedural.head_motion; 0: the head stays still, the
    # library's default; the CLI and the nodes default to 0.5), from ``seed``; a video keeps its own.
    head_motion: float = 0.0
    # A portrait's mouth at silence: its own (True: parted lips and teeth stay as in the photo) or
    # closed lips (False; e.g. clips rendered as training data, whose checks read sync off the
    # mouth following the loudness).
    own_rest: bool = True
    # Adam steps refining the learned style codes against the face (E4S's optimisation; 0: off;
    # needs the learned encoder and generator). A video refines its one reference frame.
    optimize_steps: int = 0
    # Weight files for E4S's own refinement losses (train.feature_losses; None: the offline set):
    # LPIPS's linear layers (lpips v0.1 vgg.pth, or a whole LPIPS state dict) + torchvision's VGG16,
    # and the ArcFace IR-SE-50 (model_ir_se50.pth).
    lpips_weights: str | None = None
    lpips_vgg_weights: str | None = None
    arcface_weights: str | None = None

    def __post_init__(self) -> None:
        from .face.paste import BLEND_MODES
        from .procedural.head_motion import check_strength
        from .style_refinement import RefinementConfig

        RefinementConfig(steps=self.optimize_steps)  # refuses a bad count, naming the range
        check_strength(self.head_motion, "head_motion")

        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {self.blend!r}")
        size = self.max_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                                 or size < MIN_MAX_SIZE):
            raise ValueError(
                f"max_size must be a whole number of pixels >= {MIN_MAX_SIZE} (the longest side "
                f"an input is processed at) or None for no cap, got {size!r}")


@dataclass(frozen=True)
class TalkFileResult:
    """What a dub wrote. ``streamed``: the input was read chunk by chunk (flat memory)."""

    path: str
    frames: int
    fps: float
    streamed: bool


def talk_image_file(image: np.ndarray, audio, out_path: PathLike, fps: float = 25.0,
                    settings: TalkSettings = TalkSettings(), models: TalkModels = TalkModels(),
                    input_name: str = "image", progress: Progress = None,
                    inputs: Mapping[str, PathLike | None] | None = None,
                    refine_progress: Progress = None) -> TalkFileResult:
    """A portrait ``[H, W, 3]`` uint8 + speech -> a video of ``ceil(duration * fps)`` frames.

    ``inputs``: ``{name: path}`` of the files the run reads, by the names messages should use
    (the CLI passes ``{"--image": ..., "--audio": ...}``); the output must be none of them, nor
    the audio file (named ``"audio"`` when ``inputs`` does not name it). Checked before any work.
    ``refine_progress(step, steps)``: the style refinement's steps (``optimize_steps``).
    """
    from .video_io import check_fps

    named = _named_inputs(inputs, {"audio": _path_or_none(audio)})
    _check_output(out_path, named)
    _check_refinement(settings, models)
    fps = float(check_fps(fps))
    image = _fit_image(image, settings.max_size, input_name)
    settings = _capped_swaps(settings)
    mono, sound = _decode_speech(audio)
    frames = image[None]
    if models.learned:
        stream = iter_talk_with_models(frames, mono, fps, settings, models, input_name, progress,
                                       refine_progress=refine_progress)
    else:
        stream = pipeline.iter_talk(
            frames, mono, fps, video_mode=settings.video_mode, blink=settings.blink,
            seed=settings.seed, input_name=input_name, progress=progress, head_motion=settings.head_motion,
            own_rest=settings.own_rest,
            **_builtin_options(settings, models),
        )
    return _write(out_path, stream, fps, sound, streamed=False, inputs=named)


def talk_video_file(video_path: PathLike, audio, out_path: PathLike,
                    fps: float | None = None, settings: TalkSettings = TalkSettings(),
                    models: TalkModels = TalkModels(), input_name: str | None = None,
                    progress: Progress = None,
                    inputs: Mapping[str, PathLike | None] | None = None,
                    refine_progress: Progress = None) -> TalkFileResult:
    """Dub the video at ``video_path`` with ``audio`` (None: its own sound track) into a video.

    The output has ``ceil(duration * fps)`` frames at ``fps`` (None: the video's own average
    rate, which must then lie in 1..120; a variable-rate video is warned about, see
    :mod:`.video_timing`). ``inputs``: as for :func:`talk_image_file`; the video and the audio
    file are named ``"video"`` and ``"audio"`` unless ``inputs`` names them. ``refine_progress``:
    as for :func:`talk_image_file` (a video refines the codes of its one reference frame).
    """
    from .kernel_threads import kernel_threads, share_of_cores
    from .video_io import VideoReader, check_fps, prefetched, probe_video
    from .video_timing import REORDER_MARGIN, scan_video_packets, warn_if_variable

    named = _named_inputs(inputs, {"video": video_path, "audio": _path_or_none(audio)})
    _check_output(out_path, named)
    _check_refinement(settings, models)
    if fps is not None:
        fps = float(check_fps(fps))
    name = input_name or os.fspath(video_path)
    info = probe_video(video_path)
    if fps is None:
        fps = float(_own_fps(info.fps, name))
    if audio is None:
        audio = _own_sound(video_path, name, info.has_audio)
    mono, sound = _decode_speech(audio)
    n_frames = pipeline.audio_frame_count(mono, fps)
    # One pass over the packets: the timing check, and whether the frames the dub needs are there.
    scan = scan_video_packets(video_path, n_frames + REORDER_MARGIN)
    warn_if_variable(video_path, float(info.fps), n_frames, name, scan=scan)
    size = _working_size_of(info.width, info.height, settings.max_size, name)
    settings = _capped_swaps(settings)
    # A file cut short before the frames needed is held (as a short video is) and looped.
    promised = info.frame_count - (0 if info.frame_count_exact else 1)
    complete = scan.packets >= min(n_frames + REORDER_MARGIN, promised)
    streamed = info.frame_count >= n_frames and complete
    if streamed:
        def stream() -> Iterator[np.ndarray]:
            # Long enough to cut: read chunk by chunk, so memory does not grow with the length.
            chunk = chunk_frames(info.width, info.height)  # decoded at its own size, then resized
            with VideoReader(video_path, chunk_size=chunk, max_frames=n_frames) as reader:
                if models.learned:
                    # The next chunk is decoded on a worker thread while this one is dubbed.
                    chunks = prefetched(resized_chunks(reader, size))
                    try:
                        yield from iter_talk_chunks_with_models(
                            chunks, mono, fps, settings, models, name, progress,
                            refine_progress=refine_progress)
                    finally:  # the decoder thread is stopped before the reader closes its file
                        chunks.close()
                    return
                # The built-in chain decodes, tracks and parses the next chunk on a worker of
                # its own while it renders this one; with the encoder that is three busy threads.
                chunks = resized_chunks(reader, size)
                with kernel_threads(share_of_cores(_BUILTIN_DUB_THREADS)):
                    try:
                        yield from pipeline.iter_talk_chunks(
                            chunks, mono, fps, input_name=name, progress=progress,
                            **_builtin_options(settings, models),
                        )
                    finally:  # iter_talk_chunks has joined its worker by now
                        chunks.close()
        frames_out = stream()
    else:
        frames = read_frames(video_path, max_frames=n_frames, size=size)
        if models.learned:
            frames_out = iter_talk_with_models(frames, mono, fps, settings, models, name, progress,
                                               blink=False, refine_progress=refine_progress)
        else:
            frames_out = pipeline.iter_talk(
                frames, mono, fps, video_mode=settings.video_mode, blink=False, input_name=name,
                progress=progress, **_builtin_options(settings, models),
            )
    return _write(out_path, frames_out, fps, sound, streamed=streamed, inputs=named)


def iter_talk_with_models(frames: np.ndarray, audio, fps: float, settings: TalkSettings,
                          models: TalkModels, input_name: str = "image", progress: Progress = None,
                          blink: bool | None = None,
                          refine_progress: Progress = None) -> Iterator[np.ndarray]:
    """The chain of the modular nodes with learned models: parse -> talking segmentation (TSG or
    rig) -> style (encoder or built-in, refined when ``settings.optimize_steps``) -> synthesis
    (generator or the built-in renderer, which follows the TSG's maps) -> paste-back, yielding
    full-resolution frames one at a time.

    Streams: the talking segmentation and the generator's crops are made as the frames are
    asked for (see the module docstring), so only the input track and a few chunks or batches
    are held; the frame count is the audio's (``ceil(duration * fps)``), checked at the end.
    ``progress`` counts the frames pasted back; ``refine_progress`` the style refinement's steps.
    """
    mono = pipeline.load_mono(audio, "audio")
    blink = settings.blink if blink is None else blink
    refine = _refinement(settings, models, refine_progress)  # loss files read before any work
    faces = pipeline.parse_faces(frames, models.parser, crop_size=settings.crop_size,
                                 face_index=settings.face_index, input_name=input_name)
    # The style first: it reads one frame, and a refinement runs before any frame is drawn.
    style = _style(faces, settings, models, refine)
    segmentation = pipeline.stream_talking_segmentation(
        faces, mono, fps, model=models.tsg, strength=settings.strength, method=settings.method,
        video_mode=settings.video_mode, blink=blink, seed=settings.seed, batch_size=models.batch_size,
    )
    total = len(segmentation)
    # Each frame's map goes on as it is made (a TSG: a chunk at a time), never the whole clip's.
    maps = (dataclasses.replace(f, pose=None) if f.pose is not None else f
            for f in segmentation.frames)
    if _learned(models.generator):
        pairs = pipeline.iter_synthesize_with_model(
            maps, faces, style, models.generator, seed=settings.seed, batch_size=models.batch_size,
            tsg_resolution=segmentation.meta.get("tsg_resolution"))
    else:
        from . import builtin

        activity = builtin.articulation_activity(segmentation.mouth_params, segmentation.fps)
        pairs = pipeline.iter_synthesize(maps, faces, style, activity=activity)
    # A portrait moves its head (portrait_motion: None for a video, which has its own motion).
    speech = segmentation.mouth_params[:, 0]
    motion = pipeline.portrait_motion(faces, total, fps, settings.seed, settings.head_motion, speech)
    pasted = pipeline.iter_paste_back(pairs, faces, blend=settings.blend, motion=motion)
    done = 0
    try:
        for frame in pasted:
            done += 1
            yield frame
            if progress is not None:
                progress(done, total)
    finally:
        pasted.close()  # stops the generator's worker thread when the writer stops early
    if done != total:
        raise RuntimeError(f"the learned chain made {done} frames, but the audio needs {total}")


def iter_talk_chunks_with_models(frame_chunks: Iterable[np.ndarray], audio, fps: float,
                                 settings: TalkSettings, models: TalkModels,
                                 input_name: str = "video", progress: Progress = None,
                                 refine_progress: Progress = None) -> Iterator[np.ndarray]:
    """:func:`iter_talk_with_models` for a video at least as long as the audio, read in chunks
    (``[n, H, W, 3]`` uint8 consecutive frames): memory does not grow with the length.

    The video is parsed as it arrives (:func:`pipeline.iter_face_tracks`: the tracker and the
    crop smoothing carry over between chunks) and each run of parsed frames goes through the
    talking segmentation, the synthesis and paste-back before the next is decoded. What the held
    chain takes from the whole track comes from the first frame with a face, as there: the
    style codes (refined, when asked, on that frame) and the TSG's identity reference map.
    Frames before the first face pass through unchanged. The video keeps its own blinks. The
    built-in renderer paints every chunk from one bank of the clip's own open mouths.
    """
    from . import builtin
    from .containers import SegmentationFrame
    from .learned import iter_tsg_segmentation, tsg_batch
    from .procedural.mouth_bank import MouthBank, MouthBankConfig

    mono = pipeline.load_mono(audio, "audio")
    refine = _refinement(settings, models, refine_progress)  # loss files read before any work
    tsg = models.tsg if _learned(models.tsg) else None
    if tsg is not None:
        pipeline.require_component(tsg, (pipeline.TSG,), slot="tsg")
    generator = models.generator if _learned(models.generator) else None
    articulation = pipeline.speech_articulation(mono, fps, settings.method, settings.strength)
    params = np.asarray(articulation.params, np.float32)
    n_frames = len(params)
    activity = builtin.articulation_activity(params, fps)
    tsg_resolution = None if tsg is None else int(tsg.runner.resolution)
    batch = None if tsg is None else tsg_batch(tsg, models.batch_size, settings.crop_size)
    style = reference = None
    bank = MouthBank()
    started = False
    done = 0

    def report() -> None:
        if progress is not None:
            progress(done, n_frames)

    tracks = pipeline.iter_face_tracks(frame_chunks, models.parser, crop_size=settings.crop_size,
                                       face_index=settings.face_index, input_name=input_name,
                                       max_frames=n_frames)
    for faces in tracks:
        n = len(faces)
        if not started and faces.found.any():
            style = _style(faces, settings, models, refine)
            reference = faces.regions[int(np.argmax(faces.found))]
            started = True
        if not started:  # no face yet: nothing to drive the mouth of
            for i in range(n):
                yield faces.frames[i].copy()
                done += 1
                report()
            continue
        index = np.arange(n)
        track_params = params[done : done + n]  # sliced now: ``done`` moves as frames are written
        if tsg is not None:
            blocks = iter_tsg_segmentation(faces, mono, fps, n_frames, index, tsg, first=done,
                                           reference=reference, batch=batch)
            maps = (SegmentationFrame(regions, t, track_params[t])
                    for t, regions in enumerate(r for block in blocks for r in block))
        else:
            # Its poses are dropped (below): the renderer paints, so only it needs the bank.
            rig = builtin.iter_talking_segmentation(faces, track_params, fps, index,
                                                    blink=False, seed=settings.seed, portrait=False,
                                                    mouth_bank=MouthBankConfig(enabled=False))
            maps = (dataclasses.replace(f, pose=None) for f in rig)  # as the held chain's
        if generator is not None:
            pairs = pipeline.iter_synthesize_with_model(
                maps, faces, style, generator, seed=settings.seed, batch_size=models.batch_size,
                tsg_resolution=tsg_resolution)
        else:
            pairs = pipeline.iter_synthesize(maps, faces, style, portrait=False,
                                             activity=None if activity is None else activity[done : done + n],
                                             mouth_bank=bank)
        pasted = pipeline.iter_paste_back(pairs, faces, blend=settings.blend)
        try:
            for frame in pasted:
                yield frame
                done += 1
                report()
        finally:
            pasted.close()  # stops this track's generator thread when the writer stops early
        # Let this track's frames, crops and maps go before the next chunk is parsed.
        faces = maps = pairs = pasted = frame = None
    if done < n_frames:
        raise ValueError(
            f"input '{input_name}' ended after {done} frames but the audio needs {n_frames} (the "
            f"file promised more: is it cut short?); give at most {done / fps:.2f} s of audio")


def read_frames(video_path: PathLike, max_frames: int | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames ``[N, H, W, 3]`` uint8 (at most ``max_frames``), decoded into one array that is
    allocated once (no second copy of the video while it is joined). ``size``: (width, height)
    to downscale each chunk to as it is decoded (None: the video's own size)."""
    from .video_io import VideoReader

    with VideoReader(video_path, chunk_size=HELD_CHUNK_FRAMES, max_frames=max_frames) as reader:
        info = reader.info
        width, height = size or (info.width, info.height)
        expected = info.frame_count if max_frames is None else min(info.frame_count, max_frames)
        out = np.empty((max(expected, 1), height, width, 3), np.uint8)
        count, extra = 0, []
        for chunk in resized_chunks(reader, size):
            take = min(len(chunk), len(out) - count)
            out[count : count + take] = chunk[:take]
            count += take
            if take < len(chunk):  # the container's frame count was short: keep the rest
                extra.append(chunk[take:])
    if extra:
        return np.concatenate([out] + extra)
    if count == 0:
        raise ValueError(f"video {os.fspath(video_path)!r} decoded to no frames")
    if count < len(out) // 2:  # a file that broke off early: do not keep the unused buffer
        return out[:count].copy()
    return out[:count]


def chunk_frames(width: int, height: int) -> int:
    """Frames per decoded chunk of a streamed ``width`` x ``height`` video: as many as fit in
    :data:`CHUNK_BYTES`, within :data:`CHUNK_FRAMES_RANGE` (1080p: 6, 512x512: 32, 4K: 4)."""
    low, high = CHUNK_FRAMES_RANGE
    return max(low, min(high, CHUNK_BYTES // max(1, width * height * 3)))


def working_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """(width, height) to process a ``width`` x ``height`` input at: its own size when its long
    side is at most ``max_size`` (or there is no cap), else scaled down so the long side is
    ``max_size``, the aspect kept and both sides even (what yuv420p video needs)."""
    long_side = max(width, height)
    if max_size is None or long_side <= max_size:
        return width, height
    cap = max_size - max_size % 2
    scale = max_size / long_side

    def side(length: int) -> int:
        return min(cap, max(2, 2 * round(length * scale / 2)))

    return side(width), side(height)


def downscale(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` or ``[N, H, W, 3]`` uint8 -> the same at ``size`` (width, height), by area
    averaging (the interpolation that does not alias when shrinking)."""
    import cv2

    width, height = size
    if frames.ndim == 3:
        return cv2.resize(frames, (width, height), interpolation=cv2.INTER_AREA)
    out = np.empty((len(frames), height, width, frames.shape[-1]), frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return out


def resized_chunks(chunks: Iterable[np.ndarray], size: tuple[int, int] | None) -> Iterator[np.ndarray]:
    """Chunks ``[n, H, W, 3]`` downscaled to ``size`` (width, height) one at a time (None or
    their own size: as they are), so a 8K video never has more than a chunk at full size."""
    for chunk in chunks:
        if size is None or (chunk.shape[2], chunk.shape[1]) == tuple(size):
            yield chunk
        else:
            yield downscale(chunk, size)


# ---------------------------------------------------------------------------------------------


def _learned(model: LoadedModel | None) -> bool:
    return model is not None and not model.is_builtin


def _builtin_options(settings: TalkSettings, models: TalkModels) -> dict:
    """Keyword arguments of the built-in chain (pipeline.iter_talk / iter_talk_chunks)."""
    return dict(strength=settings.strength, method=settings.method, crop_size=settings.crop_size,
                swaps=list(settings.swaps), parser=models.parser, face_index=settings.face_index,
                blend=settings.blend)


def _check_refinement(settings: TalkSettings, models: TalkModels) -> None:
    """Refuse ``optimize_steps`` without the learned encoder and generator it refines with, and
    loss weight files without ``optimize_steps``."""
    files = [f for f in ("lpips_weights", "lpips_vgg_weights", "arcface_weights")
             if getattr(settings, f)]
    if files and not settings.optimize_steps:
        raise ValueError(f"{', '.join(files)} given, but optimize_steps is 0: those weights are "
                         f"only for the style refinement; set optimize_steps (CLI: "
                         f"--optimize-steps 200) or leave them out")
    if settings.lpips_vgg_weights and not settings.lpips_weights:
        raise ValueError("lpips_vgg_weights given without lpips_weights (the LPIPS linear "
                         "layers, lpips/weights/v0.1/vgg.pth); give both")
    if settings.optimize_steps and not (_learned(models.encoder) and _learned(models.generator)):
        raise ValueError(
            f"optimize_steps={settings.optimize_steps} refines the learned encoder's style codes "
            f"through the learned generator, but this run has no "
            f"{'encoder' if not _learned(models.encoder) else 'generator'} bundle; give both "
            f"(CLI: --encoder and --generator) or leave optimize_steps at 0")


def _refinement(settings: TalkSettings, models: TalkModels, progress: Progress):
    """The style refinement of a run (None when ``optimize_steps`` is 0). Its noise is the
    synthesis's (the same seed), so the codes are fitted to the noise the frames are drawn with."""
    if not settings.optimize_steps:
        return None
    from .style_refinement import RefinementConfig, StyleRefinement

    _check_refinement(settings, models)
    config = RefinementConfig(steps=settings.optimize_steps, seed=settings.seed)
    lpips = identity = None
    if settings.lpips_weights or settings.arcface_weights:
        from .train.feature_losses import IdentityLoss, LPIPSLoss

        if settings.lpips_weights:
            lpips = LPIPSLoss.from_files(settings.lpips_weights, settings.lpips_vgg_weights)
        if settings.arcface_weights:
            identity = IdentityLoss.from_file(settings.arcface_weights)
    return StyleRefinement(config, models.generator, parser=models.parser, progress=progress,
                           lpips=lpips, identity=identity)


def _style(faces, settings: TalkSettings, models: TalkModels, refine=None):
    """Style of ``faces`` for the synthesizer that will run, refined when asked, with the swaps
    applied (the swap references' codes are not refined: only some of their regions are used)."""
    learned_generator = _learned(models.generator)
    if learned_generator and not _learned(models.encoder):
        raise ValueError("a learned generator renders W+ style codes: give the encoder bundle too "
                         "(CLI: --encoder)")
    encoder = models.encoder if learned_generator else None
    if _learned(models.encoder) and not learned_generator:
        log.warning("the encoder is not used: the built-in renderer takes built-in style "
                    "(give a generator to render the encoder's codes)")
    if not settings.swaps and encoder is None:
        return None
    style = pipeline.encode_style(faces, encoder, refine=refine)
    for k, (regions, image) in enumerate(settings.swaps):
        reference = pipeline.parse_faces(image[None], models.parser, crop_size=settings.crop_size,
                                         input_name=f"swap reference {k + 1}")
        style = pipeline.swap_style(style, pipeline.encode_style(reference, encoder), regions, 1.0)
    return style


def _named_inputs(given: Mapping[str, PathLike | None] | None,
                  defaults: Mapping[str, PathLike | None]) -> dict[str, PathLike | None]:
    """The inputs the output must not be: the caller's names first (its messages use them), then
    the default-named ones the caller did not list."""
    named = dict(given or {})
    listed = {os.path.abspath(os.fspath(p)) for p in named.values() if p is not None}
    for name, path in defaults.items():
        if path is not None and os.path.abspath(os.fspath(path)) not in listed:
            named.setdefault(name, path)
    return named


def _path_or_none(audio) -> PathLike | None:
    return audio if isinstance(audio, (str, os.PathLike)) else None


def _check_output(out_path: PathLike, inputs: Mapping[str, PathLike | None]) -> None:
    """Everything about the output that can be refused before any work: the name (empty, a
    folder, a missing folder, an input) and the extension (a container the writer makes)."""
    from .atomic_files import check_output_path
    from .video_io import container_for

    check_output_path(out_path, inputs, what="output")
    container_for(out_path, what="output")


def _own_fps(fps, name: str):
    """The video's own rate as the dub's, when it lies in 1..120 (else: say to give one)."""
    from .video_io import FPS_RANGE, check_fps

    try:
        return check_fps(fps)
    except ValueError:
        low, high = FPS_RANGE
        raise ValueError(
            f"video '{name}' reports {float(fps):g} fps, outside {low}..{high}, so its own rate "
            "cannot be kept; give the frame rate to dub it at (fps=25, CLI: --fps 25)") from None


def _working_size_of(width: int, height: int, max_size: int | None, name: str,
                     written: bool = True) -> tuple[int, int] | None:
    """The size to process an input at (None: its own), with one warning when it is smaller.
    ``written``: the output is made at that size (False for a swap reference, only read)."""
    size = working_size(width, height, max_size)
    if size == (width, height):
        return None
    log.warning(
        "input '%s' is %dx%d, larger than the working size cap of %d px (long side); it is "
        "downscaled to %dx%d before processing%s (max_size=None, CLI --max-size 0, keeps the full "
        "size)", name, width, height, max_size, size[0], size[1],
        " and written at that size" if written else "")
    return size


def _fit_image(image: np.ndarray, max_size: int | None, name: str, written: bool = True) -> np.ndarray:
    image = np.asarray(image)
    size = _working_size_of(image.shape[1], image.shape[0], max_size, name, written)
    return image if size is None else downscale(image, size)


def _capped_swaps(settings: TalkSettings) -> TalkSettings:
    """The swap references scaled down to ``max_size`` too: a huge reference photo is parsed
    like the portrait, and would cost as much."""
    if not settings.swaps:
        return settings
    swaps = tuple((regions, _fit_image(image, settings.max_size, f"swap reference {k + 1}",
                                         written=False))
                  for k, (regions, image) in enumerate(settings.swaps))
    return dataclasses.replace(settings, swaps=swaps)


def _own_sound(video_path, name: str, has_audio: bool) -> str:
    if not has_audio:
        raise ValueError(
            f"no speech to lip-sync to: the audio input is empty and video '{name}' has no audio "
            "stream. Connect the speech (e.g. Load Audio) to 'audio'."
        )
    log.info("no audio given: '%s' is lip-synced to its own sound track", name)
    return os.fspath(video_path)


def _decode_speech(audio) -> tuple["MonoAudio", tuple[np.ndarray, int]]:
    """The speech decoded and checked once (one NaN warning, one error wording): the 16 kHz mono
    the stages read, and the sound track at its own rate and channels (float32 ``[C, T]``, rate)
    that the writer muxes."""
    from .audio.io import MonoAudio, audio_channels, load_audio

    if isinstance(audio, MonoAudio):
        return audio, (audio.samples[None], audio.sample_rate)
    try:
        channels, rate = audio_channels(audio, name="audio")
    except (TypeError, ValueError) as error:
        raise pipeline.audio_input_error(error, "audio") from error
    return load_audio(channels, sample_rate=rate, name="audio"), (channels, rate)


def _write(out_path, frames, fps: float, sound: tuple[np.ndarray, int], streamed: bool,
           inputs: Mapping[str, PathLike | None] | None = None) -> TalkFileResult:
    from .video_io import BackgroundWriter, VideoWriter

    out = os.fspath(out_path)
    wave, rate = sound
    with VideoWriter(out, fps, audio=wave, sample_rate=rate, inputs=inputs) as writer:
        del wave, sound  # the writer keeps its own copy
        with BackgroundWriter(writer) as background:
            for frame in frames:
                background.write(frame)
    return TalkFileResult(path=out, frames=writer.summary.frames, fps=fps, streamed=streamed)
