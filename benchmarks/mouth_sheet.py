"""Contact sheet of the built-in renderer's mouth interior (issue 13: a mouth that looks like one).

    python benchmarks/mouth_sheet.py --out mouth.png [--size 512] [--zoom 2]

Writes a PNG grid of mouth crops (columns: jaw_open 0, 0.25, 0.5, 0.8, 1; rows: sources and
teeth_visible) and prints a table of what is drawn inside the opening (luma mean/std, chroma,
share of bright "teeth" pixels), so a change can be judged by eye and by number. Run it before and
after a change (the old one from a `git worktree` of the earlier commit) and put the two PNGs
side by side.

Sources, all the astronaut portrait of scikit-image aligned to ``--size`` and parsed by the
built-in parser:

* ``smile``  -- the photo (lips apart, its own teeth reused);
* ``closed`` -- the photo rendered at rest, mouth closed (synthetic teeth);
* ``dark``   -- ``closed`` with every pixel x 0.25 (an under-exposed face);
* ``bright`` -- ``closed`` lifted towards white, 255 - 0.3 (255 - x) (an over-exposed face);
* ``child``  -- ``closed`` with the mouth points pulled 35 % towards the mouth centre (a small
  mouth for the same eyes; the image is left as is, only the mouth geometry changes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render import astronaut_source  # noqa: E402
from segtalker_core.face import mesh_topology as T  # noqa: E402
from segtalker_core.procedural.mouth_segmentation import polygon_mask  # noqa: E402
from segtalker_core.procedural.renderer import RenderOptions, SourceFace  # noqa: E402
from segtalker_core.procedural.warp import Box  # noqa: E402

JAWS = (0.0, 0.25, 0.5, 0.8, 1.0)
# (source, teeth_visible) per row.
ROWS = (("smile", 1.0), ("closed", 0.0), ("closed", 1.0), ("dark", 1.0), ("bright", 1.0), ("child", 1.0))


def small_mouth(landmarks: np.ndarray, share: float) -> np.ndarray:
    """Landmarks with the lip points pulled ``share`` of the way to the mouth centre."""
    out = np.array(landmarks, np.float32, copy=True)
    lips = sorted(set(T.LIPS_OUTER) | set(T.UPPER_LIP) | set(T.LOWER_LIP) | set(T.MOUTH_OPENING))
    centre = 0.5 * (out[T.UPPER_LIP_BOTTOM, :2] + out[T.LOWER_LIP_TOP, :2])
    out[lips, :2] = centre + (1.0 - share) * (out[lips, :2] - centre)
    return out


def sources(size: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    crop, landmarks, regions = astronaut_source(size)
    rest = SourceFace(crop, landmarks, regions, RenderOptions(blink=False)).frame(np.zeros(5))
    closed = (rest.crop, rest.landmarks, rest.regions)
    lifted = 255.0 - 0.3 * (255.0 - closed[0].astype(np.float32))
    return {
        "smile": (crop, landmarks, regions),
        "closed": closed,
        "dark": ((closed[0] * 0.25 + 0.5).astype(np.uint8), closed[1], closed[2]),
        "bright": (np.clip(lifted + 0.5, 0, 255).astype(np.uint8), closed[1], closed[2]),
        "child": (closed[0], small_mouth(closed[1], 0.35), closed[2]),
    }


def interior_stats(crop: np.ndarray, landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(luma mean, luma std, chroma mean, bright share) inside the 2-px-eroded opening; NaN if shut."""
    mask = polygon_mask(landmarks[list(T.MOUTH_OPENING), :2], Box(0, 0, crop.shape[1], crop.shape[0]))
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < 10:
        return (float("nan"),) * 4
    rgb = crop[mask].astype(np.float64)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    return float(luma.mean()), float(luma.std()), float(chroma.mean()), float((luma > 150).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="PNG to write (required unless --quick)")
    parser.add_argument("--quick", action="store_true", help="128 px, no sheet written: only shows that it runs")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--zoom", type=int, default=2, help="integer upscale of each tile")
    args = parser.parse_args()
    if args.quick:
        args.size, args.zoom = 128, 1
    elif args.out is None:
        parser.error("--out PNG is required (or --quick)")

    faces = {name: SourceFace(*src, RenderOptions(blink=False)) for name, src in sources(args.size).items()}
    ref = faces["closed"]
    centre = ref.rig.frame.origin
    # Upright aligned crops: the mouth from 0.25 IOD above the lips' meeting line to 0.5 below.
    corners = centre + np.array([[-0.62, -0.25], [0.62, 0.5]]) * ref.iod
    box = Box.around(corners, 0.0, args.size)
    print("| source | teeth | jaw | luma mean | luma std | chroma | bright share |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, teeth in ROWS:
        tiles = []
        for jaw in JAWS:
            frame = faces[name].frame(np.array([jaw, 0, 0, 0, teeth]))
            stats = interior_stats(frame.crop, frame.landmarks)
            cells = " | ".join(f"{s:.1f}" if s > 1 else f"{s:.2f}" for s in stats)
            print(f"| {name} | {teeth:.1f} | {jaw:.2f} | {cells} |")
            tile = frame.crop[box.slices]
            tiles.append(cv2.resize(tile, None, fx=args.zoom, fy=args.zoom, interpolation=cv2.INTER_NEAREST))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    if args.out is None:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    labels = ", ".join(f"{n} t={t}" for n, t in ROWS)
    print(f"\nwrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}; rows: {labels}; columns: jaw {JAWS})")


if __name__ == "__main__":
    main()
