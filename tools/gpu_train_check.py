"""One training step of every stage in bf16 on a GPU (a few minutes at most), for when one is at hand.

    python tools/gpu_train_check.py                   # 256 presets, batch 4, cuda
    python tools/gpu_train_check.py --presets 256 512 --batch-size 2 --precision fp16
    python tools/gpu_train_check.py --device cpu --presets tiny --precision bf16 \
        --set loop.channels_last=true                 # a dry run of the checks on a CPU

For each stage (syncnet, tsg, sgi) and preset it builds the stage on ``cuda`` (channels-last
as the presets set it), runs one warm-up step and two timed optimiser steps on synthetic batches
of the stage's dataset contract (``segtalker_core/train/step_bench.py``) under autocast, and
checks what a broken mixed-precision path would show: every loss term finite, every trained
weight still finite and float32, and the weights moved. It prints one line per row (step time,
peak GPU memory) and exits 1 if any row failed. fp16 runs go through the GradScaler path: a
step whose gradients overflow is skipped by the scaler (its scale halves; normal in the first
steps from the initial scale 65536), so fp16 rows run up to :data:`MAX_FP16_STEPS` steps until
every network has taken one, accept a non-finite grad norm on skipped steps, and report how
many were skipped.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("syncnet", "tsg", "sgi")
STEPS = 3  # one warm-up + two timed
MAX_FP16_STEPS = 12  # the scaler's scale 65536 may halve a few times before a step is taken


def check_row(stage: str, preset: str, device, dtype, batch_size: int,
              overrides: list[str] | None = None) -> str:
    import tempfile
    from dataclasses import replace

    import torch

    from segtalker_core.train.config import load_stage_config
    from segtalker_core.train.loop import wrap_parts
    from segtalker_core.train.stage import Runtime, StepContext, load_stage_class
    from segtalker_core.train.step_bench import synthetic_batch, with_random_syncnet

    stage_cls = load_stage_class(stage)
    config = load_stage_config(stage_cls.config_class, stage, preset, list(overrides or ()))
    runtime = Runtime(device=device, dtype=dtype)
    cuda = device.type == "cuda"
    fp16 = dtype == torch.float16
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(with_random_syncnet(config, Path(tmp)), init_from="")
        instance = stage_cls(config, runtime, None)
        parts = instance.build()
    # As the loop does it: channels-last (and no DDP/compile here), then the step context.
    wrapped = wrap_parts(parts, runtime, config.loop.channels_last, compile_modules=False)
    ctx = StepContext(runtime, parts, wrapped, accumulation=1, grad_clip=1.0)
    for part in parts.values():
        part.module.train()
    before = {name: [p.detach().clone() for p in part.module.parameters()]
              for name, part in parts.items()}
    g = torch.Generator().manual_seed(0)
    batch = [synthetic_batch(stage, config, batch_size, device, g)]

    def moved(name: str) -> bool:
        return any(not torch.equal(p, p0)
                   for p, p0 in zip(parts[name].module.parameters(), before[name]))

    times, skipped, step = [], 0, 0
    while True:
        scales = {name: s.get_scale() for name, s in ctx.scalers.items()} if fp16 else {}
        if cuda:
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        terms = instance.train_step(ctx, batch, step)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
        # A scale that fell: the scaler found inf/NaN gradients and skipped that optimiser step
        # (its grad norm is then inf too, by design).
        skipped += sum(ctx.scalers[name].get_scale() < scale for name, scale in scales.items())
        bad = {k: v for k, v in terms.items() if not math.isfinite(float(v))
               and not (fp16 and k.endswith("grad_norm"))}
        if bad:
            raise RuntimeError(f"non-finite loss terms at step {step}: {bad}")
        step += 1
        if step >= STEPS and (not fp16 or all(moved(n) for n in parts) or step >= MAX_FP16_STEPS):
            break
    for name, part in parts.items():
        for p in part.module.parameters():
            if p.dtype != torch.float32:
                raise RuntimeError(f"{name}: a weight is stored as {p.dtype} (must stay float32)")
            if not torch.isfinite(p).all():
                raise RuntimeError(f"{name}: a weight became NaN/inf")
        if not moved(name):
            raise RuntimeError(f"{name}: no weight changed in {step} steps"
                               + (f" ({skipped} optimiser steps skipped by the GradScaler)"
                                  if fp16 else ""))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if cuda else math.nan
    layout = "channels-last" if config.loop.channels_last else "contiguous"
    scaler = (f", {skipped} optimiser step(s) skipped by the GradScaler in {step} steps"
              if fp16 else "")
    return (f"ok   {stage:8} {preset:6} batch {batch_size} {layout}: "
            f"{min(times[1:]) * 1e3:8.1f} ms/step, peak {peak:5.1f} GiB{scaler}, loss terms " +
            ", ".join(f"{k} {float(v):.3g}" for k, v in terms.items()))


def main(argv: list[str] | None = None) -> int:
    import torch

    from segtalker_core import precision

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--presets", nargs="+", default=["256"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--device", default="cuda", help="cuda (cpu: a dry run of the checks, e.g. "
                   "with --presets tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every row, as in train --set (repeatable)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: this check is for a machine with a GPU")
        return 1
    dtype = precision.resolve(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {precision.name(dtype)}")
    failed = 0
    for stage in args.stages:
        for preset in args.presets:
            try:
                print(check_row(stage, preset, device, dtype, args.batch_size, args.overrides),
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next row
                failed += 1
                print(f"FAIL {stage:8} {preset:6}: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=3)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
