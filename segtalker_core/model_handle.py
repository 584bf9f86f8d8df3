"""A loaded model of one stage slot (parser, TSG, encoder, generator), built-in or learned.

The slot names come from the one component registry (:mod:`.components`); they are re-exported
here because the pipeline has always imported them from this module.

Precision: a LoadedModel carries the *choice* its loader was given (``precision``: auto / fp32 /
bf16 / fp16) and, once placed, the device and the dtype the next run computes in. Placing moves
the module (``.to(device)``) and never casts it, so the cached weights keep their stored values
whatever precision runs use (see :mod:`.precision`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .components import ENCODER, GENERATOR, PARSER, SOCKETS, SYNCNET, TSG

__all__ = ["ENCODER", "GENERATOR", "PARSER", "SYNCNET", "TSG", "LoadedModel",
           "require_component"]


@dataclass
class LoadedModel:
    """What a loader hands to the stage functions.

    ``component`` is the slot it fills (:data:`PARSER`, :data:`TSG`...); ``runner`` the object
    the stage calls (a FaceParser, or a torch module for the learned components); ``config`` the
    bundle's config (None for built-ins); ``source`` the file it came from or ``"builtin"``.
    ``precision``: the loader's precision choice; ``device`` / ``dtype``: where and in what the
    next run computes (set by :meth:`place`; None until placed: the module's own device,
    float32).
    """

    component: str
    runner: Any
    source: str
    config: Any = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"
    device: Any = None
    dtype: Any = None

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin"

    @property
    def torch_module(self):
        """The torch module to move between devices, or None for CPU-only built-ins."""
        import torch

        module = getattr(self.runner, "model", self.runner)
        return module if isinstance(module, torch.nn.Module) else None

    @property
    def compute_dtype(self):
        """The dtype runs compute in (float32 until :meth:`place` says otherwise)."""
        import torch

        return self.dtype if self.dtype is not None else torch.float32

    def place(self, device, dtype) -> None:
        """Run on ``device`` in ``dtype`` from now on. Moves the module, never casts it."""
        import torch

        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.device, self.dtype = torch.device(device), dtype
        if hasattr(self.runner, "place"):
            self.runner.place(self.device, dtype)
        elif self.torch_module is not None:
            self.torch_module.to(self.device)


def require_component(model: LoadedModel, allowed: tuple[str, ...], slot: str) -> None:
    """Refuse a model in a slot it does not fit, saying what it is and what the slot wants."""
    if not isinstance(model, LoadedModel):
        wanted = " or ".join(SOCKETS.get(a, a) for a in allowed)
        raise TypeError(f"input '{slot}' must be a {wanted} from a SegTalker loader, got "
                        f"{type(model).__name__}")
    if model.component not in allowed:
        raise ValueError(
            f"input '{slot}' got a {model.component} model ({model.source}); this slot takes "
            f"{' or '.join(allowed)}. Load the right file with the matching SegTalker loader."
        )
