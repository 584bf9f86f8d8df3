"""Talk benchmark: speed of the built-in chain and peak memory of the ``talk`` command.

    .venv/bin/python benchmarks/talk.py            # full: 10 s clips, 1 and 10 minutes of audio
    .venv/bin/python benchmarks/talk.py --quick    # short variants (a minute or two)

Rows:

* portrait 512: ``pipeline.iter_talk`` on ``examples/portrait.png`` resized to 512x512 (crop 512),
  end to end (face parsing, articulation with phonemes, rendering, paste-back) as the first call
  in the process (MediaPipe and pocketsphinx model loading in it) and again warm, and the
  per-frame part alone (``pipeline.iter_talk_track`` on a track parsed and articulated beforehand);
* dubbing 1080p: ``examples/video.mp4`` upscaled into a 1920x1080 canvas, then
  ``pipeline.iter_talk`` (ping-pong over the 50 input frames) into ``video_io.Mp4Writer`` (on a
  ``BackgroundWriter`` thread, as the CLI)
  (H.264 + AAC): end to end, and from the first frame on;
* talk CLI peak RSS: ``python -m segtalker_core talk --image examples/portrait.png`` on speech of
  two lengths, each in its own process (peak RSS from ``/usr/bin/time -v``), and their ratio.

Speech is espeak-ng sentences with pauses (needs espeak-ng). Numbers depend on the machine load:
the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SR = 16000
FPS = 25
def speech(seconds: float) -> np.ndarray:
    """``seconds`` of 16 kHz speech (tests/speech.long_speech: varied sentences, rates, pauses)."""
    from speech import long_speech

    return long_speech(seconds, SR)


def audio_dict(wave: np.ndarray) -> dict:
    import torch

    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": SR}


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def portrait_rows(seconds: float) -> list[tuple]:
    from segtalker_core import pipeline
    from segtalker_core.audio.articulation import articulation_from_audio
    from segtalker_core.audio.timing import frame_count
    from segtalker_core.frame_schedule import source_indices

    image = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "portrait.png")), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (512, 512), interpolation=cv2.INTER_CUBIC)
    wave = speech(seconds)
    audio = audio_dict(wave)

    totals = []
    for _ in range(2):  # the first call loads MediaPipe and pocketsphinx; the second is warm
        start = time.perf_counter()
        n = sum(1 for _ in pipeline.iter_talk(image[None], audio, FPS, crop_size=512))
        totals.append(time.perf_counter() - start)

    start = time.perf_counter()
    faces = pipeline.parse_faces(image[None], crop_size=512)
    parsed = time.perf_counter()
    frames = frame_count(Fraction(len(wave), SR), FPS)
    track = articulation_from_audio(wave, FPS, n_frames=frames)
    articulated = time.perf_counter()
    index = source_indices(1, frames)
    start_render = time.perf_counter()
    m = sum(1 for _ in pipeline.iter_talk_track(faces, track.params, FPS, index, None, True, 0, None))
    render = time.perf_counter() - start_render
    note = f"one-time: parse {parsed - start:.2f} s, articulation {articulated - parsed:.2f} s"
    return [
        ("portrait 512, end to end, first call (model loading included)", n, totals[0], n / totals[0], 25, ""),
        ("portrait 512, end to end, warm (parse + articulation + frames)", n, totals[1], n / totals[1], 25, ""),
        ("portrait 512, frames only (parse, articulation excluded)", m, render, m / render, 25, note),
    ]


def dubbing_rows(seconds: float) -> list[tuple]:
    from segtalker_core import pipeline
    from segtalker_core.video_io import BackgroundWriter, Mp4Writer, read_video

    small, _ = read_video(ROOT / "examples" / "video.mp4")
    canvas = np.empty((len(small), 1080, 1920, 3), np.uint8)
    for i, frame in enumerate(small):
        # the 400x400 clip upscaled to the canvas height, centred on a blurred, stretched copy
        canvas[i] = cv2.GaussianBlur(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR), (0, 0), 25)
        canvas[i, :, 420:1500] = cv2.resize(frame, (1080, 1080), interpolation=cv2.INTER_CUBIC)
    wave = speech(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        first = None
        n = 0
        # As the talk CLI does: encoding on a worker thread overlaps the render loop.
        with Mp4Writer(Path(tmp) / "dub1080.mp4", FPS, audio=wave, sample_rate=SR) as mp4, \
                BackgroundWriter(mp4) as writer:
            for frame in pipeline.iter_talk(canvas, audio_dict(wave), FPS):
                writer.write(frame)
                n += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        size = os.path.getsize(Path(tmp) / "dub1080.mp4")
    note = f"{len(canvas)} input frames parsed before frame 1: {first - start:.1f} s; mp4 {size / 2**20:.1f} MiB"
    return [
        ("dubbing 1080p + H.264/AAC encode, end to end", n, end - start, n / (end - start), 10, note),
        ("dubbing 1080p + encode, from the first frame on", n - 1, end - first, (n - 1) / (end - first), 10, ""),
    ]


def cli_rss(seconds: float, workdir: Path) -> tuple[int, float, float]:
    """(frames, wall seconds, peak RSS MiB) of one ``talk`` run in a fresh process."""
    import soundfile as sf

    from segtalker_core.audio.timing import frame_count

    wav = workdir / f"speech_{seconds:g}s.wav"
    sf.write(str(wav), speech(seconds), SR, subtype="PCM_16")
    cmd = [sys.executable, "-m", "segtalker_core", "talk", "--image", str(ROOT / "examples" / "portrait.png"),
           "--audio", str(wav), "-o", str(workdir / "out.mp4"), "-q"]
    # ru_maxrss survives fork + exec (the forked copy of this process's memory counts), so a child
    # started from this big process would report this process's peak. /usr/bin/time is small
    # when it forks the run, so its figure is the run's own.
    timer = shutil.which("time", path="/usr/bin:/bin")
    if timer is None:
        raise SystemExit("peak RSS needs /usr/bin/time (apt-get install time); or pass --skip-rss")
    start = time.perf_counter()
    done = subprocess.run([timer, "-v"] + cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"talk failed ({done.returncode}): {done.stderr[-2000:]}")
    kib = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return frame_count(Fraction(int(seconds * SR), SR), FPS), wall, int(kib.group(1)) / 1024.0


def resolution_rows(sizes: list[int], seconds: float) -> list[dict]:
    """Warm fps of the built-in chain on the portrait resized to each ``size`` (crop = size)."""
    from segtalker_core import pipeline

    source = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "portrait.png")), cv2.COLOR_BGR2RGB)
    audio = audio_dict(speech(seconds))
    rows = []
    for size in sizes:
        image = cv2.resize(source, (size, size), interpolation=cv2.INTER_CUBIC)
        for _ in range(2):  # the first call at a size loads models and warms caches
            start, start_cpu = time.perf_counter(), time.process_time()
            n = sum(1 for _ in pipeline.iter_talk(image[None], audio, FPS, crop_size=size))
            wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        rows.append({"size": size, "frames": n, "seconds": wall, "fps": n / wall, "cpu_ms_per_frame": 1e3 * cpu / n})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short clips and 0.5 / 2 minutes of audio")
    parser.add_argument("--skip-rss", action="store_true", help="speed rows only")
    parser.add_argument("--rss-seconds", type=float, nargs="+", metavar="S",
                        help="audio lengths (seconds) of the peak-RSS rows (default: 1 and 10 minutes; "
                             "--quick: 0.5 and 2)")
    parser.add_argument("--resolutions", type=int, nargs="*", default=[], metavar="PX",
                        help="also time the chain on the portrait at these sizes (crop = size)")
    parser.add_argument("--json", action="store_true", help="also print the RSS and resolution rows as JSON")
    args = parser.parse_args()
    clip = 4.0 if args.quick else 10.0
    seconds = args.rss_seconds or [60.0 * m for m in ((0.5, 2.0) if args.quick else (1.0, 10.0))]

    print(f"CPU cores: {os.cpu_count()}; load average at start: {load_text()}", flush=True)
    rows = portrait_rows(clip) + dubbing_rows(clip)
    print(f"| case ({clip:g} s of speech, {FPS} fps) | frames | seconds | fps | target | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, n, secs, fps, target, note in rows:
        print(f"| {name} | {n} | {secs:.1f} | {fps:.1f} | >= {target} | {note} |")
    print(f"\nload average after the speed rows: {load_text()}\n", flush=True)

    data: dict = {"rss": [], "resolutions": []}
    if args.resolutions:
        data["resolutions"] = resolution_rows(args.resolutions, min(clip, 4.0))
        print(f"| portrait side = crop (px), {min(clip, 4.0):g} s of speech | frames | seconds (warm) | fps | CPU ms/frame |")
        print("|---:|---:|---:|---:|---:|")
        for r in data["resolutions"]:
            print(f"| {r['size']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} | {r['cpu_ms_per_frame']:.0f} |")
        print(flush=True)
    if not args.skip_rss:
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for s in seconds:
                results.append((s,) + cli_rss(s, Path(tmp)))
                print(f"  ({s:g} s done, load {load_text()})", flush=True)
        print("| talk CLI, portrait, audio | frames | wall s | fps | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|")
        for s, n, wall, rss in results:
            print(f"| {s:g} s | {n} | {wall:.0f} | {n / wall:.1f} | {rss:.0f} |")
            data["rss"].append({"audio_seconds": s, "frames": n, "wall_seconds": wall, "peak_rss_mib": rss})
        if len(results) >= 2:
            ratio = results[-1][3] / results[0][3]
            verdict = "within" if ratio <= 1.2 else "NOT within"
            print(f"\npeak RSS ratio {results[-1][0]:g} s / {results[0][0]:g} s: {ratio:.2f} ({verdict} the 1.2x target)")
    print(f"load average at the end: {load_text()}")
    if args.json:
        print(json.dumps(data))


if __name__ == "__main__":
    main()
