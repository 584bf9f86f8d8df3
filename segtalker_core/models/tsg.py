"""TSG: the talking segmentation generator (speech drives the face parsing).

A U-Net over one-hot 12-region maps (``labels.REGIONS_12``). For one output frame it reads

* the *pose source* map of that frame with its mouth area masked out (+ the mask as a channel),
  which fixes head pose, face shape and everything outside the mouth;
* an *identity reference* map of the same person (another frame), which shows what the lips and
  mouth of this face look like;
* the Wav2Lip mel window of the frame (``[1, 80, 16]``), through :class:`AudioEncoder`;

and predicts the frame's 12-region logits. The audio embedding is fused at the bottleneck
(concatenated to the features, then convolved) and, for ``film_levels > 0``, also modulates the
first decoder levels FiLM-style (scale and shift of normalised features), so the mouth shape can
be driven at more than the coarsest scale.

Masking (:class:`MouthMaskConfig`) is part of the model config because training and inference
must mask the same way. Two modes:

* ``"lower_half"`` (default): rows ``H//2`` and below, as Wav2Lip masks faces. Reveals nothing
  about the mouth; the network redraws the jaw and chin too.
* ``"mouth_box"``: a fixed-size box hung from the top of the lips (the upper lip barely moves when
  speaking) and centred on them horizontally. Its size does *not* follow the lips' extent, so the
  mask does not leak how open the mouth is; it keeps more of the source (cheeks, chin) exact.
  Frames without lips fall back to the lower half.

Device and dtype come from the caller; nothing here moves a module. The dtype is the precision
the network *computes* in (autocast, :func:`segtalker_core.precision.compute`): the weights are
never cast, whatever precision a run uses.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import labels as L
from .. import precision
from ..batching import AdaptiveBatch
from .audio_encoder import MEL_BINS, MEL_STEPS, AudioEncoder, AudioEncoderConfig, check_mel_batch

LIPS = L.REGIONS_12.index("lips")
MOUTH_INTERIOR = L.REGIONS_12.index("mouth_interior")
MOUTH_MODES = ("lower_half", "mouth_box")
# Source map (12) + mask channel (1) + reference map (12).
IN_CHANNELS = 2 * L.NUM_REGIONS + 1


# ------------------------------------------------------------------------------------ configs

@dataclass(frozen=True)
class MouthMaskConfig:
    """Which part of the pose-source map is hidden from (and redrawn by) the network.

    Box sizes are fractions of the map side: ``box_width`` x ``box_height``, its top
    ``box_margin_above`` above the topmost lip row.
    """

    mode: str = "lower_half"
    box_width: float = 0.5
    box_height: float = 0.42
    box_margin_above: float = 0.04

    def __post_init__(self) -> None:
        if self.mode not in MOUTH_MODES:
            raise ValueError(f"MouthMaskConfig.mode must be one of {MOUTH_MODES}, got {self.mode!r}")
        for name in ("box_width", "box_height"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"MouthMaskConfig.{name} must be in (0, 1], got "
                                 f"{getattr(self, name)}")
        if not 0.0 <= self.box_margin_above < 1.0:
            raise ValueError(f"MouthMaskConfig.box_margin_above must be in [0, 1), got "
                             f"{self.box_margin_above}")


@dataclass(frozen=True)
class TSGConfig:
    """Architecture of a TSG (what its bundle's ``architecture`` holds).

    ``resolution``: side of the maps it works on (a power of two, 32..512; 128 or 256 for real
    models, 64 for tests). The encoder halves the resolution down to ``bottleneck_size``; level
    ``i`` has ``min(base_channels * 2**i, max_channels)`` channels. ``film_levels``: how many
    decoder levels, counted from the bottleneck up, the audio also modulates (0: bottleneck
    fusion only).
    """

    resolution: int = 128
    base_channels: int = 32
    max_channels: int = 256
    bottleneck_size: int = 8
    film_levels: int = 2
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    mouth_mask: MouthMaskConfig = field(default_factory=MouthMaskConfig)
    num_classes: int = L.NUM_REGIONS

    def __post_init__(self) -> None:
        r, b = self.resolution, self.bottleneck_size
        if not (isinstance(r, int) and 32 <= r <= 512 and r & (r - 1) == 0):
            raise ValueError(f"TSGConfig.resolution must be a power of two in 32..512 (128 or 256 "
                             f"for real models), got {r!r}")
        if not (isinstance(b, int) and 2 <= b < r and b & (b - 1) == 0):
            raise ValueError(f"TSGConfig.bottleneck_size must be a power of two in 2..{r // 2}, "
                             f"got {b!r}")
        if self.base_channels < 1 or self.max_channels < self.base_channels:
            raise ValueError(f"TSGConfig needs 1 <= base_channels <= max_channels, got "
                             f"{self.base_channels}, {self.max_channels}")
        if not 0 <= self.film_levels <= self.depth:
            raise ValueError(f"TSGConfig.film_levels must be in 0..{self.depth} (the decoder has "
                             f"{self.depth} levels at resolution {r}), got {self.film_levels}")
        if self.num_classes != L.NUM_REGIONS:
            raise ValueError(f"TSGConfig.num_classes must be {L.NUM_REGIONS} (REGIONS_12), got "
                             f"{self.num_classes}")

    @property
    def depth(self) -> int:
        return int(math.log2(self.resolution // self.bottleneck_size))

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels per level, full resolution first (``depth + 1`` entries)."""
        return tuple(min(self.base_channels * 2 ** i, self.max_channels)
                     for i in range(self.depth + 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution, "base_channels": self.base_channels,
            "max_channels": self.max_channels, "bottleneck_size": self.bottleneck_size,
            "film_levels": self.film_levels, "audio": self.audio.to_dict(),
            "mouth_mask": dict(vars(self.mouth_mask)), "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TSGConfig":
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"TSG architecture has unknown entries {sorted(unknown)}; was it "
                             f"written by a newer SegTalker?")
        if "audio" in data:
            data["audio"] = AudioEncoderConfig.from_dict(dict(data["audio"]))
        if "mouth_mask" in data:
            data["mouth_mask"] = MouthMaskConfig(**dict(data["mouth_mask"]))
        return cls(**data)


# ------------------------------------------------------------------------------------ helpers

def onehot(regions: torch.Tensor, num_classes: int = L.NUM_REGIONS,
           dtype: torch.dtype = torch.float32, checked: bool = False) -> torch.Tensor:
    """Integer label maps ``[B, H, W]`` -> one-hot ``[B, num_classes, H, W]`` in ``dtype``.
    ``checked``: the labels were checked on the host already (the range check here reads the
    device's min/max, which makes the host wait)."""
    if not isinstance(regions, torch.Tensor) or regions.ndim != 3 or regions.is_floating_point():
        what = (f"{tuple(regions.shape)} {regions.dtype}" if isinstance(regions, torch.Tensor)
                else type(regions).__name__)
        raise ValueError(f"onehot: regions must be an integer tensor [B, H, W], got {what}")
    if not checked and regions.numel() and (int(regions.min()) < 0 or int(regions.max()) >= num_classes):
        raise ValueError(
            f"onehot: regions has labels outside 0..{num_classes - 1} (min {int(regions.min())}, "
            f"max {int(regions.max())}); 19-class maps must be merged with "
            f"labels.merge_to_regions first"
        )
    return F.one_hot(regions.long(), num_classes).permute(0, 3, 1, 2).to(dtype)


def _mask_from_lips(lips: torch.Tensor, config: MouthMaskConfig) -> torch.Tensor:
    """Lips+mouth presence ``[B, H, W]`` bool -> mouth-area mask ``[B, H, W]`` bool."""
    b, h, w = lips.shape
    rows = torch.arange(h, device=lips.device, dtype=torch.float32).view(1, h, 1)
    cols = torch.arange(w, device=lips.device, dtype=torch.float32).view(1, 1, w)
    lower_half = (rows >= h // 2).expand(b, h, w)
    if config.mode == "lower_half":
        return lower_half
    row_any = lips.any(dim=2)  # [B, H]
    present = row_any.any(dim=1)  # [B]
    top = row_any.float().argmax(dim=1).float()  # first lip row (argmax returns the first max)
    col_mass = lips.float().sum(dim=1)  # [B, W]
    cx = (col_mass * cols.view(1, w)).sum(1) / col_mass.sum(1).clamp_min(1.0)
    y0 = (top - config.box_margin_above * h).view(b, 1, 1)
    y1 = y0 + config.box_height * h
    x0 = (cx - config.box_width * w / 2).view(b, 1, 1)
    x1 = x0 + config.box_width * w
    box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    return torch.where(present.view(b, 1, 1), box, lower_half)


def mouth_area_mask(regions: torch.Tensor, config: MouthMaskConfig | None = None) -> torch.Tensor:
    """The area TSG redraws, for integer 12-region maps ``[B, H, W]`` -> bool ``[B, H, W]``."""
    config = config or MouthMaskConfig()
    if regions.ndim != 3:
        raise ValueError(f"mouth_area_mask: regions must be [B, H, W], got {tuple(regions.shape)}")
    return _mask_from_lips((regions == LIPS) | (regions == MOUTH_INTERIOR), config)


def mask_mouth_area(source: torch.Tensor, config: MouthMaskConfig | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide the mouth area of a one-hot (or soft) map ``[B, 12, H, W]``.

    Returns ``(masked, mask)``: ``masked`` is ``source`` with every class channel zero inside the
    area (so "masked" differs from every real label, including background), ``mask`` is
    ``[B, 1, H, W]`` in ``source.dtype``, 1 inside the area.
    """
    config = config or MouthMaskConfig()
    if source.ndim != 4 or source.shape[1] != L.NUM_REGIONS:
        raise ValueError(f"mask_mouth_area: source must be one-hot [B, {L.NUM_REGIONS}, H, W], got "
                         f"{tuple(source.shape)}")
    lips = (source[:, LIPS] + source[:, MOUTH_INTERIOR]) > 0.5
    mask = _mask_from_lips(lips, config).unsqueeze(1).to(source.dtype)
    return source * (1 - mask), mask


def _group_norm(channels: int) -> nn.GroupNorm:
    # Group norm, not batch norm: inference runs with any batch size, including 1.
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class ConvNormAct(nn.Module):
    """3x3 conv + group norm (+ optional FiLM from a conditioning vector) + leaky ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, film_dim: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1)
        self.norm = _group_norm(cout)
        self.film = nn.Linear(film_dim, 2 * cout) if film_dim else None
        if self.film is not None:
            # Start as identity so the audio path cannot wreck an untrained decoder.
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.film is not None:
            assert cond is not None, "this block is audio-modulated: pass the audio embedding"
            scale, shift = self.film(cond).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        return F.leaky_relu(x, 0.2)


class DownBlock(nn.Module):
    """Halve the resolution: strided conv, then a conv with a residual connection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = ConvNormAct(cin, cout, stride=2)
        self.conv = ConvNormAct(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.conv(x)


class UpBlock(nn.Module):
    """Double the resolution, concatenate the encoder skip, two convs (first one FiLM-able)."""

    def __init__(self, cin: int, cskip: int, cout: int, film_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin + cskip, cout, film_dim=film_dim)
        self.conv2 = ConvNormAct(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv1(torch.cat([x, skip], dim=1), cond)
        return x + self.conv2(x)


class AudioBottleneck(nn.Module):
    """Fuse the audio embedding into the bottleneck: tile, concatenate, convolve (+ residual)."""

    def __init__(self, channels: int, audio_dim: int) -> None:
        super().__init__()
        self.fuse = ConvNormAct(channels + audio_dim, channels)
        self.conv = ConvNormAct(channels, channels)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        tiled = audio[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        x = x + self.fuse(torch.cat([x, tiled.to(x.dtype)], dim=1))
        return x + self.conv(x)


# ------------------------------------------------------------------------------------ model

class TSG(nn.Module):
    """Talking segmentation generator.

    ``forward(source, reference, mel)``: ``source`` and ``reference`` one-hot (or soft) maps
    ``[B, 12, R, R]`` with ``R = config.resolution`` (the source unmasked: the model masks it
    itself, see :meth:`mouth_mask`), ``mel`` ``[B, 1, 80, 16]`` -> logits ``[B, 12, R, R]``.
    """

    def __init__(self, config: TSGConfig | None = None) -> None:
        super().__init__()
        self.config = config or TSGConfig()
        ch = self.config.channels
        audio_dim = self.config.audio.embed_dim
        self.audio_encoder = AudioEncoder(self.config.audio)
        self.stem = nn.Sequential(ConvNormAct(IN_CHANNELS, ch[0]), ConvNormAct(ch[0], ch[0]))
        self.down = nn.ModuleList(DownBlock(ch[i], ch[i + 1]) for i in range(self.config.depth))
        self.bottleneck = AudioBottleneck(ch[-1], audio_dim)
        # up[j] goes from level depth-j to depth-j-1; the first film_levels are modulated.
        self.up = nn.ModuleList(
            UpBlock(ch[i + 1], ch[i], ch[i], audio_dim if j < self.config.film_levels else 0)
            for j, i in enumerate(reversed(range(self.config.depth)))
        )
        self.head = nn.Conv2d(ch[0], self.config.num_classes, 1)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def mouth_mask(self, source: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` mask of the area this model redraws in one-hot ``source``."""
        return mask_mouth_area(source, self.config.mouth_mask)[1]

    def forward(self, source: torch.Tensor, reference: torch.Tensor,
                mel: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        for name, t in (("source", source), ("reference", reference)):
            if t.ndim != 4 or tuple(t.shape[1:]) != (L.NUM_REGIONS, r, r):
                raise ValueError(f"TSG input '{name}' must be one-hot maps [B, {L.NUM_REGIONS}, "
                                 f"{r}, {r}] (this model's resolution), got {tuple(t.shape)}")
        check_mel_batch(mel, "mel")
        if not source.shape[0] == reference.shape[0] == mel.shape[0]:
            raise ValueError(f"TSG inputs disagree on batch size: source {source.shape[0]}, "
                             f"reference {reference.shape[0]}, mel {mel.shape[0]}")
        audio = self.audio_encoder(mel).flatten(1)  # [B, A]
        masked, mask = mask_mouth_area(source, self.config.mouth_mask)
        x = self.stem(torch.cat([masked, mask, reference], dim=1))
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        x = self.bottleneck(x, audio)
        for block in self.up:
            x = block(x, skips.pop(), audio)
        logits = self.head(x)
        assert logits.shape == source.shape, (logits.shape, source.shape)
        return logits


# ------------------------------------------------------------------------------------ inference

def _resize_labels(regions: torch.Tensor, size: int) -> torch.Tensor:
    """Integer maps ``[B, H, W]`` -> ``[B, size, size]`` by nearest (labels must not blend)."""
    if regions.shape[-1] == size and regions.shape[-2] == size:
        return regions
    out = F.interpolate(regions[:, None].float(), size=(size, size), mode="nearest-exact")
    return out[:, 0].long()


def _check_regions(array: Any, name: str, ndim: int, layout: str) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != ndim:
        what = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
                else type(array).__name__)
        raise ValueError(f"{name} must be a uint8 numpy array {layout} of 12-region labels, got "
                         f"{what}")
    if array.size and array.max() >= L.NUM_REGIONS:
        raise ValueError(f"{name} has labels up to {array.max()}, but 12-region maps use "
                         f"0..{L.NUM_REGIONS - 1}; merge 19-class maps with "
                         f"labels.merge_to_regions first")
    return array


def _model_on(model: nn.Module, device: torch.device) -> bool:
    p = next(model.parameters())
    return p.device.type == device.type and (device.index is None
                                             or p.device.index == device.index)


def predict_talking_segmentation(
    model: TSG,
    source_regions: np.ndarray,  # [T, S, S] uint8: pose source map of each output frame
    reference_regions: np.ndarray,  # [S, S] uint8: identity reference (another frame)
    mel_windows: np.ndarray,  # [T, 80, 16] float: Wav2Lip mel window of each frame
    batch_size: int | AdaptiveBatch,
    device: str | torch.device,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None = None,  # called (frames done, total) per batch
) -> np.ndarray:
    """Run TSG over a sequence -> ``[T, S, S]`` uint8 12-region maps.

    Maps are resized to the model's resolution by nearest neighbour; the logits come back to
    ``S`` bilinearly before the argmax (smoother contours than upsampling the labels).

    Composite: only the mouth area (as the model masks it, computed on each source map at ``S``)
    comes from the network; everything else is the source map pixel for pixel. The network
    never sees that area's content, so outside it the source is the better answer, and this
    keeps hair, eyes etc. exactly stable across frames and exact at ``S`` when ``S`` is larger
    than the model's resolution.

    The model must already be on ``device``; it computes in ``dtype`` (autocast, its weights are
    not cast) in eval mode and its previous mode is restored. ``batch_size``: an int, or an
    :class:`~segtalker_core.batching.AdaptiveBatch` shared by the calls of one run; either way an
    out-of-memory error halves the batch and retries (down to 1). Logits with NaN/inf raise
    :class:`~segtalker_core.precision.NonFiniteOutputError` naming the precision; they are upcast
    to float32 before the argmax (half-precision logits tie where float32 ones do not), as
    the BiSeNet parser does.
    """
    from ..transfer import to_device
    from .bundles import check_finite  # local: bundles imports this module lazily

    if not isinstance(model, TSG):
        raise TypeError(f"model must be a TSG, got {type(model).__name__}; load one with "
                        f"bundles.load_component(path, 'tsg', ...)")
    source_regions = _check_regions(source_regions, "source_regions", 3, "[T, S, S]")
    t, s, s2 = source_regions.shape
    if s != s2:
        raise ValueError(f"source_regions must be square maps [T, S, S], got {source_regions.shape}")
    reference_regions = _check_regions(reference_regions, "reference_regions", 2, "[S, S]")
    if reference_regions.shape != (s, s):
        raise ValueError(f"reference_regions must have the size of the source maps ({s}x{s}), got "
                         f"{reference_regions.shape}")
    mel_windows = np.asarray(mel_windows)
    if mel_windows.shape != (t, MEL_BINS, MEL_STEPS):
        raise ValueError(f"mel_windows must be [T, {MEL_BINS}, {MEL_STEPS}] with T = {t} (one "
                         f"window per source map), got {mel_windows.shape}")
    check_finite(mel_windows, "mel_windows")
    batch = batch_size if isinstance(batch_size, AdaptiveBatch) \
        else AdaptiveBatch(batch_size, "TSG") if isinstance(batch_size, int) and batch_size >= 1 \
        else None
    if batch is None:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    device = torch.device(device)
    if not _model_on(model, device):
        p = next(model.parameters())
        raise ValueError(f"the TSG is on {p.device}, but device={device} was asked for; move it "
                         f"first (LoadedModel.place or model.to(device))")
    out = np.empty((t, s, s), dtype=np.uint8)
    if t == 0:
        return out

    r = model.resolution
    # Maps go to the device as uint8 (pinned on CUDA) and become one-hot there; their labels
    # were checked on the host above (_check_regions), so onehot need not read them back.
    reference = to_device(reference_regions, device).long()[None]
    reference = onehot(_resize_labels(reference, r), checked=True)

    def step(start: int, stop: int) -> None:
        src_full = to_device(source_regions[start:stop], device).long()
        src = onehot(_resize_labels(src_full, r), checked=True)
        mel = to_device(np.asarray(mel_windows[start:stop], dtype=np.float32), device)[:, None]
        with precision.compute(device, dtype):
            logits = model(src, reference.expand(stop - start, -1, -1, -1), mel)
        bad, numel = precision.nonfinite_count(logits), logits.numel()  # bad: on the device
        logits = logits.float()
        if r != s:
            logits = F.interpolate(logits, size=(s, s), mode="bilinear", align_corners=False)
        predicted = logits.argmax(dim=1)
        keep = ~mouth_area_mask(src_full, model.config.mouth_mask)
        merged = torch.where(keep, src_full, predicted)
        out[start:stop] = merged.to("cpu", torch.uint8).numpy()
        # The copy above waited for the device; reading the count now costs no extra wait.
        precision.raise_nonfinite(int(bad), numel, "the TSG", dtype)
        if progress is not None:
            progress(stop, t)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            batch.run(t, step)
    finally:
        model.train(was_training)
    return out
