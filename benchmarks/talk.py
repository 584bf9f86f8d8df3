"""Talk benchmark: the ``talk`` command end to end, each run a fresh process, optionally against
an older source tree in the same run (before | after side by side).

    .venv/bin/python benchmarks/talk.py                 # full (this tree only)
    .venv/bin/python benchmarks/talk.py --quick         # tiny variants: checks that it runs
    git worktree add /tmp/base c13d685
    .venv/bin/python benchmarks/talk.py --baseline-tree /tmp/base --repeats 3

Cases (each ``python -m segtalker_core talk ...`` in its own process, inputs made once here):

* portrait 512: ``examples/portrait.png`` resized to 512x512, crop 512, built-in chain;
* dubbing 1080p streamed from a file: ``examples/video.mp4`` upscaled into a 1920x1080 H.264 mp4
  at least as long as the audio (the clip ping-ponged once, encoded, and its packets repeated),
  so ``--video`` reads it chunk by chunk, tracking and parsing every frame; H.264 + AAC out;
* dubbing 1080p, short clip looped: the same 2 s clip alone, shorter than the audio, so ``talk``
  holds its frames, parses them once and ping-pongs them (speed row only);
* learned G256, random bundle: ``random-bundle --resolution 256`` bundles (TSG, encoder,
  generator; written by each tree's own command, as their formats may differ), ``--size 256``;
* cold start: ``talk`` on ``examples/portrait.png`` + ``examples/speech.wav`` as shipped.

Columns: time to the first frame (from just before the process is started to the first
``progress`` report of the talk library, i.e. the first frame pasted back), frames per second
after the first frame, CPU seconds (user + sys) per frame over the whole run, peak RSS (``/usr/bin/time
-v``; the CLI is started by a small ``time`` process so the figure is the run's own). Then peak
RSS against the audio length on each path and the ratio of the longest to the shortest.

With ``--baseline-tree PATH`` every run is made twice, with ``PYTHONPATH=PATH`` (before) and
with this tree (after), interleaved so that load changes hit both; ``--repeats N`` takes the
median of N such pairs. A case the other tree cannot run (an option it lacks, a crash) says
``n/a`` and why. Speech is espeak-ng sentences with pauses (tests/speech.py). Timings move with
the machine's load: the load average is printed with each table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
FPS = 25


# -- the child: one talk run, timestamps of its first and last frame ---------------------------

def child(report: Path, started: float, argv: list[str]) -> int:
    """Run the talk CLI of whatever tree ``PYTHONPATH`` names and write the wall-clock times of
    its first and last ``progress`` report (seconds after ``started``) to ``report`` (JSON).

    The talk library reports each frame it pastes back through the ``progress`` keyword of
    ``talk_image_file`` / ``talk_video_file``; wrapping those two functions is the one hook that
    the trees being compared share. ``talk_file`` is imported here before the CLI runs, which
    the CLI does itself before any frame, so the time to the first frame is not changed by it.
    """
    import segtalker_core.talk_file as talk_file
    from segtalker_core import cli

    stamps: dict[str, float] = {}

    def wrapped(run):
        def call(*args, progress=None, **kwargs):
            def tick(done: int, total: int) -> None:
                now = time.time()
                stamps.setdefault("first", now - started)
                stamps["last"] = now - started
                stamps["frames"] = done
                if progress is not None:
                    progress(done, total)

            return run(*args, progress=tick, **kwargs)

        return call

    for name in ("talk_image_file", "talk_video_file"):
        setattr(talk_file, name, wrapped(getattr(talk_file, name)))
    code = cli.main(argv)
    report.write_text(json.dumps(stamps))
    return code


# -- the parent ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tree:
    label: str  # "before" / "after"
    path: Path


@dataclass
class Run:
    """One process: ``first`` / ``last``: seconds from its start to its first / last frame."""

    frames: int = 0
    wall: float = 0.0
    first: float = float("nan")
    last: float = float("nan")
    cpu: float = 0.0
    rss_mib: float = 0.0
    error: str = ""

    @property
    def fps_after_first(self) -> float:
        return (self.frames - 1) / (self.last - self.first) if self.frames > 1 and self.last > self.first else float("nan")

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1e3 * self.cpu / self.frames if self.frames else float("nan")


@dataclass
class Case:
    name: str
    args: list[str]  # talk options; "{bundle}" is replaced by the tree's random-bundle folder
    learned: bool = False
    runs: dict[str, list[Run]] = field(default_factory=dict)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def timer() -> str:
    found = shutil.which("time", path="/usr/bin:/bin")
    if found is None:
        raise SystemExit("peak RSS and CPU time need /usr/bin/time (apt-get install time)")
    return found


def run_talk(tree: Tree, args: list[str], work: Path, env_extra: dict[str, str]) -> Run:
    report = work / "child.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree.path), **env_extra}
    started = time.time()
    done = subprocess.run([timer(), "-v", sys.executable, str(Path(__file__).resolve()), "--child", str(report),
                           "--started", repr(started), "--", "talk", *args, "-o", str(work / "out.mp4"), "-q"],
                          cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - started
    run = Run(wall=wall)
    stderr = done.stderr
    kib = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", stderr)
    if kib and user and system:
        run.rss_mib, run.cpu = int(kib.group(1)) / 1024.0, float(user.group(1)) + float(system.group(1))
    if done.returncode != 0 or not report.is_file():
        lines = [l for l in stderr.splitlines()
                 if l.strip() and not l.startswith(("\t", "Command exited", "Command terminated"))]
        run.error = (lines[-1] if lines else f"exit {done.returncode}")[:160]
        return run
    stamps = json.loads(report.read_text())
    run.frames = int(stamps.get("frames", 0))
    run.first, run.last = stamps.get("first", float("nan")), stamps.get("last", float("nan"))
    return run


def write_speech(path: Path, seconds: float) -> Path:
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "tests"))
    from speech import long_speech

    sf.write(str(path), long_speech(seconds, SR), SR, subtype="PCM_16")
    return path


def write_inputs(work: Path, dub_frames: int, stream_seconds: float) -> tuple[Path, Path, Path]:
    """The 512 portrait, the short 1080p clip (``dub_frames`` frames of the example video
    upscaled to the canvas height on a blurred, stretched copy of itself) and a 1080p video of at
    least ``stream_seconds`` (that clip forth and back, repeated)."""
    import cv2
    import numpy as np

    from segtalker_core.video_io import Mp4Writer, read_video

    image = cv2.imread(str(ROOT / "examples" / "portrait.png"))
    portrait = work / "portrait512.png"
    cv2.imwrite(str(portrait), cv2.resize(image, (512, 512), interpolation=cv2.INTER_CUBIC))
    small, _ = read_video(ROOT / "examples" / "video.mp4")
    canvases = []
    for frame in small[:dub_frames]:
        canvas = cv2.GaussianBlur(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
        canvas[:, 420:1500] = cv2.resize(frame, (1080, 1080), interpolation=cv2.INTER_CUBIC)
        canvases.append(np.ascontiguousarray(canvas))
    clip, loop = work / "dub1080.mp4", work / "dub1080_loop.mp4"
    with Mp4Writer(clip, FPS) as mp4:
        for canvas in canvases:
            mp4.write(canvas)
    # Forth and back, so the repeats join without a jump.
    with Mp4Writer(loop, FPS) as mp4:
        for canvas in canvases + canvases[-2:0:-1]:
            mp4.write(canvas)
    long = work / "dub1080_long.mp4"
    repeat_packets(loop, long, math.ceil(stream_seconds * FPS) + FPS)
    return portrait, clip, long


def repeat_packets(segment: Path, out: Path, min_frames: int) -> None:
    """``segment``'s video packets repeated (copied, not re-encoded, timestamps moved on) into
    ``out`` until it has at least ``min_frames`` frames: ten minutes of 1080p in seconds. The
    segment starts on a key frame (as every file an encoder writes does), so each repeat decodes
    on its own."""
    import av

    with av.open(str(segment)) as source:
        stream = source.streams.video[0]
        packets = [p for p in source.demux(stream) if p.size]
        count = len(packets)
        # The segment's length in the stream's time base: each repeat starts where it ended.
        length = round(count / stream.average_rate / stream.time_base)
        with av.open(str(out), "w") as sink:
            copy = sink.add_stream_from_template(stream)
            for repeat in range(math.ceil(min_frames / count)):
                for packet in packets:
                    moved = av.Packet(bytes(packet))
                    moved.pts, moved.dts = packet.pts + repeat * length, packet.dts + repeat * length
                    moved.time_base, moved.is_keyframe, moved.stream = packet.time_base, packet.is_keyframe, copy
                    sink.mux(moved)


def write_bundles(tree: Tree, work: Path, resolution: int) -> tuple[Path | None, str]:
    """The tree's own random bundles at ``resolution`` (folder, "") or (None, why not)."""
    folder = work / f"bundles_{tree.label}_{resolution}"
    done = subprocess.run([sys.executable, "-m", "segtalker_core", "random-bundle", str(folder),
                           "--resolution", str(resolution)], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree.path)})
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["random-bundle failed"])[-1][:160]
    return folder, ""


def learned_args(resolution: int) -> list[str]:
    return ["--tsg", f"{{bundle}}/tsg_random_{resolution}.safetensors",
            "--encoder", f"{{bundle}}/encoder_random_{resolution}.safetensors",
            "--generator", f"{{bundle}}/generator_random_{resolution}.safetensors",
            "--size", str(resolution)]


def measure(case: Case, trees: list[Tree], work: Path, bundles: dict[tuple[str, int], tuple[Path | None, str]],
            resolution: int, repeats: int, env_extra: dict[str, str]) -> None:
    """``repeats`` runs of ``case`` per tree, interleaved (before, after, before, ...)."""
    for _ in range(repeats):
        for tree in trees:
            args = list(case.args)
            if case.learned:
                folder, why = bundles[(tree.label, resolution)]
                if folder is None:
                    case.runs.setdefault(tree.label, []).append(Run(error=f"random-bundle: {why}"))
                    continue
                args = [a.replace("{bundle}", str(folder)) for a in args]
            case.runs.setdefault(tree.label, []).append(run_talk(tree, args, work, env_extra))


def summary(runs: list[Run]) -> Run | str:
    """The median of the runs that worked, or why none did."""
    good = [r for r in runs if not r.error]
    if not good:
        return "n/a: " + (runs[0].error if runs else "not run")
    med = statistics.median
    return Run(frames=good[0].frames, wall=med(r.wall for r in good), first=med(r.first for r in good),
               last=med(r.last for r in good), cpu=med(r.cpu for r in good), rss_mib=med(r.rss_mib for r in good))


def cells(cases: list[Case], labels: list[str], metric) -> list[list[str]]:
    rows = []
    for case in cases:
        row = []
        for label in labels:
            s = summary(case.runs.get(label, []))
            row.append(s if isinstance(s, str) else metric(s))
        rows.append(row)
    return rows


def print_speed_table(cases: list[Case], labels: list[str], title: str) -> None:
    metrics = [("frames", lambda r: f"{r.frames}"), ("first frame s", lambda r: f"{r.first:.2f}"),
               ("fps after first", lambda r: f"{r.fps_after_first:.1f}"),
               ("CPU ms/frame", lambda r: f"{r.cpu_ms_per_frame:.0f}"), ("wall s", lambda r: f"{r.wall:.1f}"),
               ("peak RSS MiB", lambda r: f"{r.rss_mib:.0f}")]
    names = [f"{m} {l}" if len(labels) > 1 else m for m, _ in metrics for l in labels]
    print(f"| {title} | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    notes = []
    for case in cases:
        row = []
        for _, metric in metrics:
            for label in labels:
                s = summary(case.runs.get(label, []))
                if isinstance(s, str):
                    row.append("n/a")
                    if (case.name, label) not in [(n[0], n[1]) for n in notes]:
                        notes.append((case.name, label, s))
                else:
                    row.append(metric(s))
        print(f"| {case.name} | " + " | ".join(row) + " |")
    for name, label, why in notes:
        print(f"\n{name} ({label}): {why}")
    print(f"\nload average: {load_text()}\n", flush=True)


def print_rss_table(groups: list[tuple[str, list[tuple[float, Case]]]], labels: list[str]) -> list[dict]:
    """Peak RSS against audio length per path; returns this tree's portrait rows (for run_all)."""
    print("| path, audio | frames | " + " | ".join(f"peak RSS MiB {l}" if len(labels) > 1 else "peak RSS MiB"
                                            for l in labels) + " |")
    print("|---|---:|" + "---:|" * len(labels))
    ratios, data = [], []
    for path, rows in groups:
        for seconds, case in rows:
            sums = [summary(case.runs.get(l, [])) for l in labels]
            frames = next((s.frames for s in sums if not isinstance(s, str)), 0)
            print(f"| {path}, {seconds:g} s | {frames} | "
                  + " | ".join("n/a" if isinstance(s, str) else f"{s.rss_mib:.0f}" for s in sums) + " |")
            mine = sums[-1]
            if path == "portrait 512" and not isinstance(mine, str):
                data.append({"audio_seconds": seconds, "frames": mine.frames, "wall_seconds": mine.wall,
                             "peak_rss_mib": mine.rss_mib})
        if len(rows) >= 2:
            for label in labels:
                lo, hi = summary(rows[0][1].runs.get(label, [])), summary(rows[-1][1].runs.get(label, []))
                if not isinstance(lo, str) and not isinstance(hi, str):
                    ratios.append(f"{path} ({label}): {rows[-1][0]:g} s / {rows[0][0]:g} s = {hi.rss_mib / lo.rss_mib:.2f}")
    if ratios:
        print("\npeak RSS ratio, longest / shortest audio:\n" + "\n".join(f"* {r}" for r in ratios))
    print(f"\nload average: {load_text()}\n", flush=True)
    return data


def resolution_rows(sizes: list[int], seconds: float) -> list[dict]:
    """Warm fps of the built-in chain (this tree, in this process) on the portrait resized to each
    ``size`` (crop = size): the second call at each size, after models and caches are loaded."""
    import cv2
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from speech import long_speech

    from segtalker_core import pipeline

    source = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "portrait.png")), cv2.COLOR_BGR2RGB)
    wave = long_speech(seconds, SR)
    audio = {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": SR}
    rows = []
    for size in sizes:
        image = cv2.resize(source, (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(2):
            start, start_cpu = time.perf_counter(), time.process_time()
            n = sum(1 for _ in pipeline.iter_talk(np.ascontiguousarray(image[None]), audio, FPS, crop_size=size))
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        rows.append({"size": size, "frames": n, "seconds": wall, "fps": n / wall, "cpu_ms_per_frame": 1e3 * cpu / n})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny variants that only show it runs (1 s clips, whose runs are the RSS rows too; "
                             "G64; a 10-frame dub input)")
    parser.add_argument("--baseline-tree", type=Path, metavar="PATH",
                        help="also run every case with this source tree (e.g. a git worktree of an older commit)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case and tree (median)")
    parser.add_argument("--clip", type=float, help="seconds of speech for the speed rows (default 10; --quick 1)")
    parser.add_argument("--rss-seconds", type=float, nargs="*", metavar="S",
                        help="audio lengths of the portrait and dubbing RSS rows (default 60 600; --quick 1)")
    parser.add_argument("--learned-size", type=int, default=None, choices=(64, 128, 256),
                        help="random bundle resolution of the learned rows (default 256; --quick 64)")
    parser.add_argument("--learned-clip", type=float, help="seconds of speech, learned speed row (default 4)")
    parser.add_argument("--learned-rss-seconds", type=float, nargs="*", metavar="S",
                        help="audio lengths of the learned RSS rows (default 4 16; --quick 0.5)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS / MKL_NUM_THREADS of the runs")
    parser.add_argument("--skip-rss", action="store_true", help="speed rows only")
    parser.add_argument("--resolutions", type=int, nargs="*", default=[], metavar="PX",
                        help="also time the chain in this process at these portrait sizes (this tree)")
    parser.add_argument("--json", action="store_true", help="also print the RSS and resolution rows as JSON")
    args = parser.parse_args()
    quick = args.quick
    clip = args.clip or (1.0 if quick else 10.0)
    rss_seconds = args.rss_seconds if args.rss_seconds is not None else ([1.0] if quick else [60.0, 600.0])
    size = args.learned_size or (64 if quick else 256)
    learned_clip = args.learned_clip or (0.5 if quick else 4.0)
    learned_rss = (args.learned_rss_seconds if args.learned_rss_seconds is not None
                   else ([0.5] if quick else [4.0, 16.0]))
    if args.skip_rss:
        rss_seconds, learned_rss = [], []
    env_extra = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} if args.threads else {}
    trees = [Tree("after", ROOT)]
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "segtalker_core" / "__init__.py").is_file():
            raise SystemExit(f"--baseline-tree {args.baseline_tree}: no segtalker_core/ in it; give a checkout "
                             f"of this repository (git worktree add PATH COMMIT)")
        trees.insert(0, Tree("before", args.baseline_tree.resolve()))
    labels = [t.label for t in trees]
    sys.path.insert(0, str(ROOT))

    print(f"CPU cores: {os.cpu_count()}; load average at start: {load_text()}; trees: "
          + ", ".join(f"{t.label} = {t.path}" for t in trees), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip_frames = 10 if quick else 50
        portrait, clip_video, long_video = write_inputs(work, clip_frames,
                                                        max([clip, *rss_seconds]))
        wav = {s: write_speech(work / f"speech_{s:g}.wav", s)
               for s in sorted({clip, learned_clip, *rss_seconds, *learned_rss})}
        bundles = {(t.label, size): write_bundles(t, work, size) for t in trees}
        made: dict[tuple[str, float], Case] = {}

        def case(kind: str, seconds: float) -> Case:
            """One case per (path, audio length): a speed row's runs count for its RSS row too."""
            if (kind, seconds) not in made:
                audio = ["--audio", str(wav[seconds])]
                made[(kind, seconds)] = {
                    "portrait": lambda: Case(f"portrait 512, {seconds:g} s", ["--image", str(portrait)] + audio),
                    "dubbing": lambda: Case(f"dubbing 1080p streamed from an mp4, {seconds:g} s",
                                            ["--video", str(long_video)] + audio),
                    "looped": lambda: Case(f"dubbing 1080p, a {clip_frames / FPS:g} s clip held and "
                                           f"ping-ponged, {seconds:g} s", ["--video", str(clip_video)] + audio),
                    "learned": lambda: Case(f"learned G{size}, random bundle, {seconds:g} s",
                                            ["--image", str(portrait)] + audio + learned_args(size), True),
                }[kind]()
            return made[(kind, seconds)]

        # --quick: the example portrait on 1 s of speech (the shipped speech.wav is 5.8 s)
        cold_audio = wav[clip] if quick else ROOT / "examples" / "speech.wav"
        cold = Case(f"cold start: examples/portrait.png + {'1 s of speech' if quick else 'examples/speech.wav'}",
                    ["--image", str(ROOT / "examples" / "portrait.png"), "--audio", str(cold_audio)])
        # --quick leaves the cold-start row out: it is one more portrait process, and the
        # portrait row's first-frame column already shows the same path runs.
        speed = ([case("portrait", clip), case("dubbing", clip), case("looped", clip), case("learned", learned_clip)]
                 + ([] if quick else [cold]))
        for row in speed:
            measure(row, trees, work, bundles, size, args.repeats, env_extra)
        print_speed_table(speed, labels, f"talk CLI, one process per run ({FPS} fps, median of {args.repeats})")

        groups = [("portrait 512", [(s, case("portrait", s)) for s in rss_seconds]),
                  ("dubbing 1080p", [(s, case("dubbing", s)) for s in rss_seconds]),
                  (f"learned G{size}", [(s, case("learned", s)) for s in learned_rss])]
        groups = [(name, rows) for name, rows in groups if rows]
        data: dict = {"rss": [], "resolutions": []}
        if groups:
            for _, rows in groups:
                for _, row in rows:
                    if not row.runs:
                        measure(row, trees, work, bundles, size, 1, env_extra)
            data["rss"] = print_rss_table(groups, labels)
    if args.resolutions:
        data["resolutions"] = resolution_rows(args.resolutions, min(clip, 4.0))
        print(f"| portrait side = crop (px), this tree, in one process | frames | seconds (warm) | fps | CPU ms/frame |")
        print("|---:|---:|---:|---:|---:|")
        for r in data["resolutions"]:
            print(f"| {r['size']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.0f} |")
        print(flush=True)
    print(f"load average at the end: {load_text()}")
    if args.json:
        print(json.dumps(data))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        # The benchmarks/ folder (sys.path[0]) holds scripts named like modules (audio, models,
        # parsing); the tree under test comes from PYTHONPATH alone.
        sys.path.pop(0)
        split = sys.argv.index("--")
        sys.exit(child(Path(sys.argv[2]), float(sys.argv[4]), sys.argv[split + 1:]))
    main()
