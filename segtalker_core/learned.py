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
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import precision
from .batching import AdaptiveBatch
from .containers import FaceTrack, SegmentationFrame, StyleCodes, TalkingSegmentation
from .model_handle import LoadedModel
from .progress import Progress

if TYPE_CHECKING:
    from .style_refinement import ParsingTarget, StyleRefinement

log = logging.getLogger("segtalker")


# Default batches of the learned runs (frames per forward pass) where the device's free memory
# is unknown (a CPU): what ``batch_size=None`` (automatic) resolves to there; OOM halves them
# at run time.
TSG_BATCH = 8
GENERATOR_BATCH = 4
# Frames of mel windows and maps the TSG run makes at a time (at least one batch). While the
# frames of one chunk are drawn the next is made, so two exist: at a 512 crop, 2 x 64 maps and
# their sources are 50 MB (256 made a 60 s talk peak 0.17 GB above a 10 s one, which had one).
TSG_CHUNK = 64


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
    batch_size: int | None = None,
    progress: Progress = None,
) -> np.ndarray:
    """``[T, S, S]`` uint8 12-region maps predicted by a TSG from the audio's mel windows:
    :func:`iter_tsg_segmentation` collected (same maps)."""
    s = faces.crop_size
    out = np.empty((n_frames, s, s), dtype=np.uint8)
    done = 0
    for block in iter_tsg_segmentation(faces, mono_audio, fps, n_frames, source_index, model,
                                       reference_frame, batch_size, progress):
        out[done : done + len(block)] = block
        done += len(block)
    assert done == n_frames, (done, n_frames)
    return out


def iter_tsg_segmentation(
    faces: FaceTrack,
    mono_audio,  # audio.io.MonoAudio, 16 kHz
    fps: float,
    n_frames: int,
    source_index: np.ndarray,  # [T] frame of `faces` behind each output frame
    model: LoadedModel,
    reference_frame: int = 0,
    batch_size: int | None = None,
    progress: Progress = None,
    chunk: int = TSG_CHUNK,
    first: int = 0,
    reference: np.ndarray | None = None,
    batch: AdaptiveBatch | None = None,
) -> Iterator[np.ndarray]:
    """Blocks ``[n, S, S]`` uint8 of consecutive output frames' 12-region maps (``n`` <= ``chunk``,
    all blocks together ``len(source_index)``), predicted by a TSG from the audio's mel windows.

    Streams: mel windows, one-hot maps and the block exist per chunk only, so memory does not
    grow with the audio. The pose source of output frame t is the parsing of
    ``faces[source_index[t]]`` (its mouth masked by the model); the identity reference is one
    fixed frame, so the mouth shape does not drift. Frames without a face keep their source
    map. ``batch_size``: frames per forward pass (None: picked from the device's free memory,
    :func:`.working_memory.pick_batch_size`).

    A video read in chunks runs this once per face track: ``first`` is the clip frame of
    ``source_index[0]``'s output (``n_frames`` stays the clip's, which the last mel windows are
    padded to), ``reference`` the ``[S, S]`` identity map of the whole clip (default: the
    ``reference_frame`` of ``faces``, else its first with a face) and ``batch`` the run's
    :class:`AdaptiveBatch` (a size that failed stays off in the next track).
    """
    from .audio.mel import mel_windows
    from .models.tsg import predict_talking_segmentation

    tsg = model.runner
    device, dtype = _placement(model)
    if batch is None:
        batch = tsg_batch(model, batch_size, faces.crop_size)  # shared by the chunks
    # The 0.2 s window is centred on the frame; a bundle trained otherwise says so.
    align = ((model.config.extra or {}).get("mel_align") if model.config is not None else None) or "centre"
    regions = faces.regions
    if reference is None:
        reference = regions[reference_frame] if faces.found[reference_frame] else regions[np.argmax(faces.found)]
    count = len(source_index)
    chunk = max(int(chunk), batch.size)  # a chunk smaller than the batch would cap it
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        windows = mel_windows(mono_audio, fps, first + start, first + stop, n_frames=n_frames, align=align)
        index = source_index[start:stop]
        source = regions[index]

        def chunk_progress(done: int, _total: int, offset: int = first + start) -> None:
            if progress is not None:
                progress(offset + done, n_frames)

        block = predict_talking_segmentation(
            tsg, source, reference, windows, batch, device, dtype, progress=chunk_progress,
        )
        missing = ~faces.found[index]
        block[missing] = source[missing]
        yield block


def tsg_batch(model: LoadedModel, batch_size: int | None, frame_size: int) -> AdaptiveBatch:
    """The TSG's batch for a run that calls :func:`iter_tsg_segmentation` once per face track
    (None: picked from the device's free memory), shared so an out-of-memory halving holds."""
    return AdaptiveBatch(_resolved_batch(model, batch_size, frame_size), "TSG")


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
    batch_size: int | None = None,
    progress: Progress = None,
) -> np.ndarray:
    """``[T, S, S, 3]`` uint8 crops from the mask-guided generator: :func:`iter_synthesize_learned`
    over the segmentation's frames, collected (same crops)."""
    s = segmentation.faces.crop_size
    t_total = len(segmentation)
    out = np.empty((t_total, s, s, 3), dtype=np.uint8)
    batch_size = _resolved_batch(model, batch_size, s)
    blocks = iter_synthesize_learned_blocks(
        _segmentation_blocks(segmentation, _block_frames(batch_size)), segmentation.faces, style,
        model, background, seed, batch_size, segmentation.meta.get("tsg_resolution"), ahead=0)
    done = 0
    for crops, _ in blocks:
        out[done : done + len(crops)] = crops
        done += len(crops)
        if progress is not None:
            progress(done, t_total)
    assert done == t_total, (done, t_total)
    return out


def iter_synthesize_learned(
    frames: Iterable[SegmentationFrame],
    faces: FaceTrack,
    style: StyleCodes,
    model: LoadedModel,
    background: str = "source",
    seed: int = 0,
    batch_size: int | None = None,
    tsg_resolution: int | None = None,
    ahead: int = 1,
) -> Iterator[tuple[np.ndarray, SegmentationFrame]]:
    """``(crop [S, S, 3] uint8, frame)`` per segmentation frame, streaming: the learned
    counterpart of :func:`pipeline.iter_synthesize`, for paste-back and a writer.

    Frames are gathered into batches of ``batch_size`` (None: from the device's free memory);
    at most ``ahead + 2`` batches exist at once (``ahead`` batches are computed on a worker
    thread while the consumer pastes the previous ones back, :mod:`.run_ahead`; 0: inline), so
    memory does not grow with the clip. Crops equal :func:`synthesize_learned`'s at the same
    batch size (also automatic: both resolve it the same way).
    """
    batch_size = _resolved_batch(model, batch_size, faces.crop_size)
    n = _block_frames(batch_size)
    blocks = iter_synthesize_learned_blocks(_frame_blocks(frames, n), faces, style, model,
                                            background, seed, batch_size, tsg_resolution, ahead)
    for crops, block in blocks:
        yield from zip(crops, block)


def iter_synthesize_learned_blocks(
    blocks: Iterable[tuple[np.ndarray, np.ndarray, list]],  # (maps [n,S,S] u8, index [n], items)
    faces: FaceTrack,
    style: StyleCodes,
    model: LoadedModel,
    background: str = "source",
    seed: int = 0,
    batch_size: int | None = None,
    tsg_resolution: int | None = None,
    ahead: int = 0,
) -> Iterator[tuple[np.ndarray, list]]:
    """``(crops [n, S, S, 3] uint8, items)`` per input block ``(maps, source_index, items)``.

    Noise is drawn once from ``seed`` and shared by every frame (no texture flicker). With
    ``background="source"`` the background region is taken from each frame's source crop; a
    frame without a face keeps its source crop.

    Checked once, on the host: the style codes (finite, matching the generator) and each
    block's maps (uint8 labels < 12, a numpy test that never waits on the device). The maps go
    to the device as uint8 (pinned on CUDA) and become one-hot masks there; the only host
    wait per batch is the copy of its crops back (the NaN/inf check of the output rides on it).
    """
    from .models.bundles import ResizePlan, check_finite, check_style_codes, plan_segmentation_resize
    from .run_ahead import run_ahead
    from .transfer import to_device

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
    s = faces.crop_size
    if tsg_resolution is not None:
        plan_segmentation_resize(int(tsg_resolution), size)  # warns when TSG and generator differ
    batch = AdaptiveBatch(_resolved_batch(model, batch_size, s), "generator")  # shared by the blocks
    to_generator = ResizePlan(s, size)  # crop-size maps -> generator size (nearest: labels never blend)
    noise_rng = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = [n.to(device) for n in generator.make_noise(1, noise_rng, device="cpu")]
    codes = codes[:1].to(device=device, dtype=torch.float32)
    valid = torch.from_numpy(style.valid[:1]).to(device)

    def render(maps_host: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
        """Crops of one block into ``out`` [n, S, S, 3] (batched, halved on OOM)."""
        _check_maps(maps_host)

        def step(start: int, stop: int) -> None:
            maps = to_generator.apply(to_device(maps_host[start:stop], device))
            b = stop - start
            with torch.inference_mode():  # per step: the worker thread has its own mode
                with precision.compute(device, dtype):
                    image = generator(codes.expand(b, -1, -1, -1), maps, noise=noise,
                                      valid=valid.expand(b, -1), labels_checked=True)
                bad, numel = precision.nonfinite_count(image), image.numel()  # bad: on the device
                image = F.interpolate(image.float(), size=(s, s), mode="bilinear",
                                      align_corners=False, antialias=size > s)
                rgb = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
                out[start:stop] = rgb.cpu().numpy()
            # The crops' copy above waited for the device; reading the count costs no wait.
            precision.raise_nonfinite(int(bad), numel, "the mask-guided generator", dtype)

        batch.run(len(maps_host), step)
        sources = faces.crops[index]
        if background == "source":
            keep = maps_host == 0
            out[keep] = sources[keep]
        # A frame without a face keeps its source crop (paste-back passes it through anyway).
        no_face = ~faces.found[index]
        out[no_face] = sources[no_face]

    def rendered() -> Iterator[tuple[np.ndarray, list]]:
        for maps_host, index, items in blocks:
            out = np.empty((len(maps_host), s, s, 3), np.uint8)
            render(maps_host, index, out)
            yield out, items

    if ahead > 0:
        yield from run_ahead(rendered(), ahead, name="segtalker-generator")
    else:
        yield from rendered()


def _resolved_batch(model: LoadedModel, batch_size: int | None, frame_size: int) -> int:
    """``batch_size``, or (None) the batch picked from the free memory of ``model``'s device.
    A run resolves it before it gathers frames: a chunk or block smaller than the picked batch
    would cap it."""
    if batch_size is not None:
        return batch_size
    from .working_memory import pick_batch_size

    device, dtype = _placement(model)
    return pick_batch_size(model, device, dtype, frame_size=frame_size)


def _block_frames(batch_size: int | None) -> int:
    """Frames gathered per block: a multiple of the batch (blocks never split a batch that the
    collected run would have made, so the crops are the same), at least 8 (fewer host round
    trips for tiny batches)."""
    b = batch_size or GENERATOR_BATCH
    return b * max(1, -(-8 // b))


def _check_maps(maps: np.ndarray) -> None:
    """The one validation of a block of label maps, on the host (no device sync)."""
    from . import labels as L

    if maps.dtype != np.uint8 or maps.ndim != 3:
        raise ValueError(f"segmentation maps must be uint8 [n, S, S], got {maps.dtype} {maps.shape}")
    if maps.size and int(maps.max()) >= L.NUM_REGIONS:
        raise ValueError(f"segmentation has labels up to {int(maps.max())}, but 12-region maps use "
                         f"0..{L.NUM_REGIONS - 1}; merge 19-class maps with labels.merge_to_regions")


def _segmentation_blocks(segmentation: TalkingSegmentation, n: int
                         ) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """A collected segmentation as blocks of ``n`` frames (views: nothing copied)."""
    for start in range(0, len(segmentation), n):
        stop = min(start + n, len(segmentation))
        yield (segmentation.regions[start:stop], segmentation.source_index[start:stop],
               list(range(start, stop)))


def _frame_blocks(frames: Iterable[SegmentationFrame], n: int
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
    """Streamed frames gathered into blocks of up to ``n`` (maps stacked per block only)."""
    items: list[SegmentationFrame] = []

    def block() -> tuple[np.ndarray, np.ndarray, list]:
        maps = np.stack([np.asarray(f.regions) for f in items])
        return maps, np.array([f.source_index for f in items], np.int64), items

    for frame in frames:
        items.append(frame)
        if len(items) == n:
            yield block()
            items = []
    if items:
        yield block()
