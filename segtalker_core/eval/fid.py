"""FID with the Inception v3 that pytorch-fid uses (the TensorFlow FID network ported to PyTorch,
weights ``pt_inception-2015-12-05-6726825d.pth``, supplied by the user).

That network is torchvision's Inception v3 layout (1008 classes, no auxiliary head) with one
difference in the pooling branch of its mixed blocks: average pooling that does not count the
padding (``Mixed_5b..5d``, ``6b..6e``, ``7b``) and max pooling in ``Mixed_7c``. Here each of
those blocks computes torchvision's branches and swaps in its own pooling branch. Features are
the 2048-d global average pool; frames go in resized to 299x299 (bilinear) and scaled to -1..1.
FID is the Fréchet distance of the two feature Gaussians. Needs torchvision (ComfyUI ships it).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FEATURES = 2048
SIZE = 299


def _patched(block_class, pool):
    """``block_class`` whose pooling branch reads ``pool(x)`` instead of torchvision's."""

    class Block(block_class):
        def _forward(self, x):
            outputs = super()._forward(x)
            outputs[-1] = self.branch_pool(pool(x))
            return outputs

    Block.__name__ = f"FID{block_class.__name__}"
    return Block


def _average_without_padding(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _maximum(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def build_fid_inception(empty: bool = False) -> torch.nn.Module:
    """The FID Inception with random weights (``empty``: uninitialised memory, for a load that
    overwrites every tensor; skips the seconds of random init), its state-dict names those of
    the weights file."""
    try:
        from torchvision.models import inception as tv
    except ImportError as error:
        raise ValueError(f"FID needs torchvision (pip install torchvision): {error}") from None
    if empty:
        with torch.device("meta"):
            return build_fid_inception().to_empty(device="cpu")
    model = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    a = _patched(tv.InceptionA, _average_without_padding)
    c = _patched(tv.InceptionC, _average_without_padding)
    e1 = _patched(tv.InceptionE, _average_without_padding)
    e2 = _patched(tv.InceptionE, _maximum)
    model.Mixed_5b, model.Mixed_5c, model.Mixed_5d = a(192, 32), a(256, 64), a(288, 64)
    model.Mixed_6b, model.Mixed_6c, model.Mixed_6d, model.Mixed_6e = c(768, 128), c(768, 160), c(768, 160), c(768, 192)
    model.Mixed_7b, model.Mixed_7c = e1(1280), e2(2048)
    return model.eval()


def load_fid_inception(path, device="cpu") -> torch.nn.Module:
    from .weights import WrongWeightsError, load_weights

    state = load_weights(path, "inception", "FID", "--inception")
    model = build_fid_inception(empty=True)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or wrong:
        raise WrongWeightsError(
            f"--inception {path!r} is an Inception v3 but not pytorch-fid's FID network: "
            f"{len(missing)} tensors missing, {len(wrong)} of another shape "
            f"({', '.join((missing + wrong)[:3])}); use pt_inception-2015-12-05-6726825d.pth")
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return model.to(device)


def inception_features(model: torch.nn.Module, frames: np.ndarray, batch: int = 8, device="cpu") -> np.ndarray:
    """``frames [N, H, W, 3]`` uint8 RGB -> pool features ``[N, 2048]`` float64."""
    out = []
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            x = x.permute(0, 3, 1, 2).float() / 255.0
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 2 - 1
            for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                         "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                         "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
                x = getattr(model, name)(x)
            out.append(F.adaptive_avg_pool2d(x, 1).flatten(1).double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """FID between feature sets ``a [N, D]`` and ``b [M, D]`` (means and covariances; a
    singular product gets ``eps`` on the diagonals, as pytorch-fid does)."""
    from scipy import linalg

    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False)) if len(a) > 1 else np.zeros((a.shape[1],) * 2)
    s2 = np.atleast_2d(np.cov(b, rowvar=False)) if len(b) > 1 else np.zeros((b.shape[1],) * 2)
    root = np.asarray(linalg.sqrtm(s1 @ s2))
    if not np.isfinite(root).all():
        offset = np.eye(len(s1)) * eps
        root = np.asarray(linalg.sqrtm((s1 + offset) @ (s2 + offset)))
    root = np.real(root)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
    return max(value, 0.0) if math.isfinite(value) else math.nan
