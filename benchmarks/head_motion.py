"""Idle head motion of a portrait: what it costs per frame, printed as a Markdown table.

    .venv/bin/python benchmarks/head_motion.py [--repeats 30]

Scenes: skimage's astronaut portrait (512 x 512) and the same scaled to a 1080 x 1080 and a
1920 x 1080 (padded at the sides) frame. "once" is the per-portrait part (the selfie segmenter on
the whole frame, the person's weight and its box); "per frame" is one warp at strength 1 (the
maps of the moving box and one ``cv2.remap``), median over the repeats. The person mask of the
benchmark comes from the selfie segmenter alone (no face parsing needed to time the warp).
Times are on whatever CPU this runs on (say how many cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segtalker_core.procedural.head_motion import head_motion_schedule  # noqa: E402
from segtalker_core.procedural.head_warp import PersonWarp, selfie_person  # noqa: E402

# The astronaut's face in skimage's 512 image: pivot below the chin (x, y) and face height, px.
PIVOT, FACE_HEIGHT = (225.0, 235.0), 150.0


def scenes() -> dict[str, tuple[np.ndarray, float]]:
    """name -> (frame, scale of the 512 astronaut in it)."""
    photo = skimage.data.astronaut()
    square = cv2.resize(photo, (1080, 1080), interpolation=cv2.INTER_CUBIC)
    wide = cv2.copyMakeBorder(square, 0, 0, 420, 420, cv2.BORDER_REPLICATE)
    return {"512 x 512": (photo, 1.0), "1080 x 1080": (square, 1080 / 512), "1920 x 1080": (wide, 1080 / 512)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="1 repeat: only shows that it runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    motion = head_motion_schedule(args.repeats + 2, 25.0, seed=0, strength=1.0)
    print(f"CPU cores: {os.cpu_count()}, cv2 threads: {cv2.getNumThreads()}\n")
    print("| frame | moving box | once (ms) | per frame (ms) |")
    print("|---|---|---|---|")
    for name, (frame, scale) in scenes().items():
        offset = (frame.shape[1] - round(512 * scale)) / 2
        pivot = (PIVOT[0] * scale + offset, PIVOT[1] * scale)
        start = time.perf_counter()
        warp = PersonWarp.from_person(selfie_person(frame), pivot, FACE_HEIGHT * scale)
        once = time.perf_counter() - start
        times = []
        for t in range(1, args.repeats + 1):
            start = time.perf_counter()
            warp.apply(frame, motion, t)
            times.append(time.perf_counter() - start)
        y0, y1, x0, x1 = warp.box
        print(f"| {name} | {x1 - x0} x {y1 - y0} | {1e3 * once:.0f} | {1e3 * np.median(times):.1f} |")


if __name__ == "__main__":
    main()
