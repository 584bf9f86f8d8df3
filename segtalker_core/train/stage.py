"""The interface a training stage implements, and the step context the loop hands it.

The loop (:mod:`.loop`) owns everything that is the same for every stage: processes and DDP,
data order and loaders, AMP, gradient accumulation, logging, samples, checkpoints, resume and
export. A stage owns its networks, losses and what its bundle is. Three stages exist:
``syncnet`` (:mod:`.syncnet_stage`), ``tsg`` (:mod:`.tsg_stage`) and ``sgi``
(:mod:`.sgi_stage`, imported lazily); :data:`STAGE_MODULES` maps each name to its module, which
defines one :class:`Stage` subclass named in its ``STAGE`` attribute.

How to implement a stage
------------------------

1. **Config.** Subclass :class:`.config.StageConfig` (a dataclass) with your sections, e.g.
   ``model: TSGConfig``, ``optim: OptimConfig``, ``loss: MyLossWeights`` (nested dataclasses;
   frozen model configs work) and set ``config_class`` on the stage. Every key is then settable
   from YAML and ``--set`` and unknown keys are refused. Presets live in
   ``presets/<preset>/<stage>.yaml`` (one file per preset and stage, so stage owners never edit
   each other's files). The model resolution is the *model's* field; datasets are read at it.

2. **__init__(config, runtime, data_root)** stores them; do no work. ``runtime`` is a
   :class:`Runtime` (device, compute dtype, rank, world size); ``data_root`` is the prepared
   dataset folder, or None when the loop only rebuilds the stage to export a checkpoint
   (then :meth:`Stage.datasets` is never called).

3. **build() -> dict[str, TrainedPart]**: create every network *on* ``runtime.device`` in
   float32 (weights are never stored in low precision; AMP casts per op), its optimiser, and
   whatever is not trained (a frozen SyncNet loaded with ``bundles.load_component``, EMA copies).
   Each :class:`TrainedPart` is one trained network with its own optimiser (and its own
   GradScaler under fp16): a GAN returns e.g. ``{"generator": ..., "discriminator": ...}``. When
   ``config.init_from`` is set and ``self.init_weights`` is true, load it here (use
   :func:`check_init_bundle` first: a bundle of the wrong component or resolution is an error
   naming both); the loop sets ``init_weights`` false on ``--resume`` and for export, and
   ``self.exporting`` true for export (then do not load frozen critics either: only the parts
   and EMA copies are needed). The loop then moves the parts to
   channels-last (``loop.channels_last``), wraps each in DDP (several processes) and
   ``torch.compile`` (``loop.compile``); only a part's ``forward`` goes through the wrappers,
   so when a step needs several methods of a network (encode + synthesise), give the part a small
   wrapper module whose ``forward`` does what the step needs.

4. **datasets() -> (train, val)**: map-style Datasets (:mod:`.datasets`); ``val`` may be None.
   Items must be deterministic functions of their index (the datasets take a seed), so one and
   several processes see the same samples.

5. **train_step(ctx, micro_batches, step) -> dict[str, float]**: one optimiser step of every
   part that trains at this step. ``micro_batches`` is this process's list of micro-batches
   (``len == ctx.accumulation``), already on the device; ``step`` is the 0-based index of the
   step being taken. With the :class:`StepContext`:

   * ``ctx.module(name)``: the wrapped network (DDP/compiled) to call for a forward whose loss
     trains ``name``; ``ctx.raw(name)``: the bare one, for no-grad use or as a frozen critic;
   * ``with ctx.autocast():`` around forwards (bf16/fp16 or nothing in fp32). Losses compute in
     float32 (``.float()``), as models/tsg_losses.py and train/gan_losses.py do;
   * ``with ctx.sync(name, i):`` around the forward of micro-batch ``i``: DDP's ``no_sync``
     except on the last micro-batch, so gradients are all-reduced once per step;
   * ``ctx.backward(name, loss / ctx.accumulation)`` (GradScaler under fp16);
   * ``ctx.step(name, step)``: lr schedule (warm-up, decay), unscale, clip (``loop.grad_clip``), optimiser step,
     scaler update, zero grads. Returns the gradient norm when clipping, else NaN.
   * ``ctx.accumulate(name, micro_batches, loss_fn, step)`` does all of that for the common
     case of one network and one loss: ``loss_fn(module, batch) -> (loss, {term: float})``.

   A GAN step (the SGI) runs two phases in one ``train_step``, each over all micro-batches::

       # D phase: G without grads (raw module), D through its DDP wrapper
       ctx.requires_grad("discriminator", True)
       for i, b in enumerate(micro_batches):
           with ctx.sync("discriminator", i), ctx.autocast():
               with torch.no_grad():
                   fake = ctx.raw("generator")(b)
               loss = discriminator_loss(ctx.module("discriminator")(b["image"]),
                                         ctx.module("discriminator")(fake))
           ctx.backward("discriminator", loss / ctx.accumulation)
       ctx.step("discriminator", step)
       # lazy R1 every 16 steps: its own forward/backward/step, float32 (gan_losses.r1_penalty),
       # weighted by the interval; use the DDP wrapper of D so its gradient is all-reduced
       if step % r1_interval == 0: ...same pattern with r1 loss..., ctx.step("discriminator", step)
       # G phase: D frozen and bare (ctx.raw: DDP must not wait for D's gradients)
       ctx.requires_grad("discriminator", False)
       for i, b in enumerate(micro_batches):
           with ctx.sync("generator", i), ctx.autocast():
               fake = ctx.module("generator")(b)
               loss = generator_loss(ctx.raw("discriminator")(fake)) + ...
           ctx.backward("generator", loss / ctx.accumulation)
       ctx.step("generator", step)
       ema.update(...)   # the stage's own EMA copy, after the G step

   Return float scalars for the log (loss terms, R1 when computed); the loop averages them
   over processes at log time. Draw randomness from ``torch`` (seeded per rank by the loop).

6. **evaluate(ctx, batches) -> dict[str, float]** (optional): metrics on val micro-batches
   (``torch.no_grad`` is already on; use EMA weights where the stage has them).
   **samples(ctx, batch) -> dict[str, np.ndarray]** (optional): named uint8 ``[H, W, 3]``
   images (a grid of a few samples); :mod:`.previews` colours label maps with the pack's palette
   and tiles rows. The loop writes them as PNG under ``RUN/samples/`` and to TensorBoard.

7. **extra_state() / load_extra_state(state)**: what a checkpoint must hold besides the parts
   (their weights, optimisers and scalers are saved by the loop): EMA copies' ``state_dict``,
   counters. Plain dicts, tensors, numbers and strings only (checkpoints load with
   ``weights_only=True``). Frozen networks loaded from bundles are not saved: the config names
   their file.

8. **export(path, provenance) -> list[Path]**: write the bundle(s) the nodes load, with
   :func:`segtalker_core.models.bundles.save_component` and ``extra=provenance.extra()``;
   export the EMA weights where the stage keeps them (the SGI's generator), else the trained
   ones. The loop has loaded the newest checkpoint into the parts and :meth:`load_extra_state`
   first. A stage writing several bundles (encoder + generator) derives the other names from
   ``path`` and returns every path written.

Interface changes after the first commit are additive and announced here:

* :func:`init_from_bundle` (load a checked bundle into a module built from the config).

* ``Stage.init_weights`` / ``Stage.exporting`` (see 3.), set by the loop before ``build()``.
* ``Stage.optim_config(part)``: which OptimConfig schedules a part's lr (``optim.warmup_steps``,
  ``optim.decay`` = none/cosine, ``optim.min_lr_fraction``); default ``config.optim``. A GAN
  returns its D's section for the discriminator. ``ctx.step`` applies it (:class:`LRSchedule`).
* Datasets may define ``set_epoch(epoch)``: the loop calls it (in DataLoader workers too)
  before each item of that epoch (:class:`.distributed.EpochIndexed`).
"""
from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .. import precision as _precision
from .config import StageConfig

# Stage name -> module (relative to this package) defining it; "sgi" is imported only when used.
STAGE_MODULES: Mapping[str, str] = {
    "syncnet": ".syncnet_stage",
    "tsg": ".tsg_stage",
    "sgi": ".sgi_stage",
}

Batch = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------ runtime

@dataclass(frozen=True)
class Runtime:
    """Where and how this process trains (given by the loop)."""

    device: torch.device
    dtype: torch.dtype  # compute precision (autocast); weights stay float32
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainedPart:
    """One network a stage trains, with its optimiser.

    ``module``: float32, on the runtime's device. ``find_unused_parameters``: for DDP, when some
    parameters get no gradient in a step (avoid: it costs a graph walk). ``broadcast_buffers``:
    DDP copies rank 0's buffers (BatchNorm statistics) to the others at each forward; StyleGAN2
    discriminators turn it off.
    """

    module: nn.Module
    optimizer: torch.optim.Optimizer
    find_unused_parameters: bool = False
    broadcast_buffers: bool = True
    base_lrs: list[float] = field(default_factory=list)  # filled by the loop (warm-up)


@dataclass(frozen=True)
class Provenance:
    """What an exported bundle records about its training (``extra["training"]``)."""

    stage: str
    steps: int
    dataset_hash: str
    config: Mapping[str, Any]
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc)
                      .strftime("%Y-%m-%dT%H:%M:%SZ"))

    def extra(self) -> dict[str, Any]:
        return {"training": {"stage": self.stage, "steps": self.steps,
                             "dataset_hash": self.dataset_hash, "date": self.date,
                             "config": dict(self.config)}}


# ------------------------------------------------------------------------------------ context

@dataclass(frozen=True)
class LRSchedule:
    """Learning-rate factor per step: linear warm-up, then constant or cosine decay."""

    warmup_steps: int = 0
    decay: str = "none"  # "none" or "cosine"
    total_steps: int = 0  # where the cosine ends (loop.steps)
    min_fraction: float = 0.0

    @classmethod
    def of(cls, optim: Any, total_steps: int) -> "LRSchedule":
        """From an :class:`.config.OptimConfig` (None: constant)."""
        if optim is None:
            return cls()
        return cls(int(optim.warmup_steps), str(optim.decay), int(total_steps),
                   float(optim.min_lr_fraction))

    def factor(self, step: int) -> float:
        f = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.decay == "cosine" and self.total_steps > self.warmup_steps:
            t = min(1.0, max(0.0, (step - self.warmup_steps) / (self.total_steps -
                                                                self.warmup_steps)))
            f *= self.min_fraction + (1 - self.min_fraction) * 0.5 * (1 + math.cos(math.pi * t))
        return f


class StepContext:
    """What a stage's ``train_step`` uses (see the module docstring). Built by the loop."""

    def __init__(self, runtime: Runtime, parts: Mapping[str, TrainedPart],
                 wrapped: Mapping[str, nn.Module], accumulation: int, grad_clip: float = 0.0,
                 warmup_steps: Mapping[str, int] | None = None,
                 schedules: Mapping[str, LRSchedule] | None = None) -> None:
        self.runtime = runtime
        self.parts = dict(parts)
        self._wrapped = dict(wrapped)
        self.accumulation = int(accumulation)
        self.grad_clip = float(grad_clip)
        self._schedules = {name: LRSchedule(warmup_steps=int(n))
                           for name, n in (warmup_steps or {}).items()}
        self._schedules.update(schedules or {})
        use_scaler = runtime.dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler(runtime.device.type, enabled=use_scaler)
                        for name in self.parts}
        for part in self.parts.values():
            if not part.base_lrs:
                part.base_lrs = [g["lr"] for g in part.optimizer.param_groups]

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def _part(self, name: str) -> TrainedPart:
        if name not in self.parts:
            raise KeyError(f"no trained part {name!r}; this stage has {sorted(self.parts)}")
        return self.parts[name]

    def module(self, name: str) -> nn.Module:
        """The wrapped (DDP / compiled) network: call it for forwards that train ``name``."""
        self._part(name)
        return self._wrapped.get(name, self.parts[name].module)

    def raw(self, name: str) -> nn.Module:
        """The bare network (no DDP): for no-grad forwards and as a frozen critic."""
        return self._part(name).module

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return _precision.compute(self.device, self.runtime.dtype)

    @contextlib.contextmanager
    def sync(self, name: str, micro_index: int) -> Iterator[None]:
        """DDP gradient sync only on the last micro-batch (wrap the forward, and the backward)."""
        wrapped = self.module(name)
        last = micro_index >= self.accumulation - 1
        no_sync = getattr(wrapped, "no_sync", None)
        if last or no_sync is None:
            yield
        else:
            with no_sync():
                yield

    def requires_grad(self, name: str, flag: bool) -> None:
        for p in self.raw(name).parameters():
            p.requires_grad_(flag)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        if loss.ndim != 0:
            raise ValueError(f"backward of part {name!r} needs a scalar loss, got shape "
                             f"{tuple(loss.shape)}")
        self.scalers[name].scale(loss).backward()

    def step(self, name: str, step: int) -> float:
        """Learning-rate schedule, unscale, clip, optimiser step, scaler update, zero grads ->
        grad norm (NaN when not clipping)."""
        part = self._part(name)
        scaler = self.scalers[name]
        schedule = self._schedules.get(name)
        factor = schedule.factor(step) if schedule is not None else 1.0
        for group, base in zip(part.optimizer.param_groups, part.base_lrs):
            group["lr"] = base * factor
        norm = math.nan
        if self.grad_clip > 0:
            scaler.unscale_(part.optimizer)
            params = [p for g in part.optimizer.param_groups for p in g["params"]
                      if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        scaler.step(part.optimizer)
        scaler.update()
        part.optimizer.zero_grad(set_to_none=True)
        return norm

    def accumulate(self, name: str, micro_batches: Sequence[Batch],
                   loss_fn: Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]],
                   step: int) -> dict[str, float]:
        """One optimiser step of one network: forward/backward of every micro-batch (loss
        averaged over them), then :meth:`step`. Returns the terms averaged over micro-batches."""
        if len(micro_batches) != self.accumulation:
            raise ValueError(f"expected {self.accumulation} micro-batches, got {len(micro_batches)}")
        totals: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            with self.sync(name, i):
                with self.autocast():
                    loss, terms = loss_fn(self.module(name), batch)
                self.backward(name, loss / self.accumulation)
            terms = {"loss": float(loss.detach()), **terms}
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + float(v) / self.accumulation
        norm = self.step(name, step)
        if not math.isnan(norm):
            totals["grad_norm"] = norm
        return totals


# ------------------------------------------------------------------------------------ stage

class Stage(abc.ABC):
    """A training stage (see the module docstring for the contract)."""

    name: ClassVar[str]
    config_class: ClassVar[type[StageConfig]]
    # Components of the bundles export writes (for messages and --init-from checks).
    components: ClassVar[tuple[str, ...]]

    def __init__(self, config: StageConfig, runtime: Runtime, data_root: Path | None) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"stage {self.name} takes a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        self.config = config
        self.runtime = runtime
        self.data_root = data_root
        # Set by the loop before build(): load config.init_from only when init_weights (not on
        # --resume, not for export); when exporting, skip frozen critics and datasets too.
        self.init_weights = True
        self.exporting = False

    @property
    def resolution(self) -> int:
        """The resolution the stage trains at (the model's)."""
        return int(self.config.model.resolution)  # type: ignore[attr-defined]

    @abc.abstractmethod
    def build(self) -> dict[str, TrainedPart]:
        """Networks on ``runtime.device`` (float32), optimisers, frozen helpers, EMA copies."""

    @abc.abstractmethod
    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """``(train, val)`` map-style datasets read at :attr:`resolution`."""

    def train_and_val(self, dataset: Callable[[str], torch.utils.data.Dataset]
                      ) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """``(dataset(train split), dataset(val split))``; the validation set only when the loop
        evaluates, and None with a warning when the split has no samples (a small personal set
        may have none: training goes on)."""
        val = None
        if self.config.loop.eval_every:
            try:
                val = dataset(self.config.data.val_split)
            except ValueError as exc:
                import logging

                logging.getLogger("segtalker.train").warning("no validation samples: %s", exc)
        return dataset(self.config.data.train_split), val

    @abc.abstractmethod
    def train_step(self, ctx: StepContext, micro_batches: list[Batch], step: int
                   ) -> dict[str, float]:
        """One optimiser step (all micro-batches of this process) -> float terms for the log."""

    def optim_config(self, part: str) -> Any:
        """The :class:`.config.OptimConfig` whose schedule (warm-up, decay) drives ``part``'s
        learning rate; default: ``config.optim`` for every part (None: constant)."""
        return getattr(self.config, "optim", None)

    def evaluate(self, ctx: StepContext, batches: list[Batch]) -> dict[str, float]:
        """Validation metrics (no grad, eval mode); default: none."""
        return {}

    def samples(self, ctx: StepContext, batch: Batch) -> dict[str, np.ndarray]:
        """Named uint8 ``[H, W, 3]`` preview images; default: none."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Checkpointed state beyond the parts (EMA copies, counters)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"stage {self.name} keeps no extra state, but the checkpoint has "
                             f"{sorted(state)}")

    @abc.abstractmethod
    def export(self, path: Path, provenance: Provenance) -> list[Path]:
        """Write the bundle(s) the nodes load (EMA weights where kept) -> paths written."""


# ------------------------------------------------------------------------------------ helpers

def check_init_bundle(path: str | os.PathLike[str], component: str, resolution: int | None,
                      stage: str, option: str = "--init-from") -> None:
    """Refuse a bundle given to start from (``option``: ``--init-from``, or a stage's own key
    such as ``init_discriminator``) of another component or resolution, naming both.
    ``resolution`` None: any resolution fits."""
    from .. import checkpoints as ck

    p = Path(path)
    title = ck.COMPONENTS.get(component, component)
    if not p.is_file():
        raise FileNotFoundError(f"{option} {str(p)!r} does not exist; give the {title} bundle "
                                f"(.safetensors) to start the {stage} stage from")
    config = ck.read_config(p)
    if config.inferred:
        raise ValueError(f"{option} {p.name} has no SegTalker config (it looks like "
                         f"{config.description}); convert it first (python -m segtalker_core "
                         f"convert) so its component and resolution are known")
    if config.component != component:
        wanted = (f"the {stage} stage trains a {title}" if option == "--init-from"
                  else f"{option} takes a {title} bundle")
        raise ValueError(f"{option} {p.name} is a {config.component_name} bundle, but {wanted}; "
                         f"give a {component} bundle")
    if None not in (config.resolution, resolution) and config.resolution != resolution:
        raise ValueError(f"{option} {p.name} is a {config.resolution} px "
                         f"{config.component_name}, but this {stage} run trains at {resolution} px "
                         f"(model.resolution); use a {resolution} px bundle or set "
                         f"model.resolution={config.resolution}")


def load_stage_class(name: str) -> type[Stage]:
    """The :class:`Stage` subclass of stage ``name`` (its module imported now)."""
    import importlib

    if name not in STAGE_MODULES:
        raise ValueError(f"unknown training stage {name!r}; stages: {', '.join(STAGE_MODULES)}")
    module_name = STAGE_MODULES[name]
    try:
        module = importlib.import_module(module_name, __package__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(module_name.lstrip(".")):
            raise ValueError(f"training stage {name!r} is not available in this version "
                             f"(segtalker_core/train/{module_name.lstrip('.')}.py is missing)"
                             ) from None
        raise
    stage_cls = getattr(module, "STAGE", None)
    if not (isinstance(stage_cls, type) and issubclass(stage_cls, Stage)):
        raise TypeError(f"{module.__name__} must define STAGE = <its Stage subclass>")
    return stage_cls


def init_from_bundle(module: nn.Module, path: str | os.PathLike[str], component: str,
                     resolution: int, stage: str) -> None:
    """Copy a bundle's weights into ``module`` (built from the run's config), after
    :func:`check_init_bundle`; a bundle of another architecture is an error naming the fields
    that differ."""
    import dataclasses

    from ..models import bundles

    check_init_bundle(path, component, resolution, stage)
    loaded, _ = bundles.load_component(path, component)
    ours, theirs = module.config, loaded.config
    if ours != theirs:
        differ = [f.name for f in dataclasses.fields(ours)
                  if getattr(ours, f.name) != getattr(theirs, f.name)]
        raise ValueError(f"--init-from {Path(path).name} has another {component} architecture "
                         f"than this run's config (model.{', model.'.join(differ)} differ); set "
                         f"those keys to the bundle's values or use another bundle")
    with torch.no_grad():
        module.load_state_dict(loaded.state_dict())
