"""The one registry of SegTalker components: what each is called, which stage slot it fills,
which socket carries it, and (for the learned ones) where its module and config classes live.

Every other module reads this table instead of keeping its own list:

* :mod:`.checkpoints` checks ``BundleConfig.component`` against :data:`COMPONENTS` and takes
  the human names from it;
* :mod:`.models.bundles` builds learned components from :data:`LEARNED`;
* :mod:`.model_handle` (``LoadedModel.component``) and the pipeline use the slot names
  :data:`PARSER`, :data:`TSG`, :data:`ENCODER`, :data:`GENERATOR`, :data:`SYNCNET`;
* the ComfyUI nodes take their socket type names from :data:`SOCKETS`.

Two vocabularies, on purpose: a *component* names what a file holds (``"bisenet"``,
``"tsg"``...), a *slot* names the stage input it fills (``"parser"``...). They coincide except
for the face parser, whose slot can also be filled by the built-in (weight-free) parser.

Plain data only (no torch import), so anything may import it without a cycle.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .labels import NUM_CLASSES_19

# --------------------------------------------------------------------------------------- slots

PARSER = "parser"
TSG = "tsg"
ENCODER = "encoder"
GENERATOR = "generator"
SYNCNET = "syncnet"
SLOTS: tuple[str, ...] = (PARSER, TSG, ENCODER, GENERATOR, SYNCNET)

# ComfyUI socket type of each slot a node can take (SyncNet is a training-time component).
SOCKETS: Mapping[str, str] = MappingProxyType({
    PARSER: "SEGTALKER_PARSER",
    TSG: "SEGTALKER_TSG",
    ENCODER: "SEGTALKER_ENCODER",
    GENERATOR: "SEGTALKER_GENERATOR",
})

REGIONS_SCHEME = "regions_12"

# The published face-parsing BiSeNet (face-parsing.PyTorch's 79999_iter.pth): the architecture a
# plain checkpoint without SegTalker metadata gets. parsing/bisenet.py builds from these values.
BISENET_ARCHITECTURE: Mapping[str, Any] = MappingProxyType({
    "name": "BiSeNet", "backbone": "resnet18", "num_classes": NUM_CLASSES_19,
    "input_size": 512, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
})


@dataclass(frozen=True)
class LearnedSpec:
    """Where a learned component's module and config classes live, and which config field is its
    resolution. ``module`` is relative to ``segtalker_core.models``; imported only when used."""

    component: str
    module: str
    model_class: str
    config_class: str
    resolution_field: str
    audio_driven: bool = False
    label_scheme: str | None = REGIONS_SCHEME

    def classes(self) -> tuple[type, type]:
        """``(module class, config class)``; an ImportError names the component."""
        package = f"{__package__}.models"
        try:
            mod = importlib.import_module(f"{package}.{self.module}")
        except ImportError as exc:
            raise ImportError(f"the {COMPONENTS[self.component].title} code "
                              f"(segtalker_core.models.{self.module}) cannot be imported: {exc}") \
                from exc
        return getattr(mod, self.model_class), getattr(mod, self.config_class)


@dataclass(frozen=True)
class ComponentSpec:
    """One component: ``name`` (``BundleConfig.component``), human ``title``, the ``slot`` it fills
    (None: training only), how it is built (``learned``; None for BiSeNet, which has its own
    loader), and the defaults a file without SegTalker metadata gets."""

    name: str
    title: str
    slot: str | None
    learned: LearnedSpec | None = None
    default_architecture: Mapping[str, Any] = field(default_factory=dict)
    default_label_scheme: str | None = None
    default_resolution: int | None = None

    @property
    def socket(self) -> str | None:
        """ComfyUI socket type name, or None when no node takes this component."""
        return SOCKETS.get(self.slot) if self.slot is not None else None


def _learned(name: str, title: str, slot: str | None, *args: Any, **kwargs: Any) -> ComponentSpec:
    return ComponentSpec(name, title, slot, LearnedSpec(name, *args, **kwargs))


COMPONENTS: Mapping[str, ComponentSpec] = MappingProxyType({
    "bisenet": ComponentSpec(
        "bisenet", "BiSeNet face parser", PARSER,
        default_architecture=BISENET_ARCHITECTURE, default_label_scheme="bisenet_19",
        default_resolution=int(BISENET_ARCHITECTURE["input_size"]),
    ),
    "tsg": _learned("tsg", "TSG (talking segmentation generator)", TSG,
                    "tsg", "TSG", "TSGConfig", "resolution", audio_driven=True),
    "syncnet": _learned("syncnet", "segmentation SyncNet", SYNCNET,
                        "syncnet", "SegSyncNet", "SyncNetConfig", "resolution", audio_driven=True),
    "encoder": _learned("encoder", "mask-guided encoder", ENCODER,
                        "encoder", "MaskGuidedEncoder", "EncoderConfig", "input_size"),
    "generator": _learned("generator", "mask-guided StyleGAN generator", GENERATOR,
                          "stylegan", "Generator", "GeneratorConfig", "size"),
    "discriminator": _learned("discriminator", "StyleGAN discriminator", None,
                              "discriminator", "Discriminator", "DiscriminatorConfig", "size",
                              label_scheme=None),
})

# Human names by component, the shape checkpoints has always exposed.
TITLES: Mapping[str, str] = MappingProxyType({n: c.title for n, c in COMPONENTS.items()})
# The learned components (what models.bundles can build), by component.
LEARNED: Mapping[str, LearnedSpec] = MappingProxyType(
    {n: c.learned for n, c in COMPONENTS.items() if c.learned is not None})


def slot_of(component: str) -> str | None:
    """The stage slot a file of ``component`` fills (``"bisenet"`` -> ``"parser"``)."""
    return COMPONENTS[component].slot


def components_for(slot: str) -> tuple[str, ...]:
    """The file components that can fill ``slot`` (``"parser"`` -> ``("bisenet",)``)."""
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r} is not one of {', '.join(SLOTS)}")
    return tuple(n for n, c in COMPONENTS.items() if c.slot == slot)
