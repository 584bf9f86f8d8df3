"""``python -m segtalker_core convert`` / ``describe`` on whatever file a user has: a rosinality
StyleGAN2 ``.pt`` becomes two bundles, a pack component's ``.pth`` one; both are described.
(The converters themselves are tested in test_convert_rosinality.py and test_checkpoints.py.)"""
from __future__ import annotations

import torch

from segtalker_core import checkpoints, cli
from test_convert_rosinality import LAYOUT_64, random_weights, read_layout


def rosinality_file(folder, name="stylegan2-test-config-f.pt"):
    _, g, _ = read_layout(LAYOUT_64)
    path = folder / name
    torch.save({"g_ema": random_weights(g, 1, 4.0), "latent_avg": torch.zeros(512)}, path)
    return path


def bisenet_file(folder):
    """A face parser in the layout of 79999_iter.pth (random weights)."""
    from segtalker_core.parsing.bisenet import build_bisenet

    path = folder / "79999_iter.pth"
    torch.save(build_bisenet().state_dict(), path)
    return path


def test_a_rosinality_file_becomes_a_generator_bundle_next_to_it(tmp_path, capsys):
    src = rosinality_file(tmp_path)
    assert cli.main(["convert", str(src)]) == 0
    out = capsys.readouterr().out
    generator = tmp_path / "stylegan2-test-config-f_generator.safetensors"
    assert f"wrote {generator} (component: generator)" in out
    assert checkpoints.read_config(generator).component == "generator"
    assert cli.main(["describe", str(src), str(generator)]) == 0
    described = capsys.readouterr().out.splitlines()
    assert "rosinality StyleGAN2" in described[0] and "64 px" in described[0]
    assert described[1].startswith(f"{generator}: mask-guided StyleGAN generator, 64 px, ")


def test_a_rosinality_file_with_an_output_prefix(tmp_path, capsys):
    src = rosinality_file(tmp_path)
    (tmp_path / "out").mkdir()
    assert cli.main(["convert", str(src), "-o", str(tmp_path / "out" / "ffhq")]) == 0
    assert (tmp_path / "out" / "ffhq_generator.safetensors").is_file()


def test_a_pack_component_pth_still_becomes_one_bundle(tmp_path, capsys):
    src = bisenet_file(tmp_path)
    assert cli.main(["convert", str(src)]) == 0
    dst = tmp_path / "79999_iter.safetensors"
    assert f"wrote {dst} (component: bisenet)" in capsys.readouterr().out
    assert checkpoints.read_config(dst).component == "bisenet"
    assert cli.main(["describe", str(src)]) == 0
    assert "79999_iter.pth: " in capsys.readouterr().out


def test_a_state_dict_no_name_identifies_asks_for_the_component(tmp_path, capsys):
    src = tmp_path / "mystery.pth"
    torch.save({"layer.weight": torch.ones(2, 2)}, src)
    assert cli.main(["convert", str(src)]) == 2
    assert "CLI: --component" in capsys.readouterr().err


def test_convert_refuses_its_own_source_as_output(tmp_path, capsys):
    src = rosinality_file(tmp_path, "g.pt")
    before = src.read_bytes()
    code = cli.main(["convert", str(src), "-o", str(tmp_path / "g.pt")])
    # A rosinality output is a prefix: g.pt_generator.safetensors is not the source, so it is
    # written; the one-bundle route is refused instead when it would overwrite its source.
    assert code == 0 and src.read_bytes() == before
    other = bisenet_file(tmp_path)
    assert cli.main(["convert", str(other), "-o", str(other)]) == 2
    assert "same file as the checkpoint" in capsys.readouterr().err


def test_an_e4s_file_becomes_an_encoder_and_a_generator_bundle(tmp_path, capsys, monkeypatch):
    import test_convert_e4s as E

    from segtalker_core.conversion import e4s

    # The narrow widths of test_convert_e4s (its small_widths fixture), so this runs in seconds.
    monkeypatch.setattr(e4s, "STAGE_CHANNELS", (16, 32, 32, 48))
    monkeypatch.setattr(e4s, "STAGE_BLOCKS", (1, 2, 1, 1))
    monkeypatch.setattr(e4s, "STEM_CHANNELS", 16)
    monkeypatch.setattr(e4s, "MLP_HIDDEN", 32)
    src = E.write_e4s(tmp_path / "iteration_300000.pt", E.SMALL)
    assert cli.main(["convert", str(src)]) == 0
    out = capsys.readouterr().out
    for component in ("encoder", "generator"):
        path = tmp_path / f"iteration_300000_{component}.safetensors"
        assert f"wrote {path} (component: {component})" in out
        assert checkpoints.read_config(path).component == component
    assert cli.main(["describe", str(src)]) == 0
    assert "E4S" in capsys.readouterr().out


def test_bisenet_and_rosinality_files_are_not_taken_for_e4s(tmp_path, capsys):
    """The dispatch order (E4S, rosinality, the pack's own): each file lands on its own route."""
    assert cli.main(["convert", str(rosinality_file(tmp_path))]) == 0
    assert cli.main(["convert", str(bisenet_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "component: generator" in out and "component: bisenet" in out and "encoder" not in out
