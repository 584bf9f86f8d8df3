"""Seg-SyncNet stage: Wav2Lip's expert lip-sync discriminator, trained on label-map windows.

Recipe (Wav2Lip's SyncNet, on 12-region maps instead of pixels): a window of ``num_frames`` (5)
consecutive maps and the mel window centred on it; half the samples in sync, half with the maps
of a shifted window of the same clip (no frame shared; another clip when the clip is too short),
drawn by :class:`.datasets.SyncWindowDataset`; BCE on the cosine similarity of the two
embeddings (``models.syncnet.sync_bce_loss``); Adam, lr 1e-4. The trained network is the frozen
critic of the TSG stage and the pack's offline lip-sync score on segmentations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.syncnet import SegSyncNet, SyncNetConfig, sync_bce_loss, sync_probability
from ..models.tsg import onehot
from . import previews
from .config import OptimConfig, StageConfig
from .datasets import SyncAugment
from .stage import Batch, Provenance, Stage, StepContext, TrainedPart, init_from_bundle

PART = "syncnet"


@dataclass
class SyncNetStageConfig(StageConfig):
    model: SyncNetConfig = field(default_factory=SyncNetConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Smallest shift (frames) of an off-sync window; 0: num_frames (no frame shared). Wav2Lip: 1.
    min_shift: int = 0
    # Training windows only (never the val split): see datasets.SyncAugment.
    augment: SyncAugment = field(default_factory=SyncAugment)


def window_onehot(maps: torch.Tensor) -> torch.Tensor:
    """Integer windows ``[B, F, S, S]`` -> one-hot ``[B, F, 12, S, S]`` float32."""
    b, f = maps.shape[:2]
    return onehot(maps.flatten(0, 1)).unflatten(0, (b, f))


def sync_terms(net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE loss and accuracy (threshold 0.5 on the sync probability) of one batch."""
    audio, visual = net(batch["mel"], window_onehot(batch["maps"]))
    loss = sync_bce_loss(audio, visual, batch["label"])
    prob = sync_probability(audio, visual)
    accuracy = ((prob > 0.5).float() == batch["label"]).float().mean()
    return loss, {"accuracy": float(accuracy)}


class SyncNetStage(Stage):
    name = "syncnet"
    config_class = SyncNetStageConfig
    components = ("syncnet",)

    def build(self) -> dict[str, TrainedPart]:
        c = self.config
        if c.model.num_frames != c.data.num_frames:
            raise ValueError(f"model.num_frames ({c.model.num_frames}) and data.num_frames "
                             f"({c.data.num_frames}) must agree: the network reads windows of "
                             f"that many frames")
        self.model = SegSyncNet(c.model).to(self.runtime.device)
        if c.init_from and self.init_weights:
            init_from_bundle(self.model, c.init_from, "syncnet", self.resolution, self.name)
        opt = torch.optim.Adam(self.model.parameters(), lr=c.optim.lr, betas=c.optim.betas,
                               weight_decay=c.optim.weight_decay)
        return {PART: TrainedPart(self.model, opt)}

    def _dataset(self, split: str):
        from .datasets import SyncWindowDataset

        c = self.config
        return SyncWindowDataset(self.data_root, split=split, resolution=self.resolution,
                                 num_frames=c.model.num_frames, seed=c.data.seed,
                                 min_shift=c.min_shift or None,
                                 augment=c.augment if split == c.data.train_split else None)

    def datasets(self):
        return self.train_and_val(self._dataset)

    def train_step(self, ctx: StepContext, micro_batches: list[Batch], step: int
                   ) -> dict[str, float]:
        return ctx.accumulate(PART, micro_batches, sync_terms, step)

    def evaluate(self, ctx: StepContext, batches: list[Batch]) -> dict[str, float]:
        totals = {"loss": 0.0, "accuracy": 0.0}
        for batch in batches:
            with ctx.autocast():
                loss, terms = sync_terms(ctx.raw(PART), batch)
            totals["loss"] += float(loss) / len(batches)
            totals["accuracy"] += terms["accuracy"] / len(batches)
        return totals

    def samples(self, ctx: StepContext, batch: Batch) -> dict[str, np.ndarray]:
        """One row per window (its frames), in-sync rows first; the label is the row order."""
        maps, label = batch["maps"], batch["label"]
        order = torch.argsort(-label, stable=True).tolist()
        rows = [[previews.colour_labels(m) for m in maps[i]] for i in order]
        return {"windows": previews.grid(rows)}

    def export(self, path: Path, provenance: Provenance) -> list[Path]:
        from ..models.bundles import save_component

        save_component(path, self.model, self.model.config, extra=provenance.extra())
        return [Path(path)]


STAGE = SyncNetStage
