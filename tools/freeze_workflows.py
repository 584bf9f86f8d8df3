"""Freezes the shipped example workflows as the interface later versions must keep loading.

    .venv/bin/python tools/freeze_workflows.py [--archive NAME]

Copies every ``example_workflows/<name>.json`` (UI format) and its ``api_workflows/<name>.api.json``
into ``tests/frozen_workflows/``. ``--archive NAME`` first moves the frozen pairs this changes into
``tests/frozen_workflows/NAME/``, where the test keeps loading them: workflows saved with the older
interface must go on opening (e.g. ``before-blend``: before Paste Back, Talk and Talk Video got
their ``blend`` widget). ``tests/test_browser_frontend.py`` loads each frozen UI file in the
real frontend and checks that it still converts to its frozen API file: node ids, input names,
socket types and widget order (UI ``widgets_values`` are positional) may not change without a
migration. Run it only when the interface is deliberately frozen anew (a migration shipped), never
to make a failing frozen test pass.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "api_workflows"
FROZEN = REPO / "tests" / "frozen_workflows"


def _pair(folder_ui: Path, folder_api: Path, name: str) -> tuple[bytes, bytes] | None:
    ui, api = folder_ui / f"{name}.json", folder_api / f"{name}.api.json"
    return (ui.read_bytes(), api.read_bytes()) if ui.is_file() and api.is_file() else None


def archive(name: str) -> None:
    """Move the frozen pairs of the top folder that the new freeze changes into ``FROZEN / name``
    (which must be new); a pair the examples still match exactly is frozen again as it is."""
    folder = FROZEN / name
    if folder.exists():
        raise SystemExit(f"{folder} exists already: pick another archive name")
    frozen = sorted(p.stem for p in FROZEN.glob("*.json") if not p.name.endswith(".api.json"))
    changed = [n for n in frozen if _pair(FROZEN, FROZEN, n) != _pair(UI_DIR, API_DIR, n)]
    if not changed:
        raise SystemExit(f"every frozen workflow matches its example: nothing to archive")
    folder.mkdir()
    for n in changed:
        for path in (FROZEN / f"{n}.json", FROZEN / f"{n}.api.json"):
            if path.is_file():
                path.rename(folder / path.name)
    print(f"archived {', '.join(changed)} in {folder.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", metavar="NAME",
                        help="keep the files frozen until now in tests/frozen_workflows/NAME/")
    args = parser.parse_args(argv)
    FROZEN.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in UI_DIR.glob("*.json"))
    missing = [n for n in names if not (API_DIR / f"{n}.api.json").is_file()]
    if missing:
        print(f"no API-format twin in {API_DIR} for: {missing}", file=sys.stderr)
        return 1
    if args.archive:
        archive(args.archive)
    for name in names:
        for src in (UI_DIR / f"{name}.json", API_DIR / f"{name}.api.json"):
            json.loads(src.read_text())  # only well-formed files get frozen
            shutil.copyfile(src, FROZEN / src.name)
        print(f"froze {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
