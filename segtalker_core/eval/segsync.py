"""Seg-SyncNet (``models/syncnet.py``) as a lip-sync score: the generated frames parsed into
12-region maps by the pack's built-in parser, five at a time against the mel window of their
first frame, as the network was trained. For each audio shift ``-max_shift..max_shift`` frames
the mean sync probability over the windows; the shift with the highest is the offset (+ = the
video lags), and the confidence is that highest mean less the median over the shifts (the
LSE-C idea, on probabilities)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class SegSyncResult:
    confidence: float
    offset: int
    probability_at_zero: float
    windows: int


def load_segsyncnet(path, device="cpu"):
    """A Seg-SyncNet bundle (another component is refused, naming what the file holds)."""
    from ..models.bundles import load_component

    model, _ = load_component(path, "syncnet", device)
    return model.eval()


def segsync_score(model, frames: np.ndarray, wave16k: np.ndarray, fps: Fraction | float,
                  max_shift: int, device="cpu", batch: int = 16) -> SegSyncResult:
    """Score ``frames [N, H, W, 3]`` uint8 against ``wave16k [M]``."""
    import torch

    from .. import labels as L
    from ..audio.mel import mel_windows
    from ..pipeline import parse_faces
    from ..models.syncnet import sync_probability

    size = model.config.resolution
    faces = parse_faces(frames, crop_size=max(size, 64), input_name="--generated", require_face=False)
    regions = L.merge_to_regions(faces.labels)  # [N, S, S]
    maps = torch.nn.functional.one_hot(torch.from_numpy(regions.astype(np.int64)), L.NUM_REGIONS)
    maps = maps.permute(0, 3, 1, 2).float()  # [N, 12, S, S]
    mel = torch.from_numpy(mel_windows(wave16k, fps, n_frames=len(frames), sample_rate=16000))
    span = model.config.num_frames
    count = len(frames) - span + 1
    if count < 1:
        raise ValueError(f"Seg-SyncNet needs at least {span} frames")
    visual, audio = [], []
    with torch.no_grad():
        for start in range(0, count, batch):
            idx = range(start, min(start + batch, count))
            windows = torch.stack([maps[i:i + span] for i in idx]).to(device)
            visual.append(model.embed_visual(windows).float().cpu())
        for start in range(0, len(frames), batch):
            audio.append(model.embed_audio(mel[start:start + batch, None].to(device)).float().cpu())
    visual_emb, audio_emb = torch.cat(visual), torch.cat(audio)  # [count, D], [N, D]
    shifts = np.arange(-max_shift, max_shift + 1)
    means = []
    for k in shifts:
        i = np.arange(count)
        j = i - k  # visual window i against the audio window of frame i - k
        ok = (j >= 0) & (j < len(audio_emb))
        if not ok.any():
            means.append(np.nan)
            continue
        means.append(float(sync_probability(audio_emb[j[ok]], visual_emb[i[ok]]).mean()))
    means = np.array(means)
    best = int(np.nanargmax(means))
    return SegSyncResult(confidence=float(means[best] - np.nanmedian(means)), offset=int(shifts[best]),
                         probability_at_zero=float(means[max_shift]), windows=count)
