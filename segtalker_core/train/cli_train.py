"""``train`` and ``export`` commands.

::

    python -m segtalker_core train {syncnet,tsg,sgi} --config PRESET_OR_YAML [--set KEY=VALUE ...]
        --data PREPARED_DIR --run-dir RUN [--resume] [--init-from BUNDLE]
    torchrun --nproc_per_node N -m segtalker_core train ...        (DDP, one process per GPU)
    python -m segtalker_core export RUN OUT.safetensors

``--resume`` continues from the newest complete checkpoint of RUN with the config stored in it;
``--set`` may change it (typically ``loop.steps`` to train longer), and a ``--config`` given
again must agree with it outside ``loop.*``. Without a checkpoint yet, ``--resume`` starts fresh.
"""
from __future__ import annotations

import argparse
from pathlib import Path

STAGES = ("syncnet", "tsg", "sgi")
# Keys a resumed run may change: how it runs, not what it trains.
RESUMABLE_SECTIONS = ("loop.",)


def add_command(commands, add_verbose) -> None:
    p = commands.add_parser("train", help="train a stage (syncnet, tsg, sgi) on a prepared dataset")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", help="preset (tiny, 256, 512, personal) or a YAML file; "
                   "default with --resume: the run's own")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set loop.steps=2000 (repeatable)")
    p.add_argument("--data", required=True, help="prepared dataset folder (python -m "
                   "segtalker_core prepare)")
    p.add_argument("--run-dir", required=True, help="folder for checkpoints, logs and samples")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --run-dir")
    p.add_argument("--init-from", help="bundle to start the trained network(s) from "
                   "(same component and resolution)")
    add_verbose(p)
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("export", help="a training run -> the bundle(s) the nodes load")
    p.add_argument("run_dir", help="the run folder (--run-dir of train)")
    p.add_argument("output", help="the .safetensors to write")
    add_verbose(p)
    p.set_defaults(run=cmd_export)


def resolve_config(stage: str, source: str | None, overrides: list[str], run_dir: Path,
                   resume: bool):
    """The config to train with (see the module docstring for the resume rule)."""
    from . import checkpointing
    from .config import (ConfigError, apply_overrides, from_mapping, load_stage_config,
                         to_mapping)
    from .stage import load_stage_class

    config_class = load_stage_class(stage).config_class
    found = checkpointing.newest(run_dir) if resume else None
    if found is None:
        if source is None:
            raise ConfigError("--config is required (a preset: tiny, 256, 512, personal, or a "
                              "YAML file) unless --resume finds a checkpoint in --run-dir")
        return load_stage_config(config_class, stage, source, overrides)
    if found.payload.get("stage") != stage:
        raise ValueError(f"{run_dir} is a run of the {found.payload.get('stage')!r} stage, not "
                         f"{stage!r}; give its own stage or another --run-dir")
    saved = found.payload["config"]
    config = from_mapping(config_class, apply_overrides(saved, overrides, config_class))
    if source is not None:
        asked = to_mapping(load_stage_config(config_class, stage, source, overrides))
        for key in _differing_keys(asked, to_mapping(config)):
            if not key.startswith(RESUMABLE_SECTIONS) and key != "init_from":
                raise ConfigError(
                    f"--resume: {key} of --config {source!r} differs from the run's "
                    f"({found.path.name}); a resumed run keeps what it trains: drop --config, "
                    f"or start a new --run-dir")
    return config


def _differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys.extend(_differing_keys(va, vb, f"{prefix}{k}."))
        elif va != vb:
            keys.append(prefix + k)
    return keys


def cmd_train(args: argparse.Namespace) -> int:
    from .loop import train

    run_dir = Path(args.run_dir)
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {str(data)!r} is not a folder; give the folder "
                                f"'python -m segtalker_core prepare' wrote")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--run-dir {str(run_dir)!r} exists and is not a folder")
    overrides = list(args.overrides)
    if args.init_from:
        overrides.append(f"init_from={args.init_from}")
    config = resolve_config(args.stage, args.config, overrides, run_dir, args.resume)
    result = train(args.stage, config, data, run_dir, resume=args.resume)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        where = f", checkpoint {result.checkpoint}" if result.checkpoint else ""
        print(f"trained {args.stage} to step {result.step}{where}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..atomic_files import check_output_path
    from .loop import export_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist; give the --run-dir "
                                f"of a training run")
    if Path(args.output).suffix.lower() != ".safetensors":
        raise ValueError(f"export writes a .safetensors bundle; end {args.output!r} with "
                         f".safetensors")
    check_output_path(args.output, what="output")
    written = export_run(run_dir, Path(args.output))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
