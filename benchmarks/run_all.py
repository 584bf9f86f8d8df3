"""Run every benchmark in this folder and write ``benchmarks/RESULTS.md`` (date, machine, each
benchmark's tables) and PNG plots in ``benchmarks/plots/``: peak memory vs audio length, fps vs
resolution, fast vs reference mask-guided layer cost vs regions present.

    .venv/bin/python benchmarks/run_all.py            # the full set (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # small variants, to try it (a few minutes)
    .venv/bin/python benchmarks/run_all.py --device cuda   # adds GPU rows where a GPU is present
    .venv/bin/python benchmarks/run_all.py --only talk models -o /tmp/RESULTS.md

Each benchmark runs in its own process (its memory figures are its own; one that crashes or runs
past ``--timeout`` is reported as such and the others still run). A benchmark that is not in the
folder (``train.py`` is written with the training code) is listed as absent.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Benchmark:
    """``full`` / ``quick``: the script's arguments in each mode (None: not run in that mode,
    with ``why``); ``device``: the script takes ``--device`` (rerun with ``--device cuda``)."""

    name: str
    script: str
    full: list[str] | None
    quick: list[str] | None
    device: bool = False
    why: str = ""


BENCHMARKS = (
    Benchmark("parsing", "parsing.py", ["--repeats", "10"], ["--quick"]),
    Benchmark("face models", "face_models.py", ["--repeats", "10"], ["--quick"], device=True),
    Benchmark("talk", "talk.py",
              ["--json", "--rss-seconds", "10", "30", "90", "--resolutions", "256", "512", "1024"],
              ["--quick", "--json"]),
    Benchmark("models", "models.py", ["--repeat", "2"], ["--quick"], device=True),
    Benchmark("mask-guided layer vs regions", "mask_guided_regions.py", ["--json"], ["--quick", "--json"],
              device=True),
    Benchmark("paste", "paste.py", ["--repeats", "10"], ["--quick"]),
    Benchmark("audio", "audio.py", ["--minutes", "2"], ["--quick"]),
    Benchmark("render", "render.py", ["--frames", "50"], ["--quick"]),
    Benchmark("follow the map", "follow_map.py", [], ["--quick"]),
    Benchmark("head motion", "head_motion.py", [], ["--quick"]),
    Benchmark("mouth realism", "mouth_realism.py", [], ["--quick"]),
    Benchmark("mouth sheet", "mouth_sheet.py", ["--out", "benchmarks/plots/mouth_sheet.png"], ["--quick"]),
    Benchmark("mouth bank", "mouth_bank.py", [], ["--quick"]),
    # train.py adds its CUDA rows by itself when a GPU is present.
    Benchmark("train", "train.py", [], ["--quick"]),
    Benchmark("style refinement", "style_refinement.py", ["--steps", "2"], ["--quick"], device=True),
    Benchmark("ComfyUI video memory", "comfy_video_memory.py", ["--quick"], None,
              why="starts a real ComfyUI server and dubs in it: full mode only"),
)


@dataclass
class Outcome:
    benchmark: Benchmark
    command: list[str]
    status: str  # "ok", "failed (exit N)", "timed out", "absent", "skipped: why"
    seconds: float = 0.0
    output: str = ""
    data: object = None  # the JSON its last line printed, if it printed one
    gpu: "Outcome | None" = None
    error_tail: str = ""


def machine() -> dict[str, str]:
    import torch

    model = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"CPU": model, "cores": str(os.cpu_count()), "Python": platform.python_version(),
            "torch": torch.__version__, "GPU": gpu, "OS": platform.platform()}


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_one(bench: Benchmark, quick: bool, timeout: float, device: str | None = None) -> Outcome:
    args = bench.quick if quick else bench.full
    script = HERE / bench.script
    command = [sys.executable, str(script)] + (args or []) + (["--device", device] if device else [])
    shown = ["benchmarks/" + bench.script] + (args or []) + (["--device", device] if device else [])
    if not script.is_file():
        return Outcome(bench, shown, "absent")
    if args is None:
        return Outcome(bench, shown, f"skipped: {bench.why}")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        return Outcome(bench, shown, f"timed out after {timeout:.0f} s", time.perf_counter() - start, out)
    seconds = time.perf_counter() - start
    output, data = _split_json(done.stdout)
    status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    tail = "" if done.returncode == 0 else "\n".join(done.stderr.strip().splitlines()[-15:])
    return Outcome(bench, shown, status, seconds, output, data, error_tail=tail)


def _split_json(stdout: str) -> tuple[str, object]:
    """The printed text without its last line when that line is JSON, and the parsed JSON."""
    lines = stdout.rstrip().splitlines()
    if lines and lines[-1].lstrip()[:1] in ("{", "["):
        try:
            return "\n".join(lines[:-1]), json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    return stdout, None


# -- plots --------------------------------------------------------------------------------------

def _figure():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.6), dpi=100)
    return figure, figure.add_subplot(1, 1, 1)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_memory(rows: list[dict]) -> bytes:
    figure, axis = _figure()
    seconds = [r["audio_seconds"] for r in rows]
    axis.plot(seconds, [r["peak_rss_mib"] for r in rows], "o-")
    axis.set_xlabel("audio length (s)")
    axis.set_ylabel("peak RSS of talk (MiB)")
    axis.set_title("talk CLI, portrait: peak memory vs audio length")
    axis.set_ylim(bottom=0)
    return _png(figure)


def plot_fps(rows: list[dict]) -> bytes:
    figure, axis = _figure()
    axis.plot([r["size"] for r in rows], [r["fps"] for r in rows], "o-")
    axis.set_xlabel("portrait side = crop size (px)")
    axis.set_ylabel("frames per second (warm)")
    axis.set_title("built-in chain: fps vs resolution")
    axis.set_ylim(bottom=0)
    return _png(figure)


def plot_regions(rows: list[dict]) -> bytes:
    figure, axis = _figure()
    regions = [r["regions"] for r in rows]
    axis.plot(regions, [r["fast_ms"] for r in rows], "o-", label="fast")
    axis.plot(regions, [r["reference_ms"] for r in rows], "s-", label="reference (per region)")
    axis.plot(regions, [r["plain_ms"] for r in rows], "--", label="plain StyleGAN2 layer")
    axis.set_xlabel("regions present")
    axis.set_ylabel("CPU ms per forward")
    axis.set_title("mask-guided layer cost vs regions")
    axis.legend()
    axis.set_ylim(bottom=0)
    return _png(figure)


# -- the report ---------------------------------------------------------------------------------

def results_markdown(outcomes: list[Outcome], info: dict, quick: bool, device: str | None,
                     plots: dict[str, str], started: str, loads: tuple[str, str], gpu_note: str) -> str:
    lines = ["# Benchmark results", "",
             f"Written by `benchmarks/run_all.py{' --quick' if quick else ''}"
             f"{' --device ' + device if device else ''}` on {started} (UTC).", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    lines += [f"| load average at start / end | {loads[0]} / {loads[1]} |", "",
              "The machine's cores may be shared with other jobs: wall times swing with the load "
              "average above; the CPU-time columns move much less.", ""]
    if gpu_note:
        lines += [gpu_note, ""]
    lines += ["| benchmark | command | status | seconds |", "|---|---|---|---:|"]
    for o in outcomes:
        lines.append(f"| {o.benchmark.name} | `{' '.join(o.command)}` | {o.status} | {o.seconds:.0f} |")
        if o.gpu is not None:
            lines.append(f"| {o.benchmark.name} (GPU) | `{' '.join(o.gpu.command)}` | {o.gpu.status} | "
                         f"{o.gpu.seconds:.0f} |")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{title}]({path})" for title, path in plots.items()] + [""]
    for o in outcomes:
        lines += [f"## {o.benchmark.name}", ""]
        if o.status == "absent":
            lines += [f"`benchmarks/{o.benchmark.script}` is not in this checkout: not run.", ""]
            continue
        if o.status.startswith("skipped"):
            lines += [o.status + ".", ""]
            continue
        for part, label in ((o, ""), (o.gpu, " (GPU)")):
            if part is None:
                continue
            lines += [f"`{' '.join(part.command)}`{label}: {part.status}, {part.seconds:.0f} s", ""]
            if part.output.strip():
                lines += [part.output.strip(), ""]
            if part.error_tail:
                lines += ["```", part.error_tail, "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    from segtalker_core.atomic_files import write_bytes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small variants of every benchmark")
    parser.add_argument("--device", choices=["cuda"], help="also run the GPU-capable benchmarks there")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="a subset, by benchmark or script name")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("-o", "--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    import torch

    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only
              or b.script.removesuffix(".py") in args.only]
    if not chosen:
        raise SystemExit(f"--only {' '.join(args.only)}: no such benchmark; names: "
                         + ", ".join(b.script.removesuffix('.py') for b in BENCHMARKS))
    gpu = args.device == "cuda" and torch.cuda.is_available()
    gpu_note = ""
    if args.device == "cuda" and not gpu:
        gpu_note = "`--device cuda` was given but torch sees no CUDA device here: no GPU rows."
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    start_load = load_average()
    info = machine()
    outcomes: list[Outcome] = []
    listed = {b.script for b in BENCHMARKS} | {Path(__file__).name}
    extras = [] if args.only else [
        Outcome(Benchmark(name.removesuffix(".py"), name, None, None), ["benchmarks/" + name],
                "skipped: new script, not yet in run_all.py's table")
        for name in sorted(p.name for p in HERE.glob("*.py") if p.name not in listed)]

    def write_results(pending: list[Benchmark]) -> None:
        """RESULTS.md with what has run so far (rewritten after each benchmark, so a run that is
        stopped still leaves the finished ones), the plots of what is there."""
        waiting = [Outcome(b, ["benchmarks/" + b.script], "not run yet (the run was stopped)") for b in pending]
        plots = write_plots(outcomes, args.output.parent / "plots")
        text = results_markdown(outcomes + waiting + extras, info, args.quick, args.device, plots, started,
                                (start_load, load_average()), gpu_note)
        write_bytes(args.output, text.encode(), what="-o")

    for k, bench in enumerate(chosen):
        print(f"{bench.name}: running ...", flush=True)
        outcome = run_one(bench, args.quick, args.timeout)
        if gpu and bench.device and outcome.status == "ok":
            outcome.gpu = run_one(bench, args.quick, args.timeout, device="cuda")
        print(f"{bench.name}: {outcome.status} ({outcome.seconds:.0f} s)", flush=True)
        outcomes.append(outcome)
        write_results(chosen[k + 1:])
    print(f"wrote {args.output}")


def write_plots(outcomes: list[Outcome], plot_dir: Path) -> dict[str, str]:
    """The plots whose data the finished benchmarks printed; ``{title: path relative to the
    results file}``."""
    from segtalker_core.atomic_files import write_bytes

    by_script = {o.benchmark.script: o for o in outcomes}
    sources = []
    talk = by_script.get("talk.py")
    if talk is not None and isinstance(talk.data, dict):
        if talk.data.get("rss"):
            sources.append(("peak memory vs audio length", "peak_memory_vs_audio.png", plot_memory, talk.data["rss"]))
        if talk.data.get("resolutions"):
            sources.append(("fps vs resolution", "fps_vs_resolution.png", plot_fps, talk.data["resolutions"]))
    layer = by_script.get("mask_guided_regions.py")
    if layer is not None and isinstance(layer.data, list) and layer.data:
        sources.append(("fast vs reference mask-guided layer cost vs regions", "mask_guided_cost_vs_regions.png",
                        plot_regions, layer.data))
    plots = {}
    for title, name, draw, rows in sources:
        plot_dir.mkdir(exist_ok=True)
        write_bytes(plot_dir / name, draw(rows), what="a benchmark plot")
        plots[title] = f"{plot_dir.name}/{name}"
    return plots

if __name__ == "__main__":
    main()
