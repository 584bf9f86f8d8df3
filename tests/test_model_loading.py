"""Loading per slot: a wrong file is refused from its header alone; listing is per slot, cached."""
from __future__ import annotations

import os

import pytest
import torch

from segtalker_core import checkpoints, components, model_loading
from segtalker_core.models import bundles
from segtalker_core.models.random_bundle import write_random_bundles
from segtalker_core.parsing import bisenet


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("loading")
    found = dict(write_random_bundles(out, resolution=64, seed=0))
    net = bisenet.build_bisenet()
    found["bisenet"] = checkpoints.save(out / "parser.safetensors", net.state_dict(),
                                        bisenet.bisenet_bundle_config())
    torch.save(net.state_dict(), out / "79999_iter.pth")
    found["bisenet_pth"] = out / "79999_iter.pth"
    (out / "broken.safetensors").write_bytes(b"not a model")
    found["broken"] = out / "broken.safetensors"
    return found


@pytest.fixture
def no_full_load(monkeypatch):
    """Every way of reading tensor data fails the test."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the file was fully loaded only to be refused")

    monkeypatch.setattr(checkpoints, "load_file", refuse)
    monkeypatch.setattr(checkpoints, "load", refuse)
    monkeypatch.setattr(bundles, "load_component", refuse)
    monkeypatch.setattr(bisenet, "load_bisenet", refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.parametrize("slot, wrong", [
    ("tsg", "generator"), ("encoder", "tsg"), ("generator", "encoder"), ("parser", "tsg"),
    ("tsg", "bisenet"), ("generator", "syncnet"),
])
def test_wrong_component_is_refused_from_the_header(files, no_full_load, slot, wrong):
    with pytest.raises(checkpoints.ComponentMismatchError, match=f"pick a {slot} file"):
        model_loading.load_model(files[wrong], slot=slot)


def test_pth_is_never_a_learned_bundle(files, no_full_load):
    with pytest.raises(checkpoints.ComponentMismatchError, match="always a SegTalker"):
        model_loading.load_model(files["bisenet_pth"], slot="tsg")


def test_right_slot_loads_and_keeps_float32_weights(files):
    for slot, name in (("tsg", "tsg"), ("encoder", "encoder"), ("generator", "generator"),
                       ("parser", "bisenet"), ("parser", "bisenet_pth")):
        model = model_loading.load_model(files[name], slot=slot, precision="bf16")
        assert model.component == slot
        assert model.precision == "bf16" and model.compute_dtype == torch.bfloat16
        assert all(p.dtype == torch.float32 for p in model.torch_module.parameters())


def test_each_slot_lists_only_its_files(files, monkeypatch):
    model_loading.clear_listing_cache()
    every = [files[k] for k in ("tsg", "encoder", "generator", "syncnet", "bisenet",
                                "bisenet_pth", "broken")]
    assert model_loading.files_of_slot(every, "tsg") == [str(files["tsg"])]
    assert model_loading.files_of_slot(every, "encoder") == [str(files["encoder"])]
    assert model_loading.files_of_slot(every, "generator") == [str(files["generator"])]
    assert model_loading.files_of_slot(every, "parser") == [str(files["bisenet"]),
                                                            str(files["bisenet_pth"])]
    # Cached by path + size + mtime: a second listing reads no header.
    def no_read(*_args, **_kwargs):
        raise AssertionError("header read again for an unchanged file")

    monkeypatch.setattr(checkpoints, "read_config", no_read)
    assert model_loading.files_of_slot(every, "tsg") == [str(files["tsg"])]
    monkeypatch.undo()
    # A file replaced in place (new mtime) is read again.
    stat = os.stat(files["tsg"])
    os.utime(files["tsg"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = []
    real = checkpoints.read_config
    monkeypatch.setattr(checkpoints, "read_config", lambda p: calls.append(p) or real(p))
    assert model_loading.files_of_slot(every, "tsg") == [str(files["tsg"])]
    assert len(calls) == 1


def test_one_registry():
    # checkpoints and bundles read components.py instead of keeping their own lists.
    assert dict(checkpoints.COMPONENTS) == {n: c.title for n, c in components.COMPONENTS.items()}
    assert dict(bundles.REGISTRY) == dict(components.LEARNED)
    assert components.components_for("parser") == ("bisenet",)
    assert components.COMPONENTS["tsg"].socket == "SEGTALKER_TSG"
    assert checkpoints.default_config("bisenet") == bisenet.bisenet_bundle_config()


def test_checkpoints_does_not_import_the_parser():
    import subprocess
    import sys

    code = ("import sys; import segtalker_core.checkpoints as c; c.default_config('bisenet'); "
            "print('segtalker_core.parsing.bisenet' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
