"""Training steps on synthetic batches: what ``benchmarks/train.py`` times and
``tools/gpu_train_check.py`` runs on a GPU, with no dataset.

Batches follow the dataset contract of each stage (:mod:`.datasets`): ``syncnet`` the items of
``SyncWindowDataset``, ``tsg`` of ``TalkingSegDataset``, ``sgi`` of ``FaceImageDataset``, with
random values of the right shapes and dtypes (label maps drawn per pixel: a worst case for
nothing, the networks' cost does not depend on the values). Frozen critics a stage needs (the
TSG's Seg-SyncNet) are random bundles written to a temporary folder.
"""
from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import labels as L
from .config import StageConfig, load_stage_config
from .stage import Batch, Runtime, StepContext, load_stage_class


def synthetic_batch(stage: str, config: StageConfig, batch_size: int, device: torch.device,
                    generator: torch.Generator) -> Batch:
    """One micro-batch of ``stage``'s dataset items (random values, contract shapes)."""
    s = int(getattr(config.model, "resolution", 0) or getattr(config.model, "size", 0)) \
        if hasattr(config, "model") else 0
    f = config.data.num_frames
    g = generator

    def maps(*shape):
        return torch.randint(0, L.NUM_REGIONS, shape, generator=g)

    def mel(*shape):
        return torch.rand(*shape, generator=g) * 8 - 4

    if stage == "syncnet":
        out = {"mel": mel(batch_size, 1, 80, 16), "maps": maps(batch_size, f, s, s),
               "label": (torch.rand(batch_size, generator=g) < 0.5).float()}
    elif stage == "tsg":
        out = {"mel": mel(batch_size, 1, 80, 16), "target": maps(batch_size, s, s),
               "reference": maps(batch_size, s, s), "mel_window": mel(batch_size, f, 1, 80, 16),
               "target_window": maps(batch_size, f, s, s)}
    elif stage == "sgi":
        out = {"image": torch.rand(batch_size, 3, s, s, generator=g) * 2 - 1,
               "regions": maps(batch_size, s, s)}
    else:
        raise ValueError(f"no synthetic batches for stage {stage!r}")
    return {k: v.to(device) for k, v in out.items()}


@dataclass(frozen=True)
class StepTiming:
    stage: str
    preset: str
    device: str
    precision: str
    batch_size: int  # samples per optimiser step
    steps: int  # timed steps (after the warm-up)
    seconds_per_step: float  # best of the timed steps
    flops_per_step: float  # forward + backward, counted by torch's FlopCounterMode (nan: none)

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.seconds_per_step

    @property
    def samples_per_second(self) -> float:
        return self.batch_size / self.seconds_per_step


def with_random_syncnet(config: StageConfig, folder: Path) -> StageConfig:
    """The TSG's sync critic as a random bundle (shapes matter here, not what it learned)."""
    from ..models.bundles import save_component
    from ..models.syncnet import SegSyncNet, SyncNetConfig

    if getattr(config, "syncnet", None) is None or not getattr(config.loss, "sync", 0):
        return config
    sync_config = SyncNetConfig(resolution=max(16, min(256, config.model.resolution // 2)),
                                num_frames=config.data.num_frames)
    path = folder / "syncnet.safetensors"
    save_component(path, SegSyncNet(sync_config), sync_config)
    return replace(config, syncnet=str(path), loss=replace(config.loss, sync_start_step=0))


def time_steps(stage: str, preset: str, device: torch.device, dtype: torch.dtype,
               batch_size: int | None = None, steps: int = 3, warmup: int = 1,
               count_flops: bool = True, overrides: Sequence[str] = ()) -> StepTiming:
    """Build ``stage`` from ``preset`` on ``device`` and time optimiser steps of ``batch_size``
    samples (default: the preset's ``loop.batch_size``) in one micro-batch."""
    stage_cls = load_stage_class(stage)
    config = load_stage_config(stage_cls.config_class, stage, preset, list(overrides))
    batch = int(batch_size or config.loop.batch_size)
    runtime = Runtime(device=device, dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        config = with_random_syncnet(config, Path(tmp))
        config = replace(config, init_from="")
        torch.manual_seed(0)
        instance = stage_cls(config, runtime, None)
        parts = instance.build()
    ctx = StepContext(runtime, parts, {}, accumulation=1)
    g = torch.Generator().manual_seed(0)
    micro = [synthetic_batch(stage, config, batch, device, g)]
    for part in parts.values():
        part.module.train()
    for i in range(warmup):
        instance.train_step(ctx, micro, i)
    flops = count_step_flops(instance, ctx, micro, warmup) if count_flops else math.nan
    best = math.inf
    for i in range(steps):
        _sync(device)
        t = time.perf_counter()
        instance.train_step(ctx, micro, warmup + 1 + i)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    from .. import precision

    return StepTiming(stage, preset, str(device), precision.name(dtype), batch, steps, best, flops)


class _FlopCount(TorchDispatchMode):
    """Counts FLOPs of every op torch's flop registry knows (convolutions, matmuls, attention,
    forward and backward). Unlike ``FlopCounterMode`` it keeps no per-module breakdown, whose
    hooks fail on some autograd patterns (leaves that require grad inside ``no_grad``)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += int(count(*args, **kwargs, out_val=out))
        return out


def count_step_flops(instance, ctx: StepContext, micro: list[Batch], step: int) -> float:
    """FLOPs of one ``train_step`` (it is run, so the weights move once)."""
    counter = _FlopCount()
    with counter:
        instance.train_step(ctx, micro, step)
    return float(counter.total)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
