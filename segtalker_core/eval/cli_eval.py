"""``python -m segtalker_core eval``: generated videos against their references -> a report
folder (Markdown, JSON, PNG figures)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_command(commands, add_verbose) -> None:
    p = commands.add_parser("eval", help="metrics of generated videos against their references -> report")
    p.add_argument("--generated", required=True, help="generated video, or a folder of them")
    p.add_argument("--reference", required=True,
                   help="reference video or the still image it was animated from; or a folder "
                        "holding one by the same name as each generated video")
    p.add_argument("--audio", help="the speech to sync to (file, or folder by name); default: each "
                   "generated video's own sound")
    p.add_argument("-o", "--output", help="report folder (default: next to --generated, NAME_eval)")
    p.add_argument("--max-offset", type=_offset, default=15,
                   help="frames each way the audio-video offset search tries (default 15)")
    p.add_argument("--phones", help="phone timing file (START END PHONE per line, seconds) for the "
                   "bilabial closure check")
    p.add_argument("--recognise-phones", action="store_true",
                   help="recognise the phones in the audio (English) for the bilabial check")
    p.add_argument("--max-side", type=int, default=1024,
                   help="evaluate frames at most this large (long side, px; default 1024)")
    p.add_argument("--face-index", type=int, default=-1, help="-1 largest face, else k-th from the left")
    weights = p.add_argument_group("metrics with user-supplied weights (named in the report when not given)")
    weights.add_argument("--syncnet", metavar="BUNDLE", help="Seg-SyncNet bundle (.safetensors): its "
                         "confidence and offset on the generated video's segmentation")
    weights.add_argument("--syncnet-v2", metavar="FILE", help="syncnet_v2.model (joonson/syncnet_python): "
                         "LSE-C and LSE-D")
    weights.add_argument("--inception", metavar="FILE", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: FID")
    weights.add_argument("--device", default="cpu", help="where those networks run (cpu, cuda, ...)")
    add_verbose(p)
    p.set_defaults(run=run)


def _offset(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 250:
        raise argparse.ArgumentTypeError(f"must be 0..250 frames, got {value}")
    return value


def default_report_folder(generated: str) -> Path:
    """``clip.mp4`` -> ``clip_eval`` beside it; a folder ``gen/`` -> ``gen_eval`` beside it (the
    video need not exist yet: ``talk --eval`` checks the folder before the dub)."""
    path = Path(os.fspath(generated).rstrip("/\\") or ".")
    return path.with_name(f"{path.name if path.is_dir() else path.stem}_eval")


def run(args: argparse.Namespace) -> int:
    from .evaluate import EvalOptions, evaluate_clip
    from .pairs import find_pairs
    from .report import check_report_folder, write_report

    if args.phones is not None and args.recognise_phones:
        raise ValueError("give either --phones FILE or --recognise-phones, not both")
    if args.max_side < 64:
        raise ValueError(f"--max-side must be at least 64 px, got {args.max_side}")
    pairs, unpaired = find_pairs(args.generated, args.reference, args.audio)
    folder = check_report_folder(args.output if args.output else default_report_folder(args.generated))
    weights = {k: v for k, v in (("syncnet", args.syncnet), ("syncnet_v2", args.syncnet_v2),
                                 ("inception", args.inception)) if v}
    _check_weights(weights, args.device)  # a wrong file is refused before any clip is read
    options = EvalOptions(max_offset=args.max_offset, max_side=args.max_side, face_index=args.face_index,
                          phones=args.phones, recognise_phones=args.recognise_phones, weights=weights,
                          device=args.device)
    inputs = {}
    for pair in pairs:
        inputs.update({f"--generated {pair.name}": pair.generated, f"--reference {pair.name}": pair.reference,
                       f"--audio {pair.name}": pair.audio})
    reports = [evaluate_clip(p.generated, p.reference, p.audio, options, name=p.name) for p in pairs]
    path = write_report(folder, reports, weights=weights, unpaired=unpaired,
                        inputs={**inputs, "--syncnet": args.syncnet, "--syncnet-v2": args.syncnet_v2,
                                "--inception": args.inception})
    print(f"wrote {path} ({len(reports)} clip{'s' if len(reports) != 1 else ''})")
    return 0


def _check_weights(weights: dict[str, str], device: str) -> None:
    if "inception" in weights:
        from .fid import load_fid_inception

        load_fid_inception(weights["inception"], device)
    if "syncnet_v2" in weights:
        from .syncnet_v2 import load_syncnet_v2

        load_syncnet_v2(weights["syncnet_v2"], device)
    if "syncnet" in weights:
        from .segsync import load_segsyncnet

        try:
            load_segsyncnet(weights["syncnet"], device)
        except ValueError as error:
            raise ValueError(f"--syncnet: {error}") from None


def evaluate_talk_output(video: str, source: str, audio: str) -> Path:
    """``talk --eval``: the dub ``video`` against its ``source`` (the portrait or the video it
    dubbed) and the speech, reported into ``NAME_eval/`` beside the video."""
    from .evaluate import evaluate_clip
    from .report import write_report

    folder = default_report_folder(video)
    report = evaluate_clip(video, source, audio, name=Path(video).stem)
    path = write_report(folder, [report], inputs={"-o": video, "--image/--video": source, "--audio": audio})
    print(f"wrote {path}")
    return path
