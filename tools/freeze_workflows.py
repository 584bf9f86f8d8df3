"""Freezes the shipped example workflows as the interface later versions must keep loading.

    .venv/bin/python tools/freeze_workflows.py

Copies every ``example_workflows/<name>.json`` (UI format) and its ``api_workflows/<name>.api.json``
into ``tests/frozen_workflows/``. ``tests/test_browser_frontend.py`` loads each frozen UI file in the
real frontend and checks that it still converts to its frozen API file: node ids, input names,
socket types and widget order (UI ``widgets_values`` are positional) may not change without a
migration. Run it only when the interface is deliberately frozen anew (a migration shipped), never
to make a failing frozen test pass.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
FROZEN = REPO / "tests" / "frozen_workflows"


def main() -> int:
    FROZEN.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in UI_DIR.glob("*.json"))
    missing = [n for n in names if not (API_DIR / f"{n}.api.json").is_file()]
    if missing:
        print(f"no API-format twin in {API_DIR} for: {missing}", file=sys.stderr)
        return 1
    for name in names:
        for src in (UI_DIR / f"{name}.json", API_DIR / f"{name}.api.json"):
            json.loads(src.read_text())  # only well-formed files get frozen
            shutil.copyfile(src, FROZEN / src.name)
        print(f"froze {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
