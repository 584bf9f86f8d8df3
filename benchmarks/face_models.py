"""Face models: ms per frame, the PyTorch re-implementation vs mediapipe 0.10.14 (when installed).

    .venv/bin/python benchmarks/face_models.py [--repeats 10] [--device cpu] [--dtype fp32]

Rows, on the 512 px astronaut portrait: detection + 478-point mesh, one frame (image mode) and a
batch of 16 frames (one detector forward + one mesh forward), tracking mode (video), and selfie
segmentation at 256 px; mediapipe's own solutions beside them on the CPU. Median and minimum wall
time per frame over ``--repeats`` runs after a warm-up, and the process CPU time per frame (this
machine's cores are shared: wall times swing with the load).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parsing import timed  # noqa: E402  (benchmarks/parsing.py: median/min wall, CPU per frame)


def row(name: str, result: tuple[float, float, float] | str) -> None:
    if isinstance(result, str):
        print(f"| {name:44s} | {result:>30s} |")
    else:
        print(f"| {name:44s} | {result[0]:8.1f} | {result[1]:8.1f} | {result[2]:8.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    args = parser.parse_args()

    import cv2
    import skimage.data
    import torch

    from segtalker_core.face.torch_models import loading
    from segtalker_core.face.torch_models.landmarker import TorchFaceLandmarker

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    image = np.ascontiguousarray(skimage.data.astronaut())
    batch = np.stack([image] * 16)
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)

    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} torch threads (face forwards use 1 on a CPU)")
    print(f"| {'ms per frame':44s} | {'median':>8s} | {'min':>8s} | {'cpu':>8s} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    still = TorchFaceLandmarker(video=False, device=args.device, dtype=dtype)
    row("torch: detect + mesh, 1 frame", timed(lambda: still.process(image), args.repeats, 1))
    row("torch: detect + mesh, batch of 16",
        timed(lambda: still.process_batch(batch), max(1, args.repeats // 4), 16))
    video = TorchFaceLandmarker(video=True, device=args.device, dtype=dtype)
    row("torch: tracking (video mode), 1 frame", timed(lambda: video.process(image),
                                                       args.repeats, 1))
    segmenter = loading.selfie_segmenter(args.device, dtype)
    tensor = torch.from_numpy(small).permute(2, 0, 1)[None].to(args.device, dtype)

    def segment():
        with torch.inference_mode():
            segmenter(tensor)

    row("torch: selfie segmentation 256 px", timed(segment, args.repeats, 1))

    try:
        from mediapipe.python.solutions import face_mesh, selfie_segmentation
    except ImportError:
        row("mediapipe", "not installed")
        return 0
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype")
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                            refine_landmarks=True) as mesh:
        row("mediapipe: detect + mesh, 1 frame", timed(lambda: mesh.process(image),
                                                       args.repeats, 1))
    with face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                            refine_landmarks=True) as mesh:
        row("mediapipe: tracking (video mode), 1 frame", timed(lambda: mesh.process(image),
                                                               args.repeats, 1))
    with selfie_segmentation.SelfieSegmentation(model_selection=0) as selfie:
        row("mediapipe: selfie segmentation 256 px", timed(lambda: selfie.process(small),
                                                           args.repeats, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
