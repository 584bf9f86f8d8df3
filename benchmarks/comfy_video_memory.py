"""Peak memory of the ComfyUI server dubbing a 1080p clip: IMAGE batches vs the VIDEO path.

    .venv/bin/python benchmarks/comfy_video_memory.py            # full: VIDEO 10 s and 2 min, IMAGE 5 s and 10 s
    .venv/bin/python benchmarks/comfy_video_memory.py --quick    # 4 s each (a few minutes)

Graphs, queued over the HTTP API of the real server the tests use (``tests/comfyui_host.py``,
ComfyUI 0.3.75, ``--cpu``), the clip's own sound track as the speech:

* IMAGE: LoadVideo -> GetVideoComponents -> SegTalkerTalk -> CreateVideo -> SaveVideo
  (every frame is a float32 IMAGE row: 24 MB at 1080p, held by several nodes and ComfyUI's cache);
* VIDEO: LoadVideo -> SegTalkerTalkVideo -> SaveVideo (frames decoded, dubbed and encoded one at a
  time, ``segtalker_core.talk_file``).

Each run gets a fresh server, so the peak is that graph's own: ``VmHWM`` of the server process
(the kernel's high-water mark of its resident set), next to the RSS before the prompt (booted,
nothing loaded) and the peak seen by sampling ``/proc/PID/status`` every 0.1 s. The clip is
``examples/video.mp4`` (400x400) scaled to 1080 px high on a 1920x1080 canvas and looped, with
``examples/speech.wav`` looped as its sound; it is made once into ``--work``.

Measured 2026-12-01 on the 2-core project machine (other test servers running beside it, so the
fps are low; the memory is what counts):

| path | clip | frames | wall s | fps | RSS before | peak RSS (VmHWM) | peak - before per s of video |
|---|---|---|---|---|---|---|---|
| VIDEO | 10 s | 250 | 51 | 4.9 | 949 MB | 2070 MB | 112 MB |
| VIDEO | 120 s | 3000 | 639 | 4.7 | 946 MB | 2076 MB | 9 MB |
| IMAGE | 3 s | 76 | 43 | 1.8 | 946 MB | 7490 MB | 2181 MB |
| IMAGE | 6 s | 151 | 93 | 1.6 | 946 MB | 13748 MB | 2134 MB |

Two minutes through IMAGE would need ~3000 x 24 MB = 72 GB for the decoded batch alone (plus
its copies), beyond this machine's memory, so the IMAGE rows use lengths that fit; the table shows
how they grow per second of video.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import comfyui_host  # noqa: E402

FPS = 25
SIZE = (1920, 1080)


@dataclass(frozen=True)
class Row:
    path: str
    seconds: float
    frames: int
    wall: float
    before_mb: float
    peak_sampled_mb: float
    peak_hwm_mb: float


# ------------------------------------------------------------------------------------ the clip


def make_clip(path: Path, seconds: float) -> Path:
    """The example video on a 1080p canvas, looped to ``seconds``, with the example speech looped."""
    from segtalker_core.audio.io import read_audio_file
    from segtalker_core.video_io import Mp4Writer, read_video

    if path.exists():
        return path
    frames, _ = read_video(ROOT / "examples" / "video.mp4")
    width, height = SIZE
    canvas = np.zeros((len(frames), height, width, 3), np.uint8)
    left = (width - height) // 2
    for i, frame in enumerate(frames):
        canvas[i, :, left:left + height] = cv2.resize(frame, (height, height), interpolation=cv2.INTER_CUBIC)
    wave, rate = read_audio_file(ROOT / "examples" / "speech.wav")
    samples = int(seconds * rate)
    wave = np.tile(wave, (1, samples // wave.shape[1] + 1))[:, :samples]
    n = int(round(seconds * FPS))
    # Ping-pong the 50 source frames so the loop has no jump for the face tracker.
    order = np.concatenate([np.arange(len(canvas)), np.arange(len(canvas) - 2, 0, -1)])
    tmp = path.with_suffix(".part.mp4")
    with Mp4Writer(tmp, FPS, audio=wave, sample_rate=rate) as writer:
        for t in range(n):
            writer.write(canvas[order[t % len(order)]])
    tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------ graphs


def image_graph(clip: str) -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "SegTalkerTalk",
              "inputs": {"image": ["2", 0], "audio": ["2", 1], "fps": float(FPS), "strength": 1.0,
                         "video_mode": "pingpong", "blink": False}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": ["3", 2], "audio": ["3", 1]}},
        "5": {"class_type": "SaveVideo",
              "inputs": {"video": ["4", 0], "filename_prefix": "bench/image", "format": "auto", "codec": "auto"}},
    }


def video_graph(clip: str) -> dict:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": clip}},
        "2": {"class_type": "SegTalkerTalkVideo",
              "inputs": {"video": ["1", 0], "strength": 1.0, "video_mode": "pingpong"}},
        "3": {"class_type": "SaveVideo",
              "inputs": {"video": ["2", 0], "filename_prefix": "bench/video", "format": "auto", "codec": "auto"}},
    }


# ------------------------------------------------------------------------------------ memory


def status_mb(pid: int, key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of a process in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class Sampler:
    """Peak ``VmRSS`` of ``pid`` while it runs, sampled on a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_mb(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(comfyui_dir: Path, work: Path, path_kind: str, clip: Path, seconds: float,
            timeout: float) -> Row:
    graph = image_graph if path_kind == "IMAGE" else video_graph
    with comfyui_host.ComfyUIServer(comfyui_dir, ROOT, work / f"server_{path_kind}_{seconds:g}") as server:
        name = server.put_input(clip)
        pid = server.proc.pid
        before = status_mb(pid, "VmRSS")
        started = time.monotonic()
        with Sampler(pid) as sampler:
            history = server.run_workflow(graph(name), timeout=timeout)
        wall = time.monotonic() - started
        hwm = status_mb(pid, "VmHWM")
        videos = [f for f in server.output_files(history) if f.suffix == ".mp4"]
        from segtalker_core.video_io import probe_video

        frames = probe_video(videos[0].path).frame_count if videos else 0
    return Row(path_kind, seconds, frames, wall, before, sampler.peak, hwm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 s clips only")
    parser.add_argument("--video-seconds", type=float, nargs="+", default=[10.0, 120.0])
    parser.add_argument("--image-seconds", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "bench_comfy_video")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per graph")
    args = parser.parse_args()
    if args.quick:
        args.video_seconds, args.image_seconds = [4.0], [4.0]
    args.work.mkdir(parents=True, exist_ok=True)
    comfyui_dir = comfyui_host.ensure_comfyui()
    runs = [("VIDEO", s) for s in args.video_seconds] + [("IMAGE", s) for s in args.image_seconds]
    rows = []
    for kind, seconds in runs:
        clip = make_clip(args.work / f"clip_1080p_{seconds:g}s.mp4", seconds)
        print(f"running {kind} {seconds:g} s ...", flush=True)
        rows.append(measure(comfyui_dir, args.work, kind, clip, seconds, args.timeout))
    print()
    print(f"ComfyUI 0.3.75 --cpu, 1920x1080 at {FPS} fps, built-in chain; MB = MiB of the server's RSS")
    print("| path | clip | frames | wall s | fps | RSS before | peak RSS (sampled) | peak RSS (VmHWM) | peak - before per s of video |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_second = (r.peak_hwm_mb - r.before_mb) / r.seconds
        print(f"| {r.path} | {r.seconds:g} s | {r.frames} | {r.wall:.0f} | {r.frames / r.wall:.1f} | "
              f"{r.before_mb:.0f} MB | {r.peak_sampled_mb:.0f} MB | {r.peak_hwm_mb:.0f} MB | {per_second:.0f} MB |")


if __name__ == "__main__":
    main()
