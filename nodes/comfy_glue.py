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


def video_to_path(video, name: str, temp_dir: str) -> str:
    """A ComfyUI VIDEO -> a file path the core can stream from.

    LoadVideo's ``VideoFromFile`` already is a file: its path is used as it is (nothing decoded
    here). Other VIDEO objects (``VideoFromComponents`` from Create Video, in-memory files) are
    written once to ``temp_dir``, through a temporary name renamed when complete, so a failed or
    cancelled copy never leaves a broken file that a later run could pick up.
    """
    import os
    import uuid

    from comfy_api.latest import Input

    from ..segtalker_core.atomic_files import atomic_output, write_bytes

    if not isinstance(video, Input.Video):
        raise ValueError(f"input '{name}' must be a ComfyUI VIDEO (e.g. from Load Video), got "
                         f"{type(video).__name__}")
    # The base class's get_stream_source encodes the whole video into memory: only ask a class
    # that provides its own (VideoFromFile).
    if type(video).get_stream_source is not Input.Video.get_stream_source:
        source = video.get_stream_source()
        if isinstance(source, (str, os.PathLike)):
            return os.fspath(source)
    else:
        source = None
    os.makedirs(temp_dir, exist_ok=True)
    path = os.path.join(temp_dir, f"segtalker_in_{uuid.uuid4().hex[:12]}.mp4")
    if source is not None:  # an in-memory file (BytesIO)
        write_bytes(path, source.read(), what=f"copy of input '{name}'")
    else:
        with atomic_output(path, what=f"copy of input '{name}'") as tmp:
            video.save_to(os.fspath(tmp))  # the same .mp4 suffix: the container follows it
    return path


def video_from_path(path: str):
    """A file on disk -> ComfyUI VIDEO (read lazily by whoever consumes it)."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(path)
