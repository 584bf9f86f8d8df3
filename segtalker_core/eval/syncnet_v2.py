"""SyncNet v2 (Chung and Zisserman, "Out of time", 2016; the ``syncnet_v2.model`` weights of
joonson/syncnet_python), the network behind LSE-C / LSE-D, written for this pack with the same
module names and layer positions so that file's state dict loads as is.

Inputs as the authors' evaluation feeds it: five consecutive 224x224 face crops, **BGR**,
0..255 floats, ``[B, 3, 5, 224, 224]``; and 13 MFCCs over the matching 0.2 s, ``[B, 1, 13, 20]``
(:mod:`.mfcc`, on 16 kHz audio at 16-bit scale). Each tower gives a 1024-d embedding; LSE-D is
the mean Euclidean distance at the best audio shift, LSE-C the median distance over the shifts
minus that minimum (:func:`lse`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

EMBED = 1024
FRAMES = 5  # video frames per window (0.2 s at 25 fps)
MFCC_STEPS = 20  # MFCC frames per window (10 ms hop)
CROP = 224
FPS = 25
DEFAULT_SHIFT = 15  # the authors' --vshift


def _tower(layers: list[tuple], conv, norm, pool) -> nn.Sequential:
    """``("c", in, out, kernel, stride, padding)``: a conv followed by batch norm and ReLU;
    ``("p", kernel, stride, padding)``: a max pool. The positions match the authors' module."""
    modules: list[nn.Module] = []
    for spec in layers:
        if spec[0] == "c":
            _, cin, cout, kernel, stride, padding = spec
            modules += [conv(cin, cout, kernel_size=kernel, stride=stride, padding=padding),
                        norm(cout), nn.ReLU()]
        else:
            _, kernel, stride, padding = spec
            modules.append(pool(kernel_size=kernel, stride=stride, padding=padding))
    return nn.Sequential(*modules)


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED))


class SyncNetV2(nn.Module):
    """``embed_audio(mfcc [B, 1, 13, 20]) -> [B, 1024]``; ``embed_video(crops [B, 3, 5, 224,
    224]) -> [B, 1024]`` (not normalised, as the authors compare them)."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = _tower([
            ("c", 1, 64, 3, 1, 1), ("p", 1, 1, 0),
            ("c", 64, 192, 3, 1, 1), ("p", 3, (1, 2), 0),
            ("c", 192, 384, 3, 1, 1), ("c", 384, 256, 3, 1, 1), ("c", 256, 256, 3, 1, 1), ("p", 3, 2, 0),
            ("c", 256, 512, (5, 4), 1, 0),
        ], nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = _tower([
            ("c", 3, 96, (5, 7, 7), (1, 2, 2), 0), ("p", (1, 3, 3), (1, 2, 2), 0),
            ("c", 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("p", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
            ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)), ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)),
            ("c", 256, 256, (1, 3, 3), 1, (0, 1, 1)), ("p", (1, 3, 3), (1, 2, 2), 0),
            ("c", 256, 512, (1, 6, 6), 1, 0),
        ], nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        assert mfcc.ndim == 4 and tuple(mfcc.shape[1:]) == (1, 13, MFCC_STEPS), mfcc.shape
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_video(self, crops: torch.Tensor) -> torch.Tensor:
        assert crops.ndim == 5 and tuple(crops.shape[1:]) == (3, FRAMES, CROP, CROP), crops.shape
        return self.netfclip(self.netcnnlip(crops).flatten(1))


def load_syncnet_v2(path, device="cpu") -> SyncNetV2:
    """The network with ``path``'s weights (refused, naming what it looks like, when the file is
    another network), in eval mode on ``device``."""
    from .weights import WrongWeightsError, load_weights

    state = load_weights(path, "syncnet_v2", "LSE-C / LSE-D", "--syncnet-v2")
    model = SyncNetV2()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or wrong:
        raise WrongWeightsError(
            f"--syncnet-v2 {path!r} has SyncNet v2's names but not its layout: "
            + (f"{len(missing)} tensors missing ({', '.join(missing[:3])})" if missing else "")
            + ("; " if missing and wrong else "")
            + (f"{len(wrong)} of another shape ({', '.join(wrong[:3])})" if wrong else ""))
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model.eval().to(device)


@dataclass(frozen=True)
class LseResult:
    lse_d: float  # mean distance at the best shift (lower: in sync)
    lse_c: float  # median over shifts minus that minimum (higher: confident sync)
    offset: int  # frames; + = the video lags the audio
    windows: int


def lse(video_embeddings: torch.Tensor, audio_embeddings: torch.Tensor, max_shift: int = DEFAULT_SHIFT) -> LseResult:
    """LSE-D / LSE-C and offset from per-window embeddings ``[N, 1024]`` each: for every shift
    ``s`` in ``-max_shift..max_shift`` the mean distance between video window ``i`` and audio
    window ``i - s`` (zero embeddings past the ends, as the authors pad)."""
    assert video_embeddings.shape == audio_embeddings.shape, (video_embeddings.shape, audio_embeddings.shape)
    n = len(video_embeddings)
    padded = torch.nn.functional.pad(audio_embeddings, (0, 0, max_shift, max_shift))
    distances = torch.stack([
        torch.nn.functional.pairwise_distance(video_embeddings, padded[j:j + n]) for j in range(2 * max_shift + 1)
    ], dim=1)  # [N, shifts]: column j is audio window i + j - max_shift
    mean = distances.mean(dim=0)
    best = int(torch.argmin(mean))
    minimum = float(mean[best])
    return LseResult(lse_d=minimum, lse_c=float(torch.median(mean)) - minimum, offset=max_shift - best, windows=n)


def face_crops(frames: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``[N, 224, 224, 3]`` BGR uint8 crops as the authors' pipeline cuts them around a face
    box (half size ``s``, centre ``(x, y)``: rows ``y - s .. y + 1.8 s``, columns
    ``x - 1.4 s .. x + 1.4 s``, the frame padded with grey 110), the box here being the
    landmarks' extent (``points [N, 478, 2]``, frame px) instead of their S3FD detector's."""
    import cv2

    out = np.empty((len(frames), CROP, CROP, 3), np.uint8)
    for i, (frame, p) in enumerate(zip(frames, points)):
        x0, y0 = np.nanmin(p, axis=0)
        x1, y1 = np.nanmax(p, axis=0)
        half = max(x1 - x0, y1 - y0) / 2
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        pad = int(half * 1.8) + 2
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(110, 110, 110))
        top, bottom = int(cy - half) + pad, int(cy + half * 1.8) + pad
        left, right = int(cx - half * 1.4) + pad, int(cx + half * 1.4) + pad
        crop = padded[top:bottom, left:right]
        out[i] = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), (CROP, CROP))
    return out


def syncnet_v2_score(model: SyncNetV2, crops_bgr: np.ndarray, wave16k: np.ndarray, max_shift: int = DEFAULT_SHIFT,
                     batch: int = 16, device="cpu") -> LseResult:
    """LSE of ``crops_bgr [N, 224, 224, 3]`` (25 fps) against 16 kHz ``wave16k [M]``, over the
    windows the authors' evaluation takes: ``min(N, M // 640) - 5`` of them."""
    from .mfcc import mfcc

    features = mfcc(wave16k)
    n = min(len(crops_bgr), len(wave16k) // 640) - FRAMES
    if n < 1:
        raise ValueError(f"SyncNet v2 needs more than {FRAMES} frames (0.2 s) of video and audio")
    video = torch.from_numpy(crops_bgr).float().permute(3, 0, 1, 2)  # [3, N, 224, 224]
    audio = torch.from_numpy(features).float()
    v_emb, a_emb = [], []
    with torch.no_grad():
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            v = torch.stack([video[:, i:i + FRAMES] for i in idx]).to(device)
            a = torch.stack([audio[None, :, 4 * i:4 * i + MFCC_STEPS] for i in idx]).to(device)
            v_emb.append(model.embed_video(v).cpu())
            a_emb.append(model.embed_audio(a).cpu())
    return lse(torch.cat(v_emb), torch.cat(a_emb), max_shift)
