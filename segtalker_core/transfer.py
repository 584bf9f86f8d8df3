"""Host <-> device copies of the learned runs' batches.

Why a module: a CUDA copy from ordinary (pageable) host memory is staged by the driver and
blocks the host; from page-locked (pinned) memory it is a DMA that runs on the stream while the
host goes on preparing the next batch. ``Tensor.pin_memory`` draws from torch's caching host
allocator, which keeps a pinned block until the copies recorded on it have finished, so a
block is never overwritten under a running copy and no staging buffer of ours needs events.
On the CPU (and on MPS, whose memory is shared) the copy is the plain ``.to``: pinning there
would only add a copy.
"""
from __future__ import annotations

import numpy as np
import torch


def to_device(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``array`` as a tensor on ``device``, dtype kept (uint8 label maps stay uint8: 1/8 of the
    bytes of int64). CUDA: through pinned memory, asynchronous on the current stream (the
    stream orders it before the kernels that read it). CPU: shares ``array``'s memory."""
    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
