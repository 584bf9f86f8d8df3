"""Conversions between ComfyUI types and the core's numpy types, plus device and progress glue.

Holds no algorithm: only the conventions ComfyUI imposes (IMAGE ``[B,H,W,C]`` float 0..1 torch,
MASK ``[B,H,W]``, AUDIO Mapping, ProgressBar, model_management devices).
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..segtalker_core.face.image import to_rgb_uint8_batch

log = logging.getLogger("segtalker.nodes")


def image_to_uint8(image: torch.Tensor, name: str) -> np.ndarray:
    """ComfyUI IMAGE ``[B,H,W,C]`` float 0..1 -> ``[B,H,W,3]`` uint8 RGB.

    Only the ComfyUI side is checked here (a 4-d tensor); channels, alpha, range and NaN follow
    the core's one image policy (:func:`segtalker_core.face.image.to_rgb_uint8_batch`).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(
            f"input '{name}' must be a ComfyUI IMAGE batch [B,H,W,C], got {shape}; "
            "connect an image output (e.g. Load Image) to it"
        )
    return to_rgb_uint8_batch(image.detach().float().cpu().numpy(), f"input '{name}'")


def uint8_to_image(array: np.ndarray) -> torch.Tensor:
    """``[B,H,W,3]`` uint8 -> ComfyUI IMAGE on the intermediate device."""
    assert array.ndim == 4 and array.shape[-1] == 3, array.shape
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return tensor.to(intermediate_device())


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """``[B,H,W]`` float 0..1 (or bool) -> ComfyUI MASK on the intermediate device."""
    assert mask.ndim == 3, mask.shape
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(intermediate_device())


def intermediate_device() -> torch.device:
    import comfy.model_management as mm

    return mm.intermediate_device()


class FrameProgress:
    """A core-style ``progress(done, total)`` callback driving ComfyUI's progress bar.

    ProgressBar.update checks for an interrupt, so calling this per frame makes Cancel work.
    """

    def __init__(self, total: int) -> None:
        import comfy.utils

        self._bar = comfy.utils.ProgressBar(max(int(total), 1))

    def __call__(self, done: int, total: int) -> None:
        self._bar.update_absolute(done, total)


def progress_for(total: int) -> Callable[[int, int], None]:
    return FrameProgress(total)


def recommended_dtype(device: torch.device, param_count: int) -> torch.dtype:
    """What ComfyUI recommends computing in on ``device``: bf16/fp16 where model_management says
    the device handles it well, else fp32 (and always fp32 on a CPU). The ``auto`` precision."""
    import comfy.model_management as mm

    if device.type == "cpu":
        return torch.float32
    if mm.should_use_bf16(device, model_params=param_count):
        return torch.bfloat16
    if mm.should_use_fp16(device, model_params=param_count):
        return torch.float16
    return torch.float32
