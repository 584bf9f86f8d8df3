"""The hostile-input table (``tools/hostile_inputs.py``), each case a test: the real CLI in its own
process, in a folder of its own, judged on exit code, the one ``error:`` line and the files left.

The script prints the same table for people; this module makes it a gate, so a case that regresses
fails CI. The cases themselves (and what each expects) live in the script, once.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import hostile_inputs  # noqa: E402


@pytest.mark.parametrize("case", hostile_inputs.CASES, ids=[c.name for c in hostile_inputs.CASES])
def test_hostile_case(case: hostile_inputs.Case, tmp_path: Path) -> None:
    outcome = hostile_inputs.run_case(case, tmp_path)
    if outcome.not_applicable:
        # Only the real-disk cases (a tmpfs needs root); the monkeypatched disk-full test in
        # test_video_files_hostile.py covers the behaviour everywhere.
        pytest.skip(outcome.not_applicable)
    assert outcome.passed, (
        f"{case.name}: {'; '.join(outcome.failures)}\n"
        f"  exit {outcome.code}, message: {outcome.message!r}\n  files left: {outcome.files}"
    )


def test_table_names_are_unique() -> None:
    names = [c.name for c in hostile_inputs.CASES]
    assert len(names) == len(set(names))
