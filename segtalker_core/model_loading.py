"""Loading a model file into a :class:`LoadedModel` of one slot, and listing the files of a slot.

Decisions:

* **Header first.** What a ``.safetensors`` file holds is read from its header
  (:func:`checkpoints.read_config`, no tensor data). A file of another component is refused
  from the header alone, before any tensor is read. Legacy ``.pth`` files have no cheap header;
  only the BiSeNet parser can be one (learned bundles always carry SegTalker metadata), so a
  ``.pth`` offered to a learned slot is refused by its suffix, and one offered as a parser is
  checked while it loads (once).
* **Checked before a module sees it.** Whatever the slot, the weights pass
  :func:`checkpoints.load`'s checks (a folder, a text or empty file, a truncated or foreign file
  are named as such; NaN/inf weights are refused naming the file and the first tensors) and the
  strict load (names and shapes). A parser with NaN weights would otherwise parse every pixel as
  background without a word.
* **Stored precision.** Modules are loaded in float32 (a half-precision file is upcast exactly);
  ``precision`` is only the choice of what runs compute in (:mod:`.precision`), resolved for the
  device the model is placed on. Nothing here casts weights afterwards.
* **Listing is cheap and cached.** :func:`files_of_slot` keeps the component of each file keyed
  by path, size and modification time, so a UI can refresh its lists often. A ``.safetensors``
  costs one header read; a legacy ``.pth`` has no header and is loaded once (weights only) to
  tell a BiSeNet from, say, a ParseNet, then served from the cache until it changes.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from . import checkpoints
from . import precision as prec
from .components import COMPONENTS, PARSER, SOCKETS, SLOTS, components_for
from .model_handle import LoadedModel

__all__ = ["load_model", "file_slot", "files_of_slot", "clear_listing_cache"]


def load_model(path: str | os.PathLike[str], device="cpu", dtype=None, *,
               slot: str | None = None, precision: str = "auto") -> LoadedModel:
    """Load any SegTalker weight file (a BiSeNet parser checkpoint or a learned bundle).

    ``slot``: the slot the caller fills (``"parser"``, ``"tsg"``, ``"encoder"``,
    ``"generator"``); a file of another component raises
    :class:`~segtalker_core.checkpoints.ComponentMismatchError` before its tensors are read.
    None accepts any component. ``precision``: auto / fp32 / bf16 / fp16 (``dtype``, the older
    argument, is taken as the precision when given). The model is placed on ``device``.
    """
    if slot is not None and slot not in SLOTS:
        raise ValueError(f"slot {slot!r} is not one of {', '.join(SLOTS)}")
    choice = prec.NAMES[dtype] if dtype is not None else precision
    if choice not in prec.PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(prec.PRECISIONS)}, got {choice!r}")
    p = checkpoints.find_checkpoint(path)
    if p.suffix.lower() in checkpoints.SAFETENSORS_SUFFIXES:
        config = checkpoints.read_config(p)
        _refuse_other_component(p, config, slot)
    else:
        if slot is not None and slot != PARSER:
            raise checkpoints.ComponentMismatchError(
                f"{p} is a {p.suffix} file, but a {_slot_title(slot)} is always a SegTalker "
                f".safetensors bundle; pick a {slot} bundle")
        config = None  # bisenet is the only legacy format we read; its load checks the tensors
    model = _load(p, config)
    model.precision = choice
    import torch

    device = torch.device(device)
    model.place(device, prec.resolve(choice, device))
    return model


def _load(path: Path, config: checkpoints.BundleConfig | None) -> LoadedModel:
    """The file's model; ``config`` is its header's (None for a legacy ``.pth``)."""
    component = "bisenet" if config is None else config.component
    if component == "bisenet":
        from .parsing.bisenet import load_bisenet

        runner = load_bisenet(path)
        return LoadedModel(
            component=PARSER, runner=runner, source=str(path),
            config=config,
            description=f"BiSeNet face parser (19 classes, {runner.input_size} input) from {path}",
        )
    from .models import bundles

    if component not in COMPONENTS or COMPONENTS[component].learned is None:
        raise checkpoints.CheckpointError(
            f"{path} holds no SegTalker component this pack can run (it looks like "
            f"{config.description or component}); pick a SegTalker file")
    module, config = bundles.load_component(path, component)
    return LoadedModel(component=COMPONENTS[component].slot, runner=module, source=str(path),
                       config=config, description=bundles.describe(path))


def _slot_title(slot: str) -> str:
    names = [COMPONENTS[c].title for c in components_for(slot)]
    return " or ".join(names) or slot


def _refuse_other_component(path: Path, config: checkpoints.BundleConfig,
                            slot: str | None) -> None:
    """Raise ComponentMismatchError when the header shows the file cannot fill ``slot``."""
    if slot is None:
        return
    file_slot_ = COMPONENTS[config.component].slot if config.component in COMPONENTS else None
    if file_slot_ == slot:
        if config.inferred and slot != PARSER:
            raise checkpoints.CheckpointError(
                f"{path} has no SegTalker config (it looks like {config.description}), so the "
                f"{_slot_title(slot)} architecture is unknown; use a file exported by SegTalker")
        return
    what = (f"looks like {config.description}" if config.inferred
            else f"is a {config.component_name} bundle ({config.component!r})")
    if config.inferred and config.component == checkpoints.UNKNOWN_COMPONENT and slot == PARSER:
        return  # an unrecognised plain file may still be a renamed BiSeNet: the strict load tells
    raise checkpoints.ComponentMismatchError(
        f"{path} {what}, but this loader takes a {_slot_title(slot)} "
        f"({SOCKETS.get(slot, slot)}); pick a {slot} file")


# ------------------------------------------------------------------------------------ listing

_cache: dict[str, tuple[tuple[int, int], str | None]] = {}
_cache_lock = threading.Lock()


def file_slot(path: str | os.PathLike[str]) -> str | None:
    """The slot a model file fills, from its header (cached by path, size and mtime); None for a
    file that is not a SegTalker-usable model (corrupt, foreign, unknown)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key, stamp = str(p.resolve()), (st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    slot = _read_slot(p)
    with _cache_lock:
        _cache[key] = (stamp, slot)
    return slot


def _read_slot(path: Path) -> str | None:
    try:
        config = checkpoints.read_config(path)
    except (checkpoints.CheckpointError, OSError, ValueError):
        return None
    spec = COMPONENTS.get(config.component)
    if spec is None or spec.slot is None:
        return None
    if config.inferred and spec.slot != PARSER:
        return None  # a learned slot needs SegTalker metadata to be loadable at all
    return spec.slot


def files_of_slot(paths: Iterable[str | os.PathLike[str]], slot: str) -> list[str]:
    """The entries of ``paths`` whose header says they fill ``slot`` (order kept)."""
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r} is not one of {', '.join(SLOTS)}")
    return [str(p) for p in paths if file_slot(p) == slot]


def clear_listing_cache() -> None:
    with _cache_lock:
        _cache.clear()
