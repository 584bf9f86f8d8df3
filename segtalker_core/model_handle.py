"""A loaded model of any stage (the ``SEGTALKER_MODEL`` socket), built-in or learned."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Which stage slot each component fills.
PARSER = "parser"
TSG = "tsg"
ENCODER = "encoder"
GENERATOR = "generator"
SYNCNET = "syncnet"


@dataclass
class LoadedModel:
    """What a loader hands to the stage functions.

    ``runner`` is the object the stage calls (a FaceParser, or a torch module for the learned
    components); ``config`` is the bundle's config (None for built-ins); ``source`` the file it came
    from or ``"builtin"``.
    """

    component: str
    runner: Any
    source: str
    config: Any = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_builtin(self) -> bool:
        return self.source == "builtin"

    @property
    def torch_module(self):
        """The torch module to move between devices, or None for CPU-only built-ins."""
        import torch

        module = getattr(self.runner, "model", self.runner)
        return module if isinstance(module, torch.nn.Module) else None

    def place(self, device, dtype) -> None:
        """Move the learned model to ``device``/``dtype`` (built-ins ignore it)."""
        if hasattr(self.runner, "place"):
            self.runner.place(device, dtype)
        elif self.torch_module is not None:
            self.torch_module.to(device=device, dtype=dtype)
            self.extra["device"], self.extra["dtype"] = device, dtype


def require_component(model: LoadedModel, allowed: tuple[str, ...], slot: str) -> None:
    """Refuse a model in a slot it does not fit, saying what it is and what the slot wants."""
    if not isinstance(model, LoadedModel):
        raise TypeError(f"input '{slot}' must be a SEGTALKER_MODEL from a SegTalker loader, got {type(model).__name__}")
    if model.component not in allowed:
        raise ValueError(
            f"input '{slot}' got a {model.component} model ({model.source}); this slot takes "
            f"{' or '.join(allowed)}. Load the right file with the matching SegTalker loader."
        )
