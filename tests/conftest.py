"""Shared fixtures. The repository root is the custom-node folder; tests import ``segtalker_core``
from it, and the ComfyUI harness (``comfyui_host``) from this folder.

Fixtures (session-scoped):

* ``comfyui_dir``      -- unpacked ComfyUI 0.3.75 (downloaded once into the test cache). If it cannot
                          be obtained the test is skipped with the reason, or FAILS when
                          ``SEGTALKER_REQUIRE_COMFYUI=1`` (``.ci/run`` sets it).
* ``pack_description`` -- the pack imported as ComfyUI does, every schema built (``describe_pack``).
* ``comfyui_server``   -- a running ``ComfyUIServer`` with this pack linked in, stopped at the end.
* ``prepared_dataset`` -- the folder of a small real training dataset: talking clips rendered by
                          the built-in chain, prepared by the ``prepare`` CLI (``train_data.py``);
                          its source videos are in ``train_data.source_folder(root)``.

Marker ``mediapipe_reference`` (added here to every test that uses the ``mp_solutions`` fixture):
the comparisons against mediapipe 0.10.14 itself. mediapipe has no wheel for Python 3.13, so
``.ci/run``'s 3.13 leg deselects them (``-m "not mediapipe_reference"``, counted in pytest's
"deselected"); the main leg (Python 3.11, mediapipe installed) runs them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
for _p in (str(REPO_DIR), str(TESTS_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import comfyui_host  # noqa: E402


MEDIAPIPE_REFERENCE = "mediapipe_reference"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MEDIAPIPE_REFERENCE}: compares against mediapipe 0.10.14 itself (no wheel for "
                   "Python 3.13: the 3.13 CI leg deselects these)")


# tryfirst: the marker must be on the items before pytest's own -m selection looks at them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "mp_solutions" in getattr(item, "fixturenames", ()):
            item.add_marker(MEDIAPIPE_REFERENCE)


def _unavailable(reason: str):
    comfyui_host.skip_or_fail(f"real ComfyUI unavailable: {reason}")


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    try:
        return comfyui_host.ensure_comfyui()
    except comfyui_host.ComfyUIUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def pack_description(comfyui_dir) -> dict:
    return comfyui_host.describe_pack(comfyui_dir, REPO_DIR)


@pytest.fixture(scope="session")
def comfyui_server(comfyui_dir, tmp_path_factory):
    server = comfyui_host.ComfyUIServer(comfyui_dir, REPO_DIR, tmp_path_factory.mktemp("comfyui"))
    try:
        server.start()
        sys.stderr.write(f"\n[comfyui] booted in {server.boot_seconds:.1f} s on {server.url}, "
                         f"log {server.log_path}\n")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prepared_dataset(tmp_path_factory) -> Path:
    import train_data

    return train_data.build_prepared_dataset(tmp_path_factory.mktemp("train_data")).root
