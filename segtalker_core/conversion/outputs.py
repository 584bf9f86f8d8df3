"""Where a converter that writes several bundles puts them."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def bundle_paths(src: str | os.PathLike[str], out: str | os.PathLike[str],
                 components: Iterable[str]) -> dict[str, Path]:
    """``{component: path}``: ``<out>/<source stem>_<component>.safetensors`` for an existing
    folder ``out``, else ``<out>_<component>.safetensors`` (``out`` is a name prefix; a trailing
    ``.safetensors`` is dropped from it first, so ``-o ffhq.safetensors`` means ``ffhq_...``)."""
    out_path = Path(out)
    if out_path.is_dir():
        stem = out_path / Path(src).stem
    else:
        text = os.fspath(out_path)
        stem = Path(text[: -len(".safetensors")] if text.lower().endswith(".safetensors") else text)
    return {c: stem.with_name(f"{stem.name}_{c}.safetensors") for c in components}
