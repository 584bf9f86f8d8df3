"""Videos or images -> a prepared training dataset (``python -m segtalker_core prepare SRC OUT``).

Videos (the talking stages). Each source, in a worker process of its own (``workers``):

1. probed and decoded with PyAV (``video_io.VideoReader``: upright frames; a damaged file gives
   the frames that decode), its sound track decoded to 16 kHz mono (``audio.io.load_audio``);
2. resampled to 25 fps by time (output frame ``k`` shows the source frame on screen at
   ``k / 25`` s, the stream's average rate taken as constant, as the dub does for variable-rate
   input) and cut at the end of the audio (frames past the speech would teach silence);
3. face-tracked, aligned and parsed with the pipeline's own code
   (``pipeline.iter_face_tracks``: MediaPipe tracking, the crop smoothing of a video parse --
   a Gaussian of ``4 * smoothing`` frames -- and the built-in parser or BiSeNet), the 19 classes
   merged to the 12 regions (``labels.merge_to_regions``);
4. cut into segments of ``segment_seconds`` (a short tail joins the segment before it), each
   written as one shard (:mod:`.shards`) with the Wav2Lip mel of its span (``audio.mel``).

Images (the image stage): aligned and parsed one by one (``pipeline.parse_faces``), or, with
``masks`` (CelebAMask-HQ: images already aligned, one label PNG per image named by its stem in
the official CelebAMask-HQ order, as its ``g_mask.py`` writes them), resized and remapped
(``labels.CELEBAMASK_TO_REGIONS``); written in blocks of ``images_per_shard`` per split.

**Skipped, with one log line naming the file and why** (and recorded in the index, so a re-run
repeats the line without redoing the work unless the file changed): a file that does not open or
decode, a video without a sound track or with a silent one, a video (or a segment of one) in
which fewer than ``min_face_share`` (default 0.5) of the frames have a face, an image without a
face or without its mask.

**Resumable**: the index is rewritten (atomically) every 10 s while a run works and when it
ends, also on Ctrl-C or an error (a ``kill -9`` loses at most the last 10 s); a re-run skips
every source the index lists whose shards are all complete and whose file is unchanged (name,
size, mtime), and redoes the rest (a source interrupted mid-way, or a shard that went missing).
A shard is written whole or not at all, so an interrupted write never counts as done.
One ``prepare`` per folder at a time (a lock file refuses a second one).

**Split**: :mod:`.splits` (by speaker where known, else by source video; deterministic).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..logs import get_logger
from . import shards
from .shards import ClipRecord, DatasetIndex, SkipRecord
from .sources import Source, clip_base_id, find_sources
from .splits import assign_splits, group_of, resolve_split_by, stratum_of

log = get_logger("train.prepare")

FPS = 25
SAMPLE_RATE = 16000
SILENT_PEAK = 1e-4  # a sound track whose loudest sample is below this is silence (-80 dBFS)
LOCK_NAME = ".prepare.lock"
INDEX_EVERY_S = 10.0  # the index is rewritten at most this often while a run works (and at the end)


@dataclass(frozen=True)
class PrepareSettings:
    """How ``prepare`` works. The fields in :data:`CONTENT_SETTINGS` shape the shards, so a
    re-run into the same folder must keep them; the split fields may change (splits are
    re-assigned on every run)."""

    crop_size: int = 256  # side of the aligned crops and maps
    parser: str | None = None  # BiSeNet checkpoint; None: the built-in parser
    device: str = "cpu"  # where BiSeNet runs
    smoothing: float = 0.5  # crop smoothing of the face track (the pipeline's video default)
    min_face_share: float = 0.5  # a segment with fewer face frames than this share is skipped
    segment_seconds: float = 10.0  # clip length in the dataset (bounds memory and shard size)
    masks: str | None = None  # images: folder of CelebAMask-HQ label PNGs
    images_per_shard: int = 256
    val_fraction: float = 0.05
    split_by: str = "auto"  # auto / speaker / clip (see splits.py)
    seed: int = 0  # of the split
    workers: int = 1  # processes over files (1: in this process)

    def __post_init__(self) -> None:
        if not 64 <= self.crop_size <= 2048:
            raise ValueError(f"crop size must be in 64..2048, got {self.crop_size}")
        if not 0.0 <= self.min_face_share <= 1.0:
            raise ValueError(f"--min-face-share must be in [0, 1], got {self.min_face_share}")
        if not self.segment_seconds >= 1.0:
            raise ValueError(f"--segment-seconds must be >= 1, got {self.segment_seconds}")
        if not 0.0 <= self.smoothing <= 4.0:
            raise ValueError(f"--smoothing must be in [0, 4], got {self.smoothing}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.images_per_shard < 1:
            raise ValueError(f"--images-per-shard must be >= 1, got {self.images_per_shard}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def segment_frames(self) -> int:
        return int(round(self.segment_seconds * FPS))

    def content(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONTENT_SETTINGS}


CONTENT_SETTINGS = ("crop_size", "parser", "smoothing", "min_face_share", "segment_seconds", "masks")


@dataclass
class SourceResult:
    """What one source (or image block) produced."""

    unit: str  # the source name (video) or block id (images)
    clips: list[ClipRecord] = field(default_factory=list)
    skips: list[SkipRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings about a unit that was prepared


@dataclass(frozen=True)
class PrepareReport:
    """What a ``prepare`` run left in the folder."""

    root: Path
    clips: int  # in the index
    frames: int
    prepared: int  # units done by this run
    resumed: int  # units an earlier run had finished
    skipped: int  # skip records in the index


# ------------------------------------------------------------------------------ 25 fps frames

def resample_chunks(chunks: Iterable[np.ndarray], source_fps: Fraction, fps: int = FPS
                    ) -> Iterator[np.ndarray]:
    """Chunks of frames at ``source_fps`` -> chunks at ``fps``: output frame ``k`` is the source
    frame shown at ``k / fps`` seconds, ``floor(k * source_fps / fps)`` (repeats or drops)."""
    ratio = Fraction(source_fps) / fps  # source frames per output frame
    next_k, seen = 0, 0
    for chunk in chunks:
        seen_end = seen + len(chunk)
        stop = math.ceil(Fraction(seen_end) / ratio)  # first k whose source frame is not here yet
        if stop > next_k:
            ks = np.arange(next_k, stop, dtype=np.int64)
            picks = (ks * ratio.numerator) // ratio.denominator - seen
            yield chunk[picks]
            next_k = stop
        seen = seen_end


# ------------------------------------------------------------------------------ one video

_PARSERS: dict[tuple[str | None, str], Any] = {}


def _parser_model(settings: PrepareSettings):
    from .. import pipeline

    key = (settings.parser, settings.device)
    if key not in _PARSERS:
        _PARSERS[key] = (pipeline.builtin_parser_model() if settings.parser is None
                         else pipeline.load_model(settings.parser, settings.device, slot="parser"))
    return _PARSERS[key]


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def prepare_video(source: Source, root: Path, settings: PrepareSettings) -> SourceResult:
    """One video -> its clips' shards (written) and records; problems become skip records."""
    import av

    from ..audio.io import load_audio
    from ..audio.timing import frame_count
    from ..labels import merge_to_regions
    from ..pipeline import NoFaceError, iter_face_tracks
    from ..video_io import VideoReader, probe_video

    result = SourceResult(unit=source.name)
    digest = source.digest()

    def skip(reason: str) -> SourceResult:
        result.skips.append(SkipRecord(source=source.name, reason=reason, source_digest=digest,
                                       unit=source.name))
        return result

    try:
        info = probe_video(source.path)
    except (ValueError, OSError, av.error.FFmpegError) as error:
        return skip(f"corrupt or unreadable video: {_reason(error)}")
    if not info.has_audio:
        return skip("no audio track (talking-face training needs the speech)")
    try:
        audio = load_audio(source.path)
    except (ValueError, OSError, av.error.FFmpegError) as error:
        return skip(f"its audio does not decode: {_reason(error)}")
    wave = audio.samples
    if float(np.abs(wave).max()) < SILENT_PEAK:
        return skip("its sound track is silent")
    max_frames = frame_count(audio.duration, FPS)
    writer = _SegmentWriter(source, root, settings, wave, digest, result)
    try:
        with VideoReader(source.path, chunk_size=32) as reader, _quiet_pipeline():
            tracks = iter_face_tracks(resample_chunks(reader, info.fps), _parser_model(settings),
                                      crop_size=settings.crop_size, smoothing=settings.smoothing,
                                      input_name=source.name, max_frames=max_frames)
            for track in tracks:
                writer.push(track.crops, merge_to_regions(track.labels), track.found)
        damaged = reader.damaged
    except NoFaceError:
        _discard_clips(result, root)
        return skip("no face in any frame")
    except (ValueError, OSError, av.error.FFmpegError) as error:
        _discard_clips(result, root)  # nothing of a source that broke mid-way counts
        return skip(f"corrupt video: {_reason(error)}")
    writer.finish()
    if damaged:
        result.notes.append(f"the file is damaged: prepared the {reader.decoded} of its "
                            f"{info.frame_count} frames that decode")
    return result


def _discard_clips(result: SourceResult, root: Path) -> None:
    for clip in result.clips:
        (root / clip.shard).unlink(missing_ok=True)
    result.clips.clear()


@contextmanager
def _quiet_pipeline() -> Iterator[None]:
    """The pipeline warns per chunk about frames without a face; prepare reports per segment."""
    logger = logging.getLogger("segtalker")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _SegmentWriter:
    """Buffers parsed frames and writes a shard per ``segment_frames`` (a tail under half a
    segment joins the last one)."""

    def __init__(self, source: Source, root: Path, settings: PrepareSettings, wave: np.ndarray,
                 digest: str, result: SourceResult) -> None:
        self.source, self.root, self.settings = source, root, settings
        self.wave, self.digest, self.result = wave, digest, result
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.start = 0  # source frame (25 fps) of the buffer's first frame
        self.index = 0  # segment number

    def push(self, crops: np.ndarray, regions: np.ndarray, found: np.ndarray) -> None:
        self.parts.append((crops, regions, found))
        self.buffered += len(found)
        n = self.settings.segment_frames
        while self.buffered >= n + n // 2:
            self._write(n)

    def finish(self) -> None:
        if self.buffered:
            self._write(self.buffered)

    def _take(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        crops, regions, found = (np.concatenate(a) for a in zip(*self.parts))
        rest = (crops[n:], regions[n:], found[n:])
        self.parts = [rest] if len(rest[2]) else []
        self.buffered -= n
        return crops[:n], regions[:n], found[:n]

    def _write(self, n: int) -> None:
        crops, regions, found = self._take(n)
        start, self.start = self.start, self.start + n
        number, self.index = self.index, self.index + 1
        where = f"frames {start}..{start + n - 1}: " if number or self.buffered else ""
        faces = int(found.sum())
        if faces < self.settings.min_face_share * n:
            self.result.skips.append(SkipRecord(
                source=self.source.name, source_digest=self.digest, unit=self.source.name,
                reason=(f"no face in most frames ({where}{faces} of {n} frames have a face; "
                        f"at least {self.settings.min_face_share:.0%} are needed)")))
            return
        mel, first_step = _segment_mel(self.wave, start, n)
        clip_id = f"{clip_base_id(self.source.name)}-s{number:03d}"
        rel = shards.shard_relpath(clip_id)
        meta = {"id": clip_id, "source": self.source.name, "speaker": self.source.speaker,
                "fps": FPS, "sample_rate": SAMPLE_RATE, "start_frame": start,
                "mel_first_step": first_step, "crop_size": self.settings.crop_size}
        sha = shards.write_shard(self.root / rel, {"crops": crops, "regions": regions,
                                                   "found": found, "mel": mel}, meta)
        self.result.clips.append(ClipRecord(
            id=clip_id, source=self.source.name, speaker=self.source.speaker, group="",
            split="train", frames=n, faces=faces, shard=rel, sha256=sha, start_frame=start,
            source_digest=self.digest, unit=self.source.name))


def _segment_mel(wave: np.ndarray, start: int, n: int) -> tuple[np.ndarray, int]:
    """Mel steps covering the centred windows of frames ``start..start+n-1``: ``([80, M], first
    step)``; steps past the audio are left out (readers pad them with silence)."""
    from ..audio.mel import WINDOW_STEPS, mel_range, num_mel_steps
    from ..audio.timing import mel_window_starts

    total = num_mel_steps(len(wave))
    starts = mel_window_starts(start, start + n, FPS, align="centre", window=WINDOW_STEPS)
    lo = int(np.clip(starts[0], 0, total - 1))
    hi = int(np.clip(starts[-1] + WINDOW_STEPS, lo + 1, total))
    return mel_range(wave, lo, hi), lo


# ------------------------------------------------------------------------------ images

@dataclass(frozen=True)
class ImageBlock:
    """Images that go into one shard."""

    id: str  # "train-00000"
    split: str
    sources: tuple[Source, ...]

    def digest(self) -> str:
        import hashlib

        return hashlib.sha1("|".join(s.digest() for s in self.sources).encode()).hexdigest()[:16]


def image_blocks(sources: list[Source], settings: PrepareSettings) -> list[ImageBlock]:
    """Images -> per-split blocks (the split is by image, or by speaker where known)."""
    split_by = resolve_split_by(settings.split_by, [s.speaker for s in sources])
    groups = {group_of(split_by, s.name, s.speaker): stratum_of(split_by, s.speaker) for s in sources}
    split = assign_splits(groups, settings.val_fraction, settings.seed)
    blocks = []
    for name in shards.SPLITS:
        members = [s for s in sources if split[group_of(split_by, s.name, s.speaker)] == name]
        for k in range(0, len(members), settings.images_per_shard):
            blocks.append(ImageBlock(id=f"{name}-{k // settings.images_per_shard:05d}", split=name,
                                     sources=tuple(members[k:k + settings.images_per_shard])))
    return blocks


def prepare_image_block(block: ImageBlock, root: Path, settings: PrepareSettings) -> SourceResult:
    """One block of images -> one shard (the images that have a face / a mask)."""
    result = SourceResult(unit=block.id)
    crops, regions = [], []
    for source in block.sources:
        try:
            crop, region = _prepare_image(source, settings)
        except (ValueError, OSError) as error:
            result.skips.append(SkipRecord(source=source.name, reason=_reason(error),
                                           source_digest=block.digest(), unit=block.id))
            continue
        crops.append(crop)
        regions.append(region)
    if not crops:
        return result
    rel = shards.shard_relpath(f"images-{block.id}")
    names = [s.name for s in block.sources]
    meta = {"id": f"images-{block.id}", "sources": names, "crop_size": settings.crop_size}
    found = np.ones(len(crops), bool)
    sha = shards.write_shard(root / rel, {"crops": np.stack(crops), "regions": np.stack(regions),
                                          "found": found}, meta)
    speakers = {s.speaker for s in block.sources}
    result.clips.append(ClipRecord(
        id=f"images-{block.id}", source=names[0], speaker=speakers.pop() if len(speakers) == 1 else None,
        group=block.id, split=block.split, frames=len(crops), faces=len(crops), shard=rel,
        sha256=sha, source_digest=block.digest(), unit=block.id))
    return result


def _prepare_image(source: Source, settings: PrepareSettings) -> tuple[np.ndarray, np.ndarray]:
    from .. import labels as L
    from ..image_files import read_image
    from .datasets import resize_image, resize_labels

    image = read_image(source.path, name="image")
    if settings.masks is None:
        from ..pipeline import parse_faces

        with _quiet_pipeline():
            track = parse_faces(image[None], _parser_model(settings), crop_size=settings.crop_size,
                                video=False, input_name=source.name, require_face=False)
        if not track.found[0]:
            raise ValueError("no face found")
        return track.crops[0], L.merge_to_regions(track.labels[0])
    mask_path = Path(settings.masks) / (Path(source.name).stem + ".png")
    if not mask_path.is_file():
        raise ValueError(f"no mask {str(mask_path)!r} (CelebAMask-HQ label PNG named like the image)")
    from PIL import Image

    with Image.open(mask_path) as m:
        mask = np.asarray(m.convert("L") if m.mode not in ("L", "P") else m)
    if mask.max() >= L.NUM_CLASSES_19:
        raise ValueError(f"mask {str(mask_path)!r} has labels up to {mask.max()}; CelebAMask-HQ "
                         f"label maps use 0..18 (combine the part PNGs with its g_mask.py first)")
    if image.shape[0] != image.shape[1]:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}; with --masks the images "
                         f"must be square aligned faces (CelebAMask-HQ)")
    return resize_image(image, settings.crop_size), resize_labels(
        L.CELEBAMASK_TO_REGIONS[mask], settings.crop_size).astype(np.uint8)


# ------------------------------------------------------------------------------ the run

def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass


def _work(kind: str, unit: Any, root: Path, settings: PrepareSettings) -> SourceResult:
    if kind == "video":
        return prepare_video(unit, root, settings)
    return prepare_image_block(unit, root, settings)


@contextmanager
def _folder_lock(root: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
        yield
        return
    with open(root / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"another 'prepare' is writing into {str(root)!r}; wait for it to "
                             f"finish (or prepare into another folder)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_index(root: Path, kind: str, settings: PrepareSettings) -> DatasetIndex:
    parser_name = "builtin" if settings.parser is None else Path(settings.parser).name
    content = settings.content()
    if shards.index_path(root).is_file():
        index = shards.read_index(root)
        before = dict(index.settings.get("content", {}))
        changed = [k for k in CONTENT_SETTINGS if k in before and before[k] != content[k]]
        if index.kind != kind or changed:
            what = (f"kind {index.kind!r} (now {kind!r})" if index.kind != kind else
                    ", ".join(f"{k}={before[k]!r} (now {content[k]!r})" for k in changed))
            raise ValueError(f"{str(root)!r} was prepared with {what}; re-run with the same "
                             f"settings to resume, or prepare into a new folder")
        return index
    return DatasetIndex(kind=kind, crop_size=settings.crop_size, fps=FPS, sample_rate=SAMPLE_RATE,
                        parser=parser_name)


def _remove_leftovers(root: Path) -> None:
    """``.partial-`` files only a ``kill -9`` of an earlier run can leave (never counted)."""
    from ..atomic_files import PARTIAL_MARK

    folders = (root, root / shards.SHARD_FOLDER)
    stale = [p for f in folders for p in f.iterdir()
             if p.name.startswith(".") and PARTIAL_MARK in p.name and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d partial file(s) an interrupted run left in %s", len(stale), root)


def _resplit(index: DatasetIndex, settings: PrepareSettings) -> None:
    """Re-assign every video clip's split (image blocks carry theirs)."""
    if index.kind != "video" or not index.clips:
        return
    by_source = {c.source: c.speaker for c in index.clips}
    split_by = resolve_split_by(settings.split_by, list(by_source.values()))
    groups = {group_of(split_by, s, sp): stratum_of(split_by, sp) for s, sp in by_source.items()}
    split = assign_splits(groups, settings.val_fraction, settings.seed)
    for c in index.clips:
        c.group = group_of(split_by, c.source, c.speaker)
        c.split = split[c.group]
    index.settings["split_by"] = split_by


def prepare_dataset(src: str | os.PathLike, out: str | os.PathLike,
                    settings: PrepareSettings = PrepareSettings(),
                    speakers: str | os.PathLike | None = None,
                    progress: bool = False) -> PrepareReport:
    """Prepare SRC (folder or list file) into OUT (created if missing; its parent must exist)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"prepare OUT {str(root)!r} is a file; give a folder (new or one "
                         f"'prepare' wrote before, to resume)")
    if not root.parent.is_dir():
        raise FileNotFoundError(f"prepare OUT {str(root)!r}: the folder {str(root.parent)!r} does "
                                f"not exist; create it first")
    kind, sources = find_sources(src, speakers)
    if kind == "images" and settings.masks is not None and not Path(settings.masks).is_dir():
        raise FileNotFoundError(f"--masks {settings.masks!r} is not a folder")
    if kind == "video" and settings.masks is not None:
        raise ValueError("--masks is for image folders (CelebAMask-HQ); SRC holds videos")
    if settings.parser is not None and not Path(settings.parser).is_file():
        raise FileNotFoundError(f"--parser {settings.parser!r} does not exist; give a BiSeNet "
                                f"checkpoint (79999_iter.pth or its .safetensors) or leave it out")
    root.mkdir(exist_ok=True)
    (root / shards.SHARD_FOLDER).mkdir(exist_ok=True)
    with _folder_lock(root):
        return _run(root, kind, sources, settings, progress)


class _Book:
    """The index while a run works on it: records by unit (a source video or an image block),
    written back atomically at most every :data:`INDEX_EVERY_S` seconds and at the end (a crash
    loses at most that much finished work; the units are redone by the next run)."""

    def __init__(self, root: Path, index: DatasetIndex, settings: PrepareSettings) -> None:
        self.root, self.index, self.settings = root, index, settings
        self.clips: dict[str, list[ClipRecord]] = {}
        self.skips: dict[str, list[SkipRecord]] = {}
        for c in index.clips:
            self.clips.setdefault(c.unit, []).append(c)
        for s in index.skipped:
            self.skips.setdefault(s.unit, []).append(s)
        self.written = time.monotonic()

    def done(self, unit: str, digest: str) -> bool:
        """Whether an earlier run finished ``unit`` on the same file(s): its clips' shards all
        complete, or (no clip) it was skipped."""
        clips = self.clips.get(unit)
        if clips:
            return all(c.source_digest == digest
                       and shards.shard_is_complete(self.root / c.shard, self.index.kind)
                       for c in clips)
        return any(s.source_digest == digest for s in self.skips.get(unit, ()))

    def record(self, result: SourceResult) -> None:
        kept = {c.shard for c in result.clips}
        for c in self.clips.get(result.unit, ()):  # shards of an earlier version of the unit
            if c.shard not in kept:
                (self.root / c.shard).unlink(missing_ok=True)
        self.clips[result.unit] = list(result.clips)
        self.skips[result.unit] = list(result.skips)
        if time.monotonic() - self.written >= INDEX_EVERY_S:
            self.write()

    def write(self) -> None:
        self.index.clips = [c for clips in self.clips.values() for c in clips]
        self.index.skipped = [s for skips in self.skips.values() for s in skips]
        _resplit(self.index, self.settings)
        shards.write_index(self.root, self.index)
        self.written = time.monotonic()


def _run(root: Path, kind: str, sources: list[Source], settings: PrepareSettings,
         progress: bool) -> PrepareReport:
    index = _open_index(root, kind, settings)
    index.settings = {"content": settings.content(), "val_fraction": settings.val_fraction,
                      "split_by": settings.split_by, "seed": settings.seed}
    _remove_leftovers(root)
    book = _Book(root, index, settings)
    if kind == "video":
        units: list[tuple[str, str, Any]] = [(s.name, s.digest(), s) for s in sources]
    else:
        units = [(b.id, b.digest(), b) for b in image_blocks(sources, settings)]
    todo = []
    for name, digest, unit in units:
        if book.done(name, digest):
            for s in book.skips.get(name, ()):
                log.warning("skipped %s: %s (recorded by an earlier run)", s.source, s.reason)
        else:
            todo.append((name, unit))
    resumed = len(units) - len(todo)
    if resumed:
        log.info("%d of %d %s already prepared in %s; doing the other %d", resumed, len(units),
                 "videos" if kind == "video" else "image blocks", root, len(todo))
    try:
        for result in _results(kind, todo, root, settings, progress):
            for s in result.skips:
                log.warning("skipped %s: %s", s.source, s.reason)
            for note in result.notes:
                log.warning("%s: %s", result.unit, note)
            book.record(result)
    finally:  # also on Ctrl-C or an error: what finished stays finished
        book.write()
    return PrepareReport(root=root, clips=len(index.clips),
                         frames=sum(c.frames for c in index.clips), prepared=len(todo),
                         resumed=resumed, skipped=len(index.skipped))


def _results(kind: str, todo: list[tuple[str, Any]], root: Path, settings: PrepareSettings,
             progress: bool) -> Iterator[SourceResult]:
    """Results as they finish (in this process for one worker, else a process pool)."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video" if kind == "video" else "block", desc="prepare",
               disable=not progress or not todo)
    started = time.monotonic()
    try:
        if settings.workers == 1 or len(todo) <= 1:
            for _, unit in todo:
                yield _work(kind, unit, root, settings)
                bar.update(1)
            return
        import multiprocessing

        threads = max(1, (os.cpu_count() or 1) // settings.workers)
        # spawn: the workers start clean (no forked torch/MediaPipe thread state).
        with ProcessPoolExecutor(settings.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            queue = iter(todo)
            pending: set = set()
            try:
                while True:
                    # A few units per worker in flight: memory stays flat for a million files.
                    for _, unit in itertools.islice(queue, 2 * settings.workers - len(pending)):
                        pending.add(pool.submit(_work, kind, unit, root, settings))
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
                        bar.update(1)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        bar.close()
        log.info("prepare: %d unit(s) in %.1f s", len(todo), time.monotonic() - started)

