"""Compute precision of a run: the choice, what a device can do, and the run context.

Decisions:

* **Stored weights are never rounded.** A loaded module keeps the precision it was loaded in
  (float32 for every SegTalker loader: a half-precision file is upcast exactly on load). A run in
  bf16/fp16 computes under :func:`compute` (``torch.autocast``), which casts per call and writes
  nothing back, so a cached model gives bit-identical results whatever ran before it.
* **Choices** (:data:`PRECISIONS`): ``auto``, ``fp32``, ``bf16``, ``fp16``. ``auto`` is the
  caller's recommendation for the device (the ComfyUI nodes pass what ``comfy.model_management``
  recommends), float32 without one; on a CPU ``auto`` is always float32 (CPU half precision is
  slower than float32 on most machines and only saves memory).
* **Fallbacks**: bf16 asked on a device without bf16 falls back to fp16 when the device has it,
  else float32; fp16 without fp16 falls back to float32. Each fallback logs one line.
* **Failure**: a network output with NaN/inf raises :class:`NonFiniteOutputError`, which names
  the precision as the likely cause when it was not float32.

Device-agnostic: the device always comes from the caller; nothing here moves a tensor.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

log = logging.getLogger("segtalker")

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES: Mapping[str, torch.dtype] = MappingProxyType({
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
})
NAMES: Mapping[torch.dtype, str] = MappingProxyType({v: k for k, v in DTYPES.items()})


@dataclass(frozen=True)
class Capabilities:
    """Which half precisions a device computes in (float32 is always available)."""

    bf16: bool
    fp16: bool


def device_capabilities(device: str | torch.device) -> Capabilities:
    """What ``device`` supports. CPUs autocast in both bf16 and fp16; a CUDA device has fp16 and
    has bf16 when it supports it natively (Ampere and later); other accelerators are assumed to
    have fp16 only (MPS) or nothing."""
    device = torch.device(device)
    if device.type == "cpu":
        return Capabilities(bf16=True, fp16=True)
    if device.type == "cuda":
        try:
            with torch.cuda.device(device):
                bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no including_emulation argument
            bf16 = bool(torch.cuda.is_bf16_supported())
        return Capabilities(bf16=bf16, fp16=True)
    if device.type == "xpu":
        return Capabilities(bf16=True, fp16=True)
    if device.type == "mps":
        return Capabilities(bf16=False, fp16=True)
    return Capabilities(bf16=False, fp16=False)


def resolve(choice: str | torch.dtype, device: str | torch.device,
            recommended: torch.dtype | None = None,
            capabilities: Callable[[torch.device], Capabilities] | None = None) -> torch.dtype:
    """The dtype a run on ``device`` computes in, for a choice of :data:`PRECISIONS` (or a
    dtype). ``recommended``: what ``auto`` means on this device (ignored on CPU, where ``auto``
    is float32). ``capabilities``: the capability check (tests replace it)."""
    device = torch.device(device)
    if isinstance(choice, torch.dtype):
        if choice not in NAMES:
            raise ValueError(f"precision dtype must be one of {', '.join(map(str, NAMES))}, got "
                             f"{choice}")
        choice = NAMES[choice]
    if choice not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {choice!r}")
    if choice == "auto":
        if device.type == "cpu" or recommended is None:
            return torch.float32
        choice = NAMES.get(recommended, "fp32")
    caps = (capabilities or device_capabilities)(device)
    if choice == "bf16" and not caps.bf16:
        fallback = "fp16" if caps.fp16 else "fp32"
        log.warning("precision bf16 asked, but %s has no bf16 support; computing in %s instead",
                    device, fallback)
        choice = fallback
    if choice == "fp16" and not caps.fp16:
        log.warning("precision fp16 asked, but %s has no fp16 support; computing in fp32 instead",
                    device)
        choice = "fp32"
    return DTYPES[choice]


@contextlib.contextmanager
def compute(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Run the enclosed forward passes in ``dtype`` on ``device`` without touching the weights.

    bf16/fp16: ``torch.autocast`` (convolutions and matmuls in ``dtype``, reductions and norms
    as autocast decides). float32: autocast explicitly *disabled*, so an outer autocast of the
    host application cannot lower a run the user asked to keep in float32.
    """
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
        yield


def name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"`` (for messages)."""
    return NAMES.get(dtype, str(dtype))


class NonFiniteOutputError(ValueError):
    """A network produced NaN/inf; the message names the network and the precision."""


def check_output(value: torch.Tensor, what: str, dtype: torch.dtype) -> None:
    """Refuse a network output with NaN/inf values.

    ``what`` names the network (``"the TSG"``), ``dtype`` the precision it computed in. In half
    precision the likely cause is overflow, and the message says to load the model in fp32 (or
    bf16, which has float32's range).
    """
    if not value.is_floating_point():
        return
    raise_nonfinite(int(nonfinite_count(value)), value.numel(), what, dtype)


def nonfinite_count(value: torch.Tensor) -> torch.Tensor:
    """The number of NaN/inf values of ``value`` as a 0-d tensor on its device: computing it
    does not make the host wait (reading it does; read it after a copy that waits anyway)."""
    if not value.is_floating_point():
        return torch.zeros((), dtype=torch.int64, device=value.device)
    return (~torch.isfinite(value)).sum()


def raise_nonfinite(bad: int, numel: int, what: str, dtype: torch.dtype) -> None:
    """:func:`check_output`'s error for ``bad`` NaN/inf values of ``numel`` (nothing if 0)."""
    if not bad:
        return
    where = f"{what} produced {bad} NaN/inf values (of {numel}) computing in {name(dtype)}"
    if dtype == torch.float16:
        advice = ("fp16 overflow is the likely cause: load the model with precision fp32 "
                  "(or bf16 where the GPU supports it)")
    elif dtype == torch.bfloat16:
        advice = "reduced precision is the likely cause: load the model with precision fp32"
    else:
        advice = "its weights or its input are broken (precision is fp32 already)"
    raise NonFiniteOutputError(f"{where}; {advice}")
