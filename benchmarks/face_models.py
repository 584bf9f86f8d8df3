"""Face models: ms per frame, the PyTorch re-implementation vs mediapipe 0.10.14 (when installed).

    .venv/bin/python benchmarks/face_models.py [--repeats 10] [--device cpu] [--dtype fp32]
    .venv/bin/python benchmarks/face_models.py --quick     # a few seconds: 2 repeats, batch 4

Rows, on the 512 px astronaut portrait: detection + 478-point mesh, one frame (image mode) and a
batch of 16 frames (one detector forward + one mesh forward), tracking mode (video), and selfie
segmentation at 256 px; mediapipe's own solutions beside them on the CPU, and the ratio of the
CPU times (ours / mediapipe). The contenders are timed interleaved (one run of each per repeat)
so that a change of the machine's load hits all of them alike: this machine's cores are shared,
and the CPU time of the process is the steadier number (wall time waits for other jobs). Our
CPU forwards run on one torch thread (``tflite_graph.CPU_THREADS``); mediapipe's TFLite chooses
its own threads, all counted in the CPU time.

:func:`landmark_rows` is shared with ``benchmarks/parsing.py`` (its detection rows).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOT_INSTALLED = "mediapipe not installed"


@dataclass(frozen=True)
class Contender:
    """``run()`` processes ``frames`` frames; ``reference``: the row whose CPU time it is
    compared with (None: none)."""

    name: str
    run: Callable[[], object]
    frames: int
    reference: str | None = None


@dataclass(frozen=True)
class Timing:
    """ms per frame: median and minimum wall time, median process CPU time (all threads)."""

    wall_median: float
    wall_min: float
    cpu_median: float


def interleaved(contenders: list[Contender], repeats: int) -> dict[str, Timing]:
    """Each contender warmed up twice, then ``repeats`` rounds of one run of each in turn."""
    for contender in contenders:
        contender.run()
        contender.run()  # warm-up: model graphs, allocator, caches
    wall: dict[str, list[float]] = {c.name: [] for c in contenders}
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(repeats):
        for contender in contenders:
            start, start_cpu = time.perf_counter(), time.process_time()
            contender.run()
            wall[contender.name].append((time.perf_counter() - start) * 1e3 / contender.frames)
            cpu[contender.name].append((time.process_time() - start_cpu) * 1e3 / contender.frames)
    return {name: Timing(statistics.median(wall[name]), min(wall[name]),
                         statistics.median(cpu[name])) for name in wall}


def print_table(contenders: list[Contender], timings: dict[str, Timing],
                missing: list[str]) -> None:
    """Markdown table; ``missing``: row names that could not run (mediapipe absent)."""
    print(f"| {'ms per frame':52s} | {'wall med':>8s} | {'wall min':>8s} | {'CPU med':>8s} "
          f"| {'CPU ratio':>9s} |")
    print(f"|{'-' * 54}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for contender in contenders:
        t = timings[contender.name]
        ratio = ""
        if contender.reference in timings:
            ratio = f"{t.cpu_median / timings[contender.reference].cpu_median:.2f}x"
        print(f"| {contender.name:52s} | {t.wall_median:8.1f} | {t.wall_min:8.1f} "
              f"| {t.cpu_median:8.1f} | {ratio:>9s} |")
    for name in missing:
        print(f"| {name:52s} | {NOT_INSTALLED:>43s} |")


def mediapipe_solutions():
    """mediapipe's legacy solutions, or None where it is not installed (e.g. Python 3.13)."""
    try:
        from mediapipe.python.solutions import face_mesh, selfie_segmentation
    except ImportError:
        return None
    warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype")
    return face_mesh, selfie_segmentation


def landmark_rows(image: np.ndarray, batch: int, device: str = "cpu", dtype=None,
                  tracking: bool = True, eager: bool = False, unfused: bool = False
                  ) -> tuple[list[Contender], list[str], list]:
    """Detection + mesh contenders, ours and mediapipe's: (contenders, rows that cannot run,
    context managers to close after timing). ``eager``: ours also with the eager graph (as
    before the CPU forwards were frozen by torch.jit), ``unfused``: ours also with the mesh's
    parallel branches run operator by operator (as before ``parallel_branches``), timed in the
    same rounds."""
    import torch

    from segtalker_core.face.torch_models.landmarker import TorchFaceLandmarker

    dtype = dtype or torch.float32
    frames = np.stack([image] * batch)
    still = TorchFaceLandmarker(video=False, device=device, dtype=dtype)
    video = TorchFaceLandmarker(video=True, device=device, dtype=dtype)
    mp_one, mp_batch, mp_track = (f"mediapipe: detect + mesh, 1 frame",
                                  f"mediapipe: detect + mesh, {batch} frames one by one",
                                  "mediapipe: tracking (video mode), 1 frame")
    contenders = [
        Contender("ours: detect + mesh, 1 frame", lambda: still.process(image), 1, mp_one),
        Contender(f"ours: detect + mesh, batch of {batch}", lambda: still.process_batch(frames),
                  batch, mp_batch),
    ]
    if tracking:
        contenders.append(Contender("ours: tracking (video mode), 1 frame",
                                    lambda: video.process(image), 1, mp_track))
        # The pipeline's FaceMeshDetector looks for up to 4 faces: with one in the picture the
        # detector would run on every frame; it runs on every 5th (redetect_every).
        for every in (1, 5):
            several = TorchFaceLandmarker(video=True, max_faces=4, redetect_every=every,
                                          device=device, dtype=dtype)
            contenders.append(Contender(
                f"ours: tracking, 4 faces max, detect every {'frame' if every == 1 else f'{every}th frame'}",
                lambda several=several: several.process(image), 1, mp_track))
    if eager:
        networks = (still.detector.network, still.mesh.network)

        def eager_graph(run):
            def timed_eagerly():
                for network in networks:
                    network.freeze_on_cpu = False
                try:
                    return run()
                finally:
                    for network in networks:
                        network.freeze_on_cpu = True
            return timed_eagerly

        contenders += [
            Contender("ours, eager graph: detect + mesh, 1 frame",
                      eager_graph(lambda: still.process(image)), 1, mp_one),
            Contender(f"ours, eager graph: detect + mesh, batch of {batch}",
                      eager_graph(lambda: still.process_batch(frames)), batch, mp_batch),
        ]
    if unfused:
        contenders += _unfused_rows(image, frames, device, dtype, tracking,
                                    (mp_one, mp_batch, mp_track))
    solutions = mediapipe_solutions()
    names = [mp_one, mp_batch] + ([mp_track] if tracking else [])
    if solutions is None:
        return contenders, names, []
    face_mesh = solutions[0]
    static = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
    streaming = face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                   refine_landmarks=True)
    contenders += [
        Contender(mp_one, lambda: static.process(image), 1),
        Contender(mp_batch, lambda: [static.process(f) for f in frames], batch),
    ]
    if tracking:
        contenders.append(Contender(mp_track, lambda: streaming.process(image), 1))
    return contenders, [], [static, streaming]


def _unfused_rows(image, frames, device, dtype, tracking, references) -> list[Contender]:
    """Our detect + mesh rows with a mesh whose parallel branches are not fused."""
    from segtalker_core.face.torch_models import loading
    from segtalker_core.face.torch_models.face_mesh import AttentionFaceMesh
    from segtalker_core.face.torch_models.landmarker import TorchFaceLandmarker
    from segtalker_core.face.torch_models.tflite_graph import TFLiteGraph, load_graph_file

    graph, constants = load_graph_file(loading.WEIGHTS_DIR / loading.MESH_FILE)
    mesh = AttentionFaceMesh(TFLiteGraph(graph, constants, fuse_parallel=False).to(
        device=device, dtype=dtype).eval())
    still = TorchFaceLandmarker(video=False, device=device, dtype=dtype)
    video = TorchFaceLandmarker(video=True, device=device, dtype=dtype)
    still.mesh = video.mesh = mesh
    mp_one, mp_batch, mp_track = references
    rows = [
        Contender("ours, unfused: detect + mesh, 1 frame",
                  lambda: still.process(image), 1, mp_one),
        Contender(f"ours, unfused: detect + mesh, batch of {len(frames)}",
                  lambda: still.process_batch(frames), len(frames), mp_batch),
    ]
    if tracking:
        rows.append(Contender("ours, unfused: tracking (video mode), 1 frame",
                              lambda: video.process(image), 1, mp_track))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: 2 repeats, a batch of 4 (to check the script runs)")
    parser.add_argument("--eager", action="store_true",
                        help="also time our models with the eager graph (before torch.jit)")
    parser.add_argument("--unfused", action="store_true",
                        help="also time our mesh with its parallel branches unfused")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batch = 2, 4

    import cv2
    import skimage.data
    import torch

    from segtalker_core.face.torch_models import loading

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    image = np.ascontiguousarray(skimage.data.astronaut())
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)

    contenders, missing, closing = landmark_rows(image, args.batch, args.device, dtype,
                                                    eager=args.eager, unfused=args.unfused)
    segmenter = loading.selfie_segmenter(args.device, dtype)
    tensor = torch.from_numpy(small).permute(2, 0, 1)[None].to(args.device, dtype)

    def segment():
        with torch.inference_mode():
            segmenter(tensor)

    mp_selfie = "mediapipe: selfie segmentation 256 px"
    contenders.append(Contender("ours: selfie segmentation 256 px", segment, 1, mp_selfie))
    solutions = mediapipe_solutions()
    if solutions is None:
        missing.append(mp_selfie)
    else:
        selfie = solutions[1].SelfieSegmentation(model_selection=0)
        closing.append(selfie)
        contenders.append(Contender(mp_selfie, lambda: selfie.process(small), 1))

    print(f"torch {torch.__version__}, {args.device}, {args.dtype}; our CPU forwards on 1 torch "
          f"thread; {args.repeats} interleaved repeats; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    timings = interleaved(contenders, args.repeats)
    print_table(contenders, timings, missing)
    for handle in closing:
        handle.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
