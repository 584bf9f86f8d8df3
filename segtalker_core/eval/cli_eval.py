"""``python -m segtalker_core eval``: generated videos against their references -> a report
folder (Markdown, JSON, PNG figures)."""
from __future__ import annotations

import argparse
import os
from dataclasses import replace
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
    p.add_argument("--transcript", metavar="TEXT_OR_FILE",
                   help="what is said (the text, a .txt file, or a folder of NAME.txt by clip name): "
                        "force-aligned to the audio (English) for the bilabial closure check")
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
    weights.add_argument("--lpips", metavar="FILE", help="LPIPS linear layers (lpips/weights/v0.1/alex.pth or "
                         "vgg.pth), or a whole lpips.LPIPS state dict: LPIPS")
    weights.add_argument("--lpips-backbone", metavar="FILE", help="torchvision's ImageNet weights for --lpips: "
                         "alexnet-owt-7be5be79.pth (alex) or vgg16-397923af.pth (vgg)")
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

    timing = [o for o, v in (("--phones", args.phones), ("--transcript", args.transcript),
                             ("--recognise-phones", args.recognise_phones)) if v]
    if len(timing) > 1:
        raise ValueError(f"give one of --phones FILE, --transcript, --recognise-phones (got {', '.join(timing)})")
    if args.lpips_backbone and not args.lpips:
        raise ValueError("--lpips-backbone is the backbone of the --lpips linear layers: give --lpips too")
    if args.max_side < 64:
        raise ValueError(f"--max-side must be at least 64 px, got {args.max_side}")
    pairs, unpaired = find_pairs(args.generated, args.reference, args.audio)
    folder = check_report_folder(args.output if args.output else default_report_folder(args.generated))
    weights = {k: v for k, v in (("syncnet", args.syncnet), ("syncnet_v2", args.syncnet_v2),
                                 ("inception", args.inception), ("lpips", args.lpips),
                                 ("lpips_backbone", args.lpips_backbone)) if v}
    _check_weights(weights, args.device)  # a wrong file is refused before any clip is read
    options = EvalOptions(max_offset=args.max_offset, max_side=args.max_side, face_index=args.face_index,
                          phones=args.phones, recognise_phones=args.recognise_phones, weights=weights,
                          device=args.device)
    inputs = {}
    for pair in pairs:
        inputs.update({f"--generated {pair.name}": pair.generated, f"--reference {pair.name}": pair.reference,
                       f"--audio {pair.name}": pair.audio})
    transcripts = {p.name: _transcript_for(args.transcript, p.name) for p in pairs}  # read before any clip
    reports = [evaluate_clip(p.generated, p.reference, p.audio, replace(options, transcript=transcripts[p.name]),
                             name=p.name) for p in pairs]
    path = write_report(folder, reports, weights=weights, unpaired=unpaired,
                        inputs={**inputs, "--syncnet": args.syncnet, "--syncnet-v2": args.syncnet_v2,
                                "--inception": args.inception, "--lpips": args.lpips,
                                "--lpips-backbone": args.lpips_backbone})
    print(f"wrote {path} ({len(reports)} clip{'s' if len(reports) != 1 else ''})")
    return 0


def _transcript_for(value: str | None, name: str) -> str | None:
    """The transcript of clip ``name``: the text (or file) given, or ``NAME.txt`` in a folder
    (None, with the clip's report saying so, when the folder has none)."""
    from .transcript import read_transcript

    if value is None:
        return None
    if Path(value).is_dir():
        path = Path(value) / f"{name}.txt"
        return read_transcript(str(path)) if path.is_file() else None
    return read_transcript(value)


def _check_weights(weights: dict[str, str], device: str) -> None:
    if "lpips" in weights:
        from .lpips import load_lpips

        load_lpips(weights["lpips"], weights.get("lpips_backbone"), device)
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


def evaluate_talk_output(video: str, source: str, audio: str, head_motion: float = 0.0) -> Path:
    """``talk --eval``: the dub ``video`` against its ``source`` (the portrait or the video it
    dubbed) and the speech, reported into ``NAME_eval/`` beside the video. ``head_motion``: the
    portrait's idle head motion the talk used (the report says what it does to the rows)."""
    from .evaluate import evaluate_clip
    from .report import write_report

    folder = default_report_folder(video)
    report = evaluate_clip(video, source, audio, name=Path(video).stem)
    if head_motion > 0:
        report.notes.append(
            f"the head moves (idle head motion {head_motion:g}): the static, texture, temporal and "
            f"region rows compare with the still portrait and count that motion as change; talk "
            f"with --head-motion 0 to measure the face alone"
        )
    path = write_report(folder, [report], inputs={"-o": video, "--image/--video": source, "--audio": audio})
    print(f"wrote {path}")
    return path
