"""Torch datasets over a prepared folder (``python -m segtalker_core prepare``; format: :mod:`.shards`).

Every dataset is map-style (``__len__`` + ``__getitem__``, so ``DistributedSampler`` shards it),
every item a dict of CPU tensors, label maps in the pack's 12-region order (``labels.REGIONS_12``),
mels the Wav2Lip mel of ``audio/mel.py``. Items are a pure function of ``(seed, epoch, index)``:
call :meth:`set_epoch` (as with ``DistributedSampler``) to draw other negatives / references each
epoch; every rank and every worker then agrees on what index ``i`` is.

Timing (25 fps, 80 mel steps per second): a frame's mel window is the 16 steps (0.2 s, i.e. five
frames) *centred* on the frame, as ``learned.py`` feeds a TSG at inference
(``timing.mel_window_starts(..., align="centre")``); steps outside the audio are silence (-4), as
``mel.mel_windows(pad="silence")`` does. So the window of the middle frame of five consecutive
frames covers exactly those five frames: it is both the TSG's per-frame mel and the Seg-SyncNet's
window mel.

* :class:`SyncWindowDataset` -> ``{"mel": float32 [1, 80, 16], "maps": int64 [F, S, S],
  "label": float32 []}`` (F = ``num_frames``). Half the items (by a per-item coin) are in sync:
  the maps of frames ``c-F//2 .. c+F//2`` and the mel centred on ``c``. The other half keep that
  mel and take the maps of a shifted window of the same clip, ``|shift| >= min_shift`` frames
  (default ``F``: no frame shared with the true window; ``min_shift=1`` is Wav2Lip's rule, any
  other window), or of another clip when the clip is too short for one. Feed
  ``SegSyncNet(mel, tsg.onehot(maps.flatten(0, 1)).unflatten(0, (B, F)))`` and
  ``sync_bce_loss(..., label)``. ``augment`` (:class:`SyncAugment`, training only) varies the
  mel's loudness and masks small runs of it.
* :class:`TalkingSegDataset` -> ``{"mel": float32 [1, 80, 16], "target": int64 [S, S],
  "reference": int64 [S, S], "mel_window": float32 [F, 1, 80, 16], "target_window": int64
  [F, S, S]}``. ``target`` is both the TSG's pose source and its ground truth: the dataset does
  *not* mask it, ``TSG.forward`` masks the mouth area of the source itself
  (``models.tsg.mask_mouth_area``, the config's mode), so feed ``TSG(onehot(target),
  onehot(reference), mel)``. ``reference`` is another frame of the same clip (at least
  ``min_reference_gap`` frames away where the clip allows). ``target_window`` / ``mel_window``
  are the F frames centred on the target with each frame's own mel, for the sync loss: run the
  TSG on each window frame (``source = target_window[:, k]``, ``mel = mel_window[:, k]``), and
  score the softmaxes with ``tsg_losses.sync_loss(syncnet, probs [B, F, 12, S, S], mel)`` --
  ``mel`` (the centre frame's window) is the window's sync mel.
* :class:`FaceImageDataset` -> ``{"image": float32 [3, S, S] in [-1, 1], "regions": int64
  [S, S]}``: every face frame of a video dataset (every ``frame_step``-th) or every image of an
  image dataset.

``resolution`` may be smaller (or larger) than the stored crops: maps are resized by nearest
(labels never blend), images with area averaging (down) or bilinear (up). Only frames with a
face make samples; a split with none is a ``ValueError`` naming the folder, the split and what
the folder holds.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio.mel import SILENCE_VALUE, WINDOW_STEPS
from ..audio.timing import mel_window_starts
from .shards import SPLITS, ClipRecord, DatasetIndex, Shard, open_shard, read_index

__all__ = ["PreparedDataset", "ClipInfo", "open_dataset", "dataset_hash", "SyncAugment",
           "SyncWindowDataset", "TalkingSegDataset", "FaceImageDataset"]

MEL_BINS = 80


# -------------------------------------------------------------------------------------- index

@dataclass(frozen=True)
class ClipInfo:
    """One clip of a prepared dataset."""

    id: str
    speaker: str | None
    split: str  # "train" / "val"
    frames: int  # at ``fps``
    faces: int  # frames with a face
    shard: Path  # absolute path of its shard
    start_frame: int  # where the clip starts in its source (25 fps frames)
    source: str


@dataclass(frozen=True)
class PreparedDataset:
    """What :func:`open_dataset` returns: the folder's settings and its clips."""

    root: Path
    kind: str  # "video" or "images"
    fps: int  # 25
    sample_rate: int  # 16000
    crop_size: int  # side of the stored crops and maps
    parser: str
    clips: tuple[ClipInfo, ...]

    def split(self, split: str) -> tuple[ClipInfo, ...]:
        _check_split(split)
        return tuple(c for c in self.clips if c.split == split)

    def counts(self) -> str:
        """``"train: 5 clips / 300 frames, val: 1 clip / 60 frames"`` (for messages)."""
        parts = []
        for s in SPLITS:
            clips = self.split(s)
            parts.append(f"{s}: {len(clips)} clip(s) / {sum(c.faces for c in clips)} face frame(s)")
        return ", ".join(parts)


def open_dataset(root: str | os.PathLike) -> PreparedDataset:
    """Read a prepared folder's index (clips: id, speaker, split, frames, fps, shard path)."""
    root = Path(root).resolve()
    index = read_index(root)
    return PreparedDataset(root=root, kind=index.kind, fps=index.fps,
                           sample_rate=index.sample_rate, crop_size=index.crop_size,
                           parser=index.parser,
                           clips=tuple(_clip_info(root, c) for c in index.clips))


def _clip_info(root: Path, c: ClipRecord) -> ClipInfo:
    return ClipInfo(id=c.id, speaker=c.speaker, split=c.split, frames=c.frames, faces=c.faces,
                    shard=root / c.shard, start_frame=c.start_frame, source=c.source)


def dataset_hash(root: str | os.PathLike) -> str:
    """sha256 (hex) naming a prepared dataset's content: the format, crop size, fps, and every
    clip's id, split and shard sha256 (recorded when the shard was written, so this reads no
    shard). The same data prepared twice the same way gives the same hash."""
    index: DatasetIndex = read_index(root)
    payload = {"kind": index.kind, "crop_size": index.crop_size, "fps": index.fps,
               "clips": sorted((c.id, c.split, c.frames, c.sha256) for c in index.clips)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# -------------------------------------------------------------------------------------- arrays

def nearest_indices(source: int, target: int) -> np.ndarray:
    """Source rows sampled by a nearest resize ``source -> target`` (torch's ``nearest-exact``)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def resize_labels(maps: np.ndarray, size: int) -> np.ndarray:
    """``[..., H, W]`` integer maps -> ``[..., size, size]`` by nearest."""
    h, w = maps.shape[-2:]
    if (h, w) == (size, size):
        return np.asarray(maps)
    return np.asarray(maps)[..., nearest_indices(h, size)[:, None], nearest_indices(w, size)[None, :]]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> ``[size, size, 3]`` uint8 (area average down, bilinear up)."""
    import cv2

    h = image.shape[0]
    if h == size:
        return np.asarray(image)
    mode = cv2.INTER_AREA if size < h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=mode)


class _ShardCache:
    """Shards opened lazily, per process (memmaps are not sent to DataLoader workers)."""

    def __init__(self, clips: tuple[ClipInfo, ...]) -> None:
        self.clips = clips
        self._open: dict[int, Shard] = {}

    def __call__(self, clip: int) -> Shard:
        shard = self._open.get(clip)
        if shard is None:
            info = self.clips[clip]
            shard = open_shard(info.shard)
            if len(shard) != info.frames:
                raise ValueError(f"shard {str(info.shard)!r} holds {len(shard)} frames but the "
                                 f"index says {info.frames}; re-run prepare on the folder")
            self._open[clip] = shard
        return shard

    def __getstate__(self) -> dict[str, Any]:
        return {"clips": self.clips, "_open": {}}


class _PreparedBase(Dataset):
    """Shared parts: the split's clips, the shard cache, per-item random numbers."""

    def __init__(self, root: str | os.PathLike, split: str, resolution: int, seed: int,
                 kind: str | None = "video") -> None:
        _check_split(split)
        if not isinstance(resolution, int) or resolution < 8:
            raise ValueError(f"resolution must be an integer >= 8, got {resolution!r}")
        self.dataset = open_dataset(root)
        if kind is not None and self.dataset.kind != kind:
            raise ValueError(f"{type(self).__name__} needs a prepared *{kind}* dataset (clips with "
                             f"audio), but {str(self.dataset.root)!r} holds {self.dataset.kind}")
        self.split = split
        self.resolution = resolution
        self.seed = int(seed)
        self.epoch = 0
        self.clips = self.dataset.split(split)
        self._shards = _ShardCache(self.clips)
        self._samples: list[tuple[int, int]] = []  # (clip, frame) per sample, set by subclasses

    def where(self, index: int) -> tuple[ClipInfo, int]:
        """The clip of sample ``index`` and its (centre) frame in that clip (previews, tests)."""
        clip, frame = self._samples[index]
        return self.clips[clip], frame

    def set_epoch(self, epoch: int) -> None:
        """Draw other random choices (negatives, references) for every index from now on."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, int(index)))

    def _no_samples(self, what: str) -> ValueError:
        return ValueError(
            f"{type(self).__name__}: the {self.split!r} split of {str(self.dataset.root)!r} has no "
            f"{what} ({self.dataset.counts()}); prepare more videos, or lower --val-fraction if "
            f"the val split is empty")

    def _maps(self, clip: int, frames: np.ndarray) -> torch.Tensor:
        maps = self._shards(clip).regions[frames]
        return torch.from_numpy(resize_labels(maps, self.resolution).astype(np.int64))

    def _mel(self, clip: int, frame: int) -> np.ndarray:
        """``[80, 16]`` float32 mel window centred on ``frame`` of ``clip`` (silence outside)."""
        info = self.clips[clip]
        shard = self._shards(clip)
        mel = shard.mel
        start_abs = int(mel_window_starts(info.start_frame + frame, info.start_frame + frame + 1,
                                          self.dataset.fps, align="centre",
                                          window=WINDOW_STEPS)[0])
        start = start_abs - int(shard.meta.get("mel_first_step", 0))
        out = np.full((MEL_BINS, WINDOW_STEPS), SILENCE_VALUE, np.float32)
        lo, hi = max(start, 0), min(start + WINDOW_STEPS, mel.shape[1])
        if hi > lo:
            out[:, lo - start:hi - start] = mel[:, lo:hi]
        return out


def _runs_of_found(found: np.ndarray, half: int) -> np.ndarray:
    """Frames ``c`` whose whole window ``c-half .. c+half`` has a face (sorted)."""
    n = len(found)
    width = 2 * half + 1
    if n < width:
        return np.zeros(0, np.int64)
    ok = np.convolve(found.astype(np.int64), np.ones(width, np.int64), mode="valid") == width
    return np.flatnonzero(ok).astype(np.int64) + half


def _check_num_frames(num_frames: int) -> int:
    if not isinstance(num_frames, int) or num_frames < 1 or num_frames % 2 == 0:
        raise ValueError(f"num_frames must be a positive odd integer (windows are centred on a "
                         f"frame; Seg-SyncNet uses 5), got {num_frames!r}")
    return num_frames


# -------------------------------------------------------------------------------------- datasets

@dataclass
class SyncAugment:
    """Training-time augmentation of Seg-SyncNet mel windows (all off by default).

    Each draws from the item's own generator, so items stay a pure function of
    ``(seed, epoch, index)``. They change the loudness and hide a little of the spectrum, never
    the timing of the window, so an in-sync window stays in sync.

    * ``mel_gain``: largest offset added to the whole log-mel window (in its units: the mel
      spans [-4, 4] over 100 dB, so 0.4 is about 5 dB), clipped to that range.
    * ``freq_mask`` / ``time_mask``: widest run of mel bins / mel steps (of 80 / 16) set to
      silence, one of each per item (SpecAugment's masks, small: 2 steps are 25 ms).

    Measured on the tests' dataset (``tiny``, 300 steps, 8 seeds, held-out class-balanced
    accuracy): off 0.811 mean (0.769-0.855), ``mel_gain=0.4 freq_mask=8 time_mask=2`` 0.825
    (0.790-0.854); the presets leave it off until a real dataset shows the gain.
    """

    mel_gain: float = 0.0
    freq_mask: int = 0
    time_mask: int = 0

    def __post_init__(self) -> None:
        checks = {"mel_gain": (0.0, 2.0), "freq_mask": (0, MEL_BINS // 4),
                  "time_mask": (0, WINDOW_STEPS // 4)}
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"SyncAugment.{name} must lie in [{lo}, {hi}], got {value!r}")

    @property
    def active(self) -> bool:
        return any((self.mel_gain, self.freq_mask, self.time_mask))

    def mel(self, rng: np.random.Generator, mel: np.ndarray) -> np.ndarray:
        """``[80, 16]`` log-mel window -> louder / quieter, with small masks."""
        if self.mel_gain:
            mel = np.clip(mel + rng.uniform(-self.mel_gain, self.mel_gain), SILENCE_VALUE,
                          -SILENCE_VALUE).astype(np.float32)
        for axis, widest in ((0, self.freq_mask), (1, self.time_mask)):
            if widest:
                width = int(rng.integers(widest + 1))
                start = int(rng.integers(mel.shape[axis] - width + 1))
                mel = mel.copy()
                index = [slice(None), slice(None)]
                index[axis] = slice(start, start + width)
                mel[tuple(index)] = SILENCE_VALUE
        return mel


class SyncWindowDataset(_PreparedBase):
    """Seg-SyncNet windows, 50/50 in sync / shifted (see the module docstring).

    One sample per window centre with a face in all ``num_frames`` frames.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int = 128,
                 num_frames: int = 5, seed: int = 0, min_shift: int | None = None,
                 augment: SyncAugment | None = None) -> None:
        super().__init__(root, split, resolution, seed)
        self.num_frames = _check_num_frames(num_frames)
        self.augment = augment if augment is not None and augment.active else None
        self.min_shift = self.num_frames if min_shift is None else int(min_shift)
        if self.min_shift < 1:
            raise ValueError(f"min_shift must be >= 1, got {self.min_shift}")
        half = self.num_frames // 2
        self._centres = [_runs_of_found(np.asarray(self._shards(i).found), half)
                         for i in range(len(self.clips))]
        self._samples = [(c, int(f)) for c, centres in enumerate(self._centres) for f in centres]
        if not self._samples:
            raise self._no_samples(f"window of {self.num_frames} consecutive face frames")

    def __len__(self) -> int:
        return len(self._samples)

    def _window(self, centre: int) -> np.ndarray:
        half = self.num_frames // 2
        return np.arange(centre - half, centre + half + 1)

    def _negative(self, rng: np.random.Generator, clip: int, centre: int) -> tuple[int, int]:
        centres = self._centres[clip]
        far = centres[np.abs(centres - centre) >= self.min_shift]
        if len(far):
            return clip, int(far[rng.integers(len(far))])
        others = [c for c in range(len(self.clips)) if c != clip and len(self._centres[c])]
        if not others:
            raise ValueError(f"SyncWindowDataset: no shifted window exists in the {self.split!r} "
                             f"split (one clip too short for a shift of {self.min_shift} frames); "
                             f"prepare longer or more clips")
        other = others[rng.integers(len(others))]
        return other, int(self._centres[other][rng.integers(len(self._centres[other]))])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, centre = self._samples[index]
        rng = self._rng(index)
        in_sync = bool(rng.random() < 0.5)
        map_clip, map_centre = (clip, centre) if in_sync else self._negative(rng, clip, centre)
        mel = self._mel(clip, centre)
        if self.augment is not None:
            mel = self.augment.mel(rng, mel)
        return {
            "mel": torch.from_numpy(mel)[None],
            "maps": self._maps(map_clip, self._window(map_centre)),
            "label": torch.tensor(1.0 if in_sync else 0.0, dtype=torch.float32),
        }


class TalkingSegDataset(_PreparedBase):
    """TSG samples: a target frame, an identity reference, mels (see the module docstring).

    One sample per face frame whose ``num_frames`` window has a face in every frame.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int = 128,
                 num_frames: int = 5, seed: int = 0, min_reference_gap: int = 5) -> None:
        super().__init__(root, split, resolution, seed)
        self.num_frames = _check_num_frames(num_frames)
        self.min_reference_gap = int(min_reference_gap)
        half = self.num_frames // 2
        self._faces = [np.flatnonzero(np.asarray(self._shards(i).found))
                       for i in range(len(self.clips))]
        self._samples = [(c, int(f)) for c in range(len(self.clips))
                         for f in _runs_of_found(np.asarray(self._shards(c).found), half)]
        if not self._samples:
            raise self._no_samples(f"frame with {self.num_frames} consecutive face frames around it")

    def __len__(self) -> int:
        return len(self._samples)

    def _reference(self, rng: np.random.Generator, clip: int, target: int) -> int:
        faces = self._faces[clip]
        far = faces[np.abs(faces - target) >= self.min_reference_gap]
        if not len(far):
            far = faces[faces != target]
        if not len(far):
            return target  # a single face frame: its own reference
        return int(far[rng.integers(len(far))])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, target = self._samples[index]
        rng = self._rng(index)
        half = self.num_frames // 2
        window = np.arange(target - half, target + half + 1)
        mels = np.stack([self._mel(clip, int(f)) for f in window])[:, None]  # [F, 1, 80, 16]
        maps = self._maps(clip, window)
        return {
            "mel": torch.from_numpy(np.ascontiguousarray(mels[half])),
            "target": maps[half].clone(),
            "reference": self._maps(clip, np.array([self._reference(rng, clip, target)]))[0],
            "mel_window": torch.from_numpy(mels),
            "target_window": maps,
        }


class FaceImageDataset(_PreparedBase):
    """Face crops and their 12-region maps, for the SGI stage (encoder + generator)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", resolution: int = 256,
                 frame_step: int = 1) -> None:
        super().__init__(root, split, resolution, seed=0, kind=None)
        if not isinstance(frame_step, int) or frame_step < 1:
            raise ValueError(f"frame_step must be a positive integer, got {frame_step!r}")
        self.frame_step = frame_step
        self._samples = [(c, int(f)) for c in range(len(self.clips))
                         for f in np.flatnonzero(np.asarray(self._shards(c).found))[::frame_step]]
        if not self._samples:
            raise self._no_samples("face image")

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, frame = self._samples[index]
        shard = self._shards(clip)
        rgb = resize_image(shard.crops[frame], self.resolution)
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 127.5 - 1
        return {"image": image, "regions": self._maps(clip, np.array([frame]))[0]}
