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


def cmd_talk(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import pipeline
    from .audio.io import read_audio_file
    from .face.image import to_rgb_uint8
    from .video_io import BackgroundWriter, Mp4Writer, VideoReader, probe_video

    swaps = _parse_swaps(args.swap)
    options = dict(strength=args.strength, method=args.phonemes, crop_size=args.size, swaps=swaps)
    mono = pipeline.load_mono(args.audio, args.audio)
    if args.image:
        fps = args.fps or 25.0
        n_frames = pipeline.audio_frame_count(mono, fps)
        frames = to_rgb_uint8(_read_image(args.image), args.image)[None]
        stream_factory = lambda progress: pipeline.iter_talk(  # noqa: E731
            frames, mono, fps, video_mode=args.video_mode, blink=not args.no_blink, seed=args.seed,
            input_name=args.image, progress=progress, **options,
        )
    else:
        info = probe_video(args.video)
        # Dubbing keeps the video's timing unless --fps says otherwise.
        fps = args.fps or float(info.fps)
        n_frames = pipeline.audio_frame_count(mono, fps)
        if info.frame_count >= n_frames:
            # Long enough to cut: read chunk by chunk, so memory does not grow with the length.
            def stream_factory(progress):
                with VideoReader(args.video, chunk_size=64, max_frames=n_frames) as reader:
                    yield from pipeline.iter_talk_chunks(
                        reader, mono, fps, input_name=args.video, progress=progress, **options,
                    )
        else:
            # Shorter than the audio: loop / ping-pong needs its frames (memory ~ the video's length).
            with VideoReader(args.video, chunk_size=64) as reader:
                frames = np.concatenate(list(reader))
            stream_factory = lambda progress: pipeline.iter_talk(  # noqa: E731
                frames, mono, fps, video_mode=args.video_mode, blink=False, input_name=args.video,
                progress=progress, **options,
            )
    wave, rate = read_audio_file(args.audio)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=n_frames, unit="frame", desc="talk", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    with Mp4Writer(out, fps, audio=wave, sample_rate=rate) as writer:
        del wave  # the writer keeps its own copy
        with BackgroundWriter(writer) as background:
            for frame in stream_factory(progress):
                background.write(frame)
    bar.close()
    print(f"wrote {out} ({n_frames} frames at {fps:g} fps)")
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
