"""Working memory of one batched forward pass, estimated from batch size and resolution.

Why an estimate: a host that manages GPU memory (ComfyUI's ``model_management.free_memory``)
must be told how much to free *before* the run: the module's size plus its activations. The
numbers below count the largest activations each network holds at once (a few full-resolution
feature maps, the masks and the logits), times a safety factor; they are deliberately on the
high side. When they are still too low, the OOM retry (:mod:`.batching`) halves the batch.

Counts are in elements; the element size is the compute dtype's (float32: 4 bytes, halves: 2),
plus one half-precision copy of the weights that autocast makes during a half run.
"""
from __future__ import annotations

import numpy as np
import torch

from .components import ENCODER, GENERATOR, PARSER, TSG
from .model_handle import LoadedModel

SAFETY = 1.5  # allocator fragmentation, cuDNN workspaces, temporaries we did not count


def working_memory_bytes(model: LoadedModel | None, dtype: torch.dtype | None = None,
                         batch: int | None = None, frame_size: int = 512) -> int:
    """Bytes to keep free for a run of ``model`` (0 for built-ins and None).

    ``dtype``: the compute dtype (default: the model's); ``batch``: frames per forward pass
    (default: the run's default batch); ``frame_size``: the crop size maps come back to (TSG
    logits, generator output) .
    """
    if model is None or model.torch_module is None:
        return 0
    dtype = dtype or model.compute_dtype
    element = torch.empty((), dtype=dtype).element_size()
    per_sample, default_batch = _activation_elements(model, frame_size)
    n = batch or default_batch
    weights = sum(p.numel() for p in model.torch_module.parameters())
    cast_copy = weights * element if dtype != torch.float32 else 0
    # The maps at frame size come back in float32 (upcast before argmax / resizing).
    return int(SAFETY * (n * per_sample * element) + cast_copy)


def _activation_elements(model: LoadedModel, frame_size: int) -> tuple[int, int]:
    """(elements per sample at the peak, the run's default batch)."""
    from .learned import GENERATOR_BATCH, TSG_BATCH

    runner = model.runner
    if model.component == PARSER:
        s = int(getattr(runner, "input_size", 512))
        # 64-channel stem at s/2 (x3 live: conv, BN, ReLU), 19 logits at s (+ float32 copy),
        # the normalised input.
        return s * s * (64 // 4 * 3 + 19 * 2 + 3), int(getattr(runner, "batch_size", 4))
    config = runner.config
    if model.component == TSG:
        r, c = config.resolution, config.base_channels
        # U-Net: encoder + decoder + skips at full resolution ~4c, inputs 2x12 + mask, logits
        # (and their float32 copy at frame size).
        return r * r * (4 * c + 25) + 2 * 12 * frame_size ** 2, TSG_BATCH
    if model.component == ENCODER:
        s = config.input_size
        return s * s * (4 * config.stem_channels + 3 + 12), 1
    if model.component == GENERATOR:
        peak = max(config.channels(2 ** k) * 4 ** k for k in range(2, config.log_size + 1))
        size = config.size
        # x, modulated input, conv output, noise-added and activated copies (~5x the widest map),
        # the 12 region masks at output size, the RGB skip.
        return 5 * peak + (12 + 6) * size * size + 3 * frame_size ** 2, GENERATOR_BATCH
    return 0, 1


MAX_AUTO_BATCH = 32  # beyond this a GPU is saturated and a batch only delays the first frames
FREE_SHARE = 0.7  # of the free memory a run may plan on (the host and other kernels need some)


def free_device_memory(device: torch.device | str) -> int | None:
    """Bytes free on ``device`` now, or None where that is unknown or not the limit (a CPU:
    host RAM is shared with everything else, and the CPU is compute-bound long before)."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            # Blocks torch's caching allocator holds but does not use are free to this run too.
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            return int(free + cached)
        if device.type == "mps":
            limit = torch.mps.recommended_max_memory()
            return int(limit - torch.mps.driver_allocated_memory())
    except (RuntimeError, AttributeError):  # no driver, or an older torch without the call
        return None
    return None


def pick_batch_size(model: LoadedModel, device: torch.device | str, dtype: torch.dtype | None = None,
                    frame_size: int = 512, free_bytes: int | None = None) -> int:
    """Frames per forward pass of ``model``'s run: as many as :func:`working_memory_bytes`'
    estimate fits in :data:`FREE_SHARE` of the device's free memory (``free_bytes``: that
    number, e.g. from a test; default: :func:`free_device_memory`), 1 to :data:`MAX_AUTO_BATCH`.
    Where the free memory is unknown (CPU): the run's default batch. An estimate that is still
    too high for the device is caught by the OOM retry (:mod:`.batching`)."""
    dtype = dtype or model.compute_dtype
    _, default = _activation_elements(model, frame_size)
    free = free_device_memory(device) if free_bytes is None else free_bytes
    if free is None:
        return default
    one = working_memory_bytes(model, dtype, batch=1, frame_size=frame_size)
    per_frame = working_memory_bytes(model, dtype, batch=2, frame_size=frame_size) - one
    if per_frame <= 0:
        return default
    fixed = one - per_frame  # the half-precision weight copy: once, whatever the batch
    return int(max(1, min(MAX_AUTO_BATCH, (FREE_SHARE * free - fixed) // per_frame)))


def batch_size_choice(value, name: str = "batch_size") -> int | None:
    """The one meaning of a batch size input (the nodes' ``batch_size`` widget, the CLI's
    ``--batch-size``, the library's ``batch_size=``): 0 or None: automatic (None; the run picks
    it with :func:`pick_batch_size`: from the device's free memory on a GPU, the model's default
    on a CPU); a positive whole number: that many frames per forward pass. Anything else is a
    ValueError naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"input '{name}' must be a whole number of frames per forward pass "
                             f"(0: automatic), got {value!r}")
    value = int(value)
    if value < 0:
        raise ValueError(f"input '{name}' is {value}: give the frames per forward pass (1 or "
                         f"more), or 0 to pick it automatically from the device's free memory")
    return value or None
