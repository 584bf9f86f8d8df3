"""Training speed per stage and preset: steps/s, samples/s, FLOPs per step.

    python benchmarks/train.py                          # CPU: the tiny presets (+ CUDA rows when present)
    python benchmarks/train.py --presets tiny 256 --batch-size 2 --steps 2
    python benchmarks/train.py --device cuda --precision bf16 --presets 256 512
    python benchmarks/train.py --flops --presets tiny 256 512   # FLOPs and GPU-hour estimates only

Each row builds the stage from its preset and times optimiser steps on synthetic batches of the
stage's dataset contract (``segtalker_core/train/step_bench.py``: no data loading, so this is
the network's cost alone), one micro-batch per step, after a warm-up step. ``flops/step`` is
forward + backward as torch's ``FlopCounterMode`` counts them (convolutions and matmuls), and
``TFLOP/s`` what the step achieved. Rows of stages that are not installed (``sgi`` before its
module exists) say so. CPU rows use ``--threads`` torch threads (default 1: stable numbers
on a shared machine).

``--flops`` times nothing: it counts one optimiser step of each preset *at the preset's
``loop.batch_size``* on torch's ``meta`` device (shapes only, no arithmetic, so a 512 SGI step
costs seconds, not the minutes a CPU step takes) and prints FLOPs per step, the preset's
``loop.steps``, the total, and GPU hours at the assumed throughputs of :data:`GPUS` and
:data:`MFU`::

    GPU hours = FLOPs/step x loop.steps / (peak FLOP/s x MFU) / 3600

For the SGI the step with the lazy R1 penalty (every ``loss.r1_interval`` steps) is counted too
and averaged in. On the tiny presets the meta count equals the CPU count of
``step_bench.count_step_flops`` exactly (checked when this was written). The GPU-hour table in
TRAINING.md comes from this mode; measured CUDA step times replace it where a GPU row exists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("syncnet", "tsg", "sgi")
# Dense bf16 tensor-core peaks (vendor data sheets, FLOP/s) and the assumed model FLOP
# utilisation: convolutional nets of 32-512 channels with GAN/R1 steps rarely sustain more.
GPUS = {"A100": 312e12, "H100 SXM": 989e12}
MFU = 0.35


class _MetaFlopCount:
    """FLOPs of everything run inside it on ``meta`` tensors (torch's flop registry: convolutions,
    matmuls, forward and backward). Reading a meta tensor's value (``float(loss)``, a finiteness
    check) yields 1: nothing is computed, so the count follows from the shapes alone. Autocast
    has no ``meta`` device type, so ``torch.autocast("meta", ...)`` becomes a disabled CPU one
    while counting (the counted precision is float32; FLOPs do not depend on it)."""

    def __init__(self) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is torch.ops.aten._local_scalar_dense.default:
                    return 1.0 if args[0].is_floating_point() else 1
                out = func(*args, **kwargs)
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    counter.total += int(count(*args, **kwargs, out_val=out))
                return out

        self.total = 0
        self._mode = Mode()
        self._autocast = torch.autocast

    def __enter__(self) -> "_MetaFlopCount":
        import torch

        real = self._autocast

        def autocast(device_type, *args, **kwargs):
            if device_type == "meta":
                return real("cpu", enabled=False)
            return real(device_type, *args, **kwargs)

        torch.autocast = autocast
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self._mode.__exit__(*exc)
        torch.autocast = self._autocast


def meta_step_flops(stage: str, preset: str, steps: tuple[int, ...] = (1,),
                    batch_size: int | None = None) -> tuple[int, dict[int, float]]:
    """``(batch, {step: FLOPs})``: FLOPs of the optimiser step ``step`` (the index decides lazy
    regularisation) of ``stage``/``preset`` at ``batch_size`` (default: ``loop.batch_size``,
    counted as one micro-batch: convolution FLOPs are linear in the samples), on ``meta``."""
    import tempfile
    from dataclasses import replace

    import torch

    from segtalker_core.train.config import load_stage_config
    from segtalker_core.train.stage import Runtime, StepContext, load_stage_class
    from segtalker_core.train.step_bench import synthetic_batch, with_random_syncnet

    stage_cls = load_stage_class(stage)
    config = load_stage_config(stage_cls.config_class, stage, preset)
    batch = int(batch_size or config.loop.batch_size)
    meta = torch.device("meta")
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(with_random_syncnet(config, Path(tmp)), init_from="")
        instance = stage_cls(config, Runtime(device=meta, dtype=torch.float32), None)
        # No weight initialisation that needs values (the SGI's mean latent samples on the device).
        instance.init_weights = False
        parts = instance.build()
    # Autocast and GradScaler know no meta device: the step context runs as a float32 CPU one.
    ctx = StepContext(Runtime(device=torch.device("cpu"), dtype=torch.float32), parts, {},
                      accumulation=1)
    for part in parts.values():
        part.module.train()
    micro = [synthetic_batch(stage, config, batch, meta, torch.Generator().manual_seed(0))]
    out = {}
    for step in steps:
        with _MetaFlopCount() as counter:
            instance.train_step(ctx, micro, step)
        out[step] = float(counter.total)
    return batch, out


def flops_table(stages: list[str], presets: list[str]) -> None:
    """Rows of FLOPs per step, total FLOPs and GPU-hour estimates (see the module docstring)."""
    from segtalker_core.train.config import load_stage_config
    from segtalker_core.train.stage import load_stage_class

    gpus = "".join(f" {f'h {name}':>11}" for name in GPUS)
    header = (f"{'stage':8} {'preset':8} {'batch':>5} {'GFLOP/sample':>12} {'TFLOP/step':>10} "
              f"{'steps':>8} {'EFLOP':>8}{gpus}")
    print(f"GPU hours at {MFU:.0%} of the dense bf16 peak ("
          + ", ".join(f"{n} {p / 1e12:.0f} TFLOP/s" for n, p in GPUS.items()) + ")")
    print(header)
    print("-" * len(header))
    for stage in stages:
        for preset in presets:
            stage_cls = load_stage_class(stage)
            try:
                config = load_stage_config(stage_cls.config_class, stage, preset)
            except (ValueError, FileNotFoundError) as exc:
                print(f"{stage:8} {preset:8} -- {str(exc).splitlines()[0]}")
                continue
            interval = 0
            if stage == "sgi" and config.loss.r1_gamma > 0:
                interval = int(config.loss.r1_interval)
            # Step 1 is a plain step; step 0 also runs the lazy R1 (due when step % interval == 0).
            batch, per_step = meta_step_flops(stage, preset, (1, 0) if interval else (1,))
            flops = per_step[1]
            if interval:
                flops = ((interval - 1) * per_step[1] + per_step[0]) / interval
            total = flops * config.loop.steps
            hours = "".join(f" {total / (peak * MFU) / 3600:11.2f}" for peak in GPUS.values())
            print(f"{stage:8} {preset:8} {batch:5d} {flops / batch / 1e9:12.2f} "
                  f"{flops / 1e12:10.3f} {config.loop.steps:8d} {total / 1e18:8.3f}{hours}",
                  flush=True)


def main(argv: list[str] | None = None) -> int:
    import torch

    from segtalker_core import precision
    from segtalker_core.train.step_bench import time_steps

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--presets", nargs="+", default=["tiny"])
    p.add_argument("--device", default=None, help="cpu, cuda (default: cpu, plus cuda when present)")
    p.add_argument("--precision", default="auto", choices=precision.PRECISIONS)
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per step (default: the preset's loop.batch_size)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (best is shown)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="1 step of the tiny preset: only shows that it runs")
    p.add_argument("--flops", action="store_true",
                   help="count FLOPs per step at each preset's batch on the meta device and print "
                        "GPU-hour estimates (no timing)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 1
    torch.set_num_threads(args.threads)
    if args.flops:
        flops_table(args.stages, args.presets)
        return 0

    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    header = (f"{'stage':8} {'preset':8} {'device':7} {'prec':5} {'batch':>5} {'steps/s':>9} "
              f"{'samples/s':>10} {'GFLOP/step':>11} {'TFLOP/s':>8}")
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        recommended = torch.bfloat16 if device.type == "cuda" else None
        dtype = precision.resolve(args.precision, device, recommended=recommended)
        for stage in args.stages:
            for preset in args.presets:
                try:
                    t = time_steps(stage, preset, device, dtype, batch_size=args.batch_size,
                                   steps=args.steps)
                except (ValueError, FileNotFoundError) as exc:
                    print(f"{stage:8} {preset:8} {device_name:7} -- {str(exc).splitlines()[0]}")
                    continue
                tflops = t.flops_per_step / t.seconds_per_step / 1e12
                print(f"{stage:8} {preset:8} {device_name:7} {t.precision:5} {t.batch_size:5d} "
                      f"{t.steps_per_second:9.3f} {t.samples_per_second:10.2f} "
                      f"{t.flops_per_step / 1e9:11.2f} {tflops:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
