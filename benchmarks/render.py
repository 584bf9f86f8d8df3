"""Speed of the built-in renderer (segtalker_core.procedural) at 512 px.

    python benchmarks/render.py [--frames 100] [--size 512]

Source: the astronaut portrait of scikit-image, detected, FFHQ-aligned and parsed with the
built-in landmark parser. Two sources are timed: the photo as is (smiling, teeth showing: the
source's teeth are reused; all-zero parameters close the mouth, as the rig's parameters are
absolute) and a closed-mouth version of it
(synthetic teeth). Parameters: a deterministic speech-like articulation track.

Rows (per frame, wall clock; median and best over the frames, plus process CPU time which is
less sensitive to other jobs on a shared machine):

* ``drive``  -- the pose: landmarks, warp and 12-region map (the talking segmentation);
* ``paint`` -- the RGB crop of a pose;
* ``drive + paint`` -- both (what the built-in chain does per portrait frame);
* ``follow a hint-less map`` -- a map that comes without its articulation (edited, or from a
  TSG): read its mouth and eyes, fit the rig, pose (the paint is the same as above);
* ``dubbing frame`` -- a frame drawn on its own crop/landmarks (preparation included), i.e. the
  renderer's share of the per-frame video-dubbing chain (detection, parsing, paste-back and
  encoding are not included).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segtalker_core import builtin, labels as L  # noqa: E402
from segtalker_core.containers import SegmentationFrame  # noqa: E402
from segtalker_core.procedural.renderer import (  # noqa: E402
    RenderOptions, SourceFace, eye_closure_schedule,
)


def astronaut_source(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import skimage.data

    from segtalker_core.face.aligned import align_faces
    from segtalker_core.parsing.landmark_parser import LandmarkParser

    aligned = align_faces(skimage.data.astronaut()[None], crop_size=size)
    crop, landmarks = aligned.crops[0], aligned.landmarks[0]
    with LandmarkParser() as parser:
        regions = L.merge_to_regions(parser.parse_one(crop, landmarks))
    return crop, landmarks, regions


def speech_params(frames: int, fps: float = 25.0) -> np.ndarray:
    """A speech-like track: syllables at ~4 Hz, some wide/round vowels and p/b/m closures."""
    t = np.arange(frames) / fps
    jaw = np.clip(0.55 * np.sin(2 * np.pi * 4.0 * t) ** 2 + 0.1 * np.sin(2 * np.pi * 0.7 * t), 0, 1)
    width = np.sin(2 * np.pi * 0.9 * t)
    round_ = np.clip(-np.sin(2 * np.pi * 0.6 * t), 0, 1) * 0.8
    closure = (np.sin(2 * np.pi * 1.3 * t) > 0.85).astype(float)
    teeth = np.clip(0.3 + 0.6 * np.sin(2 * np.pi * 0.5 * t), 0, 1)
    return np.stack([jaw, width, round_, closure, teeth], axis=1).astype(np.float32)


def timed(fn, count: int) -> tuple[float, float, float]:
    """(median ms, best ms, cpu ms) per call of ``fn(i)`` for i in range(count)."""
    times = []
    cpu = time.process_time()
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu) / count
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times)), 1e3 * cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="tiny variant: only shows that it runs")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size = 3, 256

    crop, landmarks, regions = astronaut_source(args.size)
    params = speech_params(args.frames)
    closed = SourceFace(crop, landmarks, regions).frame(np.zeros(5))
    sources = {
        "astronaut (teeth)": (crop, landmarks, regions),
        "astronaut closed": (closed.crop, closed.landmarks, closed.regions),
    }
    rows = []
    for name, (c, lm, reg) in sources.items():
        start = time.perf_counter()
        options = RenderOptions()
        renderer = SourceFace(c, lm, reg, options)
        setup = 1e3 * (time.perf_counter() - start)
        renderer.frame(params[0])  # warm-up
        closure = eye_closure_schedule(options, len(params), 25.0)
        poses = [renderer.drive(params[i], float(closure[i])) for i in range(len(params))]
        drive = timed(lambda i: renderer.drive(params[i], float(closure[i])), len(params))
        paint = timed(lambda i: renderer.paint(poses[i]), len(params))
        total = timed(lambda i: renderer.frame(params[i], float(closure[i])), len(params))
        # Following a map that carries no hint: read the mouth and eyes, fit the rig, pose.
        renderer.mouth_reader, renderer.eye_reader  # built once per source
        follow = timed(lambda i: builtin.MapFollower().pose(renderer, SegmentationFrame(poses[i].regions.copy(), 0)), len(params))
        # Dubbing prepares each frame's own face (rig, mesh, colours), then draws it.
        dub = timed(lambda i: SourceFace(c, lm, reg, RenderOptions(blink=False)).frame(params[i]), len(params))
        rows += [
            (name, "portrait setup (once)", (setup, setup, float("nan"))),
            (name, "drive (pose + map)", drive),
            (name, "paint (pixels)", paint),
            (name, "drive + paint", total),
            (name, "follow a hint-less map (fit + pose)", follow),
            (name, "dubbing frame (prepare + draw)", dub),
        ]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.size}x{args.size} crops, {args.frames} frames, {os.cpu_count()} CPUs, "
          f"load average {load:.1f}\n")
    print("| source | stage | ms/frame (median) | ms/frame (best) | CPU ms/frame | fps (median) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, stage, (med, best, cpu) in rows:
        fps = "" if "setup" in stage else f"{1e3 / med:.0f}"
        cpu_text = "" if np.isnan(cpu) else f"{cpu:.1f}"
        print(f"| {name} | {stage} | {med:.1f} | {best:.1f} | {cpu_text} | {fps} |")


if __name__ == "__main__":
    main()
