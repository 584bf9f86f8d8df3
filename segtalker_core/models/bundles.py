"""Learned components as files: build from a config, save/load bundles, check they fit together.

A bundle is one ``.safetensors`` per component (:mod:`segtalker_core.checkpoints`): its weights
and a :class:`~segtalker_core.checkpoints.BundleConfig` whose ``architecture`` is the
component's config dataclass as a dict (``TSGConfig``, ``SyncNetConfig``, ``EncoderConfig``,
``GeneratorConfig``, ``DiscriminatorConfig``). :data:`REGISTRY` (the learned part of
:data:`segtalker_core.components.COMPONENTS`) maps a component to its classes; the classes are
imported only when used, so this module imports without them.

Pairing of encoder and generator. Style codes are only meaningful to the generator the encoder
was trained with (same shapes are not enough: two generators of the same architecture have
unrelated latent spaces). So

* every generator bundle carries ``extra["generator_id"]``: given by the trainer (one id per
  trained generator, surviving re-exports) or, by default, a hash of its weights;
* every encoder bundle carries ``extra["generator"]``: the :class:`GeneratorFingerprint` (id,
  ``w_dim``, ``n_latent``, size) of the generator it was trained for, and
  ``extra["encoder_id"] = "<hash of the encoder's weights>@<generator id>"``. That id travels
  with the codes (``StyleCodes.encoder_id``), and :func:`check_style_codes` refuses codes whose
  encoder was trained for another generator.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints as ck
from ..checkpoints import BundleConfig
# REGIONS_SCHEME is re-exported: callers have always found it here.
from ..components import LEARNED, REGIONS_SCHEME, LearnedSpec  # noqa: F401

# Wav2Lip mel front end (segtalker_core.audio.mel): written into audio-driven bundles so a file
# says which features it was trained on, and checked on load.
WAV2LIP_AUDIO: Mapping[str, Any] = {
    "sample_rate": 16000, "n_fft": 800, "hop_length": 200, "win_length": 800, "n_mels": 80,
    "fmin": 55.0, "fmax": 7600.0, "preemphasis": 0.97, "window_steps": 16,
}

log = logging.getLogger("segtalker.models")


# ------------------------------------------------------------------------------------ registry

# The learned components, read from the one registry (segtalker_core.components).
ComponentSpec = LearnedSpec
REGISTRY: Mapping[str, LearnedSpec] = LEARNED


def _spec(component: str) -> ComponentSpec:
    if component not in REGISTRY:
        raise ValueError(f"component {component!r} cannot be built here; learned components are: "
                         f"{', '.join(REGISTRY)}")
    return REGISTRY[component]


def _plain(value: Any) -> Any:
    # BundleConfig freezes its mappings; config classes want plain dicts and lists.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def model_config_from_architecture(component: str, architecture: Mapping[str, Any]) -> Any:
    """The component's config dataclass from a bundle's ``architecture`` dict."""
    _, config_cls = _spec(component).classes()
    plain = _plain(architecture)
    try:
        return config_cls.from_dict(plain)
    except (TypeError, ValueError) as exc:
        raise ck.CorruptCheckpointError(
            f"the {ck.COMPONENTS[component]} architecture in this file does not fit this version "
            f"of SegTalker ({exc}); re-save it with models.bundles.save_component or update the node pack"
        ) from None


def build_component(component: str, model_config: Any) -> nn.Module:
    """A freshly initialised module of ``component`` from its config dataclass."""
    model_cls, config_cls = _spec(component).classes()
    if not isinstance(model_config, config_cls):
        raise TypeError(f"a {component} is built from a {config_cls.__name__}, got "
                        f"{type(model_config).__name__}")
    return model_cls(model_config)


def component_of(model_config: Any) -> str:
    """Which component a config dataclass belongs to (by its class)."""
    for name, spec in REGISTRY.items():
        if type(model_config).__name__ == spec.config_class and \
                type(model_config).__module__ == f"{__package__}.{spec.module}":
            return name
    raise TypeError(f"{type(model_config).__name__} is not the config of a learned component "
                    f"({', '.join(s.config_class for s in REGISTRY.values())})")


# ------------------------------------------------------------------------------------ checks

def check_finite(value: torch.Tensor | np.ndarray, name: str) -> None:
    """Refuse NaN/inf in an input, naming it and how many values are bad."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and not value.is_complex():
            return
        bad = int((~torch.isfinite(value)).sum())
    else:
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.inexact):
            return
        bad = int((~np.isfinite(arr)).sum())
    if bad:
        total = value.numel() if isinstance(value, torch.Tensor) else np.asarray(value).size
        raise ValueError(f"{name} contains {bad} NaN/inf values (of {total}); the stage that made "
                         f"it failed numerically (often half precision overflow): re-run it in "
                         f"float32 or check its input")


def weights_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Short hex digest of names, dtypes, shapes and bytes of a state dict (order-independent)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class GeneratorFingerprint:
    """What identifies a generator to its encoder: its id and the code layout it reads."""

    generator_id: str
    w_dim: int
    n_latent: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"generator_id": self.generator_id, "w_dim": self.w_dim,
                "n_latent": self.n_latent, "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GeneratorFingerprint":
        return cls(str(data["generator_id"]), int(data["w_dim"]), int(data["n_latent"]),
                   int(data["size"]))


def generator_fingerprint(generator: BundleConfig | str | os.PathLike[str]) -> GeneratorFingerprint:
    """Fingerprint of a generator bundle (its config, or its file)."""
    config = generator if isinstance(generator, BundleConfig) else ck.read_config(generator)
    if config.component != "generator":
        raise ValueError(f"a generator fingerprint needs a generator bundle, got a "
                         f"{config.component_name}")
    gid = config.extra.get("generator_id")
    if not gid:
        raise ValueError("this generator bundle has no generator_id; re-save it with "
                         "bundles.save_component")
    arch = model_config_from_architecture("generator", config.architecture)
    return GeneratorFingerprint(str(gid), arch.w_dim, arch.n_latent, arch.size)


def check_style_codes(codes: torch.Tensor, encoder_id: str | None,
                      generator: BundleConfig) -> None:
    """Refuse style codes the generator cannot use.

    ``codes``: ``[B, 12, L, w_dim]`` learned W+ codes; ``encoder_id``: the id of the encoder that
    made them (``StyleCodes.encoder_id``); ``generator``: the generator bundle's config.
    Errors: wrong layout, NaN/inf, no encoder id, or an encoder trained for another generator.
    """
    fp = generator_fingerprint(generator)
    expected = (12, fp.n_latent, fp.w_dim)
    if not isinstance(codes, torch.Tensor) or codes.ndim != 4 or tuple(codes.shape[1:]) != expected:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"style codes have shape {shape}, but this generator reads "
                         f"[B, {expected[0]}, {expected[1]}, {expected[2]}]; encode the style with "
                         f"the encoder that belongs to this generator")
    check_finite(codes, "style codes")
    if not encoder_id:
        raise ValueError("the style codes carry no encoder id, so it cannot be checked that they "
                         "were made for this generator; encode them with a SegTalker encoder "
                         "bundle")
    _, _, trained_for = encoder_id.rpartition("@")
    if trained_for != fp.generator_id:
        raise ValueError(
            f"style codes come from encoder {encoder_id!r}, trained for generator "
            f"{trained_for or 'unknown'!r}, but this generator is {fp.generator_id!r}; codes of "
            f"another encoder mean nothing to it. Load the encoder bundle exported with this "
            f"generator (or re-encode the style with it)"
        )


@dataclass(frozen=True)
class ResizePlan:
    """How talking maps made at the TSG's resolution reach the generator's."""

    tsg_resolution: int
    generator_resolution: int

    @property
    def resize(self) -> bool:
        return self.tsg_resolution != self.generator_resolution

    @property
    def mode(self) -> str:
        return "nearest"  # labels must never blend

    @property
    def message(self) -> str:
        if not self.resize:
            return f"TSG and generator both work at {self.tsg_resolution} px"
        coarser = ("mouth contours will be coarser than the generator can draw; a TSG trained at "
                   f"{self.generator_resolution} px gives full detail"
                   if self.tsg_resolution < self.generator_resolution else
                   "detail of the talking maps above the generator's resolution is lost")
        return (f"TSG works at {self.tsg_resolution} px, the generator at "
                f"{self.generator_resolution} px: talking maps are resampled ({self.mode}); "
                f"{coarser}")

    def apply(self, regions: torch.Tensor) -> torch.Tensor:
        """Integer maps ``[B, H, W]`` -> ``[B, G, G]`` at the generator's resolution (nearest)."""
        g = self.generator_resolution
        if regions.shape[-2:] == (g, g):
            return regions
        out = F.interpolate(regions[:, None].float(), size=(g, g), mode="nearest-exact")
        return out[:, 0].to(regions.dtype)


def plan_segmentation_resize(tsg: BundleConfig | int, generator: BundleConfig | int) -> ResizePlan:
    """Compare TSG and generator resolutions; log a warning (logger ``segtalker.models``) when
    they differ and return the plan either way."""
    resolutions = []
    for value, want in ((tsg, "tsg"), (generator, "generator")):
        if isinstance(value, BundleConfig):
            if value.component != want:
                raise ValueError(f"expected a {want} config, got a {value.component_name}")
            value = value.resolution
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{want} resolution must be a positive integer, got {value!r}")
        resolutions.append(value)
    plan = ResizePlan(*resolutions)
    if plan.resize:
        log.warning(plan.message)
    return plan


def _check_audio(config: BundleConfig, path: Path) -> None:
    if config.audio is None:
        return
    different = {k: (config.audio.get(k), v) for k, v in WAV2LIP_AUDIO.items()
                 if k in config.audio and config.audio[k] != v}
    if different:
        shown = ", ".join(f"{k}: file {f} vs ours {o}" for k, (f, o) in different.items())
        raise ck.CheckpointError(f"{path} was trained on other audio features ({shown}); this "
                                 f"version computes Wav2Lip mels only")


# ------------------------------------------------------------------------------------ files

def bundle_config(model_config: Any, *, extra: Mapping[str, Any] | None = None) -> BundleConfig:
    """The :class:`BundleConfig` describing a module built from ``model_config``."""
    component = component_of(model_config)
    spec = REGISTRY[component]
    return BundleConfig(
        component=component,
        architecture=model_config.to_dict(),
        label_scheme=spec.label_scheme,
        resolution=int(getattr(model_config, spec.resolution_field)),
        audio=dict(WAV2LIP_AUDIO) if spec.audio_driven else None,
        extra=dict(extra or {}),
    )


def save_component(path: str | os.PathLike[str], model: nn.Module, config: Any, *,
                   generator: GeneratorFingerprint | BundleConfig | str | os.PathLike[str]
                   | None = None,
                   generator_id: str | None = None,
                   extra: Mapping[str, Any] | None = None) -> BundleConfig:
    """Write ``model`` (built from the config dataclass ``config``) as a bundle.

    ``generator_id`` (generators only): the trained generator's id; default: a hash of its
    weights. ``generator`` (encoders only, required): the generator it was trained for. Returns
    the config written.
    """
    component = component_of(config)
    model_cls, _ = _spec(component).classes()
    if not isinstance(model, model_cls):
        raise TypeError(f"model is a {type(model).__name__}, but config {type(config).__name__} "
                        f"builds a {model_cls.__name__}")
    if getattr(model, "config", config) != config:
        raise ValueError(f"config does not describe this {model_cls.__name__} (its .config "
                         f"differs); pass model.config")
    state_dict = model.state_dict()
    more = dict(extra or {})
    if generator_id is not None and component != "generator":
        raise ValueError("generator_id is for generator bundles only")
    if generator is not None and component != "encoder":
        raise ValueError("generator= (the generator an encoder was trained for) is for encoder "
                         "bundles only")
    if component == "generator":
        gid = generator_id or f"g-{weights_hash(state_dict)}"
        if "@" in gid:
            raise ValueError(f"generator_id must not contain '@', got {gid!r}")
        more["generator_id"] = gid
    elif component == "encoder":
        if generator is None:
            raise ValueError("saving an encoder needs generator=: the generator (bundle path, "
                             "config or GeneratorFingerprint) it was trained for, so codes can be "
                             "matched to it later")
        fp = generator if isinstance(generator, GeneratorFingerprint) \
            else generator_fingerprint(generator)
        if (config.w_dim, config.n_latent) != (fp.w_dim, fp.n_latent):
            raise ValueError(f"this encoder writes codes of w_dim {config.w_dim} x {config.n_latent} "
                             f"rows, but generator {fp.generator_id!r} reads {fp.w_dim} x "
                             f"{fp.n_latent}; they cannot be paired")
        more["generator"] = fp.to_dict()
        more["encoder_id"] = f"e-{weights_hash(state_dict)}@{fp.generator_id}"
    bundle = bundle_config(config, extra=more)
    ck.save(path, state_dict, bundle)
    return bundle


def load_component(path: str | os.PathLike[str], expected_component: str,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                   search_dirs: tuple[str | os.PathLike[str], ...] = ()
                   ) -> tuple[nn.Module, BundleConfig]:
    """Load a bundle into a new module of ``expected_component`` on ``device`` in ``dtype``
    (eval mode). Errors name the file and what is wrong: another component, a newer format,
    no SegTalker config, foreign audio features, weights that do not fit.

    ``dtype`` converts the *new* module once, for training and benchmarks; the pipeline's loaders
    keep float32 here and choose the compute precision per run (segtalker_core.precision), so a
    cached model is never rounded."""
    _spec(expected_component)
    state_dict, config = ck.load(path, expected_component, search_dirs=search_dirs)
    p = Path(path)
    if config.inferred:
        raise ck.CheckpointError(
            f"{p} has no SegTalker config (it looks like {config.description}), so the "
            f"{ck.COMPONENTS[expected_component]} architecture is unknown; use a bundle written by "
            f"SegTalker (models.bundles.save_component, or random-bundle)"
        )
    spec = REGISTRY[expected_component]
    if spec.label_scheme is not None and config.label_scheme != spec.label_scheme:
        raise ck.CheckpointError(f"{p} uses label scheme {config.label_scheme!r}; a "
                                 f"{expected_component} must use {spec.label_scheme!r}")
    _check_audio(config, p)
    model_config = model_config_from_architecture(expected_component, config.architecture)
    arch_res = int(getattr(model_config, spec.resolution_field))
    if config.resolution is not None and config.resolution != arch_res:
        raise ck.CorruptCheckpointError(f"{p}: its config says resolution {config.resolution} but "
                                        f"its architecture {arch_res}; re-save it with save_component")
    model = build_component(expected_component, model_config)
    ck.load_state_dict_strict(model, state_dict, f"{ck.COMPONENTS[expected_component]} from {p.name}")
    model.to(device=device, dtype=dtype).eval()
    return model, config


def describe(path: str | os.PathLike[str],
             search_dirs: tuple[str | os.PathLike[str], ...] = ()) -> str:
    """One line for a loader UI, e.g.
    ``"tsg_128.safetensors: TSG (talking segmentation generator), 128 px, 10.5M weights,
    regions_12, format v1"``. Reads only the header."""
    p = ck.find_checkpoint(path, search_dirs)
    return f"{p.name}: {summary(p)}"


def summary(path: str | os.PathLike[str]) -> str:
    """What :func:`describe` says after the file name (the CLI's ``describe`` prints it after
    the path the user typed)."""
    p = Path(path)
    config = ck.read_config(p)
    if config.inferred:
        return f"no SegTalker config; looks like {config.description}"
    if p.suffix.lower() == ".safetensors":
        count = ck.count_values(p)
    else:
        count = sum(t.numel() for t in ck.load(p)[0].values())
    parts = [config.component_name]
    if config.resolution:
        parts.append(f"{config.resolution} px")
    parts.append(f"{_human(count)} weights")
    if config.label_scheme:
        parts.append(config.label_scheme)
    parts.append(f"format v{config.format_version}")
    gid = config.extra.get("generator_id") or (config.extra.get("generator") or {}).get(
        "generator_id")
    if gid:
        parts.append(("generator " if config.component == "generator" else "for generator ")
                     + str(gid))
    return ", ".join(parts)


def _human(count: int) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}k"
    return str(count)
