"""Region multi-select as one BOOLEAN toggle per region.

ComfyUI's multi-select combo is not reliably serialised by the frontend, so regions are toggles
(the convention of other face-parsing packs); it works the same in the UI and in API prompts.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..segtalker_core.labels import REGIONS_12


def region_toggles(default_on: tuple[str, ...]) -> list[io.Boolean.Input]:
    return [
        io.Boolean.Input(name, default=name in default_on, tooltip=f"include the {name} region")
        for name in REGIONS_12
    ]


def selected_regions(kwargs: dict) -> list[str]:
    return [name for name in REGIONS_12 if kwargs.get(name, False)]
