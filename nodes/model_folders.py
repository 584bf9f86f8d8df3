"""Model folders under ComfyUI's ``models/`` and the files in them."""
from __future__ import annotations

import os

FACE_PARSING = "face_parsing"
SEGTALKER = "segtalker"
WEIGHT_EXTENSIONS = {".safetensors", ".pth", ".pt"}


def register_model_folders() -> None:
    """Register ``models/face_parsing`` and ``models/segtalker`` with an extension filter.

    ``folder_paths.add_model_folder_path`` would set no filter, so the entry is written directly;
    paths a user already configured (extra_model_paths.yaml) are kept.
    """
    import folder_paths

    for name in (FACE_PARSING, SEGTALKER):
        default = os.path.join(folder_paths.models_dir, name)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        paths = list(paths)
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | WEIGHT_EXTENSIONS)


def list_files(folder: str) -> list[str]:
    import folder_paths

    register_model_folders()
    return [f"{folder}/{name}" for name in folder_paths.get_filename_list(folder)]


def full_path(choice: str) -> str | None:
    """``"<folder>/<file>"`` -> absolute path, or None when it is not there."""
    import folder_paths

    folder, _, name = choice.partition("/")
    if folder not in (FACE_PARSING, SEGTALKER) or not name:
        return None
    return folder_paths.get_full_path(folder, name)


def resolve(choice: str) -> str:
    """``"face_parsing/79999_iter.pth"`` -> absolute path, or an error naming the folders searched."""
    import folder_paths

    register_model_folders()
    folder, _, name = choice.partition("/")
    if folder not in (FACE_PARSING, SEGTALKER) or not name:
        raise ValueError(f"model choice {choice!r} is not '<folder>/<file>'; pick a file from the list")
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder))
        raise FileNotFoundError(
            f"model file {name!r} was not found in models/{folder} (searched: {searched}); "
            f"put the file there and refresh the node list"
        )
    return path
