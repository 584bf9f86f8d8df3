"""The CLI's option values: ranges and argparse types (a bad value is argparse's usage error,
one ``error:`` line and exit code 2, before anything runs).

The upper bounds keep a typo (an extra zero) from asking for hours or gigabytes. The frame-rate
range (``video_io.FPS_RANGE``) and the ``--max-size`` rules (``talk_file``) are the library's own,
imported where they are used so that building the parser stays light (no torch).
"""
from __future__ import annotations

import argparse

CROP_SIZE_RANGE = (64, 2048)  # 64: the smallest crop the parsers and random bundles work at
STRENGTH_RANGE = (0.0, 2.0)
# The same as models.random_bundle.RESOLUTIONS (a test holds them equal); importing it here would
# import torch just to build the parser.
BUNDLE_RESOLUTIONS = (64, 128, 256, 512)
# ``--optimize-steps``: the same as style_refinement.MAX_STEPS (a test holds them equal; it imports
# torch). E4S's optimisation runs 200; 5000 at 1024 px is about an hour on a GPU.
OPTIMIZE_STEPS_RANGE = (0, 5000)

# Measured peak memory per crop pixel (``talk`` on one portrait at --size 256..2048): about 16
# bytes while a frame is drawn; 5 stay per frame held (crop 3, parsing 1, talking map 1) when a
# video shorter than the audio, or the learned models, hold every frame.
WORKING_BYTES_PER_CROP_PIXEL = 16
HELD_BYTES_PER_CROP_PIXEL = 5


def parse_number(text: str, kind: type):
    """``text`` as an int or float; argparse prefixes the message with the option's name."""
    try:
        return kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None


def fps_value(text: str) -> float:
    """``--fps``: frames per second within ``video_io.FPS_RANGE`` (NaN and inf are outside)."""
    from .video_io import FPS_RANGE

    fps = parse_number(text, float)
    low, high = FPS_RANGE
    if not low <= fps <= high:
        raise argparse.ArgumentTypeError(
            f"must be within {low:g}..{high:g} frames per second, got {text}; "
            "25 or 30 is usual (leave it out to keep a video's own rate)")
    return fps


def _bytes_text(count: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count / 1e3:.3g} kB"


def crop_memory_text(size: int) -> str:
    """What a ``size`` x ``size`` face crop costs, in words (see the measured constants)."""
    pixels = size * size
    return (f"a {size}x{size} face crop needs about {_bytes_text(WORKING_BYTES_PER_CROP_PIXEL * pixels)} "
            f"while each frame is drawn, and {_bytes_text(HELD_BYTES_PER_CROP_PIXEL * pixels)} for "
            "every frame held (a video shorter than the audio, or learned models, hold them all)")


def crop_size_value(text: str) -> int:
    """``--size``: the face crop's side in pixels, within :data:`CROP_SIZE_RANGE`."""
    size = parse_number(text, int)
    low, high = CROP_SIZE_RANGE
    if size < low:
        raise argparse.ArgumentTypeError(
            f"{size} is too small: the face parsing needs at least {low} px; use {low}..{high} "
            "(default 512)")
    if size > high:
        raise argparse.ArgumentTypeError(
            f"{size} is too large (at most {high}): {crop_memory_text(size)}. "
            f"Use 512 (the default) or up to {high}")
    return size


def positive_int_value(text: str) -> int:
    """A count of 1 or more (``prepare --workers``)."""
    count = parse_number(text, int)
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def batch_size_value(text: str) -> int | None:
    """``--batch-size``: frames per forward pass of the learned models; 0: automatic (None:
    from the device's free memory, the models' defaults on a CPU). The library's rule
    (``working_memory.batch_size_choice``), without importing torch to build the parser."""
    count = parse_number(text, int)
    if count < 0:
        raise argparse.ArgumentTypeError(
            f"must be 0 (automatic: picked from the device's free memory) or the frames per "
            f"forward pass (1 or more), got {count}")
    return count or None


def optimize_steps_value(text: str) -> int:
    """``--optimize-steps``: Adam steps refining the style codes, 0 (off) .. 5000."""
    steps = parse_number(text, int)
    low, high = OPTIMIZE_STEPS_RANGE
    if not low <= steps <= high:
        raise argparse.ArgumentTypeError(
            f"must be within {low}..{high} (0: off; a few hundred is E4S's use, e.g. 200), got "
            f"{steps}")
    return steps


def strength_value(text: str) -> float:
    strength = parse_number(text, float)
    low, high = STRENGTH_RANGE
    if not low <= strength <= high:
        raise argparse.ArgumentTypeError(
            f"must be within {low:g}..{high:g} (1 is natural, 0 keeps the mouth still), got {text}")
    return strength


def head_motion_value(text: str) -> float:
    """``--head-motion``: idle head motion of a portrait, 0 (still) .. 1 (the most)."""
    strength = parse_number(text, float)
    if not 0.0 <= strength <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(
            f"must be within 0..1 (0 keeps the head still, 0.5 is the default), got {text}")
    return strength


def face_index_value(text: str) -> int:
    index = parse_number(text, int)
    if index < -1:
        raise argparse.ArgumentTypeError(
            f"must be -1 (the largest face) or 0, 1, ... (from the left), got {index}")
    return index


def max_size_value(text: str) -> int | None:
    """``--max-size``: the longest side inputs are processed at, in pixels; 0 or ``none``: no
    cap (None). At least ``talk_file.MIN_MAX_SIZE``."""
    from .talk_file import MIN_MAX_SIZE

    if text.strip().lower() == "none":
        return None
    size = parse_number(text, int)
    if size == 0:
        return None
    if size < MIN_MAX_SIZE:
        raise argparse.ArgumentTypeError(
            f"{size} is too small: a face would shrink below what the detector finds; "
            f"use at least {MIN_MAX_SIZE}, or 0 / none for no cap")
    return size
