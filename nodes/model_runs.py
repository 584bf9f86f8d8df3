"""Runs a learned model on ComfyUI's compute device; the built-in backends need no device."""
from __future__ import annotations

import contextlib
from typing import Iterator

from segtalker_core.pipeline import LoadedModel

from .comfy_glue import compute_dtype, on_compute_device


@contextlib.contextmanager
def model_on_device(model: LoadedModel | None, working_bytes: int = 0) -> Iterator[None]:
    """Moves a torch-backed model to the compute device (and back) around a node run."""
    module = None if model is None else model.torch_module
    if module is None:
        yield
        return
    first = next(module.parameters())
    home_dtype = first.dtype
    with on_compute_device(module, working_bytes) as device:
        params = sum(p.numel() for p in module.parameters())
        model.place(device, compute_dtype(device, params))
        try:
            yield
        finally:
            # Back to the offload device in the loaded precision, constants included (place()).
            import comfy.model_management as mm

            model.place(mm.unet_offload_device(), home_dtype)
