"""The learned backends of each stage (TSG, mask-guided encoder, mask-guided StyleGAN).

Models arrive as :class:`LoadedModel` already placed on their device (the caller decides: the
ComfyUI nodes through model_management; the CLI and plain calls default to the CPU). Each run computes in the
model's ``compute_dtype`` under autocast (:mod:`.precision`): inputs are built in float32, the
weights are never cast, and every network output is checked for NaN/inf with an error that names
the precision. Batched runs (TSG, generator) halve their batch on an out-of-memory error and
retry, down to 1 (:mod:`.batching`); the halved size holds for the rest of the call.
"""
from __future__ import annotations


import cv2
import numpy as np
import torch
import torch.nn.functional as F

from . import precision
from .batching import AdaptiveBatch
from .containers import FaceTrack, StyleCodes, TalkingSegmentation
from .progress import Progress
from .model_handle import LoadedModel


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


def encode_style_learned(faces: FaceTrack, model: LoadedModel, frame: int) -> StyleCodes:
    """W+ codes ``[1, 12, L, w]`` of one reference frame (one code for the whole video)."""
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
    return StyleCodes(
        kind="learned",
        valid=valid.cpu().numpy().astype(bool),
        codes=codes.float().cpu(),
        encoder_id=(model.config.extra or {}).get("encoder_id") if model.config is not None else None,
        meta={"frame": frame, "source": model.source},
    )


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
