"""Face parsing benchmark: ms per frame at 512 px on CPU, built-in parser vs BiSeNet.

    .venv/bin/python benchmarks/parsing.py [--repeats 20] [--size 512]
    .venv/bin/python benchmarks/parsing.py --quick    # a few seconds: 2 repeats, small batches

Rows: our PyTorch detector + 478-point mesh on the CPU (one frame, and a batch of 16 in one
forward each) beside mediapipe 0.10.14's own (timed interleaved with ours, CPU ratio ours /
mediapipe; "mediapipe not installed" where it is absent: the rows and their timing are shared
with ``benchmarks/face_models.py``); the pack's detector (``FaceMeshDetector``, image and video
mode) and FFHQ alignment + warp on the 512 px astronaut portrait; the built-in parser (selfie segmentation + rasterisation) on aligned
crops; a randomly initialised BiSeNet (same cost as the real checkpoint) at batch 1 and 4, if
``segtalker_core.parsing.bisenet`` is present. Times are the median over ``--repeats`` runs after a
warm-up; the minimum and the process CPU time are shown too, since this machine's cores are
shared and wall-clock times swing with the load.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int, frames: int) -> tuple[float, float, float]:
    """Per frame of ``fn()`` (which processes ``frames`` frames), in ms: median and minimum wall
    time, and median CPU time of the whole process (all threads: MediaPipe's and torch's)."""
    fn()
    fn()  # warm-up: model graphs, allocator, caches
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1e3 / frames)
        cpu.append((time.process_time() - start_cpu) * 1e3 / frames)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def row(name: str, result: tuple[float, float, float] | str) -> None:
    if isinstance(result, str):
        print(f"| {name:58s} | {result:>38s} |")
    else:
        print(f"| {name:58s} | {result[0]:10.1f} | {result[1]:11.1f} | {result[2]:11.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--size", type=int, default=512, help="crop size")
    ap.add_argument("--batch", type=int, default=16, help="frames in the batched mesh row")
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds: 2 repeats, a batch of 4, 256 px crops, no BiSeNet batch 4")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.batch, args.size = 2, 4, 256

    import cv2
    import skimage.data

    from segtalker_core.face.align import ffhq_similarity, similarity_to_affine, warp_crop
    from segtalker_core.face.aligned import align_faces
    from segtalker_core.face.detect import FaceMeshDetector
    from segtalker_core.parsing.landmark_parser import LandmarkParser, LandmarkParserSettings

    frame = skimage.data.astronaut()
    # A short clip with gentle motion, for the tracking (video) mode.
    clip = [cv2.warpAffine(frame, np.float64([[1, 0, i % 5], [0, 1, (i * 2) % 5]]), (512, 512),
                           borderMode=cv2.BORDER_REFLECT_101) for i in range(10)]
    aligned = align_faces(frame[None], crop_size=args.size)
    crops = np.repeat(aligned.crops, 4, axis=0)
    landmarks = np.repeat(aligned.landmarks, 4, axis=0)

    import os

    from face_models import interleaved, landmark_rows, print_table

    contenders, missing, closing = landmark_rows(frame, args.batch, tracking=False)
    print(f"Our detector + mesh vs mediapipe, {args.repeats} interleaved repeats (ours on 1 torch "
          f"thread), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print_table(contenders, interleaved(contenders, args.repeats), missing)
    for handle in closing:
        handle.close()

    print(f"\nCPU, crop {args.size} px, ms per frame over {args.repeats} runs: wall-clock median and "
          f"minimum, and CPU time (all threads) median\n")
    print(f"| {'stage':58s} | {'wall med':>10s} | {'wall min':>11s} | {'CPU med':>11s} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 13}|{'-' * 13}|")

    with FaceMeshDetector(video=False) as det:
        row("detection: face mesh, image mode (512 px frame)",
            timed(lambda: det.detect(frame), args.repeats, 1))
    with FaceMeshDetector(video=True) as det:
        row("detection: face mesh, video mode / tracking",
            timed(lambda: [det.detect(f) for f in clip], args.repeats, len(clip)))
    points = aligned.frame_landmarks[0]

    def align_and_warp():
        warp_crop(frame, similarity_to_affine(ffhq_similarity(points), args.size), args.size)

    row(f"alignment: FFHQ transform + warp to {args.size}", timed(align_and_warp, args.repeats, 1))

    with LandmarkParser() as parser:
        row("built-in parser: selfie + raster (batch 1)",
            timed(lambda: parser.parse(crops[:1], landmarks[:1]), args.repeats, 1))
        row("built-in parser: selfie + raster (batch 4)",
            timed(lambda: parser.parse(crops, landmarks), args.repeats, 4))
        small = cv2.resize(crops[0], (256, 256), interpolation=cv2.INTER_AREA)
        row("  of which selfie segmentation (256 px model input)",
            timed(lambda: parser._person_small(small), args.repeats, 1))
    with LandmarkParser(LandmarkParserSettings(use_selfie=False)) as parser:
        row("  face regions only (use_selfie=False)",
            timed(lambda: parser.parse(crops[:1], landmarks[:1]), args.repeats, 1))

    try:
        import torch

        from segtalker_core.parsing.bisenet import BiSeNet, BiSeNetParser
    except ImportError as error:
        row("BiSeNet", f"missing ({error})")
        return
    if args.quick:
        row("BiSeNet", "not timed in --quick (seconds per frame)")
        return
    torch.manual_seed(0)
    model = BiSeNet()
    threads = torch.get_num_threads()
    for batch in (1,) if args.quick else (1, 4):
        parser = BiSeNetParser(model, device="cpu", dtype=torch.float32, batch_size=batch)
        row(f"BiSeNet random init, 512 input, fp32, batch {batch} ({threads} threads)",
            timed(lambda: parser.parse(crops[:batch]), max(1 if args.quick else 3, args.repeats // 4),
                  batch))


if __name__ == "__main__":
    main()
