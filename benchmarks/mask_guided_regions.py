"""Cost of one mask-guided modulated conv against the number of regions present: the "fast"
implementation (one conv over region-mixed inputs) vs the "reference" one (one conv per region
present, as E4S), with the plain StyleGAN2 layer as the floor.

    .venv/bin/python benchmarks/mask_guided_regions.py [--size 32] [--channels 512] [--repeat 3]

The label map holds the first R of 12 regions as vertical bands. Times are the least thread CPU
time of ``--repeat`` batch-1 forwards after a warm-up, with one torch thread (the work a frame
costs; wall time on a shared machine swings with the load). Prints a Markdown table and, with
``--json``, the rows as JSON on the last line (for benchmarks/run_all.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGION_COUNTS = (1, 2, 4, 8, 12)


def band_labels(size: int, regions: int):
    """``[1, size, size]`` labels: regions 0..regions-1 as vertical bands."""
    import torch

    x = torch.arange(size)
    return (x[None, :] * regions // size).expand(size, size)[None].long()


def least_cpu_ms(call, repeat: int) -> float:
    import torch

    with torch.no_grad():
        call()
        best = float("inf")
        for _ in range(repeat):
            start = time.thread_time()
            call()
            best = min(best, time.thread_time() - start)
    return best * 1e3


def measure(size: int, channels: int, repeat: int, device: str) -> list[dict]:
    import torch

    from segtalker_core.models.mask_guided import MaskGuidedModulatedConv, RegionMasks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(1, channels, size, size, device=device)
    w = torch.randn(1, 12, 512, device=device)
    layers = {impl: MaskGuidedModulatedConv(channels, channels, 3, 512, impl=impl).eval().to(device)
              for impl in ("fast", "reference")}
    plain = least_cpu_ms(lambda: layers["fast"](x, w[:, 0]), repeat)
    rows = []
    for regions in REGION_COUNTS:
        masks = RegionMasks(band_labels(size, regions).to(device), 12)
        row = {"regions": regions, "plain_ms": plain}
        for impl, layer in layers.items():
            row[f"{impl}_ms"] = least_cpu_ms(lambda: layer(x, w, masks), repeat)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="feature map side")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    parser.add_argument("--quick", action="store_true",
                        help="8x8, 32 channels, 1 repeat: only shows that it runs")
    args = parser.parse_args()
    if args.quick:
        args.size, args.channels, args.repeat = 8, 32, 1
    rows = measure(args.size, args.channels, args.repeat, args.device)
    print(f"one {args.channels} -> {args.channels} 3x3 mask-guided conv at {args.size}x{args.size}, "
          f"batch 1, {args.device}, 1 thread (least CPU ms of {args.repeat})\n")
    print("| regions present | plain ms | fast ms | reference ms | reference / fast |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['regions']} | {row['plain_ms']:.1f} | {row['fast_ms']:.1f} | "
              f"{row['reference_ms']:.1f} | {row['reference_ms'] / row['fast_ms']:.2f} |")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
