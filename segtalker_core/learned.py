"""The learned backends of each stage (TSG, mask-guided encoder, mask-guided StyleGAN).

Models arrive as :class:`LoadedModel` already placed on their device (the caller decides: the
ComfyUI nodes through model_management; the CLI and plain calls default to the CPU). Each run computes in the
model's ``compute_dtype`` under autocast (:mod:`.precision`): inputs are built in float32, the
weights are never cast, and every network output is checked for NaN/inf with an error that names
the precision. Batched runs (TSG, generator) halve their batch on an out-of-memory error and
retry, down to 1 (:mod:`.batching`); the halved size holds for the rest of the call.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import precision
from .batching import AdaptiveBatch
from .containers import FaceTrack, StyleCodes, TalkingSegmentation
from .model_handle import LoadedModel
from .progress import Progress

if TYPE_CHECKING:
    from .style_refinement import ParsingTarget, StyleRefinement

log = logging.getLogger("segtalker")


# Default batches of the learned runs (frames per forward pass); OOM halves them at run time.
TSG_BATCH = 8
GENERATOR_BATCH = 4


def _placement(model: LoadedModel) -> tuple[torch.device, torch.dtype]:
    """Where the module is (its parameters say) and the dtype the run computes in."""
    p = next(model.runner.parameters())
    return p.device, model.compute_dtype


def tsg_segmentation(
    faces: FaceTrack,
    mono_audio,  # audio.io.MonoAudio, 16 kHz
    fps: float,
    n_frames: int,
    source_index: np.ndarray,  # [T] frame of `faces` behind each output frame
    model: LoadedModel,
    reference_frame: int = 0,
    batch_size: int = TSG_BATCH,
    progress: Progress = None,
) -> np.ndarray:
    """``[T, S, S]`` uint8 12-region maps predicted by a TSG from the audio's mel windows.

    The pose source of output frame t is the parsing of ``faces[source_index[t]]`` (its mouth
    masked by the model); the identity reference is one fixed frame, so the mouth shape does not
    drift. Frames without a face keep their source map.
    """
    from .audio.mel import mel_windows
    from .models.tsg import predict_talking_segmentation

    tsg = model.runner
    device, dtype = _placement(model)
    batch = AdaptiveBatch(batch_size, "TSG")  # shared by the chunks: a size that failed stays off
    # The 0.2 s window is centred on the frame; a bundle trained otherwise says so.
    align = ((model.config.extra or {}).get("mel_align") if model.config is not None else None) or "centre"
    regions = faces.regions
    reference = regions[reference_frame] if faces.found[reference_frame] else regions[np.argmax(faces.found)]
    out = np.empty((n_frames, faces.crop_size, faces.crop_size), dtype=np.uint8)
    chunk = 256  # bounds memory for long audio: mel and one-hot maps exist per chunk only
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        windows = mel_windows(mono_audio, fps, start, stop, n_frames=n_frames, align=align)
        source = regions[source_index[start:stop]]

        def chunk_progress(done: int, _total: int, offset: int = start) -> None:
            if progress is not None:
                progress(offset + done, n_frames)

        out[start:stop] = predict_talking_segmentation(
            tsg, source, reference, windows, batch, device, dtype, progress=chunk_progress,
        )
    missing = ~faces.found[source_index]
    out[missing] = regions[source_index[missing]]
    return out


def encode_style_learned(faces: FaceTrack, model: LoadedModel, frame: int,
                         refine: "StyleRefinement | None" = None) -> StyleCodes:
    """W+ codes ``[1, 12, L, w]`` of one reference frame (one code for the whole video).

    ``refine``: E4S's per-face optimisation of those codes against the frame's crop
    (:mod:`.style_refinement`; None or 0 steps: the encoder's codes, unchanged). A video refines
    this one reference frame, whose codes every frame is drawn with: refining per frame or per
    chunk would let the texture change from chunk to chunk, and cost the steps each time.
    """
    from .models.bundles import check_finite

    encoder = model.runner
    device, dtype = _placement(model)
    size = encoder.config.input_size
    crop = faces.crops[frame]
    if crop.shape[0] != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(crop).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
    image = image / 127.5 - 1.0
    check_finite(image, "image")
    regions = torch.from_numpy(faces.regions[frame].astype(np.int64))[None].to(device)
    # One frame: a batch of one, nothing to halve on an out-of-memory error.
    with torch.inference_mode(), precision.compute(device, dtype):
        codes, valid = encoder(image, regions)
    precision.check_output(codes, "the mask-guided encoder", dtype)
    encoder_id = (model.config.extra or {}).get("encoder_id") if model.config is not None else None
    meta = {"frame": frame, "source": model.source}
    codes = codes.float()
    if refine is not None and refine.config.enabled:
        codes, meta["refinement"] = _refined_codes(faces, frame, model, encoder_id, image, regions,
                                                   codes, refine)
    return StyleCodes(
        kind="learned",
        valid=valid.cpu().numpy().astype(bool),
        codes=codes.cpu(),
        encoder_id=encoder_id,
        meta=meta,
    )


def _refined_codes(faces: FaceTrack, frame: int, encoder_model: LoadedModel,
                   encoder_id: str | None, image: torch.Tensor, regions: torch.Tensor,
                   codes: torch.Tensor, refine: "StyleRefinement") -> tuple[torch.Tensor, dict]:
    """The refined codes of ``faces[frame]`` and what the refinement did (for ``meta``)."""
    from .model_handle import GENERATOR, require_component
    from .models.bundles import ResizePlan, check_style_codes
    from .style_refinement import loss_size, refine_codes

    require_component(refine.generator, (GENERATOR,), slot="generator")
    generator = refine.generator.runner
    device, _ = _placement(encoder_model)
    g_device, dtype = _placement(refine.generator)
    if g_device != device:
        raise ValueError(
            f"refining the style codes runs the encoder and the generator together, but the "
            f"encoder is on {device} and the generator on {g_device}; load both on one device")
    check_style_codes(codes, encoder_id, refine.generator.config)
    s = faces.crop_size
    p = loss_size(s, generator.config.size)
    crop = faces.crops[frame]
    if p != s:
        crop = cv2.resize(crop, (p, p), interpolation=cv2.INTER_AREA)
    target = torch.from_numpy(crop).permute(2, 0, 1)[None].to(device=device, dtype=torch.float32)
    target = target / 127.5 - 1.0
    small = ResizePlan(s, p).apply(regions)  # nearest: labels never blend
    mask = (torch.ones_like(small) if refine.config.include_background else small != 0)
    if not mask.any():
        log.warning("frame %d's segmentation is all background: the refinement fits the whole crop",
                    frame)
        mask = torch.ones_like(small)
    mask = mask[:, None].float()
    parsing = _parsing_target(refine.parser, target, device, dtype, refine.config)
    # The loss networks are frozen and read-only here: moving them (never casting) is safe.
    lpips, identity = (None if m is None else m.to(device) for m in (refine.lpips, refine.identity))
    result = refine_codes(
        encoder_model.runner, generator, image, regions, target,
        ResizePlan(s, generator.config.size).apply(regions), mask, refine.config, dtype,
        parsing=parsing, progress=refine.progress, lpips=lpips, identity=identity,
    )
    log.info("refined the style codes of frame %d: %d steps (%s), loss %.4g -> %.4g (step %d)",
             frame, refine.config.steps, "+".join(result.terms), result.initial_loss,
             result.best_loss, result.best_step)
    info = {"steps": refine.config.steps, "space": refine.config.space, "terms": list(result.terms),
            "loss_start": result.initial_loss, "loss_best": result.best_loss,
            "best_step": result.best_step}
    return result.codes, info


def _parsing_target(parser: LoadedModel | None, target: torch.Tensor, device: torch.device,
                    dtype: torch.dtype, config) -> "ParsingTarget | None":
    """The parsing term's parser (a learned BiSeNet) and its labels of the target crop, or None
    (no parser, the built-in one, or weight 0)."""
    from .parsing.bisenet import IMAGENET_MEAN, IMAGENET_STD, BiSeNetParser
    from .style_refinement import ParsingTarget

    if parser is None or config.parsing_weight == 0:
        return None
    runner = parser.runner
    if not isinstance(runner, BiSeNetParser):
        log.info("the refinement has no parsing term: the %s parser is not differentiable (a "
                 "BiSeNet parser is)", "built-in" if parser.is_builtin else "given")
        return None
    net, at = runner.model, runner.device
    mean = torch.tensor(IMAGENET_MEAN, device=at).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=at).view(1, 3, 1, 1)
    size = target.shape[-1]

    def logits(images: torch.Tensor) -> torch.Tensor:  # [B, 3, P, P] in [-1, 1] -> [B, C, P, P]
        x = (images.to(at) + 1) / 2
        if x.shape[-1] != runner.input_size:
            x = F.interpolate(x, size=(runner.input_size,) * 2, mode="bilinear",
                              align_corners=False, antialias=True)
        out = net.segment((x - mean) / std)
        if out.shape[-1] != size:
            out = F.interpolate(out, size=(size, size), mode="bilinear", align_corners=False)
        return out.to(device)

    with torch.no_grad(), precision.compute(at, runner.dtype):
        labels = logits(target).float().argmax(dim=1)
    return ParsingTarget(logits=logits, labels=labels)


def synthesize_learned(
    segmentation: TalkingSegmentation,
    style: StyleCodes,
    model: LoadedModel,
    background: str = "source",
    seed: int = 0,
    batch_size: int = GENERATOR_BATCH,
    progress: Progress = None,
) -> np.ndarray:
    """``[T, S, S, 3]`` uint8 crops from the mask-guided generator.

    Noise is drawn once from ``seed`` and shared by every frame (no texture flicker). With
    ``background="source"`` the background region is taken from each frame's source crop.
    """
    from .models.bundles import ResizePlan, check_finite, check_style_codes, plan_segmentation_resize

    generator = model.runner
    device, dtype = _placement(model)
    size = generator.config.size
    if style.kind != "learned":
        raise ValueError(
            "input 'style' holds built-in colour statistics, but a learned generator needs W+ codes: "
            "connect SegTalker Encode Style with a learned encoder (or disconnect the generator)"
        )
    codes = style.codes
    check_finite(codes, "style codes")
    check_style_codes(codes, style.encoder_id, model.config)
    s = segmentation.faces.crop_size
    tsg_resolution = segmentation.meta.get("tsg_resolution")
    if tsg_resolution is not None:
        plan_segmentation_resize(int(tsg_resolution), size)  # warns when TSG and generator differ
    to_generator = ResizePlan(s, size)  # crop-size maps -> generator size (nearest: labels never blend)
    noise_rng = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = [n.to(device) for n in generator.make_noise(1, noise_rng, device="cpu")]
    codes = codes[:1].to(device=device, dtype=torch.float32)
    valid = torch.from_numpy(style.valid[:1]).to(device)
    t_total = len(segmentation)
    out = np.empty((t_total, s, s, 3), dtype=np.uint8)

    def step(start: int, stop: int) -> None:
        maps = torch.from_numpy(segmentation.regions[start:stop].astype(np.int64)).to(device)
        maps = to_generator.apply(maps)
        b = stop - start
        with precision.compute(device, dtype):
            image = generator(codes.expand(b, -1, -1, -1), maps, noise=noise, valid=valid.expand(b, -1))
        precision.check_output(image, "the mask-guided generator", dtype)
        image = F.interpolate(image.float(), size=(s, s), mode="bilinear", align_corners=False, antialias=size > s)
        rgb = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        sources = segmentation.faces.crops[segmentation.source_index[start:stop]]
        if background == "source":
            keep = segmentation.regions[start:stop] == 0
            rgb[keep] = sources[keep]
        # A frame without a face keeps its source crop (paste-back passes it through anyway).
        no_face = ~segmentation.faces.found[segmentation.source_index[start:stop]]
        rgb[no_face] = sources[no_face]
        out[start:stop] = rgb
        if progress is not None:
            progress(stop, t_total)

    with torch.inference_mode():
        AdaptiveBatch(batch_size, "generator").run(t_total, step)
    return out
