"""TSG stage: speech -> talking segmentation, trained on prepared clips.

For each sample (:class:`.datasets.TalkingSegDataset`) the network sees the target frame's map
as the *pose source* (``TSG.forward`` hides its mouth area itself, as at inference), an
*identity reference* (another frame of the same clip) and the target's mel window, and predicts
the target's map. Losses (``models/tsg_losses.py``): cross-entropy with extra weight inside the
hidden mouth area, soft dice on lips and mouth interior, and -- when ``loss.sync > 0`` -- the
sync loss of a frozen trained Seg-SyncNet (``syncnet=BUNDLE``, the ``train syncnet`` result) on
the predicted 5-frame window, Wav2Lip's expert-discriminator loss with its weight 0.03.

With the sync loss on, each sample is the whole window: the TSG runs on every window frame
(own source, own mel, the sample's reference), the reconstruction losses average over those
frames, and the predicted window -- the network's softmax inside the mouth area, the source
outside it, as inference composites -- is scored by the SyncNet against the centre frame's
mel. Without it (or before ``loss.sync_start_step``) only the centre frame is run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..models.tsg import TSG, TSGConfig, mouth_area_mask, onehot
from ..models.tsg_losses import TSGLossWeights, cross_entropy_loss, dice_loss, sync_loss, tsg_loss
from . import previews
from .config import OptimConfig, StageConfig
from .stage import Batch, Provenance, Stage, StepContext, TrainedPart, init_from_bundle

PART = "tsg"
log = logging.getLogger("segtalker.train")


@dataclass
class TSGLossConfig:
    """Loss weights (``models.tsg_losses.TSGLossWeights``) and when the sync term starts."""

    cross_entropy: float = 1.0
    dice: float = 1.0
    sync: float = 0.03  # Wav2Lip's expert sync weight; needs syncnet=BUNDLE (0: off)
    mouth_area: float = 2.0  # cross-entropy weight inside the hidden mouth area
    sync_start_step: int = 0  # steps of reconstruction only before the sync loss joins

    def weights(self) -> TSGLossWeights:
        return TSGLossWeights(cross_entropy=self.cross_entropy, dice=self.dice, sync=self.sync,
                              mouth_area=self.mouth_area)


@dataclass
class TSGStageConfig(StageConfig):
    model: TSGConfig = field(default_factory=TSGConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: TSGLossConfig = field(default_factory=TSGLossConfig)
    syncnet: str = ""  # frozen Seg-SyncNet bundle (.safetensors) for the sync loss
    min_reference_gap: int = 5  # frames between target and identity reference, where possible


class TSGStage(Stage):
    name = "tsg"
    config_class = TSGStageConfig
    components = ("tsg",)

    def build(self) -> dict[str, TrainedPart]:
        c = self.config
        device = self.runtime.device
        self.model = TSG(c.model).to(device)
        if c.init_from and self.init_weights:
            init_from_bundle(self.model, c.init_from, "tsg", self.resolution, self.name)
        self.syncnet = None
        if c.loss.sync > 0 and not self.exporting:
            self.syncnet = self._frozen_syncnet()
        opt = torch.optim.Adam(self.model.parameters(), lr=c.optim.lr, betas=c.optim.betas,
                               weight_decay=c.optim.weight_decay)
        return {PART: TrainedPart(self.model, opt)}

    def _frozen_syncnet(self) -> torch.nn.Module:
        from ..models.bundles import load_component

        c = self.config
        if not c.syncnet:
            raise ValueError("loss.sync > 0 needs a trained Seg-SyncNet: pass --set "
                             "syncnet=RUN.safetensors (train and export the syncnet stage first), "
                             "or --set loss.sync=0 to train without the sync loss")
        if not Path(c.syncnet).is_file():
            raise FileNotFoundError(f"syncnet {c.syncnet!r} does not exist; give the exported "
                                    f"Seg-SyncNet bundle (python -m segtalker_core export ...)")
        net, _ = load_component(c.syncnet, "syncnet", device=self.runtime.device)
        if net.config.num_frames != c.data.num_frames:
            raise ValueError(f"syncnet {Path(c.syncnet).name} reads windows of "
                             f"{net.config.num_frames} frames, but data.num_frames is "
                             f"{c.data.num_frames}; set data.num_frames={net.config.num_frames}")
        net.eval().requires_grad_(False)
        return net

    def _dataset(self, split: str):
        from .datasets import TalkingSegDataset

        c = self.config
        return TalkingSegDataset(self.data_root, split=split, resolution=self.resolution,
                                 num_frames=c.data.num_frames, seed=c.data.seed,
                                 min_reference_gap=c.min_reference_gap)

    def datasets(self):
        return self.train_and_val(self._dataset)

    def _uses_sync(self, step: int) -> bool:
        return self.syncnet is not None and step >= self.config.loss.sync_start_step

    def centre_terms(self, net: torch.nn.Module, batch: Batch
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        source = onehot(batch["target"])
        logits = net(source, onehot(batch["reference"]), batch["mel"])
        mask = mouth_area_mask(batch["target"], self.config.model.mouth_mask)
        return tsg_loss(logits, batch["target"], mask, self.config.loss.weights())

    def window_terms(self, net: torch.nn.Module, batch: Batch
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        window = batch["target_window"]  # [B, F, S, S]
        b, f = window.shape[:2]
        targets = window.flatten(0, 1)
        source = onehot(targets)
        reference = onehot(batch["reference"]).repeat_interleave(f, dim=0)
        logits = net(source, reference, batch["mel_window"].flatten(0, 1))
        mask = mouth_area_mask(targets, self.config.model.mouth_mask)
        total, terms = tsg_loss(logits, targets, mask, self.config.loss.weights())
        inside = mask[:, None].float()
        predicted = logits.float().softmax(dim=1) * inside + source * (1 - inside)
        sync = sync_loss(self.syncnet, predicted.unflatten(0, (b, f)), batch["mel"])
        terms["sync"] = float(sync.detach())
        return total + self.config.loss.sync * sync, terms

    def train_step(self, ctx: StepContext, micro_batches: list[Batch], step: int
                   ) -> dict[str, float]:
        terms = self.window_terms if self._uses_sync(step) else self.centre_terms
        return ctx.accumulate(PART, micro_batches, terms, step)

    def predict(self, batch: Batch) -> torch.Tensor:
        """Composited predicted maps ``[B, S, S]`` of the centre frames (inference's rule)."""
        logits = self.model(onehot(batch["target"]), onehot(batch["reference"]), batch["mel"])
        mask = mouth_area_mask(batch["target"], self.config.model.mouth_mask)
        return torch.where(mask, logits.float().argmax(dim=1), batch["target"])

    def evaluate(self, ctx: StepContext, batches: list[Batch]) -> dict[str, float]:
        totals = {"cross_entropy": 0.0, "mouth_dice": 0.0}
        for batch in batches:
            with ctx.autocast():
                logits = self.model(onehot(batch["target"]), onehot(batch["reference"]),
                                    batch["mel"])
            totals["cross_entropy"] += float(cross_entropy_loss(logits, batch["target"])) \
                / len(batches)
            totals["mouth_dice"] += (1 - float(dice_loss(logits, batch["target"]))) / len(batches)
        return totals

    def samples(self, ctx: StepContext, batch: Batch) -> dict[str, np.ndarray]:
        """Rows: identity reference | masked pose source | prediction | ground truth."""
        with ctx.autocast():
            predicted = self.predict(batch)
        mask = mouth_area_mask(batch["target"], self.config.model.mouth_mask)
        rows = [[previews.colour_labels(batch["reference"][i]),
                 previews.colour_masked(batch["target"][i], mask[i]),
                 previews.colour_labels(predicted[i]),
                 previews.colour_labels(batch["target"][i])]
                for i in range(len(predicted))]
        return {"talking_segmentation": previews.grid(rows)}

    def export(self, path: Path, provenance: Provenance) -> list[Path]:
        from ..models.bundles import save_component

        save_component(path, self.model, self.model.config, extra=provenance.extra())
        return [Path(path)]


STAGE = TSGStage
