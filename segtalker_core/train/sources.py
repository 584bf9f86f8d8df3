"""What ``prepare`` reads: the videos or images of a folder or a list file, with their speakers.

* **A folder**: every video (``.mp4 .mov .mkv .webm``) or image (``.png .jpg .jpeg .webp .bmp``)
  under it, recursively, in sorted order; hidden files and folders (``.name``) are ignored. The
  speaker of a file in a subfolder is the *first* folder under SRC (``SRC/id00017/xyz/00001.mp4``
  -> ``id00017``, VoxCeleb2's layout; ``SRC/M003/...`` -> ``M003``, MEAD's); files directly in SRC
  have no known speaker.
* **A list file** (any other file): one path per line, relative to the list file's folder or
  absolute, optionally followed by a tab or comma and the speaker; blank lines and ``#`` lines
  are ignored.
* **``--speakers FILE``** overrides both: a JSON object ``{"key": "speaker"}`` or lines
  ``key<TAB or ,>speaker``, the key being a source's path relative to SRC (as listed), its file
  name, or its stem.

One folder holds one kind: videos (the talking stages) or images (the image stage); SRC with
both is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Source:
    """One input file."""

    path: Path  # where it is read from
    name: str  # relative path as shown in logs and stored in the index (posix separators)
    speaker: str | None  # None: unknown

    def digest(self) -> str:
        """sha1 of name, size and modification time: changes when the file is replaced."""
        try:
            st = self.path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        return hashlib.sha1(f"{self.name}|{stamp}".encode()).hexdigest()[:16]


def media_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    return "video" if ext in VIDEO_EXTENSIONS else "images" if ext in IMAGE_EXTENSIONS else None


def find_sources(src: str | os.PathLike, speakers_file: str | os.PathLike | None = None
                 ) -> tuple[str, list[Source]]:
    """``(kind, sources)`` of SRC (a folder or a list file), kind ``"video"`` or ``"images"``."""
    src = Path(src)
    if src.is_dir():
        sources = _folder_sources(src)
    elif src.is_file():
        sources = _listed_sources(src)
    else:
        raise FileNotFoundError(f"prepare SRC {str(src)!r} does not exist; give a folder of "
                                f"videos or images, or a text file listing them")
    if speakers_file is not None:
        sources = _with_speakers(sources, _read_speaker_map(Path(speakers_file)))
    kinds = {media_kind(s.path) for s in sources}
    if not sources:
        raise ValueError(f"prepare SRC {str(src)!r} holds no videos ({' '.join(VIDEO_EXTENSIONS)}) "
                         f"or images ({' '.join(IMAGE_EXTENSIONS)})")
    if len(kinds) > 1:
        videos = sum(media_kind(s.path) == "video" for s in sources)
        raise ValueError(f"prepare SRC {str(src)!r} holds both videos ({videos}) and images "
                         f"({len(sources) - videos}); prepare them into separate folders (videos "
                         f"for the talking stages, images for the image stage)")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise ValueError(f"prepare SRC {str(src)!r} lists the same file more than once: {dup}")
    return kinds.pop(), sources


def _folder_sources(root: Path) -> list[Source]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or media_kind(path) is None:
                continue
            rel = path.relative_to(root)
            speaker = rel.parts[0] if len(rel.parts) > 1 else None
            out.append(Source(path=path, name=rel.as_posix(), speaker=speaker))
    return sorted(out, key=lambda s: s.name)


def _listed_sources(list_file: Path) -> list[Source]:
    out = []
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"prepare SRC {str(list_file)!r} is neither a folder nor a text list of "
                         f"files (it is not UTF-8 text); give a folder or a list file") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path_text, speaker = _split_pair(line)
        path = Path(path_text)
        if not path.is_absolute():
            path = list_file.parent / path
        if media_kind(path) is None:
            raise ValueError(f"{str(list_file)!r} line {number}: {path_text!r} is not a video "
                             f"({' '.join(VIDEO_EXTENSIONS)}) or image ({' '.join(IMAGE_EXTENSIONS)})")
        out.append(Source(path=path, name=Path(path_text).as_posix(), speaker=speaker or None))
    return out


def _split_pair(line: str) -> tuple[str, str]:
    for sep in ("\t", ","):
        if sep in line:
            key, _, value = line.partition(sep)
            return key.strip(), value.strip()
    return line, ""


def _read_speaker_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"--speakers {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--speakers {str(path)!r} is not valid JSON ({error})") from None
        return {str(k): str(v) for k, v in data.items()}
    pairs = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = _split_pair(line)
        if not value:
            raise ValueError(f"--speakers {str(path)!r} line {number}: expected "
                             f"'file<TAB or ,>speaker', got {line!r}")
        pairs[key] = value
    return pairs


def _with_speakers(sources: list[Source], speakers: dict[str, str]) -> list[Source]:
    out = []
    for s in sources:
        p = Path(s.name)
        speaker = speakers.get(s.name) or speakers.get(p.name) or speakers.get(p.stem) or s.speaker
        out.append(Source(path=s.path, name=s.name, speaker=speaker))
    return out


def clip_base_id(name: str) -> str:
    """A file-name-safe, unique id for a source name: ``spk1/clip 01.mp4`` ->
    ``spk1__clip_01_mp4-<6 hex of the name>`` (the hash keeps ``a b`` and ``a_b`` apart)."""
    text = re.sub(r"[^A-Za-z0-9_\-]", "_", name.replace("/", "__").replace(".", "_"))
    return f"{text[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
