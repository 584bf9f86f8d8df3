"""Typed training configs: dataclasses, YAML presets, ``--set key=value`` overrides.

A stage's config is one dataclass tree (a subclass of :class:`StageConfig`): the sections every
stage has (``loop``, ``data``, ``init_from``) plus the stage's own (``model``, ``optim``,
``loss``...), declared by the stage (``Stage.config_class``, see :mod:`.stage`). Keys are
dotted paths into that tree, the same in YAML files and on the command line::

    loop.steps=2000   loop.batch_size=64   optim.lr=1e-4   model.base_channels=32

Where a config comes from (:func:`load_stage_config`), later wins:

1. the dataclass defaults;
2. the preset or YAML file named by ``--config``. A preset is a name (``tiny``, ``256``,
   ``512``, ``personal``): the file ``presets/<name>/<stage>.yaml`` beside this module (a stage a
   preset has no file for is an error that lists the presets that have one). A YAML file may
   start from a preset or another file with ``base: NAME_OR_PATH`` and override keys of it;
3. ``--set key=value`` (repeatable; the value is parsed for the field's type: ``1e-4`` is a
   float for a float field, ``32,64`` a tuple for a tuple field, ``true``/``false`` a bool).

A key that does not exist is an error naming it and the nearest valid key (difflib), wherever
it comes from, so a typo never trains with a silently ignored setting.

The resolved config is written into the run folder (``config.yaml``) and into every checkpoint,
so ``--resume`` and ``export`` rebuild exactly what was trained.

Additive interface (the SGI stage builds on it): :class:`StageConfig`, :class:`LoopConfig`,
:class:`DataConfig`, :class:`OptimConfig`, :func:`from_mapping`, :func:`to_mapping`,
:func:`load_stage_config`, :func:`apply_overrides`, :class:`ConfigError`.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

PRESETS_DIR = Path(__file__).with_name("presets")
PRESET_NAMES: tuple[str, ...] = ("tiny", "256", "512", "personal")
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
LR_DECAYS: tuple[str, ...] = ("none", "cosine")

T = TypeVar("T")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and what to do."""


# ------------------------------------------------------------------------------------ sections

@dataclass
class LoopConfig:
    """How long and how a stage trains (same meaning for every stage).

    ``batch_size`` is the *global* batch of one optimiser step; each process runs
    ``micro_batch_size`` samples at a time and accumulates ``batch_size / (micro_batch_size x
    world size)`` micro-batches, so a run on 1, 2 or 16 GPUs takes the same optimiser steps
    (the count must divide exactly, or the run refuses to start). ``micro_batch_size = 0``
    means "the whole share of one process" (no accumulation).
    """

    steps: int = 10000  # optimiser steps in total (``--resume`` continues to this count)
    batch_size: int = 32  # global batch per optimiser step (all processes, all micro-batches)
    micro_batch_size: int = 0  # per process and forward pass; 0 = batch_size / world size
    precision: str = "auto"  # auto (bf16 on CUDA where supported, else fp16; fp32 on CPU), fp32, bf16, fp16
    channels_last: bool = False  # memory format of 4-d activations/weights (faster convs on CUDA)
    compile: bool = False  # torch.compile the trained modules (CUDA; slow first steps)
    grad_clip: float = 0.0  # max global grad norm per optimiser (0: no clipping)
    seed: int = 0  # base seed; process r seeds with seed + r (data order is global, see distributed.py)
    num_workers: int = 0  # DataLoader workers per process
    cpu_threads: int = 0  # torch CPU threads of each process while training (0: torch's default)
    log_every: int = 50  # plain-text log line (and TensorBoard scalars) every N steps
    sample_every: int = 500  # sample grids (PNG in the run folder, TensorBoard images) every N steps
    eval_every: int = 500  # validation metrics on the val split every N steps (0: never)
    eval_batches: int = 4  # micro-batches of the val split per evaluation
    checkpoint_every: int = 1000  # checkpoint every N steps (and always at the end)
    keep_checkpoints: int = 3  # newest checkpoints kept (older ones are deleted)
    progress: bool = True  # progress bar with ETA on stderr (rank 0)
    device: str = "auto"  # auto, cpu, cuda (torchrun: cuda:LOCAL_RANK)

    def __post_init__(self) -> None:
        _positive(self, "steps", "batch_size", "log_every", "sample_every", "checkpoint_every",
                  "keep_checkpoints", "eval_batches")
        _non_negative(self, "micro_batch_size", "eval_every", "num_workers", "grad_clip",
                      "cpu_threads")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"loop.precision must be one of {', '.join(PRECISION_CHOICES)}, got "
                              f"{self.precision!r}")


@dataclass
class DataConfig:
    """What the stage reads from the prepared dataset (``--data``). Maps are read at the model's
    resolution (``model.resolution``), so there is no resolution here."""

    train_split: str = "train"
    val_split: str = "val"
    num_frames: int = 5  # frames per sync window (Wav2Lip: 5 = 0.2 s at 25 fps)
    seed: int = 0  # seed of the datasets' own sampling (negatives, references)

    def __post_init__(self) -> None:
        _positive(self, "num_frames")


@dataclass
class OptimConfig:
    """Adam(W) of one trained network."""

    lr: float = 1e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up of the learning rate from 0
    decay: str = "none"  # none, or cosine: lr falls to min_lr_fraction x lr at loop.steps
    min_lr_fraction: float = 0.0

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        _non_negative(self, "weight_decay", "warmup_steps")
        if self.decay not in LR_DECAYS:
            raise ConfigError(f"optim.decay must be one of {', '.join(LR_DECAYS)}, got "
                              f"{self.decay!r}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise ConfigError(f"optim.min_lr_fraction must be in [0, 1], got "
                              f"{self.min_lr_fraction}")


@dataclass
class StageConfig:
    """Base of every stage's config: the common sections. Stages subclass it and add theirs."""

    loop: LoopConfig = field(default_factory=LoopConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # A bundle (.safetensors) to start the trained network(s) from; the stage checks that its
    # component and resolution fit (stage.check_init_bundle). Empty: random initialisation.
    init_from: str = ""


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{_section(obj)}{name} must be > 0, got {getattr(obj, name)}")


def _non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{_section(obj)}{name} must be >= 0, got {getattr(obj, name)}")


def _section(obj: Any) -> str:
    return {LoopConfig: "loop.", DataConfig: "data.", OptimConfig: "optim."}.get(type(obj), "")


# ------------------------------------------------------------------------------------ typed IO

def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree (sections and leaves)."""
    keys = []
    for f in dataclasses.fields(cls):
        kind = _hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(kind):
            keys.extend(_all_keys(kind, f"{prefix}{f.name}."))
    return keys


def unknown_key_error(key: str, root: type) -> ConfigError:
    """The error for a key ``root`` does not have, naming the nearest valid one."""
    valid = _all_keys(root)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    last = key.rpartition(".")[2]
    # A right leaf name in the wrong section is the likeliest typo: prefer a key ending in it.
    same_leaf = [k for k in valid if k.rpartition(".")[2] == last]
    hint = same_leaf[0] if same_leaf else (near[0] if near else None)
    return ConfigError(f"unknown config key {key!r}" +
                       (f"; did you mean {hint!r}?" if hint else "") +
                       " (keys are dotted paths such as loop.steps; see TRAINING.md)")


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """A YAML or command-line value as the field type ``kind`` (error names the key)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        return _coerce(value, options[0], key)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind is str:
            if isinstance(value, (Mapping, list, tuple)):
                raise ValueError
            return "" if value is None else str(value)
        if origin is tuple:
            item = typing.get_args(kind)[0]
            if isinstance(value, str):
                value = [v for v in value.strip("()[] ").split(",") if v.strip()]
            if not isinstance(value, Sequence):
                raise ValueError
            return tuple(_coerce(v.strip() if isinstance(v, str) else v, item, key)
                         for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} wants {_type_name(kind)}, got {value!r}") from None
    raise ConfigError(f"config key {key!r} has a type this loader cannot read ({kind})")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is tuple:
        return f"a comma-separated list of {_type_name(typing.get_args(kind)[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, str(kind))


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, root: type | None = None,
                 prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested mapping (missing keys keep their defaults).

    Unknown keys raise :class:`ConfigError` naming the full dotted key and the nearest valid
    one. Nested dataclasses (frozen model configs too) are built recursively.
    """
    root = root or cls
    data = dict(data or {})
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise unknown_key_error(prefix + str(key), root)
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(kind):
            if isinstance(value, kind):
                kwargs[name] = value
                continue
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"config key {key!r} is a section (keys such as "
                                  f"{key}.{dataclasses.fields(kind)[0].name}), got {value!r}")
            kwargs[name] = from_mapping(kind, value, root=root, prefix=key + ".")
        else:
            kwargs[name] = _coerce(value, kind, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def to_mapping(config: Any) -> dict[str, Any]:
    """A dataclass tree as plain nested dicts/lists (what YAML and checkpoints store)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_mapping(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[str, str]:
    """``"loop.steps=100"`` -> ``("loop.steps", "100")``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set takes KEY=VALUE (e.g. --set loop.steps=100), got {text!r}")
    return key.strip(), value.strip()


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], root: type) -> dict[str, Any]:
    """Apply ``--set key=value`` items to a nested mapping (keys checked against ``root``)."""
    data = dict(data)
    valid = set(_all_keys(root))
    for text in overrides:
        key, value = parse_override(text)
        if key not in valid:
            raise unknown_key_error(key, root)
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


# ------------------------------------------------------------------------------------ files

def preset_path(name: str, stage: str) -> Path:
    """The YAML file of preset ``name`` for ``stage`` (error lists what exists)."""
    path = PRESETS_DIR / name / f"{stage}.yaml"
    if not path.is_file():
        having = sorted(p.parent.name for p in PRESETS_DIR.glob(f"*/{stage}.yaml"))
        if name in PRESET_NAMES or (PRESETS_DIR / name).is_dir():
            raise ConfigError(f"preset {name!r} has no {stage} stage (presets with one: "
                              f"{', '.join(having) or 'none'})")
        raise ConfigError(f"--config {name!r} is neither a preset ({', '.join(PRESET_NAMES)}) nor "
                          f"an existing YAML file")
    return path


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys (e.g. "
                          f"'loop: {{steps: 100}}'), got a {type(data).__name__}")
    return dict(data)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _resolve_source(source: str, stage: str, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The nested mapping of a preset name or YAML file, ``base:`` chains resolved."""
    p = Path(source)
    path = p if (p.suffix.lower() in (".yaml", ".yml") or p.is_file()) else preset_path(source, stage)
    if not path.is_file():
        raise ConfigError(f"config file {source!r} does not exist")
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {str(path)!r} names itself as a base (through 'base:')")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base = str(base)
    relative = path.parent / base
    base_source = str(relative) if relative.is_file() else base
    return _merge(_resolve_source(base_source, stage, seen + (path,)), data)


def load_stage_config(config_class: type[T], stage: str, source: str | None,
                      overrides: Sequence[str] = ()) -> T:
    """The config of ``stage`` (a :class:`StageConfig` subclass) from a preset name or YAML file
    (``None``: defaults) and ``--set`` overrides."""
    data = {} if source is None else _resolve_source(source, stage)
    data = apply_overrides(data, overrides, config_class)
    return from_mapping(config_class, data)


def dump_yaml(config: Any) -> str:
    import yaml

    return yaml.safe_dump(to_mapping(config), sort_keys=False)
