"""Model files: one ``.safetensors`` per component, with a JSON config in its metadata.

A SegTalker bundle is a plain safetensors file whose header metadata holds, under
:data:`CONFIG_METADATA_KEY`, the JSON form of a :class:`BundleConfig`::

    {"format_version": 1, "component": "tsg", "architecture": {...},
     "label_scheme": "regions_12", "resolution": 256, "audio": {...}}

Public API:

* :class:`BundleConfig` -- what a file is (frozen dataclass, JSON round trip).
* :func:`save` -- write ``state_dict`` + config (contiguous tensors, through
  :func:`.atomic_files.atomic_output`: whole or not at all, mode from the umask).
* :func:`read_config` -- read only the header; also describes plain files without our metadata
  (``config.inferred`` is then True and the component is guessed from tensor names).
* :func:`load` -- ``(state_dict, config)`` from ``.safetensors`` or a legacy ``.pth``, with errors
  that say what is wrong and what to do.
* :func:`load_state_dict_strict` -- ``module.load_state_dict(strict=True)`` with a readable error;
  :func:`check_state_dict_fits` is its check alone (names and shapes), which ``convert`` uses too.
* :func:`convert_pth_to_safetensors` -- legacy ``.pth`` -> bundle (used by the CLI ``convert``).
* :func:`check_finite_weights` -- refuse NaN/inf weights, naming the file and the tensors.
* :func:`find_checkpoint` -- resolve a file name against model folders.

``.pth`` files are only ever read with ``torch.load(weights_only=True)``: a checkpoint cannot run
code on the user's machine.

What a file must pass before a module sees it, the same for loading and for ``convert``:

* it is a file (not a folder), of a known suffix, and its bytes are what the suffix says: a
  safetensors header of plausible length that the file is long enough for, or a PyTorch zip /
  pickle (a text file, an empty file, a safetensors file renamed ``.pth`` are named as such);
* a ``.pth`` holds only tensors (weights_only) named by strings;
* every floating-point tensor is finite (:func:`check_finite_weights`): a NaN in a face parser
  silently parses every pixel as background, and a diverged training run looks just like that;
* its tensor names and shapes fit the module its config describes (:func:`check_state_dict_fits`:
  at load by the strict load, at ``convert`` against that module built on the meta device).
"""
from __future__ import annotations

import json
import math
import os
import pickle
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .atomic_files import PathLike, atomic_output, check_output_path
from .components import COMPONENTS as _SPECS
from .components import TITLES

CONFIG_METADATA_KEY = "segtalker_config"
FORMAT_VERSION = 1

# Human names, used in every message that talks about a component. The registry itself lives in
# components.py (one source of truth); this is its name -> title view.
COMPONENTS: Mapping[str, str] = TITLES
UNKNOWN_COMPONENT = "unknown"
LABEL_SCHEMES: tuple[str, ...] = ("bisenet_19", "celebamask_19", "regions_12")

SAFETENSORS_SUFFIXES: tuple[str, ...] = (".safetensors",)
LEGACY_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".ckpt", ".bin")

# The safetensors format caps its JSON header at 100 MB; a larger length means a foreign file.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_CONFIG_FIELDS = ("format_version", "component", "architecture", "label_scheme", "resolution",
                  "audio")


# ----------------------------------------------------------------------------------- errors

class CheckpointError(ValueError):
    """Base class: a model file cannot be used; the message says why and what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The file does not exist (message names the path and the folders searched)."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, not a safetensors/PyTorch file, or its metadata is malformed."""


class UnsupportedFormatError(CheckpointError):
    """Written by a newer SegTalker (``format_version`` above :data:`FORMAT_VERSION`)."""


class ComponentMismatchError(CheckpointError):
    """The file holds another component than the one asked for."""


class StateDictMismatchError(CheckpointError):
    """The tensors do not fit the module (missing / unexpected keys, wrong shapes)."""


class NonFiniteWeightsError(CorruptCheckpointError):
    """Some weights are NaN or infinite (a damaged file or a diverged training run)."""


# ----------------------------------------------------------------------------------- config

def _freeze(value: Any) -> Any:
    # Deep-freeze so a config shared between nodes cannot be edited behind another's back.
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class BundleConfig:
    """What a model file holds; stored as JSON in the safetensors metadata.

    ``component``: one of :data:`COMPONENTS` (``"unknown"`` only for inferred configs).
    ``architecture``: constructor arguments of the component's module (JSON values).
    ``label_scheme``: label order of the maps the model reads/writes (:data:`LABEL_SCHEMES`),
    ``None`` when it has none. ``resolution``: side of the square maps/images it works on.
    ``audio``: audio front-end parameters (sample rate, mel settings...) for audio-driven models.
    ``extra``: further JSON keys, kept so a file round-trips even with fields this version ignores.
    ``inferred``: True when the file had no SegTalker metadata and this config was guessed from
    tensor names (never written to a file); ``description`` then says what the file looks like.
    """

    component: str
    architecture: Mapping[str, Any] = field(default_factory=dict)
    label_scheme: str | None = None
    resolution: int | None = None
    audio: Mapping[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)
    inferred: bool = field(default=False, compare=False)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        allowed = set(COMPONENTS) | ({UNKNOWN_COMPONENT} if self.inferred else set())
        if self.component not in allowed:
            raise ValueError(
                f"BundleConfig.component {self.component!r} is not a SegTalker component; "
                f"use one of: {', '.join(COMPONENTS)}"
            )
        if not isinstance(self.format_version, int) or isinstance(self.format_version, bool) \
                or self.format_version < 1:
            raise ValueError(
                f"BundleConfig.format_version must be an integer >= 1, got {self.format_version!r}"
            )
        if not isinstance(self.architecture, Mapping):
            raise ValueError(
                f"BundleConfig.architecture must be a mapping of constructor arguments, got "
                f"{type(self.architecture).__name__}"
            )
        if self.audio is not None and not isinstance(self.audio, Mapping):
            raise ValueError(
                f"BundleConfig.audio must be a mapping or None, got {type(self.audio).__name__}"
            )
        if self.label_scheme is not None and self.label_scheme not in LABEL_SCHEMES:
            raise ValueError(
                f"BundleConfig.label_scheme {self.label_scheme!r} is unknown; use one of "
                f"{', '.join(LABEL_SCHEMES)} or None"
            )
        if self.resolution is not None and (
            not isinstance(self.resolution, int) or isinstance(self.resolution, bool)
            or self.resolution <= 0
        ):
            raise ValueError(
                f"BundleConfig.resolution must be a positive integer or None, got "
                f"{self.resolution!r}"
            )
        object.__setattr__(self, "architecture", _freeze(self.architecture))
        object.__setattr__(self, "audio", None if self.audio is None else _freeze(self.audio))
        object.__setattr__(self, "extra", _freeze(self.extra))

    @property
    def component_name(self) -> str:
        """Human name of the component, for messages and UI."""
        return COMPONENTS.get(self.component, "unknown network")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what is stored in the file)."""
        out = _thaw(self.extra)
        out.update(
            format_version=self.format_version,
            component=self.component,
            architecture=_thaw(self.architecture),
            label_scheme=self.label_scheme,
            resolution=self.resolution,
            audio=None if self.audio is None else _thaw(self.audio),
        )
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BundleConfig":
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra``. Does not check the version."""
        known = {k: data[k] for k in _CONFIG_FIELDS if k in data}
        if "component" not in known:
            raise ValueError("the config has no 'component' entry")
        known.setdefault("architecture", {})
        extra = {k: v for k, v in data.items() if k not in _CONFIG_FIELDS}
        return cls(extra=extra, **known)


# ----------------------------------------------------------------------------------- guessing

@dataclass(frozen=True)
class LayoutGuess:
    """What a set of tensor names looks like.

    ``component`` is the SegTalker component it can serve as, or None (foreign/unknown network).
    """

    component: str | None
    description: str
    known: bool  # False: nothing recognisable


def guess_layout(keys: Iterable[str]) -> LayoutGuess:
    """Recognise a checkpoint from its tensor names (works on a header, no tensor needed)."""
    names = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    key_set = set(names)

    def any_prefix(*prefixes: str) -> bool:
        return any(n.startswith(prefixes) for n in names)

    if "cp.resnet.conv1.weight" in key_set:
        return LayoutGuess(
            "bisenet",
            "a face-parsing.PyTorch / facexlib BiSeNet face parser (like 79999_iter.pth)", True,
        )
    if any_prefix("out_mask_conv."):
        return LayoutGuess(
            None,
            "facexlib's ParseNet face parser (parsing_parsenet.pth), a different network from "
            "BiSeNet with another label order; use 79999_iter.pth or facexlib's "
            "parsing_bisenet.pth instead",
            True,
        )
    # A plain StyleGAN2 may seed our generator / discriminator; the strict load decides.
    if "input.input" in key_set or any_prefix("to_rgbs.", "to_rgb1."):
        return LayoutGuess("generator", "a StyleGAN2 generator (rosinality layout)", True)
    if any_prefix("final_linear.", "final_conv."):
        return LayoutGuess("discriminator", "a StyleGAN2 discriminator (rosinality layout)", True)
    if any_prefix("synthesis.", "mapping."):
        return LayoutGuess(None, "a StyleGAN generator (NVlabs layout)", True)
    if any_prefix("audio_encoder.") and any_prefix("face_decoder_blocks."):
        return LayoutGuess(None, "a Wav2Lip generator", True)
    if any_prefix("audio_encoder.") and any_prefix("face_encoder."):
        return LayoutGuess(None, "a Wav2Lip SyncNet (image-based, not a segmentation SyncNet)",
                           True)
    shown = ", ".join(sorted(names)[:3]) or "no tensors at all"
    return LayoutGuess(None, f"an unrecognised network (first tensors: {shown})", False)


# ----------------------------------------------------------------------------------- header

def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensor entries and metadata of a safetensors file, reading only its header.

    Checks the file is long enough for every tensor the header lists, which is how a truncated
    download shows up.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise CorruptCheckpointError(_corrupt_msg(path, f"it is only {size} bytes long"))
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES:
            raise CorruptCheckpointError(_corrupt_msg(
                path, "its first bytes are not a safetensors header (is it another format "
                      "renamed to .safetensors?)"))
        if 8 + header_len > size:
            raise CorruptCheckpointError(_corrupt_msg(
                path, f"it is truncated: the header alone needs {8 + header_len} bytes, the file "
                      f"has {size}"))
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptCheckpointError(_corrupt_msg(path, f"its header is not valid JSON ({exc})")) \
            from None
    metadata = header.pop("__metadata__", None) or {}
    data_bytes = size - 8 - header_len
    needed = 0
    for name, entry in header.items():
        try:
            begin, end = entry["data_offsets"]
            needed = max(needed, int(end))
        except (TypeError, KeyError, ValueError):
            raise CorruptCheckpointError(_corrupt_msg(
                path, f"its header entry for tensor {name!r} is malformed")) from None
    if needed > data_bytes:
        raise CorruptCheckpointError(_corrupt_msg(
            path, f"it is truncated: its tensors need {needed} bytes of data, the file holds "
                  f"{data_bytes}"))
    return header, metadata


def _corrupt_msg(path: Path, why: str) -> str:
    return (f"model file {path} is corrupt or truncated: {why}. Re-download it (or re-convert "
            f"it) and try again.")


def _config_from_metadata(path: Path, metadata: Mapping[str, str],
                          keys: Iterable[str]) -> BundleConfig:
    raw = metadata.get(CONFIG_METADATA_KEY)
    if raw is None:
        return _inferred_config(keys)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise CorruptCheckpointError(_corrupt_msg(
            path, f"its {CONFIG_METADATA_KEY!r} metadata is not valid JSON ({exc})")) from None
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"model file {path} has format_version {version}, written by a newer SegTalker; this "
            f"version reads format_version up to {FORMAT_VERSION}. Update the SegTalker node pack."
        )
    try:
        return BundleConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CorruptCheckpointError(_corrupt_msg(
            path, f"its {CONFIG_METADATA_KEY!r} metadata is malformed ({exc})")) from None


def _inferred_config(keys: Iterable[str]) -> BundleConfig:
    guess = guess_layout(keys)
    if guess.component is not None:
        defaults = default_config(guess.component)
        return BundleConfig(
            component=defaults.component, architecture=defaults.architecture,
            label_scheme=defaults.label_scheme, resolution=defaults.resolution,
            audio=defaults.audio, inferred=True, description=guess.description,
        )
    return BundleConfig(component=UNKNOWN_COMPONENT, inferred=True,
                        description=guess.description)


def default_config(component: str) -> BundleConfig:
    """The config a component gets when a file carries none (e.g. a converted ``.pth``).

    The defaults come from the component registry (:mod:`.components`): only BiSeNet has a fixed
    published architecture; other components get an empty ``architecture`` (their loaders then
    use their own defaults). Reading the registry, not parsing.bisenet, keeps this module free of
    an import cycle with the parser (which imports this module).
    """
    spec = _SPECS[component]
    return BundleConfig(component=component, architecture=spec.default_architecture,
                        label_scheme=spec.default_label_scheme,
                        resolution=spec.default_resolution)


# ----------------------------------------------------------------------------------- paths

def find_checkpoint(name: str | os.PathLike[str],
                    search_dirs: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """``name`` as given if it exists, else the first ``search_dir / name`` that exists.

    Raises :class:`CheckpointNotFoundError` naming the path, the folders searched and the file
    name expected in them.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(
            f"model file {str(path)!r} is a folder, not a model file; give the .safetensors or "
            f".pth file inside it."
        )
    if not path.is_absolute():
        for folder in search_dirs:
            candidate = Path(folder).expanduser() / path
            if candidate.is_file():
                return candidate
    if search_dirs:
        folders = "\n  ".join(str(Path(f).expanduser()) for f in search_dirs)
        raise CheckpointNotFoundError(
            f"model file {str(path)!r} not found. Looked for {path.name!r} in:\n  {folders}\n"
            f"Put the file in one of these folders (or give its full path)."
        )
    raise CheckpointNotFoundError(
        f"model file {str(path)!r} not found (resolved to {path.absolute()}). Check the path."
    )


# ----------------------------------------------------------------------------------- public

def read_config(path: str | os.PathLike[str],
                search_dirs: Sequence[str | os.PathLike[str]] = ()) -> BundleConfig:
    """The config of a ``.safetensors`` file, reading only its header (no tensor data).

    A plain safetensors file without SegTalker metadata gets an inferred config
    (``inferred=True``; ``component`` guessed from tensor names, ``"unknown"`` if unrecognised;
    ``description`` says what it looks like). Legacy ``.pth`` files have no cheap header: they are
    loaded (weights_only) and described the same way.
    """
    p = find_checkpoint(path, search_dirs)
    if _is_safetensors(p):
        header, metadata = _read_header(p)
        return _config_from_metadata(p, metadata, header.keys())
    _check_suffix(p)
    return _inferred_config(_load_legacy(p).keys())


def load(path: str | os.PathLike[str], expected_component: str | None = None, *,
         search_dirs: Sequence[str | os.PathLike[str]] = (),
         device: str | torch.device = "cpu",
         allow_non_finite: bool = False) -> tuple[dict[str, torch.Tensor], BundleConfig]:
    """``(state_dict, config)`` of a bundle or a legacy ``.pth`` file.

    ``expected_component`` (one of :data:`COMPONENTS`) makes a file of another component fail
    with :class:`ComponentMismatchError`. A ``module.`` prefix (DataParallel) is stripped.
    Tensors come on ``device`` in the dtype they were saved in. NaN/inf weights raise
    :class:`NonFiniteWeightsError` unless ``allow_non_finite`` (for inspecting a broken file).
    """
    if expected_component is not None and expected_component not in COMPONENTS:
        raise ValueError(f"expected_component {expected_component!r} is not one of "
                         f"{', '.join(COMPONENTS)}")
    p = find_checkpoint(path, search_dirs)
    if _is_safetensors(p):
        header, metadata = _read_header(p)
        config = _config_from_metadata(p, metadata, header.keys())
        _check_component(p, config, expected_component, header.keys())
        try:
            state_dict = load_file(str(p), device=str(device))
        except SafetensorError as exc:
            raise CorruptCheckpointError(_corrupt_msg(p, f"safetensors says: {exc}")) from None
    else:
        _check_suffix(p)
        state_dict = _load_legacy(p, expected_component)
        config = _inferred_config(state_dict.keys())
        _check_component(p, config, expected_component, state_dict.keys())
        state_dict = {k: v.to(device) for k, v in state_dict.items()}
    if not allow_non_finite:
        check_finite_weights(state_dict, p)
    return _strip_module_prefix(state_dict), config


def save(path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor],
         config: BundleConfig, *, inputs: Mapping[str, PathLike | None] | None = None,
         what: str = "model file") -> Path:
    """Write a bundle. Tensors are detached, moved to CPU and made contiguous; shared storage is
    copied (safetensors refuses aliases). Returns the path written.

    The file is written through :func:`.atomic_files.atomic_output`: it appears whole or not at
    all, an existing file is replaced only once the new one is complete, and its mode follows the
    umask (``0644`` by default). ``inputs`` (``{name: path}``) are files the target must not be;
    ``what`` names the target in messages. A missing folder is created. The file's bytes are
    built in memory first (once the size of the file): safetensors' own ``save_file`` writes a
    temporary file of its own with mode ``0600`` and renames it over the target."""
    if not isinstance(config, BundleConfig):
        raise TypeError(f"config must be a BundleConfig, got {type(config).__name__}")
    if config.inferred or config.component == UNKNOWN_COMPONENT:
        raise ValueError("cannot save an inferred config; build a BundleConfig with the real "
                         "component and architecture")
    if config.format_version > FORMAT_VERSION:
        raise ValueError(f"config.format_version {config.format_version} is newer than this "
                         f"writer ({FORMAT_VERSION})")
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    check_output_path(dst, inputs, what)  # a folder or an input as target: refused before the work
    tensors = _prepare_for_saving(state_dict)
    metadata = {"format": "pt", CONFIG_METADATA_KEY: config.to_json()}
    data = safetensors_bytes(tensors, metadata=metadata)
    del tensors  # only the bytes are needed now; a CPU copy of GPU weights can go
    with atomic_output(dst, inputs, what) as tmp:
        with open(tmp, "wb") as out:  # the temporary file atomic_output made: its mode stays
            out.write(data)
    return dst


def convert_pth_to_safetensors(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                               component: str | None = None,
                               config: BundleConfig | None = None, *,
                               what: str = "output") -> BundleConfig:
    """Legacy ``.pth`` (read with weights_only=True) -> SegTalker ``.safetensors`` bundle.

    ``component`` defaults to what the tensor names look like; ``config`` defaults to
    :func:`default_config` of the component plus ``converted_from`` in ``extra``. Tensors are
    stored bit for bit (same dtypes, same values). Returns the config written.

    The file is checked as loading checks it: a ``dst`` that is ``src`` (also through a symlink
    or hard link) is refused before anything is read; the tensors must be finite and their names
    and shapes must fit the module the config describes (built on the meta device, so the check
    costs no memory). ``dst`` is written through :func:`.atomic_files.atomic_output` (``what``
    names it in messages, e.g. ``"-o"``): a refused or failed conversion leaves nothing.
    """
    src_path = find_checkpoint(src)
    _check_suffix(src_path, legacy_only=True)
    check_output_path(dst, {"checkpoint": src_path}, what)
    if config is not None and component is not None and config.component != component:
        raise ValueError(f"component {component!r} disagrees with config.component "
                         f"{config.component!r}")
    wanted = config.component if config is not None else component
    state_dict = _strip_module_prefix(_load_legacy(src_path, wanted))
    guess = guess_layout(state_dict.keys())
    if wanted is None:
        if guess.component is None:
            raise CheckpointError(
                f"cannot tell which SegTalker component {src_path} is: it looks like "
                f"{guess.description}. Pass component= (CLI: --component; one of {', '.join(COMPONENTS)})."
            )
        wanted = guess.component
    if wanted not in COMPONENTS:
        raise ValueError(f"component {wanted!r} is not one of {', '.join(COMPONENTS)}")
    if guess.known and guess.component != wanted:
        raise ComponentMismatchError(
            f"{src_path} looks like {guess.description}, not a {COMPONENTS[wanted]}; "
            f"check the file or the component you asked for."
        )
    if config is None:
        base = default_config(wanted)
        config = BundleConfig(
            component=base.component, architecture=base.architecture,
            label_scheme=base.label_scheme, resolution=base.resolution, audio=base.audio,
            extra={**base.extra, "converted_from": src_path.name},
        )
    check_finite_weights(state_dict, src_path)
    check_state_dict_fits(_module_on_meta(config).state_dict(), state_dict,
                          f"{config.component_name} from {src_path}",
                          fix="Check the file, or the component (and architecture) asked for.")
    save(dst, state_dict, config, inputs={"checkpoint": src_path}, what=what)
    return config


def _module_on_meta(config: BundleConfig) -> torch.nn.Module:
    """The module loading builds for ``config``, on the meta device (shapes only, no memory).

    The builders import this module, so they are imported here, when a conversion needs them
    (and outside the meta context: a module-level tensor must not end up on meta)."""
    if config.component == "bisenet":
        from .parsing.bisenet import bisenet_config, build_bisenet

        arch_config = bisenet_config(config.architecture)
        with torch.device("meta"):
            return build_bisenet(arch_config)
    from .models.bundles import build_component, model_config_from_architecture

    model_config = model_config_from_architecture(config.component, config.architecture)
    with torch.device("meta"):
        return build_component(config.component, model_config)


def check_state_dict_fits(expected: Mapping[str, torch.Tensor],
                          state_dict: Mapping[str, torch.Tensor], what: str,
                          fix: str = "Pick the right file for this slot.") -> None:
    """Refuse ``state_dict`` unless its names and shapes are exactly ``expected``'s (a module's
    ``state_dict()``, possibly on the meta device).

    :class:`StateDictMismatchError` says how many keys are missing / unexpected / of the wrong
    shape, shows a few of each, and what the file looks like. ``what`` names the model and the
    file (e.g. ``"BiSeNet face parser from 79999_iter.pth"``); ``fix`` ends the message.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{_count(missing, 'missing key')} (e.g. {_few(missing)})")
        if unexpected:
            parts.append(f"{_count(unexpected, 'unexpected key')} (e.g. {_few(unexpected)})")
        if wrong_shape:
            shapes = "; ".join(f"{k}: file {f} vs model {m}" for k, f, m in wrong_shape[:3])
            parts.append(f"{_count(wrong_shape, 'tensor')} of the wrong shape ({shapes})")
        guess = guess_layout(state_dict.keys())
        raise StateDictMismatchError(
            f"{what}: the file does not fit the model: {'; '.join(parts)}. "
            f"The file looks like {guess.description}. {fix}"
        )


def load_state_dict_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                           what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, with a readable error.

    ``what`` names the model and the file for the message (e.g. ``"BiSeNet face parser from
    79999_iter.pth"``). On mismatch (:func:`check_state_dict_fits`),
    :class:`StateDictMismatchError` says what does not fit.
    """
    check_state_dict_fits(module.state_dict(), state_dict, what)
    module.load_state_dict(state_dict, strict=True)


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                         shown: int = 3) -> None:
    """Refuse NaN/inf in any floating-point tensor, naming the file and the first few tensors.

    Costs one sum per tensor on the tensors' own device (about 6 ms for the 53 MB BiSeNet on
    one CPU thread); only a tensor whose sum is not finite is checked value by value.
    """
    # Sorted: a .pth and the .safetensors made from it (whose tensors come back sorted) then
    # name the same tensors.
    bad = sorted(name for name, t in state_dict.items() if _has_non_finite(t))
    if bad:
        names = ", ".join(bad[:shown]) + (", ..." if len(bad) > shown else "")
        raise NonFiniteWeightsError(
            f"model file {os.fspath(path)} has NaN/inf values in {_count(bad, 'tensor')} "
            f"({names}): the file is damaged or the training diverged; re-download or "
            f"re-export it."
        )


# ----------------------------------------------------------------------------------- helpers

def _has_non_finite(t: torch.Tensor) -> bool:
    if not (t.is_floating_point() or t.is_complex()):
        return False
    # A sum is one pass without a temporary, and any NaN/inf makes it non-finite; only a sum that
    # is not finite (a real NaN, or an overflow of large values) pays for the exact check.
    half = t.dtype in (torch.float16, torch.bfloat16)
    probe = t.sum(dtype=torch.float32) if half else t.sum()
    return not bool(torch.isfinite(probe)) and not bool(torch.isfinite(t).all())


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _few(keys: Sequence[str], count: int = 4) -> str:
    shown = ", ".join(keys[:count])
    return shown + (", ..." if len(keys) > count else "")


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() in SAFETENSORS_SUFFIXES


def _check_suffix(path: Path, legacy_only: bool = False) -> None:
    allowed = LEGACY_SUFFIXES if legacy_only else SAFETENSORS_SUFFIXES + LEGACY_SUFFIXES
    if path.suffix.lower() not in allowed:
        raise CheckpointError(
            f"model file {path} has extension {path.suffix!r}; expected one of "
            f"{', '.join(allowed)}"
        )


def _check_component(path: Path, config: BundleConfig, expected: str | None,
                     keys: Iterable[str]) -> None:
    if expected is None or config.component == expected:
        return
    wants = f"this slot wants a {COMPONENTS[expected]} ({expected!r})"
    if not config.inferred:
        raise ComponentMismatchError(
            f"{path} is a {config.component_name} bundle ({config.component!r}), but {wants}. "
            f"Pick a {expected} file."
        )
    # A plain file we do not recognise may still fit; the strict load will tell.
    if guess_layout(keys).known:
        raise ComponentMismatchError(
            f"{path} looks like {config.description}, but {wants}. Pick a {expected} file."
        )


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / DDP checkpoints prefix every name with "module.".
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# Wrappers that training scripts put around a state dict; for StyleGAN pairs the component says
# which half to take.
_WRAPPER_KEYS = ("state_dict", "model", "params_ema", "params", "net")
_COMPONENT_WRAPPER_KEYS = {"generator": ("g_ema", "g"), "discriminator": ("d",)}


def _load_legacy(path: Path, component: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of a ``.pth`` file, loaded with weights_only=True and unwrapped."""
    _check_pytorch_bytes(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _unpickler_reason(exc):  # a damaged pickle, not one that holds objects
            raise CorruptCheckpointError(_corrupt_msg(
                path, f"torch.load failed ({_first_sentence(exc)})")) from None
        raise CheckpointError(
            f"{path} cannot be loaded with torch.load(weights_only=True): it contains pickled "
            f"Python objects, not only tensors, and SegTalker never unpickles code. Re-save it "
            f"as a plain state_dict (torch.save(model.state_dict(), ...)) or as .safetensors."
            f"{_unpickler_reason(exc)}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptCheckpointError(_corrupt_msg(
            path, f"torch.load failed ({_first_sentence(exc)})")) from None
    obj = _unwrap(obj, component)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found a "
                              f"{type(obj).__name__}); save model.state_dict() instead")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(
            f"{path} is not a plain state dict: entries {_few([str(b) for b in bad])} are not "
            f"tensors named by strings"
        )
    return dict(obj)


# How a file torch.load can read begins: a zip archive (torch >= 1.6) or a pickle (protocol 2+).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def _check_pytorch_bytes(path: Path) -> None:
    """Refuse, by its first bytes, a file that cannot be a PyTorch checkpoint, saying what it is.

    Without this, torch's unpickler reports a text file as "Unsupported operand", which reads
    like a checkpoint with code in it."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        return
    if not head:
        raise CorruptCheckpointError(_corrupt_msg(path, "it is empty (0 bytes)"))
    raise CorruptCheckpointError(_corrupt_msg(
        path, f"it is not a PyTorch checkpoint ({_looks_like(head)})"))


def _looks_like(head: bytes) -> str:
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < _MAX_HEADER_BYTES:
        return "it is a safetensors file: rename it to .safetensors"
    if head.lstrip()[:1] in (b"<", b"{"):
        return "it is an HTML/JSON/XML page, e.g. a download error page"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8].hex(' ')}"
    return f"it is a text file starting {text[:24]!r}"


def _first_sentence(exc: Exception) -> str:
    # torch's messages run on for lines of advice (some of it unsafe); the first sentence says it.
    text = str(exc).splitlines()[0] if str(exc) else repr(exc)
    return text.split(". ")[0].rstrip(".")


def _unpickler_reason(exc: Exception) -> str:
    # torch's own message advises loading with weights_only=False; show only the offending line.
    for line in str(exc).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return f" (torch: {line.strip().split(' was not an allowed')[0]})"
    return ""


def _unwrap(obj: Any, component: str | None) -> Any:
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if not isinstance(obj, Mapping) or all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        keys = _COMPONENT_WRAPPER_KEYS.get(component or "", ()) + _WRAPPER_KEYS
        inner = next((obj[k] for k in keys if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def _prepare_for_saving(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError("state_dict must be a non-empty mapping of name -> tensor")
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[tuple[int, str]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"state_dict entry {name!r} is not a tensor named by a string")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        key = (storage.data_ptr(), str(t.device))
        whole = storage.nbytes() == t.numel() * t.element_size()
        if key in seen_storage or not whole:
            t = t.clone()  # safetensors rejects tensors that alias another or a larger buffer
        seen_storage.add((t.untyped_storage().data_ptr(), str(t.device)))
        out[name] = t
    return out


def count_values(path: str | os.PathLike[str]) -> int:
    """Number of scalars stored in a safetensors file (parameters and buffers), header only."""
    header, _ = _read_header(find_checkpoint(path))
    return sum(math.prod(entry.get("shape", [])) for entry in header.values())
