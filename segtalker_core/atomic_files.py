"""Output files that appear whole or not at all, and never over an input.

Every file the pack writes (videos, images, label maps, bundles) goes through
:func:`atomic_output`:

* the target must be a regular file or not exist yet (never a device such as ``/dev/full``);
* the writer fills a hidden temporary file in the target's own folder
  (``.NAME.partial-XXXXXXXX.SUFFIX``: same file system, so the final rename is atomic, and the same
  suffix, so writers that pick a format from the name still do);
* on success the temporary file is flushed to disk (``fsync``), renamed over the target, and the
  folder entry is flushed too. A file already at the target is untouched until that rename;
* on any failure, Ctrl-C or signal that reaches Python (the CLI turns SIGTERM and SIGHUP into an
  exception, see :mod:`.cli`) the temporary file is removed. Only a ``kill -9`` or a power cut can
  leave one behind, and then only under its ``.partial-`` name, never a broken file at the target;
* the file is created with mode ``0666`` less the user's umask (``0644`` by default), as any
  other program's output would be;
* two runs writing one target at once each fill their own temporary file; the last rename wins and
  the target is always one complete file.

:func:`check_output_path` refuses, before any work, an output that is empty, a folder, in a
missing folder, or the same file as one of the inputs (also through symlinks and hard links).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PathLike = str | os.PathLike

PARTIAL_MARK = ".partial-"  # in every temporary file's name; ``kill -9`` leftovers carry it


def check_output_path(path: PathLike, inputs: Mapping[str, PathLike | None] | None = None,
                      what: str = "output") -> Path:
    """The output ``path`` as a :class:`Path`, after refusing what would lose or misplace data.

    ``inputs``: ``{name: path}`` of the files the run reads (None values are skipped); an output
    that is any of them is refused, so a typo cannot overwrite the portrait or the speech.
    ``what`` names the option in messages (e.g. ``"-o"``). Raises ValueError or
    FileNotFoundError with a message that says what to do.
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{what} is empty: give the file name to write")
    out = Path(text)
    if out.is_dir():
        raise ValueError(f"{what} {text!r} is a folder: give a file name inside it "
                         f"(e.g. {os.path.join(text, 'out' + (out.suffix or '.mp4'))!r})")
    if out.exists() and not out.is_file():
        # A device (/dev/full), fifo or socket: renaming over it would replace the node itself.
        raise ValueError(f"{what} {text!r} exists and is not a regular file; write to a file")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {text!r}: the folder {str(folder)!r} does not exist; "
                                "create it first or write elsewhere")
    for name, source in (inputs or {}).items():
        if source is None:
            continue
        if _same_file(out, Path(os.fspath(source))):
            raise ValueError(f"{what} {text!r} is the same file as the {name} {os.fspath(source)!r}; "
                             "writing it would destroy the input. Choose another output name")
    return out


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: equal resolved paths (symlinks followed, even when
    ``a`` does not exist yet) or, when both exist, one inode (hard links)."""
    try:
        if a.resolve() == b.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: compare inodes below
        pass
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def partial_path(target: Path) -> Path:
    """A fresh hidden temporary name next to ``target`` with the same suffix."""
    return target.with_name(f".{target.name}{PARTIAL_MARK}{secrets.token_hex(4)}{target.suffix}")


@contextmanager
def atomic_output(path: PathLike, inputs: Mapping[str, PathLike | None] | None = None,
                  what: str = "output") -> Iterator[Path]:
    """Yield a temporary path to write; it becomes ``path`` only if the block succeeds.

    >>> with atomic_output("out.png", inputs={"--image": "in.png"}, what="-o") as tmp:
    ...     write_png(tmp, pixels)          # any writer that takes a path

    The temporary file exists (empty, with the umask's mode) when the block starts, so writers
    that open it for writing keep that mode. A block that leaves it empty is still an error:
    nothing was written, so nothing replaces the target.
    """
    target = check_output_path(path, inputs, what)
    tmp = partial_path(target)
    # O_EXCL: never reuse a name; 0o666: the kernel applies the umask, as for any program's output.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"nothing was written to {os.fspath(target)!r}")
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    finally:
        # BaseException too: Ctrl-C and the CLI's SIGTERM/SIGHUP exception must not leave it.
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def write_bytes(path: PathLike, data: bytes, inputs: Mapping[str, PathLike | None] | None = None,
                what: str = "output") -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_output`; returns the path written."""
    with atomic_output(path, inputs, what) as tmp:
        with open(tmp, "wb") as out:
            out.write(data)
    return Path(os.fspath(path))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder (Windows cannot)."""
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
