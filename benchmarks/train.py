"""Training speed per stage and preset: steps/s, samples/s, FLOPs per step.

    python benchmarks/train.py                          # CPU: the tiny presets (+ CUDA rows when present)
    python benchmarks/train.py --presets tiny 256 --batch-size 2 --steps 2
    python benchmarks/train.py --device cuda --precision bf16 --presets 256 512

Each row builds the stage from its preset and times optimiser steps on synthetic batches of the
stage's dataset contract (``segtalker_core/train/step_bench.py``: no data loading, so this is
the network's cost alone), one micro-batch per step, after a warm-up step. ``flops/step`` is
forward + backward as torch's ``FlopCounterMode`` counts them (convolutions and matmuls), and
``TFLOP/s`` what the step achieved. Rows of stages that are not installed (``sgi`` before its
module exists) say so. CPU rows use ``--threads`` torch threads (default 1: stable numbers
on a shared machine).

The GPU-hour table in TRAINING.md comes from ``flops/step`` x ``loop.steps`` of each preset
divided by an assumed sustained GPU throughput, and from measured CUDA step times where a GPU
row exists.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("syncnet", "tsg", "sgi")


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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

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
