"""Which generated clip is compared with which reference (and synced to which audio): single
files, or folders matched by file name without the extension."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .clips import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus") + VIDEO_SUFFIXES


@dataclass(frozen=True)
class ClipPair:
    name: str
    generated: str
    reference: str
    audio: str | None


def find_pairs(generated: str, reference: str, audio: str | None) -> tuple[list[ClipPair], list[str]]:
    """The pairs to evaluate and, in words, the inputs left without a counterpart.

    ``generated``: a video or a folder of videos; ``reference``: a video or image (used for
    every generated clip) or a folder holding one by the same name; ``audio``: None (each
    generated clip's own sound), a file for all, or a folder matched by name.
    """
    gen = Path(_existing(generated, "--generated"))
    ref = Path(_existing(reference, "--reference"))
    aud = Path(_existing(audio, "--audio")) if audio is not None else None
    if gen.is_file():
        if ref.is_dir():
            ref_file = _by_stem(ref, gen.stem, VIDEO_SUFFIXES + IMAGE_SUFFIXES)
            if ref_file is None:
                raise ValueError(f"--reference folder {str(ref)!r} has no video or image named "
                                 f"{gen.stem!r} to compare {str(gen)!r} with")
            ref = ref_file
        return [ClipPair(gen.stem, str(gen), str(ref), _audio_for(aud, gen.stem))], []
    videos = sorted(p for p in gen.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                    and not p.name.startswith("."))
    if not videos:
        raise ValueError(f"--generated folder {str(gen)!r} holds no video ({', '.join(VIDEO_SUFFIXES)})")
    pairs, unpaired = [], []
    for video in videos:
        ref_file = ref if ref.is_file() else _by_stem(ref, video.stem, VIDEO_SUFFIXES + IMAGE_SUFFIXES)
        if ref_file is None:
            unpaired.append(f"{video}: no reference named {video.stem!r} in {ref}")
            continue
        audio_file = _audio_for(aud, video.stem)
        if aud is not None and aud.is_dir() and audio_file is None:
            unpaired.append(f"{video}: no audio named {video.stem!r} in {aud}; its own sound was used")
        pairs.append(ClipPair(video.stem, str(video), str(ref_file), audio_file))
    if not pairs:
        raise ValueError(f"no generated video in {str(gen)!r} has a reference of the same name in "
                         f"{str(ref)!r}")
    return pairs, unpaired


def _audio_for(audio: Path | None, stem: str) -> str | None:
    if audio is None:
        return None
    if audio.is_file():
        return str(audio)
    found = _by_stem(audio, stem, AUDIO_SUFFIXES)
    return None if found is None else str(found)


def _by_stem(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _existing(path: str, what: str) -> str:
    text = os.fspath(path)
    if not os.path.exists(text):
        raise FileNotFoundError(f"{what} {text!r} does not exist (check the path)")
    return text
