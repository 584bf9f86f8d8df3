"""``python -m segtalker_core prepare SRC OUT``: videos or images -> a training dataset.

What it does, what it skips and the on-disk format: :mod:`.prepare`, :mod:`.shards`,
``docs/DATASET.md``.
"""
from __future__ import annotations

import argparse

from ..cli_options import crop_size_value, parse_number, positive_int_value


def _share(text: str) -> float:
    value = parse_number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _seconds(text: str) -> float:
    value = parse_number(text, float)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1 s, got {value}")
    return value


def add_command(commands, add_verbose) -> None:
    from .splits import SPLIT_MODES

    p = commands.add_parser(
        "prepare", help="videos or images -> a training dataset (shards + index)",
        description="Decode, resample to 25 fps / 16 kHz, track, align and parse every frame, "
                    "compute the Wav2Lip mel, and write one shard per clip plus index.json. "
                    "Resumable: a re-run into the same OUT skips finished clips.")
    p.add_argument("src", metavar="SRC",
                   help="folder of videos (mp4/mov/mkv/webm) or images, or a text file listing "
                        "them (one per line, optionally 'path<TAB>speaker')")
    p.add_argument("out", metavar="OUT", help="dataset folder (created; an existing one resumes)")
    p.add_argument("--size", type=crop_size_value, default=256,
                   help="side of the aligned face crops and maps in pixels (default 256)")
    p.add_argument("--parser", metavar="FILE", default=None,
                   help="BiSeNet checkpoint (79999_iter.pth or .safetensors); default: the "
                        "built-in parser")
    p.add_argument("--device", default="cpu", help="where BiSeNet runs (cpu, cuda, cuda:1 ...)")
    p.add_argument("--workers", type=positive_int_value, default=1,
                   help="processes working on files at once (default 1)")
    p.add_argument("--speakers", metavar="FILE", default=None,
                   help="speaker of each file: JSON {name: speaker} or 'name<TAB>speaker' lines "
                        "(default: the first folder under SRC)")
    p.add_argument("--split-by", choices=SPLIT_MODES, default="auto",
                   help="what the val split holds out: whole speakers, or whole source videos "
                        "(auto: speakers when every file has one)")
    p.add_argument("--val-fraction", type=_share, default=0.05,
                   help="share of speakers/videos held out for val (default 0.05; at least one "
                        "when there are two or more)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument("--min-face-share", type=_share, default=0.5,
                   help="skip a clip in which fewer frames than this share show a face "
                        "(default 0.5)")
    p.add_argument("--segment-seconds", type=_seconds, default=10.0,
                   help="longest clip in the dataset; longer videos are cut (default 10)")
    p.add_argument("--smoothing", type=float, default=0.5,
                   help="crop smoothing of the face track, as the parse node's (default 0.5)")
    p.add_argument("--masks", metavar="DIR", default=None,
                   help="images only: CelebAMask-HQ label PNGs (official order, one per image, "
                        "same stem); the images are then taken as aligned already")
    p.add_argument("--images-per-shard", type=positive_int_value, default=256,
                   help="images only: images per shard (default 256)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_verbose(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from .prepare import PrepareSettings, prepare_dataset

    settings = PrepareSettings(
        crop_size=args.size, parser=args.parser, device=args.device, smoothing=args.smoothing,
        min_face_share=args.min_face_share, segment_seconds=args.segment_seconds,
        masks=args.masks, images_per_shard=args.images_per_shard,
        val_fraction=args.val_fraction, split_by=args.split_by, seed=args.seed,
        workers=args.workers)
    report = prepare_dataset(args.src, args.out, settings, speakers=args.speakers,
                             progress=not args.quiet)
    if report.clips == 0:
        raise ValueError(f"no clip could be prepared from {args.src!r}: every file was skipped "
                         f"({report.skipped} skipped, reasons above)")
    sys.stderr.write(f"prepared {report.clips} clip(s), {report.frames} frames, in {args.out} "
                     f"({report.prepared} done now, {report.resumed} by an earlier run, "
                     f"{report.skipped} skipped)\n")
    return 0
