"""Cost of the style refinement (``talk --optimize-steps``) per Adam step, on this machine.

    python benchmarks/style_refinement.py                       # 64/128/256, fast and reference
    python benchmarks/style_refinement.py --rows g256-reference --steps 5 --device cuda

Each row: a randomly initialised mask-guided generator at config-f widths (``fast`` or E4S's
``reference`` per-region layer, the default K), the pack's default encoder (random), a synthetic
segmentation with every region present and a smooth synthetic face, refined for ``--steps`` steps
(``segtalker_core.style_refinement.refine_codes``, default losses, no parser) in one subprocess per
row. Columns:

* ``cpu s/step``: CPU time of the process over the run divided by ``steps + 1`` (each step is a
  forward and backward of the generator, the losses and Adam; one last forward evaluates the
  last update, so this slightly under-counts a step), with ``--threads`` (default 1): much
  steadier than wall time when other jobs load the machine; a GPU run reports its wall time;
* ``wall s/step``: wall time per step (only indicative under load);
* ``peak MB``: the process's peak resident set (CPU) or the CUDA peak allocated (GPU);
* ``loss``: the first and the best loss (random weights: only that it falls is meaningful).

A 1024 px row (what E4S's model converts to) is not in the default set: on one CPU thread a
forward alone takes ~30 s (``benchmarks/models.py``); ask for ``g1024-reference`` on a GPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = ("g64-fast", "g64-reference", "g128-fast", "g128-reference", "g256-fast", "g256-reference")


def _synthetic(size: int):
    """``(labels [1, S, S] int64, image [1, 3, S, S] in [-1, 1])``: 12 regions, smooth shading."""
    import torch

    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    bands = x * 6 // size  # regions 0..5 as vertical bands
    blobs = 6 + (y * 2 // size) * 3 + (x * 3 // size)  # 6..11 as a grid of blobs
    inside = ((x % (size // 3)) > size // 12) & ((y % (size // 2)) > size // 8)
    labels = torch.where(inside, blobs.clamp(max=11), bands)[None].long()
    shade = torch.stack([x / size, y / size, (x * y) / size ** 2]).float()
    image = (shade * 1.6 - 0.8)[None] + 0.1 * torch.sin(labels.float())[:, None]
    return labels, image


def run_row(row: str, steps: int, threads: int, device: str) -> dict:
    import torch

    from segtalker_core.models.encoder import EncoderConfig, MaskGuidedEncoder
    from segtalker_core.models.stylegan import Generator, GeneratorConfig
    from segtalker_core.style_refinement import RefinementConfig, refine_codes

    torch.set_num_threads(threads)
    size_text, impl = row[1:].split("-")
    size = int(size_text)
    torch.manual_seed(0)
    dev = torch.device(device)
    generator = Generator(GeneratorConfig(size=size, mask_guided_impl=impl)).to(dev).eval()
    encoder = MaskGuidedEncoder(EncoderConfig.for_generator(generator.config)).to(dev).eval()
    with torch.no_grad():
        encoder.set_latent_avg(generator.mean_latent(1000).to(dev))
    labels, image = _synthetic(size)
    labels, image = labels.to(dev), image.to(dev)
    mask = (labels != 0)[:, None].float()
    config = RefinementConfig(steps=steps)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = refine_codes(encoder, generator, image, labels, image, labels, mask, config,
                          torch.float32)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    passes = steps + 1  # the last pass evaluates the last update
    peak = (torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"row": row, "cpu": (wall if dev.type == "cuda" else cpu) / passes,
            "wall": wall / passes, "peak": peak, "loss0": result.initial_loss,
            "loss": result.best_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS),
                        help=f"rows (default: {' '.join(ROWS)}; also g512-*, g1024-*)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="g64-fast, 1 step: only shows that it runs")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a row in this process (the subprocess)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.steps = ["g64-fast"], 1
    if args.one:
        print(json.dumps(run_row(args.one, args.steps, args.threads, args.device)))
        return
    print(f"style refinement, {args.steps} steps, {args.threads} thread(s), {args.device}")
    print(f"{'row':<16} {'cpu s/step':>10} {'wall s/step':>11} {'peak MB':>8} {'loss':>16}")
    for row in args.rows:
        out = subprocess.run([sys.executable, __file__, "--one", row, "--steps", str(args.steps),
                              "--threads", str(args.threads), "--device", args.device],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['row']:<16} {r['cpu']:>10.2f} {r['wall']:>11.2f} {r['peak']:>8.0f} "
              f"{r['loss0']:>7.3f}->{r['loss']:<7.3f}")


if __name__ == "__main__":
    main()
