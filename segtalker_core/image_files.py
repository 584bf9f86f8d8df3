"""Image files in and out: what the CLI reads (``--image``, ``--swap``, ``parse``) and writes.

Reading (:func:`read_image`) gives the core's pixel format, RGB ``uint8 [H, W, 3]``, through
:func:`.face.image.to_rgb_uint8` (so grey, 16-bit and alpha follow its one policy: alpha is
composited on black, 16-bit is scaled to 8):

* the EXIF orientation is applied, so a phone photo stored sideways comes out upright as every
  viewer shows it;
* the whole image is decoded while the file is read: a file cut short (an interrupted download or
  copy) is an error naming it, never a half-grey picture. Pillow's own check can be switched off
  process-wide (``ImageFile.LOAD_TRUNCATED_IMAGES``, which ComfyUI turns on for a moment to load
  broken uploads); when it is off, PNG and JPEG files are checked here for their end marker, so
  the answer does not depend on what another thread set;
* a missing file, a folder, a text file or an unknown format is a ``FileNotFoundError`` /
  ``ValueError`` that names the file and says what to give instead.

Pillow keeps the high byte of 16-bit *colour* PNGs (16-bit grey is scaled by ``to_rgb_uint8``);
that is at most one level away from rounding, invisible, and the same in every viewer.

Writing (:func:`write_image`, :func:`write_label_png`) goes through
:func:`.atomic_files.write_bytes`: the file appears whole or not at all, never over an input, with
the umask's mode. The format comes from the extension, which is checked before any work
(:func:`check_image_output`, :func:`check_label_output`); label maps are PNG only, since a lossy
format would change the labels.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .atomic_files import PathLike, check_output_path, write_bytes
from .face.image import to_rgb_uint8
from .logs import get_logger

log = get_logger("image")

# Extension -> Pillow format name. JPEG and WebP are written at quality 95 (previews, not archives).
IMAGE_FORMATS: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
    ".tif": "TIFF", ".tiff": "TIFF",
}
_LOSSY_QUALITY = 95
LABEL_CLASSES = 19  # label maps hold the 19 BiSeNet classes, values 0..18

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START = b"\xff\xd8"


# -- reading ------------------------------------------------------------------------------------

def read_image(path: PathLike, name: str = "image") -> np.ndarray:
    """The image file at ``path`` as RGB ``uint8 [H, W, 3]``, upright (EXIF orientation applied).

    ``name`` says which input it is in messages (e.g. ``"--image"``). Raises FileNotFoundError
    (missing), ValueError (a folder, not an image, truncated or corrupt, too large to decode
    safely) or OSError from the file system (no permission, I/O error).
    """
    from PIL import Image, UnidentifiedImageError

    text = os.fspath(path)
    label = f"{name} {text!r}"
    _check_readable_file(Path(text), label)
    try:
        with Image.open(text) as image:
            _decode_whole(image, label)
            _check_complete(Path(text), image.format, label)
            upright = _upright(image, label)
            pixels = _pixels(upright)
    except UnidentifiedImageError:
        raise ValueError(
            f"{label} is not an image that can be read (empty, text, or an unsupported format); "
            f"give a PNG, JPEG, WebP, BMP or TIFF file"
        ) from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"{label} is too large to decode safely ({error}); downscale it first") from None
    try:
        return to_rgb_uint8(pixels, label)
    except TypeError as error:  # a pixel type no image policy covers: bad input, not a bug
        raise ValueError(str(error)) from None


def _check_readable_file(path: Path, label: str) -> None:
    if path.is_dir():
        raise ValueError(f"{label} is a folder; give an image file (e.g. one inside it)")
    if not path.exists():
        raise FileNotFoundError(f"{label} does not exist; check the path")


def _decode_whole(image, label: str) -> None:
    """Decode every pixel now (Pillow decodes lazily), turning a cut-short file into one error."""
    import struct

    try:
        image.load()
    except OSError as error:
        if error.errno is not None:  # a real file-system error (EIO, ...): the CLI names it
            raise
        raise ValueError(f"{label} is truncated or corrupt ({error}); export or copy it again") from None
    except (SyntaxError, ValueError, EOFError, struct.error, IndexError) as error:
        raise ValueError(f"{label} is truncated or corrupt ({error}); export or copy it again") from None


def _check_complete(path: Path, image_format: str | None, label: str) -> None:
    """With Pillow's truncation check switched off process-wide, check PNG and JPEG files for
    their end marker here (Pillow would have filled the missing part with grey)."""
    from PIL import ImageFile

    if not ImageFile.LOAD_TRUNCATED_IMAGES or image_format not in ("PNG", "JPEG"):
        return
    data = path.read_bytes()
    complete = _png_reaches_end(data) if image_format == "PNG" else _jpeg_reaches_end(data)
    if not complete:
        raise ValueError(f"{label} is truncated or corrupt (its end marker is missing); "
                         "export or copy it again")


def _png_reaches_end(data: bytes) -> bool:
    """Whether the PNG's chunks, followed by their lengths, reach its IEND chunk."""
    if not data.startswith(_PNG_SIGNATURE):
        return False
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"IEND":
            return True
        pos += 12 + length  # length, type, data, CRC
    return False


def _jpeg_reaches_end(data: bytes) -> bool:
    """Whether the JPEG's markers lead to its end-of-image marker (FF D9).

    Segments are skipped by their length (an EXIF thumbnail's own end marker is inside one);
    entropy-coded data is scanned for the next marker, past stuffed ``FF 00`` bytes, restart
    markers and fill bytes. Data after the end marker (some phones append their own) is ignored.
    """
    if not data.startswith(_JPEG_START):
        return False
    pos = len(_JPEG_START)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return False
        marker = data[pos + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length follows
            pos += 2
        else:
            if pos + 4 > len(data):
                return False
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _upright(image, label: str):
    """``image`` turned as its EXIF orientation says; a damaged EXIF block keeps the stored
    pixels (with a warning) rather than losing the photo."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # Pillow raises several types for malformed EXIF
        log.warning("%s: its EXIF orientation cannot be read (%s); using the pixels as stored",
                    label, error)
        return image


def _pixels(image) -> np.ndarray:
    """A Pillow image as the array ``to_rgb_uint8`` takes: grey, grey+alpha, RGB or RGBA in
    uint8, bool, uint16 or float; other modes (palette, CMYK, YCbCr, ...) are converted by Pillow."""
    mode = image.mode
    if mode in ("1", "L", "LA", "RGB", "RGBA", "F"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # native byte order (I;16B is big-endian)
    if mode == "I":
        values = np.asarray(image)
        # 32-bit grey: 16-bit data from some TIFF writers; 8-bit-range values stay as they are.
        if values.size and values.min() >= 0 and 255 < values.max() <= 65535:
            return values.astype(np.uint16)
        return values
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info
        return np.asarray(image.convert("RGBA" if transparent else "RGB"))
    return np.asarray(image.convert("RGBA" if "A" in mode or "a" in mode else "RGB"))


# -- writing ------------------------------------------------------------------------------------

def image_format(path: PathLike, what: str = "output") -> str:
    """The Pillow format for ``path``'s extension; ValueError naming the accepted ones."""
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        shown = suffix or "no extension"
        raise ValueError(f"{what} {os.fspath(path)!r} has {shown}, which is not an image type "
                         f"written here; end the name with {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def check_image_output(path: PathLike, inputs: Mapping[str, PathLike | None] | None = None,
                       what: str = "output") -> Path:
    """Refuse, before any work, an image output that cannot be written (see
    :func:`.atomic_files.check_output_path`) or whose extension is not an image type."""
    out = check_output_path(path, inputs, what)
    image_format(out, what)
    return out


def check_label_output(path: PathLike, inputs: Mapping[str, PathLike | None] | None = None,
                       what: str = "labels") -> Path:
    """As :func:`check_image_output`, for a label map: the name must end with ``.png``."""
    out = check_output_path(path, inputs, what)
    if out.suffix.lower() != ".png":
        raise ValueError(
            f"{what} {os.fspath(path)!r}: label maps are written only as PNG, which is lossless; "
            f"a {out.suffix or 'file without extension'} could change the label values. "
            "End the name with .png"
        )
    return out


def encode_image(rgb, image_type: str) -> bytes:
    """RGB pixels (anything :func:`to_rgb_uint8` takes) as the bytes of a ``image_type`` file
    (a Pillow format name, see :data:`IMAGE_FORMATS`)."""
    from PIL import Image

    pixels = to_rgb_uint8(rgb, "image to write")
    options = {"quality": _LOSSY_QUALITY} if image_type in ("JPEG", "WEBP") else {}
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=image_type, **options)
    return buffer.getvalue()


def encode_label_png(labels) -> bytes:
    """A label map ``[H, W]`` of integers 0..18 as the bytes of an 8-bit grey PNG (exact)."""
    from PIL import Image

    values = np.asarray(labels)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"a label map must be one [H, W] array, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == np.bool_):
        raise TypeError(f"a label map must hold integers, got dtype {values.dtype}")
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= LABEL_CLASSES:
        raise ValueError(f"a label map holds classes 0..{LABEL_CLASSES - 1}, got values {low}..{high}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: PathLike, rgb, inputs: Mapping[str, PathLike | None] | None = None,
                what: str = "output") -> Path:
    """Write RGB pixels to ``path`` in the format its extension names, atomically; ``inputs``
    (``{name: path}``) are files it must not be. Returns the path written."""
    out = check_image_output(path, inputs, what)
    return write_bytes(out, encode_image(rgb, image_format(out, what)), inputs, what)


def write_label_png(path: PathLike, labels, inputs: Mapping[str, PathLike | None] | None = None,
                    what: str = "labels") -> Path:
    """Write a label map (values 0..18) to the PNG ``path``, atomically. Returns the path."""
    out = check_label_output(path, inputs, what)
    return write_bytes(out, encode_label_png(labels), inputs, what)
