"""Video dubbing with the clip's own mouth bank (issue 13, item 8): CPU cost and a contact sheet.

    python benchmarks/mouth_bank.py [--quick] [--reps 3] [--sheet mouth_bank.png]

Two clips, parsed once at a 512 crop, are dubbed by the built-in stages (talking segmentation +
synthesis: the renderer's share of dubbing, without detection, parsing, paste-back or encoding)
with the bank on and off, the two interleaved ``--reps`` times after a warm-up; the table gives
CPU ms per output frame (``time.process_time``, the median of the reps, and the median of the
paired differences; run with ``OMP_NUM_THREADS=1``), and the share of it spent collecting the bank
(per input frame):

* ``example video`` -- ``examples/video.mp4`` (its person smiles with teeth in every frame);
* ``smile / closed`` -- the astronaut photo aligned, and the same face rendered with its mouth
  closed, alternating (a clip whose mouth is open in half of its frames).

Both are driven by the articulation of ``examples/speech.wav``. The table also gives how many
entries the bank kept and the share of output frames that took their interior from it.
``--sheet`` writes a PNG of mouth crops: per column one output frame drawn on a closed frame of
the second clip (first those the bank changed, then the widest others), rows: the input frame,
bank off, bank on.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from segtalker_core import builtin, pipeline  # noqa: E402
from segtalker_core.face import mesh_topology as T  # noqa: E402
from segtalker_core.procedural.mouth_bank import MouthBank, MouthBankConfig  # noqa: E402
from segtalker_core.procedural.warp import Box  # noqa: E402

CROP = 512


def example_frames(n: int) -> np.ndarray:
    from segtalker_core.video_io import VideoReader

    with VideoReader(str(ROOT / "examples" / "video.mp4"), chunk_size=64) as reader:
        frames = np.concatenate(list(reader))
    return frames[np.arange(n) % len(frames)]


def smile_closed_frames(n: int) -> np.ndarray:
    import skimage.data

    from segtalker_core.procedural.renderer import RenderOptions, SourceFace

    faces = pipeline.parse_faces(skimage.data.astronaut()[None], crop_size=CROP)
    smile = faces.crops[0]
    closed = SourceFace(smile, faces.landmarks[0], faces.regions[0], RenderOptions(blink=False)).frame(np.zeros(5)).crop
    return np.stack([smile if i % 2 == 0 else closed for i in range(n)])


def speech(n: int, fps: float) -> np.ndarray:
    articulation = pipeline.speech_articulation(str(ROOT / "examples" / "speech.wav"), fps)
    return articulation.params[np.arange(n) % len(articulation.params)]


def dub(faces, params: np.ndarray, bank) -> tuple[list[np.ndarray], list]:
    """(crops, poses) of the built-in stages on ``faces`` driven by ``params`` [T, 5]."""
    n = len(params)
    frames = builtin.iter_talking_segmentation(faces, params, 25.0, np.arange(n) % len(faces), blink=False,
                                               portrait=False, mouth_bank=bank)
    crops, poses = [], []
    for crop, frame in builtin.iter_synthesize(frames, faces, portrait=False):
        crops.append(crop)
        poses.append(frame.pose)
    return crops, poses


def measure(faces, params: np.ndarray, reps: int) -> dict:
    on, off = [], []
    dub(faces, params[:4], MouthBank())  # warm caches (grain field, imports) before timing
    for _ in range(reps):  # interleaved, so a change of machine load hits both alike
        for times, config in ((on, MouthBankConfig()), (off, MouthBankConfig(enabled=False))):
            bank = MouthBank(config) if config.enabled else config
            start = time.process_time()
            crops, poses = dub(faces, params, bank)
            times.append(1e3 * (time.process_time() - start) / len(params))
            if config.enabled:
                result = {"bank": bank, "on": crops, "poses": poses}
            else:
                result_off = crops
    bank = MouthBank()
    start = time.process_time()
    bank.collect(faces)
    collect_ms = 1e3 * (time.process_time() - start) / len(faces)
    result.update(off=result_off, on_ms=statistics.median(on), off_ms=statistics.median(off),
                  extra_ms=statistics.median(a - b for a, b in zip(on, off)), collect_ms=collect_ms)
    return result


def taken(result) -> float:
    """Share of output frames whose painted interior differs with the bank (it was used)."""
    changed = [not np.array_equal(a, b) for a, b in zip(result["on"], result["off"])]
    return float(np.mean(changed))


def sheet(faces, result, path: Path, columns: int = 8) -> None:
    """The mouths of ``columns`` output frames drawn on the clip's *closed* frames (odd input
    frames), in time order: those the bank changed first, then the ones the speech opens widest
    (where no entry was near enough: synthesis, as before)."""
    poses, on, off = result["poses"], result["on"], result["off"]
    closed = [i for i, p in enumerate(poses) if p is not None and (i % len(faces)) % 2 == 1]
    gap = {i: float(poses[i].landmarks[T.LOWER_LIP_TOP, 1] - poses[i].landmarks[T.UPPER_LIP_BOTTOM, 1])
           for i in closed}
    changed = [i for i in closed if not np.array_equal(on[i], off[i])]
    rest = sorted((i for i in closed if i not in changed), key=lambda i: -gap[i])
    picks = sorted((changed + rest)[:columns])
    tiles = []
    for i in picks:
        box = Box.around(poses[i].landmarks[list(T.LIPS_OUTER), :2], 0.1 * poses[i].face.iod, CROP)
        column = [cv2.resize(np.ascontiguousarray(a[box.slices]), (192, 112), interpolation=cv2.INTER_AREA)
                  for a in (faces.crops[i % len(faces)], off[i], on[i])]
        tiles.append(np.concatenate(column, axis=0))
    cv2.imwrite(str(path), np.concatenate(tiles, axis=1)[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few frames, one rep (CI)")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet PNG here")
    args = parser.parse_args()
    n, reps = (8, 1) if args.quick else (args.frames, args.reps)
    clips = {
        "example video": pipeline.parse_faces(example_frames(n), crop_size=CROP, video=True),
        "smile / closed": pipeline.parse_faces(smile_closed_frames(n), crop_size=CROP, video=True),
    }
    params = speech(n, 25.0)
    print(f"Built-in dubbing stages at {CROP} px, {n} frames, CPU ms per frame (median of {reps} paired reps)\n")
    print("| clip | bank off ms/frame | bank on ms/frame | extra (median of pairs) | of which collecting "
          "| entries | frames from the bank |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for name, faces in clips.items():
        r = measure(faces, params, reps)
        results[name] = (faces, r)
        print(f"| {name} | {r['off_ms']:.1f} | {r['on_ms']:.1f} | {r['extra_ms']:+.1f} | {r['collect_ms']:.2f} | "
              f"{len(r['bank'].entries)} | {100 * taken(r):.0f} % |")
    if args.sheet is not None:
        faces, r = results["smile / closed"]
        sheet(faces, r, args.sheet)
        print(f"\ncontact sheet (rows: input frame, bank off, bank on): {args.sheet}")


if __name__ == "__main__":
    main()
