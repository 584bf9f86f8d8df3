"""Command line: ``python -m segtalker_core <command> ...``.

Commands:
  talk      portrait or video + speech -> lip-synced mp4 (H.264 + AAC), streamed to disk
  parse     image -> face parsing colour preview PNG (and optional label map PNG)
  convert   legacy .pth checkpoint -> .safetensors (bit-identical tensors)
  describe  what a weight file is (component, resolution, parameters)
  random-bundle  write tiny random-init learned bundles (tests, smoke runs)
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np


def _read_image(path: str) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise SystemExit(f"error: cannot read image {path!r} (missing file or unknown format)")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _write_image(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"error: cannot write {path}")


def _parser_model(weights: str | None):
    from . import pipeline

    return pipeline.builtin_parser_model() if weights is None else pipeline.load_model(weights)


def cmd_parse(args: argparse.Namespace) -> int:
    from . import pipeline
    from .face.image import to_rgb_uint8

    image = to_rgb_uint8(_read_image(args.image), "image")
    faces = pipeline.parse_faces(
        image[None], _parser_model(args.parser), crop_size=args.size, face_index=args.face_index,
        input_name=args.image,
    )
    out = Path(args.output)
    _write_image(out, pipeline.faces_preview(faces)[0])
    if args.labels:
        import cv2

        cv2.imwrite(str(args.labels), faces.labels[0])
    print(f"wrote {out} ({faces.crop_size}x{faces.crop_size}, parser: {faces.parser})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import checkpoints

    dst = args.output or str(Path(args.checkpoint).with_suffix(".safetensors"))
    config = checkpoints.convert_pth_to_safetensors(args.checkpoint, dst, component=args.component)
    print(f"wrote {dst} (component: {config.component})")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from . import checkpoints

    for path in args.files:
        config = checkpoints.read_config(path)
        print(f"{path}: {config.description or config.component}")
    return 0


def cmd_random_bundle(args: argparse.Namespace) -> int:
    from .models.random_bundle import write_random_bundles

    paths = write_random_bundles(args.output_dir, resolution=args.resolution, seed=args.seed)
    for component, path in paths.items():
        print(f"{component}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m segtalker_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("parse", help="face parsing colour preview of an image")
    p.add_argument("--image", required=True)
    p.add_argument("-o", "--output", required=True, help="preview PNG")
    p.add_argument("--labels", help="also write the 19-class label map as a PNG (values 0..18)")
    p.add_argument("--parser", help="BiSeNet .pth/.safetensors (default: built-in parser)")
    p.add_argument("--size", type=int, default=512, help="crop size")
    p.add_argument("--face-index", type=int, default=-1, help="-1 largest face, else k-th from the left")
    p.set_defaults(run=cmd_parse)

    p = commands.add_parser("convert", help=".pth checkpoint -> .safetensors")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output")
    p.add_argument("--component", help="component name when it cannot be guessed from the keys")
    p.set_defaults(run=cmd_convert)

    p = commands.add_parser("describe", help="what a weight file is")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=cmd_describe)

    p = commands.add_parser("random-bundle", help="tiny random-init learned bundles for tests")
    p.add_argument("output_dir")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_random_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
