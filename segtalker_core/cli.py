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


def _parse_swaps(items: list[str]) -> list[tuple[list[str], np.ndarray]]:
    """``["lips=ref.png", "hair,brows=other.png"]`` -> [(regions, image), ...]."""
    from .face.image import to_rgb_uint8
    from .labels import parse_region_list, REGIONS_12

    swaps = []
    for item in items:
        regions, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"error: --swap takes REGIONS=IMAGE (e.g. lips=ref.png), got {item!r}")
        try:
            names = [REGIONS_12[i] for i in parse_region_list(regions)]
        except ValueError as error:
            raise SystemExit(f"error: --swap {item!r}: {error}") from None
        swaps.append((names, to_rgb_uint8(_read_image(path), path)))
    return swaps


def _device(name: str):
    """``--device``: cpu, cuda, cuda:N, mps or auto (CUDA when there is one, else the CPU)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA device that torch "
                             f"{torch.__version__} can use; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: only cuda:0..cuda:{count - 1} exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def _talk_models(args: argparse.Namespace):
    """The models ``talk`` was given, loaded for their slots and placed on ``--device``."""
    import torch

    from . import pipeline
    from .talk_file import TalkModels

    paths = {"parser": args.parser, "tsg": args.tsg, "encoder": args.encoder, "generator": args.generator}
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    device = _device(args.device)  # checked even without models: a wrong --device is a mistake
    if not any(paths.values()):
        return TalkModels()  # the built-in backends run on the CPU
    loaded = {}
    for slot, path in paths.items():
        if path is None:
            continue
        try:
            model = pipeline.load_model(path, device, slot=slot, precision=args.precision)
        except ValueError as error:
            raise ValueError(f"--{slot}: {error}") from None
        if device.type == "cpu" and model.torch_module is not None and model.compute_dtype != torch.float32:
            logging.getLogger("segtalker").warning(
                "--%s computes in %s on the CPU: it works, but is usually slower than fp32 there",
                slot, str(model.compute_dtype).replace("torch.", ""))
        if args.batch_size is not None and hasattr(model.runner, "batch_size"):
            model.runner.batch_size = args.batch_size  # the BiSeNet parser's crops per pass
        loaded[slot] = model
    return TalkModels(batch_size=args.batch_size, **loaded)


def cmd_talk(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import pipeline
    from .face.image import to_rgb_uint8
    from .talk_file import TalkSettings, talk_image_file, talk_video_file
    from .video_io import probe_video

    settings = TalkSettings(
        strength=args.strength, method=args.phonemes, video_mode=args.video_mode,
        blink=not args.no_blink, seed=args.seed, crop_size=args.size, face_index=args.face_index,
        swaps=tuple(_parse_swaps(args.swap)),
    )
    models = _talk_models(args)
    mono = pipeline.load_mono(args.audio, args.audio)
    # Dubbing keeps the video's timing unless --fps says otherwise; a portrait defaults to 25.
    fps = args.fps or (25.0 if args.image else float(probe_video(args.video).fps))
    bar = tqdm(total=pipeline.audio_frame_count(mono, fps), unit="frame", desc="talk", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    if args.image:
        image = to_rgb_uint8(_read_image(args.image), args.image)
        result = talk_image_file(image, args.audio, args.output, fps, settings, models,
                                 input_name=args.image, progress=progress)
    else:
        result = talk_video_file(args.video, args.audio, args.output, fps, settings, models,
                                 input_name=args.video, progress=progress)
    bar.close()
    print(f"wrote {result.path} ({result.frames} frames at {fps:g} fps)")
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

    p = commands.add_parser("talk", help="portrait or video + speech -> lip-synced mp4")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="portrait image")
    source.add_argument("--video", help="video to dub (its own audio is replaced)")
    p.add_argument("--audio", required=True, help="speech: wav, mp3, flac, m4a, or a video file")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--fps", type=float, default=None, help="default: the video's own, or 25 for an image")
    p.add_argument("--strength", type=float, default=1.0, help="mouth motion scale, 0..2")
    p.add_argument("--phonemes", choices=["auto", "phonemes", "acoustic"], default="auto",
                   help="auto: English phonemes, acoustic fallback; acoustic: any language")
    p.add_argument("--video-mode", choices=["loop", "pingpong"], default="pingpong",
                   help="how a video shorter than the audio is extended")
    p.add_argument("--no-blink", action="store_true", help="no added blinks (portraits)")
    p.add_argument("--seed", type=int, default=0, help="blink timing")
    p.add_argument("--size", type=int, default=512, help="face crop size")
    p.add_argument("--swap", action="append", default=[], metavar="REGIONS=IMAGE",
                   help="local style edit, e.g. lips=ref.png (repeatable)")
    p.add_argument("--face-index", type=int, default=-1, help="-1 largest face, else k-th from the left")
    models = p.add_argument_group("learned models (default: the built-in backend of each stage)")
    models.add_argument("--parser", help="BiSeNet face parser .pth/.safetensors")
    models.add_argument("--tsg", help="TSG bundle (.safetensors): talking segmentation from the audio")
    models.add_argument("--encoder", help="mask-guided encoder bundle (style codes; needs --generator)")
    models.add_argument("--generator", help="mask-guided generator bundle (needs --encoder); without "
                        "it the built-in renderer draws the maps")
    models.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    models.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="what the learned models compute in (auto: fp32 on a CPU)")
    models.add_argument("--batch-size", type=int, default=None,
                        help="frames per forward pass of the learned models (default: theirs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_talk)

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
    p.add_argument("output_dir", help="folder to write the .safetensors files into")
    # Checked by write_random_bundles (64, 128, 256 or 512): building the parser must not import torch.
    p.add_argument("--resolution", type=int, default=64, help="crop size the bundles work at")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_random_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input: say what, no traceback
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
