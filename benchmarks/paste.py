"""Paste-back and video I/O speed: ms per frame, printed as a Markdown table.

    .venv/bin/python benchmarks/paste.py [--repeats 20] [--encode-frames 30]

Scenes: a 512 crop pasted into a 1080p frame (face square ~600 px, a typical talking head) and a
4K frame (~1200 px); the mask is a feathered 12-region face mask. Encoding: 1080p H.264 (crf 18)
with 16 kHz audio, content moving every frame; decoding reads that file back.
Times are medians over the repeats, on whatever CPU this runs on (say how many cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import skimage.data

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segtalker_core import labels as L  # noqa: E402
from segtalker_core import video_io as V  # noqa: E402
from segtalker_core.face import paste as P  # noqa: E402
from segtalker_core.face.align import similarity_to_affine, warp_crop  # noqa: E402

R = {name: i for i, name in enumerate(L.REGIONS_12)}
# Astronaut face square within skimage's 512x512 image (centre x, y, half side, angle).
FACE = np.array([225.1, 106.5, 86.6, 0.052])


def face_regions(size: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    for (cx, cy, ax, ay), name in [
        ((.5, .30, .33, .22), "hair"), ((.5, .58, .27, .33), "skin"), ((.373, .41, .07, .015), "brows"),
        ((.623, .41, .07, .015), "brows"), ((.373, .476, .05, .02), "eyes"),
        ((.623, .476, .05, .02), "eyes"), ((.5, .58, .05, .08), "nose"), ((.5, .735, .125, .04), "lips"),
    ]:
        cv2.ellipse(m, (round(cx * size), round(cy * size)), (round(ax * size), round(ay * size)),
                    0, 0, 360, R[name], -1)
    return m


def scene(height: int, width: int, face_px: int):
    """A frame with the astronaut scaled so that her crop square is ~face_px wide."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(30, 220, width).astype(np.uint8)[None]
    frame[..., 1] = np.linspace(60, 160, height).astype(np.uint8)[:, None]
    frame[..., 2] = 100
    k = face_px / (2 * FACE[2])
    side = int(512 * k)
    x0, y0 = (width - side) // 2, max((height - side) // 2, 0)
    face = cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
    visible = min(side, height - y0)
    frame[y0:y0 + visible, x0:x0 + side] = face[:visible]
    params = FACE * np.array([k, k, k, 1]) + np.array([x0, y0, 0, 0])
    return frame, similarity_to_affine(params, 512)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (caches, lazy allocations)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--encode-frames", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="tiny variant: only shows that it runs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.encode_frames = 1, 2

    regions = face_regions(512)
    rows = []
    mask = P.face_blend_mask(regions, 8)
    rows.append(("face_blend_mask 512", median_ms(lambda: P.face_blend_mask(regions, 8), args.repeats)))
    for label, (h, w, face_px) in {"1080p": (1080, 1920, 600), "4K": (2160, 3840, 1200)}.items():
        frame, matrix = scene(h, w, face_px)
        crop = warp_crop(frame, matrix, 512)
        crop[np.isin(regions, [R["lips"]])] = (200, 40, 60)
        for cc in (True, False):
            rows.append((f"paste 512 -> {label}, colour correction {'on' if cc else 'off'}, inplace",
                         median_ms(lambda: P.paste_face(frame, crop, matrix, mask, color_correct=cc,
                                                        inplace=True), args.repeats)))
        rows.append((f"paste 512 -> {label}, colour correction on, new frame (copy)",
                     median_ms(lambda: P.paste_face(frame, crop, matrix, mask), args.repeats)))
        rows.append((f"paste 512 -> {label}, multi-band blend (4 bands), inplace",
                     median_ms(lambda: P.paste_face(frame, crop, matrix, mask, inplace=True,
                                                    blend="multiband"), args.repeats)))

    frame, matrix = scene(1080, 1920, 600)
    n = args.encode_frames
    frames = [np.roll(frame, 4 * i, axis=1) for i in range(n)]  # every frame differs
    audio = (0.2 * np.sin(np.arange(int(16000 * n / 25)) * 0.05)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.mp4")
        for preset in ("veryfast", "ultrafast"):
            start = time.perf_counter()
            V.write_mp4(path, frames, 25, audio=audio, sample_rate=16000,
                        settings=V.EncodeSettings(preset=preset))
            rows.append((f"encode 1080p H.264 crf 18 {preset} + AAC", 1000 * (time.perf_counter() - start) / n))
        start = time.perf_counter()
        with V.VideoReader(path, chunk_size=8) as reader:
            decoded = sum(len(chunk) for chunk in reader)
        rows.append(("decode 1080p (VideoReader, chunks of 8)", 1000 * (time.perf_counter() - start) / decoded))

    print(f"CPU cores visible: {os.cpu_count()}, OpenCV threads: {cv2.getNumThreads()}\n")
    print("| step | ms/frame |\n|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
