"""The one image normaliser: user images -> the core's pixel format, RGB ``uint8`` ``[H, W, 3]``.

Every entry point that takes an image from outside (CLI files, detector and aligner input, the
mp4 writer's frames) goes through :func:`to_rgb_uint8` / :func:`to_rgb_uint8_batch`, so one
policy holds everywhere. Accepted inputs (anything ``np.asarray`` understands, e.g. a CPU torch
tensor):

* layouts ``[H, W]`` (grey), ``[H, W, 1]`` (grey), ``[H, W, 2]`` (grey + alpha), ``[H, W, 3]``
  (RGB), ``[H, W, 4]`` (RGBA); batches add a leading ``N`` (see :func:`to_rgb_uint8_batch`);
  channels-first arrays are refused with a hint;
* dtypes: ``uint8`` as is; ``uint16`` scaled from 0..65535 (16-bit PNG); ``bool`` as 0 / 255
  (a mask shown as an image); floats in 0..1 (ComfyUI IMAGE); other integer types only if their
  values lie in 0..255; anything else is a ``TypeError``.

Alpha is **composited on black** (``rgb * alpha``) rather than dropped: transparent pixels of
cut-out portraits often hold arbitrary colour that would otherwise show up around the person.

NaN or infinite values are refused (``ValueError`` naming the input): there is no right colour
for them, and a black hole in a face would break detection downstream without saying why.
Recoverable range oddities warn (logger ``"segtalker.image"``) and go on: floats up to 0.1
outside 0..1 are clipped, non-negative floats above 1.1 (but at most 255) are taken as 0..255
and divided by 255. Shapes and dtypes that cannot be an image raise ``ValueError`` /
``TypeError`` naming the input.
"""
from __future__ import annotations

import numpy as np

from ..logs import get_logger

log = get_logger("image")

# Float images a hair outside 0..1 are clipped silently; up to _FLOAT_OVERSHOOT outside (ringing
# of bicubic/lanczos resampling) with a warning; beyond that the range is wrong, not overshot.
_FLOAT_TOLERANCE = 1.0 / 255.0
_FLOAT_OVERSHOOT = 0.1


def to_rgb_uint8(image, name: str = "image") -> np.ndarray:
    """One image in any accepted layout/dtype -> contiguous RGB ``uint8 [H, W, 3]``."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"{name} must be one image of shape [H, W] or [H, W, C] with C in 1..4, got shape "
            f"{array.shape}; pass batches through to_rgb_uint8_batch"
        )
    _check_channels(array.shape, name)
    return _convert(array, name)


def to_rgb_uint8_batch(frames, name: str = "frames") -> np.ndarray:
    """A batch ``[N, H, W]`` or ``[N, H, W, C]`` (C in 1..4) -> RGB ``uint8 [N, H, W, 3]``.

    A single image ``[H, W, C]`` with C in 1..4 is accepted as a batch of one; a 3-d array whose
    last axis is larger than 4 is taken as grey ``[N, H, W]``.
    """
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None] if array.shape[-1] <= 4 else array[..., None]
    if array.ndim != 4:
        raise ValueError(
            f"{name} must be a batch of images [N, H, W, C] (or [N, H, W] grey), got shape "
            f"{array.shape}"
        )
    if len(array) == 0:
        raise ValueError(f"{name} is an empty batch (0 frames); give at least one frame")
    _check_channels(array.shape, name)
    return _convert(array, name)


def _check_channels(shape: tuple[int, ...], name: str) -> None:
    height, width, channels = shape[-3:]
    if channels not in (1, 2, 3, 4):
        raise ValueError(
            f"{name} has {channels} channels (shape {shape}); expected 1 (grey), 2 (grey+alpha), "
            f"3 (RGB) or 4 (RGBA). Is the array channels-first? Move channels last."
        )
    if height == 0 or width == 0:
        raise ValueError(f"{name} is empty (shape {shape})")


def _convert(array: np.ndarray, name: str) -> np.ndarray:
    """``[..., H, W, C]`` any accepted dtype -> ``[..., H, W, 3]`` uint8."""
    has_alpha = array.shape[-1] in (2, 4)
    unit = _to_unit_float(array, name) if has_alpha else None
    if unit is not None:
        colour, alpha = unit[..., :-1], unit[..., -1:]
        rgb = np.broadcast_to(colour * alpha, colour.shape[:-1] + (3,))
        return np.ascontiguousarray(np.round(rgb * 255.0).astype(np.uint8))
    values = _to_uint8(array, name)
    if values.shape[-1] == 1:
        values = np.repeat(values, 3, axis=-1)
    return np.ascontiguousarray(values)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype == np.uint16:
        # 65535 -> 255 exactly; rounding keeps mid-grey at 128 like most image libraries.
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{name} has integer dtype {dtype} with values {low}..{high}; expected 0..255 "
                f"(or use uint16 for 16-bit images, floats for 0..1)"
            )
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        return _float_to_uint8(array, name)
    raise TypeError(
        f"{name} has dtype {dtype}, which is not an image type; use uint8, uint16, bool or "
        f"float in 0..1"
    )


def _to_unit_float(array: np.ndarray, name: str) -> np.ndarray:
    """Any accepted dtype -> float32 in 0..1 (used where alpha arithmetic is needed)."""
    if np.issubdtype(array.dtype, np.floating):
        return _unit_float(array, name)
    return _to_uint8(array, name).astype(np.float32) / 255.0


def _unit_float(array: np.ndarray, name: str) -> np.ndarray:
    values = array.astype(np.float32)
    if _checked_divide(values, name):
        values = values / 255.0
    return np.clip(values, 0.0, 1.0)


# Elements converted at a time by _float_to_uint8 (16 MB of float32): a float video (a ComfyUI
# IMAGE batch is 24 MB a 1080p frame) then costs its uint8 result plus one block, instead of
# several full-size float temporaries.
_BLOCK_ELEMENTS = 1 << 22


def _float_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """``np.round(_unit_float(array) * 255).astype(uint8)``, bit for bit, block by block along
    the first axis (the range is checked over the whole array first)."""
    divide = _checked_divide(array, name)
    out = np.empty(array.shape, np.uint8)
    for block in _blocks(array.shape):
        values = array[block].astype(np.float32)
        if divide:
            values /= np.float32(255.0)
        np.clip(values, 0.0, 1.0, out=values)
        values *= np.float32(255.0)
        out[block] = np.round(values, out=values)
    return out


def _blocks(shape: tuple[int, ...]):
    """Slices of the first axis covering about :data:`_BLOCK_ELEMENTS` elements each."""
    if not shape:
        yield ...
        return
    per_row = int(np.prod(shape[1:], dtype=np.int64)) or 1
    step = max(1, _BLOCK_ELEMENTS // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, start + step)


def _checked_divide(array: np.ndarray, name: str) -> bool:
    """Refuse NaN/inf and far-off ranges; True when the values are 0..255 floats to divide by
    255 (logged), False for 0..1 (slightly outside: logged, then clipped). Reads ``array`` block
    by block, so a large float batch gets no full-size temporary here."""
    nonfinite, low, high = 0, np.inf, -np.inf
    for block in _blocks(array.shape):
        values = np.asarray(array[block], dtype=np.float32)
        finite = np.isfinite(values)
        nonfinite += int(values.size - np.count_nonzero(finite))
        if nonfinite == 0 and values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if nonfinite:
        raise ValueError(
            f"{name} contains {nonfinite} NaN/inf values; "
            f"check what produced it (an image must be finite)"
        )
    if low < -_FLOAT_OVERSHOOT or high > 255.0 + _FLOAT_TOLERANCE:
        raise ValueError(
            f"{name} is a float image with values {low:.3g}..{high:.3g}; expected 0..1. "
            f"If it is normalised (e.g. -1..1 or ImageNet mean/std), undo that first."
        )
    if high > 1.0 + _FLOAT_OVERSHOOT:
        log.warning(
            "%s is a float image with values up to %.3g: taken as 0..255 and divided by 255 "
            "(float images are expected in 0..1)", name, high,
        )
        return True
    if low < -_FLOAT_TOLERANCE or high > 1.0 + _FLOAT_TOLERANCE:
        log.warning(
            "%s has float values %.3g..%.3g slightly outside 0..1; they are clipped",
            name, low, high,
        )
    return False
