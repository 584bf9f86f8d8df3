"""User-supplied weight files of the metrics that need them: read safely (``torch.load`` with
``weights_only=True``, or safetensors), and told apart by their tensor names, so a file given for
the wrong metric is named for what it looks like."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# What a file's tensor names say it is: (test on the set of names, description).
_LAYOUTS = (
    (lambda keys: any(k.startswith("netcnnaud.") for k in keys) and any(k.startswith("netcnnlip.") for k in keys),
     "syncnet_v2", "SyncNet v2 (joonson/syncnet_python's syncnet_v2.model)"),
    (lambda keys: any(k.startswith("Mixed_5b.") for k in keys) and any(k.startswith("Conv2d_1a_3x3.") for k in keys),
     "inception", "an Inception v3 network (pytorch-fid's pt_inception weights, for FID)"),
    (lambda keys: any(k.startswith("lin0.") for k in keys) or any(".lin0." in k for k in keys),
     "lpips", "LPIPS linear heads (richzhang/PerceptualSimilarity)"),
    (lambda keys: "features.0.weight" in keys and all(k.startswith(("features.", "classifier.")) for k in keys),
     "torchvision_backbone", "a torchvision ImageNet network (features.*: VGG16 or AlexNet, for LPIPS)"),
    (lambda keys: any(k.startswith("face_encoder.") for k in keys) and any(k.startswith("audio_encoder.") for k in keys),
     "wav2lip_syncnet", "Wav2Lip's SyncNet (lipsync_expert.pth), not SyncNet v2"),
    (lambda keys: any(k.startswith("audio_encoder.") for k in keys) and any(k.startswith("visual_encoder.") for k in keys),
     "segsyncnet", "the pack's Seg-SyncNet"),
    (lambda keys: any(k.startswith("cp.") for k in keys) and any(k.startswith("ffm.") for k in keys),
     "bisenet", "a BiSeNet face parser (79999_iter.pth)"),
    (lambda keys: any(k.startswith(("convs.", "to_rgbs.")) for k in keys) or any(k.startswith("synthesis.") for k in keys),
     "stylegan", "a StyleGAN2 generator"),
)


class WrongWeightsError(ValueError):
    """A weight file that is not the network the metric needs (or not a weight file)."""


def describe_layout(keys) -> tuple[str | None, str]:
    """``(layout id or None, what the names look like, in words)``."""
    keys = list(keys)
    for test, layout, words in _LAYOUTS:
        if test(keys):
            return layout, words
    shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
    return None, f"an unknown network ({len(keys)} tensors: {shown})"


def load_weights(path: str | os.PathLike, expected: str, metric: str, option: str) -> dict:
    """The state dict in ``path`` if its names are the ``expected`` layout; otherwise a
    :class:`WrongWeightsError` naming what the file looks like and what ``metric`` needs."""
    import torch

    from ..checkpoints import check_finite_weights

    text = os.fspath(path)
    file = Path(text)
    if not file.is_file():
        raise FileNotFoundError(f"{option} {text!r} does not exist (check the path)")
    if file.stat().st_size == 0:
        raise WrongWeightsError(f"{option} {text!r} is empty; re-download it")
    if file.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(text)
        except Exception as error:  # noqa: BLE001 - any parse failure means a damaged file
            raise WrongWeightsError(f"{option} {text!r} is not a readable safetensors file ({error})") from None
    else:
        try:
            state = torch.load(text, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - pickles with code, text, truncated files
            raise WrongWeightsError(
                f"{option} {text!r} cannot be read as plain tensors (torch.load with weights_only=True: "
                f"{str(error).splitlines()[0][:160]}); it is not a weight file, or a damaged one") from None
    state = _unwrap(state)
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WrongWeightsError(f"{option} {text!r} holds no state dict of tensors; {metric} needs "
                                f"{dict((l, w) for _, l, w in _LAYOUTS)[expected]}")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    layout, words = describe_layout(state.keys())
    if layout != expected:
        wanted = dict((l, w) for _, l, w in _LAYOUTS)[expected]
        raise WrongWeightsError(f"{option} {text!r} looks like {words}; {metric} needs {wanted}")
    check_finite_weights(state, text)
    return state


def _unwrap(state):
    """Training checkpoints keep the weights under ``state_dict`` / ``model``."""
    for key in ("state_dict", "model", "net"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            return state[key]
    return state
