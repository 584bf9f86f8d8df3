"""The training loop shared by every stage (see :mod:`.stage` for what a stage provides).

``train(stage_name, config, data_root, run_dir, resume)`` runs one process's share of a run:
set up the process (and DDP under torchrun), build the stage, check the batch plan and the
dataset size, load the newest checkpoint on ``resume``, wrap the parts (channels-last, DDP,
``torch.compile``), then for each optimiser step: this process's micro-batches
(:class:`.distributed.GlobalBatchSampler`), ``stage.train_step``, and on rank 0 the log line,
TensorBoard scalars, validation metrics, sample grids and checkpoints at their intervals, with a
tqdm progress bar (ETA) on stderr. The last step always writes a checkpoint.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpointing, distributed
from .config import StageConfig, dump_yaml, to_mapping
from .run_log import RunLog
from .stage import (Batch, LRSchedule, Runtime, Stage, StepContext, TrainedPart,
                    load_stage_class)

log = logging.getLogger("segtalker.train")


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or already complete) run reports."""

    run_dir: Path
    step: int  # optimiser steps done in total
    start_step: int  # where this invocation started (the resumed checkpoint's step, or 0)
    steps_per_second: float  # of this invocation's steps (nan when none ran)
    samples_per_second: float
    checkpoint: Path | None


def dataset_hash_of(data_root: Path | None) -> str:
    if data_root is None:
        return "none"
    from .datasets import dataset_hash

    return dataset_hash(data_root)


def check_dataset_size(dataset: Any, split: str, batch_size: int, data_root: Path | None) -> int:
    """The number of samples, or a clear error when the split cannot fill one batch."""
    n = len(dataset)
    if n < batch_size:
        raise ValueError(
            f"the {split!r} split of dataset {data_root} has {n} samples, fewer than one batch "
            f"(loop.batch_size = {batch_size}); prepare more clips or set a smaller "
            f"loop.batch_size (e.g. --set loop.batch_size={max(1, n)})")
    return n


def to_device(batch: Mapping[str, Any], device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def wrap_parts(parts: Mapping[str, TrainedPart], runtime: Runtime, channels_last: bool,
               compile_modules: bool) -> dict[str, nn.Module]:
    """Channels-last memory format, DDP (several processes), torch.compile, per part."""
    wrapped = {}
    for name, part in parts.items():
        module = part.module
        if channels_last:
            module.to(memory_format=torch.channels_last)
        if runtime.world_size > 1:
            module = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=part.find_unused_parameters,
                broadcast_buffers=part.broadcast_buffers,
            )
        if compile_modules:
            module = torch.compile(module)
        wrapped[name] = module
    return wrapped


def checkpoint_payload(stage: Stage, parts: Mapping[str, TrainedPart], ctx: StepContext,
                       dataset_hash: str, runtime: Runtime) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "config": to_mapping(stage.config),
        "dataset_hash": dataset_hash,
        "world_size": runtime.world_size,
        "parts": {name: {"module": part.module.state_dict(),
                         "optimizer": part.optimizer.state_dict(),
                         "scaler": ctx.scalers[name].state_dict()}
                  for name, part in parts.items()},
        "extra": stage.extra_state(),
    }


def load_parts(stage: Stage, parts: Mapping[str, TrainedPart], payload: Mapping[str, Any],
               ctx: StepContext | None, where: Path) -> None:
    """Restore weights, optimisers, scalers and extra state from a checkpoint payload."""
    from ..checkpoints import load_state_dict_strict

    if payload.get("stage") != stage.name:
        raise ValueError(f"{where} is a checkpoint of the {payload.get('stage')!r} stage, not "
                         f"{stage.name!r}")
    saved = payload.get("parts", {})
    if set(saved) != set(parts):
        raise ValueError(f"{where} holds parts {sorted(saved)}, but stage {stage.name} trains "
                         f"{sorted(parts)}")
    for name, part in parts.items():
        load_state_dict_strict(part.module, saved[name]["module"], f"{name} from {where.name}")
        part.optimizer.load_state_dict(saved[name]["optimizer"])
        if ctx is not None:
            ctx.scalers[name].load_state_dict(saved[name]["scaler"])
    stage.load_extra_state(payload.get("extra", {}))


def _set_mode(parts: Mapping[str, TrainedPart], training: bool) -> None:
    for part in parts.values():
        part.module.train(training)


def _micro_batch_stream(dataset: Any, sampler: distributed.GlobalBatchSampler, num_workers: int,
                        device: torch.device) -> Iterator[Batch]:
    loader = torch.utils.data.DataLoader(distributed.EpochIndexed(dataset), batch_sampler=sampler, num_workers=num_workers,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=num_workers > 0)
    for batch in loader:
        yield to_device(batch, device)


def _fixed_batch(dataset: Any, size: int, device: torch.device) -> Batch:
    """The first ``size`` samples of ``dataset`` as one batch (samples and evaluation)."""
    items = [dataset[i] for i in range(min(size, len(dataset)))]
    return to_device(torch.utils.data.default_collate(items), device)


def _format_line(step: int, total: int, values: Mapping[str, float], rate: float,
                 eta_s: float) -> str:
    shown = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
    eta = time.strftime("%H:%M:%S", time.gmtime(eta_s)) if math.isfinite(eta_s) else "?"
    return f"step {step}/{total}  {shown}  {rate:.2f} steps/s  ETA {eta}"


def _fmt(v: float) -> str:
    return f"{v:.3e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"


def build_stage(stage_name: str, config: StageConfig, runtime: Runtime, data_root: Path | None,
                *, init_weights: bool = True, exporting: bool = False
                ) -> tuple[Stage, dict[str, TrainedPart]]:
    stage_cls = load_stage_class(stage_name)
    stage = stage_cls(config, runtime, data_root)
    stage.init_weights = init_weights
    stage.exporting = exporting
    parts = stage.build()
    if not parts:
        raise TypeError(f"stage {stage_name}.build() returned no trained part")
    return stage, parts


def train(stage_name: str, config: StageConfig, data_root: Path, run_dir: Path,
          resume: bool = False) -> TrainResult:
    """Train ``stage_name`` (this process's share under torchrun); see the module docstring."""
    loop = config.loop
    threads = torch.get_num_threads()
    if loop.cpu_threads:
        # Small CPU runs are much faster on one thread than on two contended ones.
        torch.set_num_threads(loop.cpu_threads)
    try:
        runtime = distributed.setup(loop.device, loop.precision)
        try:
            return _train(stage_name, config, Path(data_root), Path(run_dir), resume, runtime)
        finally:
            distributed.teardown()
    finally:
        torch.set_num_threads(threads)


def _train(stage_name: str, config: StageConfig, data_root: Path, run_dir: Path, resume: bool,
           runtime: Runtime) -> TrainResult:
    loop = config.loop
    plan = distributed.plan_batches(loop.batch_size, loop.micro_batch_size, runtime.world_size)
    found = checkpointing.newest(run_dir) if resume else None
    if not resume and checkpointing.list_checkpoints(run_dir):
        raise ValueError(f"run folder {run_dir} already has checkpoints; pass --resume to continue "
                         f"it, or give a new --run-dir")
    start = found.step if found else 0
    # Networks initialise alike on every rank (DDP would copy rank 0's anyway; EMA copies and
    # other unwrapped state then agree too); each rank then draws its own random numbers.
    distributed.seed_everything(loop.seed, 0, 0)
    stage, parts = build_stage(stage_name, config, runtime, data_root, init_weights=found is None)
    distributed.seed_everything(loop.seed, runtime.rank, start)
    train_set, val_set = stage.datasets()
    n_train = check_dataset_size(train_set, config.data.train_split, plan.batch_size, data_root)
    data_hash = dataset_hash_of(data_root)

    schedules = {name: LRSchedule.of(stage.optim_config(name), loop.steps) for name in parts}
    ctx = StepContext(runtime, parts, {}, plan.accumulation, loop.grad_clip, schedules=schedules)
    if found is not None:
        load_parts(stage, parts, found.payload, ctx, found.path)
        if found.payload.get("dataset_hash") not in (None, data_hash):
            log.warning("resuming %s on a different dataset (hash %s, the checkpoint's is %s)",
                        run_dir, data_hash, found.payload.get("dataset_hash"))
    ctx._wrapped = wrap_parts(parts, runtime, loop.channels_last, loop.compile)

    run_dir.mkdir(parents=True, exist_ok=True)
    report = RunLog(run_dir, start, runtime.is_main)
    if runtime.is_main:
        from ..atomic_files import write_bytes

        write_bytes(run_dir / "config.yaml", dump_yaml(config).encode(), what="run config")
        report.note(
            (f"resumed from {found.path.name} (step {start})" if found else
             ("no checkpoint yet: starting at step 0" if resume else "starting at step 0")) +
            f"; stage {stage_name}, {n_train} training samples, global batch {plan.batch_size} "
            f"= {runtime.world_size} process(es) x {plan.accumulation} x {plan.micro_batch_size}, "
            f"{runtime.device}, compute {str(runtime.dtype).replace('torch.', '')}")

    last_checkpoint = found.path if found else None
    if start >= loop.steps:
        report.note(f"nothing to do: the run is at step {start} of loop.steps = {loop.steps}")
        report.close()
        return TrainResult(run_dir, start, start, math.nan, math.nan, last_checkpoint)

    sampler = distributed.GlobalBatchSampler(n_train, plan, runtime.rank, loop.seed, start)
    stream = _micro_batch_stream(train_set, sampler, loop.num_workers, runtime.device)
    preview_set = val_set if val_set is not None and len(val_set) else train_set
    preview = _fixed_batch(preview_set, min(plan.micro_batch_size, 4), runtime.device) \
        if runtime.is_main else None

    bar = None
    if runtime.is_main and loop.progress:
        from tqdm import tqdm

        bar = tqdm(total=loop.steps, initial=start, desc=f"train {stage_name}", unit="step",
                   file=sys.stderr, dynamic_ncols=True)
        report.attach_progress(bar)

    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    window_t, window_steps = t0, 0
    step = start
    try:
        while step < loop.steps:
            micro = [next(stream) for _ in range(plan.accumulation)]
            _set_mode(parts, True)
            terms = stage.train_step(ctx, micro, step)
            step += 1
            window_steps += 1
            for k, v in terms.items():
                # Per key: some terms (a lazy R1) appear only on some steps.
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
            if bar is not None:
                bar.update(1)
            if step % loop.log_every == 0 or step == loop.steps:
                means = distributed.mean_over_processes(
                    {k: v / counts[k] for k, v in sums.items()}, runtime.device)
                now = time.perf_counter()
                rate = window_steps / max(now - window_t, 1e-9)
                lr = parts[next(iter(parts))].optimizer.param_groups[0]["lr"]
                values = {**means, "lr": lr, "steps_per_s": rate}
                report.scalars(step, values, _format_line(step, loop.steps, {**means, "lr": lr},
                                                          rate, (loop.steps - step) / rate))
                sums, counts, window_t, window_steps = {}, {}, now, 0
            if runtime.is_main and loop.eval_every and val_set is not None and len(val_set) \
                    and (step % loop.eval_every == 0 or step == loop.steps):
                metrics = _evaluate(stage, parts, ctx, val_set, plan.micro_batch_size,
                                    loop.eval_batches, runtime.device)
                if metrics:
                    report.scalars(step, {f"val/{k}": v for k, v in metrics.items()},
                                   f"step {step}/{loop.steps}  val  " + "  ".join(
                                       f"{k} {_fmt(v)}" for k, v in metrics.items()))
            if runtime.is_main and (step % loop.sample_every == 0 or step == loop.steps):
                _set_mode(parts, False)
                with torch.no_grad():
                    images = stage.samples(ctx, preview)
                report.images(step, images)
            if step % loop.checkpoint_every == 0 or step == loop.steps:
                if runtime.is_main:
                    last_checkpoint = checkpointing.save(
                        run_dir, step, checkpoint_payload(stage, parts, ctx, data_hash, runtime),
                        loop.keep_checkpoints)
                distributed.barrier()
    finally:
        if bar is not None:
            bar.close()
        report.close()
    elapsed = time.perf_counter() - t0
    done = step - start
    sps = done / elapsed if elapsed > 0 else math.nan
    return TrainResult(run_dir, step, start, sps, sps * plan.batch_size, last_checkpoint)


def _evaluate(stage: Stage, parts: Mapping[str, TrainedPart], ctx: StepContext, dataset: Any,
              micro: int, batches: int, device: torch.device) -> dict[str, float]:
    """Mean of ``stage.evaluate`` over the first ``batches`` micro-batches of ``dataset``."""
    n = min(len(dataset), micro * batches)
    chunks = [list(range(i, min(i + micro, n))) for i in range(0, n, micro)]
    loaded = [to_device(torch.utils.data.default_collate([dataset[j] for j in c]), device)
              for c in chunks]
    _set_mode(parts, False)
    with torch.no_grad():
        metrics = stage.evaluate(ctx, loaded)
    _set_mode(parts, True)
    return metrics


def export_run(run_dir: Path, out: Path) -> list[Path]:
    """Write the bundle(s) of a run's newest checkpoint (the stage's export weights: EMA where
    it keeps them) with provenance: steps, dataset hash, date, config."""
    from .config import from_mapping
    from .stage import Provenance

    run_dir = Path(run_dir)
    found = checkpointing.newest(run_dir)
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no training checkpoint (checkpoints/step-*.pt); "
                                f"train first (python -m segtalker_core train ...)")
    payload = found.payload
    stage_name = str(payload["stage"])
    stage_cls = load_stage_class(stage_name)
    config = from_mapping(stage_cls.config_class, payload["config"])
    runtime = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    # The weights come from the checkpoint: no --init-from bundle, no frozen critics needed.
    stage, parts = build_stage(stage_name, config, runtime, None, init_weights=False,
                               exporting=True)
    load_parts(stage, parts, payload, None, found.path)
    _set_mode(parts, False)
    provenance = Provenance(stage=stage_name, steps=found.step,
                            dataset_hash=str(payload.get("dataset_hash", "unknown")),
                            config=payload["config"])
    return stage.export(Path(out), provenance)
