"""Training checkpoints: written whole or not at all, the newest complete one found on resume.

``RUN/checkpoints/step-00001000.pt`` holds everything a run needs to continue: the step, the
resolved config, the dataset hash, each trained part's weights, optimiser and GradScaler state,
and the stage's extra state (EMA copies). It is a ``torch.save`` dict written through
:func:`segtalker_core.atomic_files.atomic_output` (temporary file in the same folder, fsync,
rename), so a run killed at any moment leaves either the complete file or only a hidden
``.step-….partial-….pt`` temporary, which the name pattern below never matches. Loading uses
``weights_only=True`` (no pickled code runs), and a newest file that still cannot be read (a disk
that lied about fsync, a file copied half-way) is skipped with a warning for the one before it.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic_files import atomic_output

FORMAT = "segtalker-train-checkpoint"
VERSION = 1
NAME = re.compile(r"^step-(\d{8})\.pt$")

log = logging.getLogger("segtalker.train")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete-named checkpoints of a run, newest first (temporaries never match)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found, reverse=True)


def save(run_dir: Path, step: int, payload: Mapping[str, Any], keep: int) -> Path:
    """Write the checkpoint of ``step`` atomically, then delete all but the ``keep`` newest."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, what="checkpoint") as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "step": int(step), **payload}, tmp)
    for _, old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    step: int
    payload: dict[str, Any]


def read(path: Path) -> dict[str, Any]:
    """One checkpoint's dict; ValueError naming the file when it is not a complete checkpoint."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a SegTalker training checkpoint")
    if int(payload.get("version", 0)) > VERSION:
        raise ValueError(f"checkpoint {path} was written by a newer SegTalker (format version "
                         f"{payload.get('version')}); update the pack to resume it")
    return payload


def newest(run_dir: Path) -> LoadedCheckpoint | None:
    """The newest checkpoint of ``run_dir`` that loads, or None when there is none."""
    for step, path in list_checkpoints(run_dir):
        try:
            payload = read(path)
        except ValueError as exc:
            log.warning("skipping %s: %s", path.name, exc)
            continue
        return LoadedCheckpoint(path, step, payload)
    return None
