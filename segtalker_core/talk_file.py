"""Dub into an mp4 on disk, frame by frame: the CLI's ``talk`` and the SegTalker Talk Video node.

Memory stays flat with the length where the stages allow it:

* **Built-in chain, video at least as long as the audio**: the video is read chunk by chunk
  (:func:`pipeline.iter_talk_chunks`); frames past the audio are not decoded.
* **Built-in chain, portrait or shorter video**: the input frames are held (a loop or ping-pong
  needs them), the output is streamed (:func:`pipeline.iter_talk`).
* **Learned models** (a TSG, encoder or generator): the input frames are held (the TSG and the
  style read the whole track) and the talking segmentation is collected (small maps); the output
  frames are streamed through paste-back into the writer, never held.

Frames are encoded on a worker thread (:class:`video_io.BackgroundWriter`) as they come. A run
that fails or is cancelled leaves no partial file.

Audio: the speech to lip-sync to (a file path, a ComfyUI AUDIO mapping or a :class:`MonoAudio`);
for a video, None means the video's own sound track (re-syncing a clip to its own speech), and a
video without one is an error that says to give the speech.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import pipeline
from .logs import get_logger
from .model_handle import LoadedModel
from .progress import Progress

log = get_logger("talk")

CHUNK_FRAMES = 16  # frames decoded at a time when a video is streamed (1080p: 100 MB a chunk)


@dataclass(frozen=True)
class TalkModels:
    """The models of a run; None (or a built-in model) is the built-in backend of that stage.
    ``batch_size``: frames per forward pass of the learned TSG / generator (None: their default)."""

    parser: LoadedModel | None = None
    tsg: LoadedModel | None = None
    encoder: LoadedModel | None = None
    generator: LoadedModel | None = None
    batch_size: int | None = None

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


@dataclass(frozen=True)
class TalkFileResult:
    """What a dub wrote. ``streamed``: the input was read chunk by chunk (flat memory)."""

    path: str
    frames: int
    fps: float
    streamed: bool


def talk_image_file(image: np.ndarray, audio, out_path: str | os.PathLike, fps: float = 25.0,
                    settings: TalkSettings = TalkSettings(), models: TalkModels = TalkModels(),
                    input_name: str = "image", progress: Progress = None) -> TalkFileResult:
    """A portrait ``[H, W, 3]`` uint8 + speech -> an mp4 of ``ceil(duration * fps)`` frames."""
    mono = pipeline.load_mono(audio, "audio")
    frames = image[None]
    if models.learned:
        stream = iter_talk_with_models(frames, mono, fps, settings, models, input_name, progress)
    else:
        stream = pipeline.iter_talk(
            frames, mono, fps, video_mode=settings.video_mode, blink=settings.blink,
            seed=settings.seed, input_name=input_name, progress=progress, **_builtin_options(settings, models),
        )
    return _write(out_path, stream, fps, _sound_track(audio), streamed=False)


def talk_video_file(video_path: str | os.PathLike, audio, out_path: str | os.PathLike,
                    fps: float | None = None, settings: TalkSettings = TalkSettings(),
                    models: TalkModels = TalkModels(), input_name: str | None = None,
                    progress: Progress = None) -> TalkFileResult:
    """Dub the video at ``video_path`` with ``audio`` (None: its own sound track) into an mp4.

    The output has ``ceil(duration * fps)`` frames at ``fps`` (default: the video's own average
    rate; a variable-rate video is warned about, see :mod:`.video_timing`).
    """
    from .video_io import VideoReader, probe_video
    from .video_timing import warn_if_variable

    name = input_name or os.fspath(video_path)
    info = probe_video(video_path)
    if audio is None:
        audio = _own_sound(video_path, name, info.has_audio)
    mono = pipeline.load_mono(audio, "audio")
    fps = float(fps or info.fps)
    n_frames = pipeline.audio_frame_count(mono, fps)
    warn_if_variable(video_path, float(info.fps), n_frames, name)
    streamed = info.frame_count >= n_frames and not models.learned
    if streamed:
        def stream() -> Iterator[np.ndarray]:
            # Long enough to cut: read chunk by chunk, so memory does not grow with the length.
            with VideoReader(video_path, chunk_size=CHUNK_FRAMES, max_frames=n_frames) as reader:
                yield from pipeline.iter_talk_chunks(
                    reader, mono, fps, input_name=name, progress=progress, **_builtin_options(settings, models),
                )
        frames_out = stream()
    else:
        frames = read_frames(video_path, max_frames=n_frames)
        if models.learned:
            frames_out = iter_talk_with_models(frames, mono, fps, settings, models, name, progress,
                                               blink=False)
        else:
            frames_out = pipeline.iter_talk(
                frames, mono, fps, video_mode=settings.video_mode, blink=False, input_name=name,
                progress=progress, **_builtin_options(settings, models),
            )
    return _write(out_path, frames_out, fps, _sound_track(audio), streamed=streamed)


def iter_talk_with_models(frames: np.ndarray, audio, fps: float, settings: TalkSettings,
                          models: TalkModels, input_name: str = "image", progress: Progress = None,
                          blink: bool | None = None) -> Iterator[np.ndarray]:
    """The chain of the modular nodes with learned models: parse -> talking segmentation (TSG or
    rig) -> style (encoder or built-in) -> synthesis (generator or the built-in renderer, which
    follows the TSG's maps) -> paste-back, yielding full-resolution frames one at a time.

    ``progress`` counts the frames pasted back (the stages before it run first, collected).
    """
    mono = pipeline.load_mono(audio, "audio")
    blink = settings.blink if blink is None else blink
    faces = pipeline.parse_faces(frames, models.parser, crop_size=settings.crop_size,
                                 face_index=settings.face_index, input_name=input_name)
    segmentation = pipeline.talking_segmentation(
        faces, mono, fps, model=models.tsg, strength=settings.strength, method=settings.method,
        video_mode=settings.video_mode, blink=blink, seed=settings.seed, batch_size=models.batch_size,
    )
    style = _style(faces, settings, models)
    if _learned(models.generator):
        crops = pipeline.synthesize(segmentation, style, model=models.generator, seed=settings.seed,
                                    batch_size=models.batch_size)
        pairs = zip(crops, segmentation.frames())
    else:
        pairs = pipeline.iter_synthesize(segmentation.frames(), faces, style)
    pasted = pipeline.iter_paste_back(pairs, faces)
    for done, frame in enumerate(pasted, 1):
        yield frame
        if progress is not None:
            progress(done, len(segmentation))


def read_frames(video_path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """All frames ``[N, H, W, 3]`` uint8 (at most ``max_frames``), decoded into one array that is
    allocated once (no second copy of the video while it is joined)."""
    from .video_io import VideoReader

    with VideoReader(video_path, chunk_size=CHUNK_FRAMES, max_frames=max_frames) as reader:
        info = reader.info
        expected = info.frame_count if max_frames is None else min(info.frame_count, max_frames)
        out = np.empty((max(expected, 1), info.height, info.width, 3), np.uint8)
        count, extra = 0, []
        for chunk in reader:
            take = min(len(chunk), len(out) - count)
            out[count : count + take] = chunk[:take]
            count += take
            if take < len(chunk):  # the container's frame count was short: keep the rest
                extra.append(chunk[take:])
    if extra:
        return np.concatenate([out] + extra)
    if count == 0:
        raise ValueError(f"video {os.fspath(video_path)!r} decoded to no frames")
    return out[:count]


# ---------------------------------------------------------------------------------------------


def _learned(model: LoadedModel | None) -> bool:
    return model is not None and not model.is_builtin


def _builtin_options(settings: TalkSettings, models: TalkModels) -> dict:
    """Keyword arguments of the built-in chain (pipeline.iter_talk / iter_talk_chunks)."""
    return dict(strength=settings.strength, method=settings.method, crop_size=settings.crop_size,
                swaps=list(settings.swaps), parser=models.parser, face_index=settings.face_index)


def _style(faces, settings: TalkSettings, models: TalkModels):
    """Style of ``faces`` for the synthesizer that will run, with the swaps applied."""
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
    style = pipeline.encode_style(faces, encoder)
    for k, (regions, image) in enumerate(settings.swaps):
        reference = pipeline.parse_faces(image[None], models.parser, crop_size=settings.crop_size,
                                         input_name=f"swap reference {k + 1}")
        style = pipeline.swap_style(style, pipeline.encode_style(reference, encoder), regions, 1.0)
    return style


def _own_sound(video_path, name: str, has_audio: bool) -> str:
    if not has_audio:
        raise ValueError(
            f"no speech to lip-sync to: the audio input is empty and video '{name}' has no audio "
            "stream. Connect the speech (e.g. SegTalker Load Audio) to 'audio'."
        )
    log.info("no audio given: '%s' is lip-synced to its own sound track", name)
    return os.fspath(video_path)


def _sound_track(audio) -> tuple[np.ndarray, int]:
    """The audio for the mp4's AAC track at its own rate: (float32 ``[C, T]``, sample rate)."""
    from .audio.io import MonoAudio, as_channels, read_audio_file

    if isinstance(audio, MonoAudio):
        return audio.samples[None], audio.sample_rate
    if isinstance(audio, (str, os.PathLike)):
        return read_audio_file(audio)
    if isinstance(audio, Mapping) or hasattr(audio, "keys"):
        wave = audio["waveform"]
        wave = wave[0] if getattr(wave, "ndim", 0) == 3 else wave
        return as_channels(wave, "AUDIO input waveform"), int(audio["sample_rate"])
    raise TypeError(f"audio must be a file path, a ComfyUI AUDIO mapping or MonoAudio, got "
                    f"{type(audio).__name__}")


def _write(out_path, frames, fps: float, sound: tuple[np.ndarray, int], streamed: bool) -> TalkFileResult:
    from .video_io import BackgroundWriter, Mp4Writer

    out = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    wave, rate = sound
    with Mp4Writer(out, fps, audio=wave, sample_rate=rate) as writer:
        del wave, sound  # the writer keeps its own copy
        with BackgroundWriter(writer) as background:
            for frame in frames:
                background.write(frame)
    return TalkFileResult(path=out, frames=writer.summary.frames, fps=fps, streamed=streamed)
