"""Speed and memory of the learned models on this machine (CPU unless --device says otherwise).

    python benchmarks/models.py                 # every row (a few minutes on 2 CPU cores)
    python benchmarks/models.py --rows g256-fast g256-reference --repeat 3

Memory is measured in one subprocess per row, time in one subprocess per group of rows (each
generator size's variants; the TSGs; the encoder) whose runs are interleaved, so rows compared
with each other share whatever else loads the machine:

* ``params``: parameter count;
* ``cpu ms``: the least CPU time of the calling thread per batch-1 forward (``--repeat`` runs
  after a warm-up, no grad) with ``--threads 1`` (the default): the work a frame costs, which
  moves much less than wall time when other jobs share the machine; the ratios below use it;
* ``wall ms``: the best wall time of those runs (with other load around, only indicative);
* ``peak MB``: the process's peak resident set (``ru_maxrss``) -- interpreter, torch, weights and
  two forwards together;
* ``fwd MB``: how much that peak grew during the forwards (activations and scratch; allocator
  reuse makes it a lower bound on the true working set).

``layer64-*``: one 512 -> 512 3x3 mask-guided conv at 64x64 with 12 regions (``plain``: the same
layer with one global style). Generator rows use default widths (StyleGAN2 config-f) and a
segmentation in which all 12 regions are present (vertical bands + a grid of blobs). The reference mask-guided implementation skips a
region only where it is absent at a layer's resolution (which can only favour it). ``uncond`` is
the same generator with no mask-guided layer: an unconditional StyleGAN2 of the same size.
``hybridN`` uses the reference implementation up to NxN and the fast one above
(``GeneratorConfig.reference_max_res``). ``g1024-reference`` is what E4S's RGI model converts to
(the reference layer, K = 13; its legacy-nearest mask rule costs the same), ``g1024-fast`` the
fast layer at the same size and K, side by side. ``g1024-rosinality``: rosinality's StyleGAN2 at 1024 px,
config-f widths (what ``stylegan2-ffhq-config-f.pt`` converts to), random weights made from the
converter's layout rules and converted by it, rendering unconditionally (``Generator.synthesize``,
stored noise). Below the table: cost ratios, and how far the images of one randomly initialised
generator are from the reference's for each choice.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROWS = (
    "layer64-fast",
    "layer64-reference",
    "layer64-plain",
    "encoder256",
    "g256-fast",
    "g256-reference",
    "g256-uncond",
    "g256-hybrid8",
    "g256-hybrid16",
    "g512-fast",
    "g512-reference",
    "g512-uncond",
    "g1024-fast",
    "g1024-reference",
    "g1024-rosinality",
    "tsg128",
    "tsg256",
)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def all_region_labels(size: int):
    """``[1, size, size]`` labels with every one of the 12 regions present at 16x16 and up."""
    import torch

    x = torch.arange(size)
    bands = (x[None, :] * 6 // size).expand(size, size)  # regions 0..5 as vertical bands
    blobs = ((x[:, None] * 4 // size) * 3 + (x[None, :] * 3 // size)) % 6 + 6  # 6..11 on a grid
    inside = ((x[:, None] % (size // 4)) > size // 16) & ((x[None, :] % (size // 3)) > size // 12)
    return torch.where(inside, blobs, bands)[None].long()


def build(row: str, device: str):
    """(model, call) for a row; ``call()`` runs one batch-1 forward."""
    import torch

    if row.startswith("layer"):
        from segtalker_core.models.mask_guided import MaskGuidedModulatedConv, RegionMasks

        res, kind = row.removeprefix("layer").split("-")
        res = int(res)
        torch.manual_seed(0)
        impl = "reference" if kind == "reference" else "fast"
        model = MaskGuidedModulatedConv(512, 512, 3, 512, impl=impl)
        model = model.eval().to(device)
        x = torch.randn(1, 512, res, res, device=device)
        w = torch.randn(1, 12, 512, device=device)
        masks = RegionMasks(all_region_labels(res).to(device), 12)
        if kind == "plain":
            return model, lambda: model(x, w[:, 0])
        return model, lambda: model(x, w, masks)
    if row.startswith("encoder"):
        from segtalker_core.models.encoder import EncoderConfig, MaskGuidedEncoder
        from segtalker_core.models.stylegan import GeneratorConfig

        size = int(row.removeprefix("encoder"))
        model = MaskGuidedEncoder(EncoderConfig.for_generator(GeneratorConfig(size=size)))
        model = model.eval().to(device)
        image = torch.rand(1, 3, size, size, device=device) * 2 - 1
        labels = all_region_labels(size).to(device)
        return model, lambda: model(image, labels)
    if row.startswith("g"):
        from segtalker_core.models.stylegan import Generator, GeneratorConfig

        size, kind = row[1:].split("-")
        size = int(size)
        if kind == "rosinality":
            return converted_rosinality(size, device)
        if kind == "uncond":
            cfg = GeneratorConfig(size=size, mask_guided_layers=0)
        elif kind.startswith("hybrid"):
            cfg = GeneratorConfig(size=size, reference_max_res=int(kind.removeprefix("hybrid")))
        else:
            cfg = GeneratorConfig(size=size, mask_guided_impl=kind)
        torch.manual_seed(0)
        model = Generator(cfg).eval().to(device)
        codes = torch.randn(1, 12, cfg.n_latent, cfg.w_dim, device=device)
        labels = all_region_labels(size).to(device)
        noise = model.make_noise(1, torch.Generator().manual_seed(0), device=device)
        return model, lambda: model(codes, labels, noise=noise)
    if row.startswith("tsg"):
        try:
            from segtalker_core.models.tsg import TSG, TSGConfig
        except Exception as exc:  # the other half of the models work may not be there yet
            raise NotAvailable(f"segtalker_core.models.tsg: {exc}") from exc
        res = int(row.removeprefix("tsg"))
        model = TSG(TSGConfig(resolution=res)).eval().to(device)
        onehot = torch.nn.functional.one_hot(all_region_labels(res), 12).permute(0, 3, 1, 2)
        onehot = onehot.float().to(device)
        mel = torch.randn(1, 1, 80, 16, device=device)
        return model, lambda: model(onehot, onehot, mel)
    raise ValueError(f"unknown row {row!r}; rows: {', '.join(ROWS)}")


def converted_rosinality(size: int, device: str):
    """(model, call): a rosinality StyleGAN2 (config-f widths, 8 mapping layers) with random
    weights in rosinality's layout, converted by segtalker_core.conversion.rosinality; ``call()``
    renders one W latent unconditionally with the stored noise."""
    import torch

    from segtalker_core.conversion import rosinality as ros
    from segtalker_core.models.layers import fir_kernel
    from segtalker_core.models.stylegan import Generator

    arch = ros.RosinalityArchitecture(size)
    rng = torch.Generator().manual_seed(0)
    # The FIR kernels are rosinality's stored [1, 3, 3, 1] ones (x4 for upsampling); the
    # converter refuses others.
    source = {name: fir_kernel((1, 3, 3, 1)) * 4 if name.endswith(".kernel")
              else torch.randn(shape, generator=rng)
              for name, shape in ros.generator_layout(arch).items()}
    model = Generator(ros.generator_config(arch))
    model.load_state_dict(ros.generator_weights(source, arch, torch.zeros(arch.style_dim)))
    model = model.eval().to(device)
    with torch.no_grad():
        w = model.mapping(torch.randn(1, arch.style_dim, device=device))
    noise = model.stored_noise()
    return model, lambda: model.synthesize(w, noise=noise)


class NotAvailable(RuntimeError):
    pass


def measure_memory(row: str, device: str) -> dict:
    """Params and peak memory of one row (runs in the row's own subprocess)."""
    import torch

    try:
        model, call = build(row, device)
    except NotAvailable as exc:
        return {"row": row, "error": f"not available ({exc})"}
    with torch.no_grad():
        base = maxrss_mb()
        call()
        call()
    peak = maxrss_mb()
    params = sum(p.numel() for p in model.parameters())
    return {"row": row, "params": params, "peak_mb": peak, "fwd_mb": peak - base}


def measure_time(rows: list[str], repeat: int, device: str) -> dict:
    """Best and median forward time of each row, the rows' runs interleaved.

    Interleaving makes the rows of a group share whatever else loads the machine, so their ratios
    hold up even when the absolute numbers drift; "best" is the least disturbed run.
    """
    import torch

    calls = {}
    for row in rows:
        try:
            calls[row] = build(row, device)[1]
        except NotAvailable:
            pass
    cpu = {row: [] for row in calls}
    wall = {row: [] for row in calls}
    with torch.no_grad():
        for call in calls.values():
            call()  # warm-up
        for _ in range(repeat):
            for row, call in calls.items():
                start_cpu, start_wall = time.thread_time(), time.perf_counter()
                call()
                cpu[row].append(time.thread_time() - start_cpu)
                wall[row].append(time.perf_counter() - start_wall)
    return {
        row: {"cpu_ms": 1000 * min(cpu[row]), "wall_ms": 1000 * min(wall[row])}
        for row in calls
    }


def fast_vs_reference_difference(size: int) -> str:
    """Relative RMS difference to the reference image of one random generator, per choice."""
    import torch

    from segtalker_core.models.stylegan import Generator, GeneratorConfig

    torch.manual_seed(0)
    g = Generator(GeneratorConfig(size=size, channel_base=2048, channel_max=64)).eval()
    base = g.broadcast(g.mapping(torch.randn(1, g.config.w_dim)))
    codes = base + 0.5 * torch.randn_like(base)  # regions differ around one face's code
    labels = all_region_labels(size)
    noise = g.make_noise(1, torch.Generator().manual_seed(0))

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).square().mean() / b.square().mean()).sqrt().item()

    with torch.no_grad():
        g.set_mask_guided_impl("reference")
        ref = g(codes, labels, noise=noise)
        moved = g(codes, labels.roll((4, 4), (1, 2)), noise=noise)
        parts = []
        for max_res in (0, 8, 16):
            g.config.reference_max_res = max_res
            g.set_mask_guided_impl("fast")
            name = f"hybrid{max_res}" if max_res else "fast"
            parts.append(f"{name} {rel(g(codes, labels, noise=noise), ref):.3f}")
    return (
        f"image vs reference, random-init G{size} (narrow widths), region codes one w + "
        f"0.5 N(0,1), relative RMS: {', '.join(parts)}; "
        f"reference with the segmentation moved 4 px: {rel(moved, ref):.3f}"
    )


def child(args: list[str], threads: int) -> dict:
    cmd = [sys.executable, __file__, *args, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(tail)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def groups(rows: list[str]) -> list[list[str]]:
    """Rows timed together: each generator size's variants, the TSGs, the encoder."""
    keyed: dict[str, list[str]] = {}
    for row in rows:
        key = row.split("-")[0] if "-" in row else row.rstrip("0123456789")
        keyed.setdefault(key, []).append(row)
    return list(keyed.values())


def run_rows(rows: list[str], repeat: int, device: str, threads: int) -> list[dict]:
    results = []
    for group in groups(rows):
        error = ""
        try:
            args = ["--child-time", *group, "--repeat", str(repeat), "--device", device]
            timed = child(args, threads)
        except RuntimeError as exc:
            timed, error = {}, str(exc)
        for row in group:
            try:
                result = child(["--child-memory", row, "--device", device], threads)
            except RuntimeError as exc:
                result = {"row": row, "error": f"failed: {exc}"}
            if "error" not in result:
                if row in timed:
                    result.update(timed[row])
                else:
                    result["error"] = f"timing failed: {error}"
            results.append(result)
            print(format_row(result), flush=True)
    return results


HEADER = f"{'row':<18}{'params':>10}{'cpu ms':>10}{'wall ms':>10}{'peak MB':>9}{'fwd MB':>8}"


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['row']:<18}  {r['error']}"
    return (
        f"{r['row']:<18}{r['params'] / 1e6:>9.2f}M{r['cpu_ms']:>10.0f}{r['wall_ms']:>10.0f}"
        f"{r['peak_mb']:>9.0f}{r['fwd_mb']:>8.0f}"
    )


def ratios(results: list[dict]) -> list[str]:
    ms = {r["row"]: r["cpu_ms"] for r in results if "cpu_ms" in r}
    lines = []
    fast, ref, plain = (ms.get(f"layer64-{k}") for k in ("fast", "reference", "plain"))
    if fast and ref and plain:
        lines.append(
            f"one 512-channel 3x3 layer at 64x64: reference / fast = {ref / fast:.2f}x, "
            f"fast / plain modulated conv = {fast / plain:.2f}x"
        )
    for size in (256, 512):
        ref, unc = ms.get(f"g{size}-reference"), ms.get(f"g{size}-uncond")
        for kind in ("fast", "hybrid8", "hybrid16"):
            t = ms.get(f"g{size}-{kind}")
            if t and ref:
                lines.append(f"G{size} reference / {kind} = {ref / t:.2f}x (target >= 4 at 256)")
            if t and unc:
                lines.append(f"G{size} {kind} / unconditional = {t / unc:.2f}x (target <= 1.3)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help=f"subset of {ROWS}")
    parser.add_argument("--repeat", type=int, default=3, help="timed forwards per row")
    parser.add_argument("--device", default="cpu", help="torch device for every row")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true",
                        help="two small rows (layer64-plain, tsg128), 1 run, no image comparison: only shows that it runs")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    parser.add_argument("--child-time", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = ["layer64-plain", "tsg128"], 1
    import torch

    torch.set_num_threads(args.threads)
    if args.child_memory:
        print(json.dumps(measure_memory(args.child_memory, args.device)))
        return
    if args.child_time:
        print(json.dumps(measure_time(args.child_time, args.repeat, args.device)))
        return
    print(
        f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s), "
        f"{os.cpu_count()} CPUs; batch 1, {args.repeat} timed runs per row (interleaved per group)"
    )
    print(HEADER)
    results = run_rows(args.rows, args.repeat, args.device, args.threads)
    for line in ratios(results):
        print(line)
    if not args.quick:
        print(fast_vs_reference_difference(256))


if __name__ == "__main__":
    main()
