"""Runs a learned model on ComfyUI's compute device; the built-in backends need no device.

The node side of precision: ComfyUI says which device to use and which precision it recommends
there; the model's own choice (its loader's ``precision`` combo) is resolved against that by the
core (:func:`segtalker_core.precision.resolve`). The module is *moved* to the device and back,
never cast, so a cached model stays bit-identical between runs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from comfy_api.latest import io

from ..segtalker_core import precision
from ..segtalker_core.model_handle import LoadedModel
from ..segtalker_core.working_memory import working_memory_bytes
from .comfy_glue import recommended_dtype

MAX_BATCH = 256  # frames per forward pass; more only delays the first frames


def batch_size_input() -> io.Int.Input:
    """Frames per forward pass of a learned TSG / generator. Optional and the node's last
    widget: UI workflows saved before it load with their widgets in place (it takes 0), and
    API prompts without it still validate."""
    return io.Int.Input(
        "batch_size", default=0, min=0, max=MAX_BATCH, optional=True,
        tooltip="frames per forward pass of the learned model; 0 = automatic (as many as fit in "
                "the device's free memory; the model's default on a CPU). Lower it if the GPU "
                "runs out of memory; the built-in backend ignores it",
    )


@contextlib.contextmanager
def model_on_device(model: LoadedModel | None, batch: int | None = None,
                    frame_size: int = 512) -> Iterator[None]:
    """Places a torch-backed model on the compute device (and back) around a node run.

    Asks model_management to free the module's size plus the run's working memory (estimated
    from ``batch`` and the resolutions, see segtalker_core.working_memory); an OOM error that
    happens anyway halves the batch inside the core.
    """
    module = None if model is None else model.torch_module
    if module is None:
        yield
        return
    import comfy.model_management as mm

    device = mm.get_torch_device()
    params = sum(p.numel() for p in module.parameters())
    dtype = precision.resolve(model.precision, device, recommended_dtype(device, params))
    working = working_memory_bytes(model, dtype, batch=batch, frame_size=frame_size)
    mm.free_memory(mm.module_size(module) + working, device)
    model.place(device, dtype)
    try:
        yield
    finally:
        # Off the GPU between runs so the model does not pin VRAM; the precision choice stays.
        model.place(mm.unet_offload_device(), dtype)
        mm.soft_empty_cache()
