"""How closely the built-in renderer draws the maps it is given, and what following costs.

    .venv/bin/python benchmarks/follow_map.py [--size 256] [--quick]

The built-in talking segmentation of an espeak-ng sentence on the astronaut portrait is rendered
three ways: with its own hints (the rig's render), with no hints at all (mouth and eyes read off
the maps), and with the articulation of another sentence as a wrong hint. The rendered crops are
re-parsed by the built-in parser (MediaPipe landmarks on the output) and compared with the maps:
mean IoU of lips + mouth interior, and the correlation of the interior area over time.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from segtalker_core import labels as L, pipeline  # noqa: E402

FPS = 25.0
MOUTH = (L.region_index("lips"), L.region_index("mouth_interior"))


def audio(text: str) -> dict:
    import torch

    from speech import speak_wave

    wave, rate = speak_wave(text)
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate}


def reparse(crops: np.ndarray) -> np.ndarray:
    from segtalker_core.face.detect import FaceMeshDetector
    from segtalker_core.parsing.landmark_parser import LandmarkParser

    out = np.zeros(crops.shape[:3], np.uint8)
    with FaceMeshDetector() as detector, LandmarkParser() as parser:
        for t, crop in enumerate(crops):
            found = detector.detect(crop)
            if found:
                out[t] = L.merge_to_regions(parser.parse_one(crop, found[0].landmarks))
    return out


def agreement(rendered: np.ndarray, wanted: np.ndarray) -> tuple[float, float]:
    a, b = np.isin(rendered, MOUTH), np.isin(wanted, MOUTH)
    iou = float(((a & b).sum(axis=(1, 2)) / np.maximum((a | b).sum(axis=(1, 2)), 1)).mean())
    interior = MOUTH[1]
    r = float(np.corrcoef((rendered == interior).sum(axis=(1, 2)), (wanted == interior).sum(axis=(1, 2)))[0, 1])
    return iou, r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="one word at 128 px: only shows that it runs")
    args = parser.parse_args()

    import skimage.data

    if args.quick:
        args.size = 128
    text = "Papa." if args.quick else "Hello, my name is Eileen. Open wide, papa. Bob ate a big apple."
    faces = pipeline.parse_faces(skimage.data.astronaut()[None], crop_size=args.size)
    seg = pipeline.talking_segmentation(faces, audio(text), FPS, method="acoustic")
    other = pipeline.talking_segmentation(faces, audio("Mama." if args.quick else "Mama made more lemonade, she said."), FPS, method="acoustic")
    n = len(seg)
    wrong = other.mouth_params[np.arange(n) % len(other)]
    cases = {
        "own hints (the rig's render)": seg,
        "no hints (read off the maps)": dataclasses.replace(seg, mouth_params=None, eye_closure=None, landmarks=None),
        "another sentence's articulation as hint": dataclasses.replace(seg, mouth_params=wrong, landmarks=None),
    }
    print(f"\n{n} frames, {args.size}x{args.size} crops\n")
    print("| maps rendered with | mouth IoU (re-parsed) | interior-area r | synthesis ms/frame |")
    print("|---|---:|---:|---:|")
    for name, case in cases.items():
        start = time.perf_counter()
        crops = pipeline.synthesize(case)
        ms = 1e3 * (time.perf_counter() - start) / n
        iou, r = agreement(reparse(crops), seg.regions)
        print(f"| {name} | {iou:.3f} | {r:.3f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
