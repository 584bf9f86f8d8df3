"""The train/val split of a prepared dataset: by speaker where known, else by source clip.

A *group* is what must not straddle the split: a speaker (``split_by="speaker"``: every clip of
a val speaker is held out, so val measures generalisation to new faces) or a source video
(``split_by="clip"``: all segments of one video stay together, so no val frame has a near
duplicate in train). ``"auto"`` takes speakers when every source has one and there are at least
two, else clips.

Within a *stratum* (all groups for a speaker split; each speaker's videos for a clip split with
known speakers, so every speaker appears in both splits; everything otherwise) the groups are
ranked by ``sha1(seed, group)`` and the first ``round(val_fraction * n)`` go to val. When that
leaves val empty although there are two or more groups and ``val_fraction > 0``, the
lowest-ranked group of all goes to val: a split is never silently empty. The result depends only
on the set of groups, the fraction and the seed (not on processing order or worker count);
adding sources can move a group across the boundary, which the dataset hash records.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

SPLIT_MODES = ("auto", "speaker", "clip")


def resolve_split_by(split_by: str, speakers: list[str | None]) -> str:
    """``"speaker"`` or ``"clip"`` for ``split_by`` given each source's speaker."""
    if split_by not in SPLIT_MODES:
        raise ValueError(f"--split-by must be one of {SPLIT_MODES}, got {split_by!r}")
    if split_by != "auto":
        if split_by == "speaker" and any(s is None for s in speakers):
            missing = sum(s is None for s in speakers)
            raise ValueError(f"--split-by speaker: {missing} source(s) have no known speaker; put "
                             f"each speaker's files in a folder of their own or give --speakers")
        return split_by
    known = [s for s in speakers if s is not None]
    return "speaker" if len(known) == len(speakers) and len(set(known)) >= 2 else "clip"


def group_of(split_by: str, source_name: str, speaker: str | None) -> str:
    return f"speaker:{speaker}" if split_by == "speaker" else f"clip:{source_name}"


def stratum_of(split_by: str, speaker: str | None) -> str:
    return "" if split_by == "speaker" or speaker is None else speaker


def assign_splits(groups: dict[str, str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """``{group: stratum}`` -> ``{group: "train" | "val"}`` (rule in the module docstring)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    rank = {g: hashlib.sha1(f"{seed}|{g}".encode()).hexdigest() for g in groups}
    strata: dict[str, list[str]] = defaultdict(list)
    for g, s in groups.items():
        strata[s].append(g)
    out = {g: "train" for g in groups}
    for members in strata.values():
        members.sort(key=rank.__getitem__)
        for g in members[: int(round(val_fraction * len(members)))]:
            out[g] = "val"
    if val_fraction > 0 and len(groups) >= 2 and "val" not in out.values():
        out[min(groups, key=rank.__getitem__)] = "val"
    return out
