"""What a training run reports: log lines, metrics, sample images, TensorBoard (rank 0 only).

In the run folder:

* ``log.txt``: the plain-text log lines (also printed on stdout);
* ``metrics.jsonl``: one JSON object per log step (``{"step": 100, "loss": 0.41, ...}``), what
  tests and scripts read;
* ``samples/<name>-<step>.png``: the stage's preview grids;
* ``tb/``: TensorBoard events (scalars and the same images) when the ``tensorboard`` package
  is installed (``pip install tensorboard``; see TRAINING.md) — without it the run says so once
  and the three files above hold everything.

``log.txt`` and ``metrics.jsonl`` are small and rewritten whole through ``atomic_files`` at each
log step, so a killed run never leaves a torn line. On resume, entries after the resumed step
are dropped (they are re-run) and TensorBoard is told to purge them too.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import write_bytes

log = logging.getLogger("segtalker.train")


def tensorboard_writer(folder: Path, purge_step: int | None):
    """A ``SummaryWriter`` or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


class RunLog:
    """Rank 0's reports of one run; on other ranks every method does nothing."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool,
                 use_tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.lines: list[str] = []
        self.metrics: list[str] = []
        self.writer = None
        self._bar = None
        if not enabled:
            return
        for raw in _read_lines(self.run_dir / "metrics.jsonl"):
            try:
                if int(json.loads(raw)["step"]) <= start_step:
                    self.metrics.append(raw)
            except (ValueError, KeyError, TypeError):
                continue
        # Log lines of a resumed run are kept up to its resume note; re-run lines are dropped.
        old = _read_lines(self.run_dir / "log.txt")
        self.lines = [ln for ln in old if _line_step(ln) is None or _line_step(ln) <= start_step]
        if use_tensorboard:
            self.writer = tensorboard_writer(self.run_dir / "tb",
                                             purge_step=start_step + 1 if start_step else None)
            if self.writer is None:
                self.note("tensorboard is not installed (pip install tensorboard): metrics go to "
                          "metrics.jsonl, sample grids to samples/")

    def attach_progress(self, bar: Any) -> None:
        """Print log lines above this tqdm bar instead of through it."""
        self._bar = bar

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        self._print(text)
        self.lines.append(text)
        self._flush_lines()

    def scalars(self, step: int, values: Mapping[str, float], line: str) -> None:
        if not self.enabled:
            return
        self._print(line)
        self.lines.append(line)
        self.metrics.append(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}))
        self._flush_lines()
        write_bytes(self.run_dir / "metrics.jsonl", ("\n".join(self.metrics) + "\n").encode(),
                    what="metrics file")
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, float(v), step)
            self.writer.flush()

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> list[Path]:
        if not self.enabled or not images:
            return []
        from ..image_files import encode_image

        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, rgb in images.items():
            path = folder / f"{name}-{step:08d}.png"
            write_bytes(path, encode_image(rgb, "PNG"), what="sample grid")
            written.append(path)
            if self.writer is not None:
                self.writer.add_image(f"samples/{name}", rgb, step, dataformats="HWC")
        if self.writer is not None:
            self.writer.flush()
        return written

    def _flush_lines(self) -> None:
        write_bytes(self.run_dir / "log.txt", ("\n".join(self.lines) + "\n").encode(),
                    what="log file")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _line_step(line: str) -> int | None:
    """The step of a ``"step 120/1000 ..."`` line (None for notes)."""
    head = line.split(maxsplit=2)
    if len(head) >= 2 and head[0] == "step":
        try:
            return int(head[1].partition("/")[0])
        except ValueError:
            return None
    return None
