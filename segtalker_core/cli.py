"""Command line: ``python -m segtalker_core <command> ...``.

Commands:
  talk      portrait or video + speech -> lip-synced video (H.264 + AAC), streamed to disk
  parse     image -> face parsing colour preview (and optional label map PNG)
  convert   .pth/.pt checkpoint -> .safetensors bundle(s) (pack components; rosinality StyleGAN2)
  describe  what a weight file is (component, resolution, parameters)
  random-bundle  write tiny random-init learned bundles (tests, smoke runs)

Exit codes: 0 done; 2 bad input or options (one ``error: ...`` line on stderr that names the
input, what is wrong and what to do); 1 an internal error (a bug: ``-v`` shows the traceback);
130 Ctrl-C; 128 + N stopped by signal N (143 SIGTERM, 129 SIGHUP). Outputs are written to a
temporary file next to the target and renamed only when complete, so a failed or stopped run
leaves no half-written file and keeps what was at the output's name. ``-v`` (anywhere on the
line) prints the traceback before that line; the exit code stays the same.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from contextlib import ExitStack
from pathlib import Path

from .cli_errors import (EXIT_BAD_INPUT, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, Terminated,
                         failure_message, first_line, one_line, report, stop_signals_raise)
from .cli_options import (BUNDLE_RESOLUTIONS, CROP_SIZE_RANGE, batch_size_value,
                          crop_size_value, face_index_value, fps_value, head_motion_value,
                          max_size_value, optimize_steps_value, strength_value)


# -- inputs and outputs -------------------------------------------------------------------------

def _swap_specs(items: list[str]) -> list[tuple[list[str], str]]:
    """``["lips=ref.png", "hair,brows=other.png"]`` -> ``[(region names, image path), ...]``."""
    from .labels import REGIONS_12, parse_region_list

    specs = []
    for item in items:
        regions, sep, path = item.partition("=")
        if not sep or not regions.strip() or not path:
            raise ValueError(f"--swap takes REGIONS=IMAGE (e.g. --swap lips=ref.png), got {item!r}")
        try:
            names = [REGIONS_12[i] for i in parse_region_list(regions)]
        except ValueError as error:
            raise ValueError(f"--swap {item!r}: {error}") from None
        specs.append((names, path))
    return specs


def _swap_inputs(specs: list[tuple[list[str], str]]) -> dict[str, str]:
    """The swap references by the option that names them, for the same-file check."""
    return {f"--swap {','.join(names)} reference": path for names, path in specs}


def _model_inputs(args: argparse.Namespace) -> dict[str, str | None]:
    return {f"--{slot}": getattr(args, slot, None) for slot in ("parser", "tsg", "encoder", "generator")}


def _check_video_output(path: str, inputs: dict) -> None:
    """``talk -o``: refused before any work if it cannot be written, would replace an input, or
    has an extension no video is written as."""
    from .atomic_files import check_output_path
    from .video_io import container_for

    check_output_path(path, inputs, what="-o")
    container_for(path, what="-o")


def _parser_model(weights: str | None):
    from . import pipeline

    return pipeline.builtin_parser_model() if weights is None else pipeline.load_model(weights)


def cmd_parse(args: argparse.Namespace) -> int:
    from . import pipeline
    from .atomic_files import atomic_output
    from .image_files import (check_image_output, check_label_output, encode_image,
                              encode_label_png, image_format, read_image)

    inputs = {"--image": args.image, "--parser": args.parser}
    preview_path = check_image_output(args.output, inputs, "-o")
    label_inputs = {**inputs, "-o": args.output}
    if args.labels is not None:
        check_label_output(args.labels, label_inputs, "--labels")
    image = read_image(args.image, "--image")
    faces = pipeline.parse_faces(
        image[None], _parser_model(args.parser), crop_size=args.size, face_index=args.face_index,
        input_name=args.image,
    )
    preview = encode_image(pipeline.faces_preview(faces)[0], image_format(preview_path, "-o"))
    labels = None if args.labels is None else encode_label_png(faces.labels[0])
    # Both files or neither: the label map is renamed into place just before the preview.
    with ExitStack() as outputs:
        _write_into(outputs.enter_context(atomic_output(preview_path, inputs, "-o")), preview)
        if labels is not None:
            _write_into(outputs.enter_context(atomic_output(args.labels, label_inputs, "--labels")), labels)
    also = f" and {args.labels}" if labels is not None else ""
    print(f"wrote {preview_path}{also} ({faces.crop_size}x{faces.crop_size}, parser: {faces.parser})")
    return 0


def _write_into(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)


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
    if args.batch_size is not None:  # also checked by argparse
        from .working_memory import batch_size_choice

        args.batch_size = batch_size_choice(args.batch_size, "--batch-size")
    device = _device(args.device)  # checked even without models: a wrong --device is a mistake
    if not any(paths.values()):
        return TalkModels()  # the built-in backends run on the CPU
    if device.type == "cpu":
        from .allocator import keep_freed_blocks

        keep_freed_blocks()  # learned batches on the CPU: no mmap/munmap per feature map
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

    from .image_files import read_image
    from .talk_file import TalkSettings, talk_image_file, talk_video_file

    # Everything that can be refused without loading anything comes first.
    specs = _swap_specs(args.swap)
    inputs = {"--image": args.image, "--video": args.video, "--audio": args.audio,
              **_swap_inputs(specs), **_model_inputs(args),
              "--lpips": args.lpips, "--lpips-vgg": args.lpips_vgg, "--arcface": args.arcface}
    _check_video_output(args.output, inputs)
    if args.eval:  # a report folder that cannot be written is refused before the dub, not after
        from .eval.cli_eval import default_report_folder
        from .eval.report import check_report_folder

        check_report_folder(default_report_folder(args.output))
    if args.optimize_steps and not (args.encoder and args.generator):
        raise ValueError(f"--optimize-steps {args.optimize_steps} refines the learned style codes: "
                         f"give --encoder and --generator too (or leave it at 0)")
    image = read_image(args.image, "--image") if args.image else None
    swaps = tuple((names, read_image(path, f"--swap {','.join(names)} reference")) for names, path in specs)
    settings = TalkSettings(
        strength=args.strength, method=args.phonemes, video_mode=args.video_mode,
        blink=not args.no_blink, seed=args.seed, crop_size=args.size, face_index=args.face_index,
        swaps=swaps, max_size=args.max_size, blend=args.blend, head_motion=args.head_motion,
        optimize_steps=args.optimize_steps,
        lpips_weights=args.lpips, lpips_vgg_weights=args.lpips_vgg, arcface_weights=args.arcface,
    )
    models = _talk_models(args)
    # The total comes with the first report: the library decodes the audio once, and checks a
    # video's own frame rate (kept unless --fps is given; a portrait defaults to 25) itself.
    bar = tqdm(total=None, unit="frame", desc="talk", disable=args.quiet)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    # The refinement runs before the first frame: a bar of its own, made at its first step.
    refine_bars: list = []

    def refine_progress(done: int, total: int) -> None:
        if not refine_bars:
            refine_bars.append(tqdm(total=total, unit="step", desc="optimize style",
                                    disable=args.quiet, leave=False))
        refine_bars[0].update(done - refine_bars[0].n)
        if done == total:
            refine_bars[0].close()

    try:
        if image is not None:
            fps = args.fps if args.fps is not None else 25.0
            result = talk_image_file(image, args.audio, args.output, fps, settings, models,
                                     input_name=args.image, inputs=inputs, progress=progress,
                                     refine_progress=refine_progress)
        else:
            result = talk_video_file(args.video, args.audio, args.output, args.fps, settings, models,
                                     input_name=args.video, inputs=inputs, progress=progress,
                                     refine_progress=refine_progress)
    finally:
        for refine_bar in refine_bars:
            refine_bar.close()
        bar.close()  # ends the bar's line, so an error message starts a line of its own
    print(f"wrote {result.path} ({result.frames} frames at {result.fps:g} fps)")
    if args.eval:
        from .eval.cli_eval import evaluate_talk_output

        evaluate_talk_output(result.path, args.image or args.video, args.audio,
                             args.head_motion if args.image else 0.0)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .conversion.any_checkpoint import convert_checkpoint

    written = convert_checkpoint(args.checkpoint, args.output, component=args.component, what="-o")
    for component, path in written.items():
        print(f"wrote {path} (component: {component})")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .conversion.any_checkpoint import describe_checkpoint

    for path in args.files:
        print(f"{path}: {describe_checkpoint(path)}")
    return 0


def cmd_random_bundle(args: argparse.Namespace) -> int:
    from .models.random_bundle import write_random_bundles

    paths = write_random_bundles(args.output_dir, resolution=args.resolution, seed=args.seed)
    for component, path in paths.items():
        print(f"{component}: {path}")
    return 0


# -- the parser ---------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error worded as every other failure: one ``error: ...`` line
    (exit code 2) that says where the options are listed, instead of the usage block first."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {one_line(message)}; '{self.prog} --help' lists the options\n")


def _add_verbose(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # On each subcommand too, so -v works after the command name; SUPPRESS there keeps a
    # subcommand's default from overwriting a -v given before it.
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if top_level else argparse.SUPPRESS,
                        help="show the traceback of an error (same exit code)")


# Commands that live beside the code they run (training, evaluation): each module has
# ``add_command(commands, add_verbose)``, which adds its sub-parser and sets ``run``. Imported when
# the parser is built, so each keeps its heavy imports inside its ``run``.
COMMAND_MODULES: tuple[str, ...] = (
    ".eval.cli_eval",
    ".train.cli_prepare",
    ".train.cli_train",
)


def build_parser() -> argparse.ArgumentParser:
    from .procedural.head_motion import DEFAULT_STRENGTH as DEFAULT_HEAD_MOTION
    from .talk_file import DEFAULT_MAX_SIZE
    from .video_io import FPS_RANGE

    parser = _Parser(prog="python -m segtalker_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_verbose(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("talk", help="portrait or video + speech -> lip-synced video")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="portrait image")
    source.add_argument("--video", help="video to dub (its own audio is replaced)")
    p.add_argument("--audio", required=True, help="speech: wav, mp3, flac, m4a, or a video file")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4; .mov, .mkv, .webm)")
    p.add_argument("--fps", type=fps_value, default=None,
                   help=f"{FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}; default: the video's own, or 25 for an image")
    p.add_argument("--strength", type=strength_value, default=1.0, help="mouth motion scale, 0..2")
    p.add_argument("--phonemes", choices=["auto", "phonemes", "acoustic"], default="auto",
                   help="auto: English phonemes, acoustic fallback; acoustic: any language")
    p.add_argument("--video-mode", choices=["loop", "pingpong"], default="pingpong",
                   help="how a video shorter than the audio is extended")
    p.add_argument("--no-blink", action="store_true", help="no added blinks (portraits)")
    p.add_argument("--seed", type=int, default=0, help="blink timing and head motion")
    p.add_argument("--head-motion", type=head_motion_value, default=DEFAULT_HEAD_MOTION, metavar="STRENGTH",
                   help=f"portraits: idle head motion (slow sway, nods on stressed syllables, the "
                        f"background kept steady), 0..1, default {DEFAULT_HEAD_MOTION:g}; 0: the "
                        f"head stays still (a video keeps its own motion)")
    p.add_argument("--size", type=crop_size_value, default=512,
                   help=f"face crop size, {CROP_SIZE_RANGE[0]}..{CROP_SIZE_RANGE[1]}")
    p.add_argument("--max-size", type=max_size_value, default=DEFAULT_MAX_SIZE, metavar="N",
                   help=f"scale larger inputs down so the long side is at most N px (default "
                        f"{DEFAULT_MAX_SIZE}, 4K); 0 or none: no cap")
    p.add_argument("--blend", choices=["linear", "multiband"], default="linear",
                   help="paste-back: one alpha blend (default) or multi-band (Laplacian pyramid, "
                        "as E4S: hides shading seams along the feather)")
    p.add_argument("--swap", action="append", default=[], metavar="REGIONS=IMAGE",
                   help="local style edit, e.g. lips=ref.png (repeatable)")
    p.add_argument("--face-index", type=face_index_value, default=-1,
                   help="-1 largest face, else k-th from the left")
    models = p.add_argument_group("learned models (default: the built-in backend of each stage)")
    models.add_argument("--parser", help="BiSeNet face parser .pth/.safetensors")
    models.add_argument("--tsg", help="TSG bundle (.safetensors): talking segmentation from the audio")
    models.add_argument("--encoder", help="mask-guided encoder bundle (style codes; needs --generator)")
    models.add_argument("--generator", help="mask-guided generator bundle (needs --encoder); without "
                        "it the built-in renderer draws the maps")
    models.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    models.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                        help="what the learned models compute in (auto: fp32 on a CPU)")
    models.add_argument("--batch-size", type=batch_size_value, default=None, metavar="N",
                        help="frames per forward pass of the learned models (TSG, generator, "
                             "BiSeNet parser); 0 (default): automatic, as many as fit in the "
                             "device's free memory (on a CPU: their defaults)")
    models.add_argument("--optimize-steps", type=optimize_steps_value, default=0, metavar="N",
                        help="refine the encoder's style codes against the face for N Adam steps "
                             "before rendering (E4S's optimisation: ~200; slow, use a GPU; a "
                             "video refines its reference frame; default 0: off)")
    models.add_argument("--lpips", metavar="FILE",
                        help="with --optimize-steps: E4S's LPIPS loss from lpips's v0.1 vgg.pth "
                             "(needs --lpips-vgg) or a whole LPIPS state dict (default: SSIM)")
    models.add_argument("--lpips-vgg", metavar="FILE",
                        help="torchvision's ImageNet VGG16 (vgg16-397923af.pth) for --lpips")
    models.add_argument("--arcface", metavar="FILE",
                        help="with --optimize-steps: E4S's identity loss, ArcFace IR-SE-50 "
                             "(model_ir_se50.pth)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--eval", action="store_true",
                   help="also write an evaluation report of the output against the input (NAME_eval/ beside it)")
    _add_verbose(p, top_level=False)
    p.set_defaults(run=cmd_talk)

    p = commands.add_parser("parse", help="face parsing colour preview of an image")
    p.add_argument("--image", required=True)
    p.add_argument("-o", "--output", required=True, help="preview image (.png, .jpg, .webp, .bmp, .tif)")
    p.add_argument("--labels", help="also write the 19-class label map as a PNG (values 0..18)")
    p.add_argument("--parser", help="BiSeNet .pth/.safetensors (default: built-in parser)")
    p.add_argument("--size", type=crop_size_value, default=512,
                   help=f"crop size, {CROP_SIZE_RANGE[0]}..{CROP_SIZE_RANGE[1]}")
    p.add_argument("--face-index", type=face_index_value, default=-1,
                   help="-1 largest face, else k-th from the left")
    _add_verbose(p, top_level=False)
    p.set_defaults(run=cmd_parse)

    p = commands.add_parser("convert", help=".pth/.pt checkpoint -> .safetensors bundle(s)")
    p.add_argument("checkpoint", help="a pack component's .pth (e.g. BiSeNet 79999_iter.pth) or a "
                   "rosinality StyleGAN2 .pt (e.g. stylegan2-ffhq-config-f.pt)")
    p.add_argument("-o", "--output", help="the .safetensors to write (a rosinality file: a folder or "
                   "a name prefix for its _generator / _discriminator bundles); default: next to it")
    p.add_argument("--component", help="component name when it cannot be guessed from the keys")
    _add_verbose(p, top_level=False)
    p.set_defaults(run=cmd_convert)

    p = commands.add_parser("describe", help="what a weight file is")
    p.add_argument("files", nargs="+")
    _add_verbose(p, top_level=False)
    p.set_defaults(run=cmd_describe)

    p = commands.add_parser("random-bundle", help="tiny random-init learned bundles for tests")
    p.add_argument("output_dir", help="folder to write the .safetensors files into")
    p.add_argument("--resolution", type=int, choices=BUNDLE_RESOLUTIONS, default=64,
                   help="crop size the bundles work at")
    p.add_argument("--seed", type=int, default=0)
    _add_verbose(p, top_level=False)
    p.set_defaults(run=cmd_random_bundle)

    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name, package=__package__)
        module.add_command(commands, add_verbose=lambda p: _add_verbose(p, top_level=False))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        with stop_signals_raise():
            return args.run(args)
    except KeyboardInterrupt as error:
        report("interrupted (Ctrl-C); unfinished outputs were removed", error, verbose)
        return EXIT_INTERRUPTED
    except Terminated as error:
        report(f"stopped by {error.signal_name}; unfinished outputs were removed", error, verbose)
        return 128 + error.signum
    except SystemExit as error:
        if not isinstance(error.code, str):  # an exit status: pass it on
            raise
        report(failure_message(error, args), error, verbose)
        return EXIT_BAD_INPUT
    except Exception as error:
        message = failure_message(error, args)
        if message is None:
            report(f"internal error: {type(error).__name__}: {first_line(error)}. This is a bug: "
                    "rerun with -v for the traceback and report it", error, verbose)
            return EXIT_INTERNAL_ERROR
        report(message, error, verbose)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
