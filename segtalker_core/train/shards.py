"""On-disk format of a prepared dataset: one uncompressed ``.npz`` shard per clip + ``index.json``.

Layout of a prepared folder (``python -m segtalker_core prepare SRC OUT``)::

    OUT/index.json            what is done: settings, clips (id, speaker, split, frames, shard,
                              sha256), skipped sources with the reason
    OUT/clips/<clip id>.npz   one shard per clip (video segment) or per block of images

A shard is a plain numpy ``.npz`` (``np.load`` reads it anywhere) written *uncompressed*, so
:func:`open_shard` can memory-map each member: a training step reads only the frames it uses,
whatever the clip's length. Members:

* ``crops``   uint8 ``[T, S, S, 3]`` aligned face crops (RGB), ``S`` = the index's ``crop_size``;
* ``regions`` uint8 ``[T, S, S]`` 12-region maps (``labels.REGIONS_12``) of the crops;
* ``found``   bool ``[T]``: a face was found in that frame (crops/maps of other frames are zero);
* ``mel``     float32 ``[80, M]``: the Wav2Lip mel (``audio/mel.py``) of the clip's audio, column
  0 being the clip's absolute mel step ``meta["mel_first_step"]`` (video shards only);
* ``meta``    a 0-d string array holding JSON (clip id, source, speaker, fps, start frame...).

A shard appears whole or not at all (``atomic_files.atomic_output``: a hidden ``.partial-`` file
renamed when complete), and a clip counts as done only when ``index.json`` lists it *and* its
shard opens with every member (:func:`shard_is_complete`). The index itself is rewritten
atomically after every finished clip, by the one process that owns it.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_output

FORMAT_NAME = "segtalker-prepared-dataset"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SHARD_FOLDER = "clips"
VIDEO_MEMBERS = ("crops", "regions", "found", "mel", "meta")
IMAGE_MEMBERS = ("crops", "regions", "found", "meta")
KINDS = ("video", "images")
SPLITS = ("train", "val")

# zip local file header: signature ... file name length, extra field length (APPNOTE 4.3.7).
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"


class DatasetFormatError(ValueError):
    """A prepared folder or shard that is not what :mod:`shards` writes."""


# ---------------------------------------------------------------------------------------- index

@dataclass
class ClipRecord:
    """One finished clip as the index lists it."""

    id: str  # unique in the dataset; also the shard's file stem
    source: str  # the video/image path it came from (as given to prepare)
    speaker: str | None  # None: unknown
    group: str  # what the split keeps together: the speaker or the source video
    split: str  # "train" or "val"
    frames: int  # T, frames in the shard (25 fps for video)
    faces: int  # frames with a face
    shard: str  # path relative to the dataset folder
    sha256: str  # of the shard file
    start_frame: int = 0  # first frame's index in the 25 fps source (segments of long videos)
    source_digest: str = ""  # of the source's name, size and mtime: a changed file is redone
    unit: str = ""  # what prepare did in one go: the source video, or the image block's id

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipRecord":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class SkipRecord:
    """A source (or part of one) that produced no clip, and why. ``source_digest`` as in
    :class:`ClipRecord`: a changed file is tried again."""

    source: str
    reason: str
    source_digest: str = ""
    unit: str = ""  # as in ClipRecord


@dataclass
class DatasetIndex:
    """``index.json``: the settings a folder was prepared with, its clips and skipped sources."""

    kind: str  # "video" or "images"
    crop_size: int
    fps: int
    sample_rate: int
    parser: str
    settings: dict[str, Any] = field(default_factory=dict)
    clips: list[ClipRecord] = field(default_factory=list)
    skipped: list[SkipRecord] = field(default_factory=list)

    def to_json(self) -> str:
        data = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.kind,
                "crop_size": self.crop_size, "fps": self.fps, "sample_rate": self.sample_rate,
                "parser": self.parser, "settings": self.settings,
                "clips": [asdict(c) for c in self.clips],
                "skipped": [asdict(s) for s in self.skipped]}
        return json.dumps(data, indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "DatasetIndex":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetFormatError(f"{where} is not valid JSON ({error}); it is not an index "
                                     f"written by 'prepare' (re-run prepare into a new folder)") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise DatasetFormatError(f"{where} is not a SegTalker prepared-dataset index (no "
                                     f"\"format\": \"{FORMAT_NAME}\"); point at the folder "
                                     f"'prepare' wrote")
        if data.get("version") != FORMAT_VERSION:
            raise DatasetFormatError(f"{where} has format version {data.get('version')!r}; this "
                                     f"SegTalker reads version {FORMAT_VERSION}")
        if data.get("kind") not in KINDS:
            raise DatasetFormatError(f"{where}: kind must be one of {KINDS}, got {data.get('kind')!r}")
        return cls(kind=data["kind"], crop_size=int(data["crop_size"]), fps=int(data["fps"]),
                   sample_rate=int(data["sample_rate"]), parser=str(data["parser"]),
                   settings=dict(data.get("settings") or {}),
                   clips=[ClipRecord.from_dict(c) for c in data.get("clips", [])],
                   skipped=[SkipRecord(**{k: s[k] for k in SkipRecord.__dataclass_fields__ if k in s})
                            for s in data.get("skipped", [])])


def index_path(root: str | os.PathLike) -> Path:
    return Path(root) / INDEX_NAME


def read_index(root: str | os.PathLike) -> DatasetIndex:
    """The index of a prepared folder; errors say what the folder is instead."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"prepared dataset folder {str(root)!r} does not exist; make it "
                                f"with: python -m segtalker_core prepare SRC {root}")
    path = index_path(root)
    if not path.is_file():
        raise DatasetFormatError(f"{str(root)!r} has no {INDEX_NAME}: it is not a prepared dataset "
                                 f"(or prepare never finished a clip there); run: python -m "
                                 f"segtalker_core prepare SRC {root}")
    return DatasetIndex.from_json(path.read_text(encoding="utf-8"), str(path))


def write_index(root: str | os.PathLike, index: DatasetIndex) -> None:
    with atomic_output(index_path(root), what="dataset index") as tmp:
        tmp.write_text(index.to_json(), encoding="utf-8")


# ---------------------------------------------------------------------------------------- shards

def shard_relpath(clip_id: str) -> str:
    return f"{SHARD_FOLDER}/{clip_id}.npz"


def write_shard(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """Write one shard atomically; returns its sha256. ``arrays``: the members (see module doc)."""
    members = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    members["meta"] = np.array(json.dumps(meta, sort_keys=True))
    _check_members(members, Path(path))
    with atomic_output(path, what="dataset shard") as tmp:
        with open(tmp, "wb") as out:
            np.savez(out, **members)  # uncompressed: members stay memory-mappable
        digest = file_sha256(tmp)
    return digest


def _check_members(members: dict[str, np.ndarray], path: Path) -> None:
    crops, regions, found = members["crops"], members["regions"], members["found"]
    t = len(found)
    assert crops.dtype == np.uint8 and crops.ndim == 4 and crops.shape[0] == t \
        and crops.shape[3] == 3 and crops.shape[1] == crops.shape[2], (path, crops.shape)
    assert regions.dtype == np.uint8 and regions.shape == crops.shape[:3], (path, regions.shape)
    assert found.dtype == np.bool_ and found.shape == (t,), (path, found.shape)
    if "mel" in members:
        mel = members["mel"]
        assert mel.dtype == np.float32 and mel.ndim == 2 and mel.shape[0] == 80, (path, mel.shape)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Shard:
    """A shard opened for reading: members memory-mapped (read-only), ``meta`` decoded."""

    path: Path
    crops: np.ndarray  # [T, S, S, 3] uint8
    regions: np.ndarray  # [T, S, S] uint8
    found: np.ndarray  # [T] bool
    mel: np.ndarray | None  # [80, M] float32 (video shards)
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.found.shape[0])


def open_shard(path: str | os.PathLike) -> Shard:
    """Memory-map a shard's members. A truncated, compressed or foreign file is a
    :class:`DatasetFormatError` naming it."""
    path = Path(path)
    arrays = _mapped_members(path)
    missing = [m for m in IMAGE_MEMBERS if m not in arrays]
    if missing:
        raise DatasetFormatError(f"shard {str(path)!r} lacks {missing}; it was not written by "
                                 f"'prepare' (delete it and re-run prepare to rebuild it)")
    try:
        meta = json.loads(str(arrays["meta"][()]))
    except (json.JSONDecodeError, TypeError) as error:
        raise DatasetFormatError(f"shard {str(path)!r}: unreadable meta ({error})") from None
    return Shard(path=path, crops=arrays["crops"], regions=arrays["regions"],
                 found=np.asarray(arrays["found"]), mel=arrays.get("mel"), meta=meta)


def shard_is_complete(path: str | os.PathLike, kind: str = "video") -> bool:
    """Whether ``path`` is a whole shard with every member (a resumed prepare redoes it if not)."""
    try:
        arrays = _mapped_members(Path(path))
    except (OSError, DatasetFormatError):
        return False
    members = VIDEO_MEMBERS if kind == "video" else IMAGE_MEMBERS
    return all(m in arrays for m in members)


def _mapped_members(path: Path) -> dict[str, np.ndarray]:
    """``{member: array}``, each a read-only memmap into the stored (uncompressed) zip entry."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DatasetFormatError(f"shard {str(path)!r} is truncated or not an .npz ({error}); "
                                 f"delete it and re-run prepare") from None
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for info in infos:
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            if info.compress_type != zipfile.ZIP_STORED:
                raise DatasetFormatError(f"shard {str(path)!r}: member {name!r} is compressed; "
                                         f"shards are written uncompressed (np.savez) so they can "
                                         f"be memory-mapped")
            f.seek(info.header_offset)
            header = f.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
                raise DatasetFormatError(f"shard {str(path)!r}: broken zip entry {name!r}")
            fields = _LOCAL_HEADER.unpack(header)
            f.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            if dtype.hasobject or fortran:
                raise DatasetFormatError(f"shard {str(path)!r}: member {name!r} is not a plain "
                                         f"C-order array")
            offset = f.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > size:
                raise DatasetFormatError(f"shard {str(path)!r} is truncated (member {name!r})")
            if nbytes == 0:
                out[name] = np.zeros(shape, dtype)
            elif shape == ():
                out[name] = np.fromfile(f, dtype=dtype, count=1).reshape(())
            else:
                out[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    return out
