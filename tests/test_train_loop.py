"""The training loop: configs and their errors, data order over processes, checkpoints, resume
after a kill, torchrun (gloo, 2 CPU processes) against one process, bad input (a dataset
smaller than a batch, an ``--init-from`` bundle of the wrong component or resolution).

Runs use the ``tiny`` TSG preset (32 px, no BatchNorm) on the session's prepared dataset.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segtalker_core import cli
from segtalker_core.train import checkpointing
from segtalker_core.models.tsg import onehot
from segtalker_core.train.config import ConfigError, load_stage_config
from segtalker_core.train.datasets import TalkingSegDataset
from segtalker_core.train.distributed import GlobalBatchSampler, plan_batches
from segtalker_core.train.tsg_stage import TSGStageConfig

REPO_DIR = Path(__file__).resolve().parents[1]
QUIET = ["--set", "loop.progress=false"]


def train_args(stage, data, run_dir, *extra):
    return ["train", stage, "--config", "tiny", "--data", str(data), "--run-dir", str(run_dir),
            *QUIET, *extra]


def child_env():
    return dict(os.environ, PYTHONPATH=str(REPO_DIR), OMP_NUM_THREADS="1")


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------ configs

def test_unknown_key_from_set_names_the_nearest_valid_key(tmp_path, capsys):
    code = cli.main(train_args("tsg", tmp_path, tmp_path / "run", "--set", "loop.stepz=3"))
    assert code == 2
    line = error_line(capsys)
    assert "'loop.stepz'" in line and "'loop.steps'" in line


def test_unknown_key_in_a_yaml_file_names_the_nearest_valid_key(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("base: tiny\noptim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*'optim\.lr'"):
        load_stage_config(TSGStageConfig, "tsg", str(config))
    # A right leaf in the wrong section points to where it lives.
    with pytest.raises(ConfigError, match=r"'optim\.steps'.*'loop\.steps'"):
        load_stage_config(TSGStageConfig, "tsg", "tiny", ["optim.steps=5"])


def test_yaml_base_and_set_values_are_typed(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("base: tiny\nloop:\n  steps: 7\nmodel:\n  base_channels: 4\n")
    c = load_stage_config(TSGStageConfig, "tsg", str(config),
                          ["optim.lr=1e-4", "model.audio.widths=4,4,8,8,16", "loop.compile=false"])
    assert c.loop.steps == 7 and c.loop.batch_size == 8  # from the file, then from tiny
    assert c.model.base_channels == 4 and c.model.resolution == 32
    assert c.optim.lr == pytest.approx(1e-4) and isinstance(c.optim.lr, float)
    assert c.model.audio.widths == (4, 4, 8, 8, 16) and c.loop.compile is False
    with pytest.raises(ConfigError, match=r"'loop\.steps' wants an integer, got 'ten'"):
        load_stage_config(TSGStageConfig, "tsg", "tiny", ["loop.steps=ten"])
    with pytest.raises(ConfigError, match=r"preset 'personal' has no tsg stage"):
        load_stage_config(TSGStageConfig, "tsg", "personal")


# ------------------------------------------------------------------------------------ data order

def test_global_batches_are_the_same_micro_batches_on_one_or_two_processes():
    one = GlobalBatchSampler(50, plan_batches(8, 4, 1), rank=0, seed=3)
    two = [GlobalBatchSampler(50, plan_batches(8, 4, 2), rank=r, seed=3) for r in range(2)]
    for step in (0, 5, 6, 13):  # 6 steps per epoch: 6 and 13 are in later epochs
        assert one.step_indices(step) == two[0].step_indices(step) + two[1].step_indices(step)
    flat = [i for s in range(6) for mb in one.step_indices(s) for _, i in mb]
    assert len(set(flat)) == 48  # an epoch never repeats a sample
    # Iterating from a step (resume) gives that step's micro-batches first.
    it = iter(GlobalBatchSampler(50, plan_batches(8, 4, 1), rank=0, seed=3, start_step=13))
    assert [next(it), next(it)] == one.step_indices(13)


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(ValueError, match="loop.batch_size 10 does not split into 4 process"):
        plan_batches(10, 0, 4)
    assert plan_batches(16, 2, 2).accumulation == 4


# ------------------------------------------------------------------------------------ checkpoints

def test_resume_never_loads_a_half_written_checkpoint(tmp_path, caplog):
    for step in (5, 10):
        checkpointing.save(tmp_path, step, {"stage": "tsg", "w": torch.ones(3) * step}, keep=3)
    folder = checkpointing.checkpoint_dir(tmp_path)
    # What a kill -9 during a save leaves: the temporary, never under the real name ...
    (folder / ".step-00000015.pt.partial-0123abcd.pt").write_bytes(b"PK\x03\x04 torn")
    # ... and a file that is cut short anyway (a copy interrupted half-way).
    (folder / "step-00000020.pt").write_bytes((folder / "step-00000010.pt").read_bytes()[:100])
    found = checkpointing.newest(tmp_path)
    assert found.step == 10 and torch.equal(found.payload["w"], torch.full((3,), 10.0))
    assert "skipping step-00000020.pt" in caplog.text
    checkpointing.save(tmp_path, 30, {"stage": "tsg"}, keep=2)
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [30, 20]


# ------------------------------------------------------------------------------------ bad input

def test_a_dataset_smaller_than_one_batch_names_both_sizes(prepared_dataset, tmp_path, capsys):
    code = cli.main(train_args("tsg", prepared_dataset, tmp_path / "run",
                               "--set", "loop.batch_size=100000"))
    assert code == 2
    line = error_line(capsys)
    assert "fewer than one batch" in line and "loop.batch_size = 100000" in line
    assert "'train' split" in line and " samples" in line


@pytest.fixture(scope="module")
def random_bundles(tmp_path_factory):
    from segtalker_core.models.random_bundle import write_random_bundles

    return write_random_bundles(tmp_path_factory.mktemp("bundles"), resolution=64)


def test_init_from_a_bundle_of_another_component_names_both(prepared_dataset, random_bundles,
                                                            tmp_path, capsys):
    code = cli.main(train_args("tsg", prepared_dataset, tmp_path / "run",
                               "--init-from", str(random_bundles["syncnet"])))
    assert code == 2
    line = error_line(capsys)
    assert "SyncNet bundle" in line and "trains a TSG" in line and "give a tsg bundle" in line


def test_init_from_a_bundle_of_another_resolution_names_both(prepared_dataset, random_bundles,
                                                             tmp_path, capsys):
    code = cli.main(train_args("tsg", prepared_dataset, tmp_path / "run",
                               "--init-from", str(random_bundles["tsg"])))
    assert code == 2
    line = error_line(capsys)
    assert "64 px" in line and "32 px" in line


def test_export_of_a_run_without_checkpoint_is_refused(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path), str(tmp_path / "x.safetensors")]) == 2
    assert "has no training checkpoint" in error_line(capsys)


# ------------------------------------------------------------------------------------ processes

def test_torchrun_two_processes_follow_the_one_process_curve(prepared_dataset, tmp_path):
    """Same global batch (8): 1 process x 2 micro-batches of 4 vs 2 gloo processes x 1 of 4.
    The micro-batches are the same, so the losses agree up to float summation order: every
    logged value within 1e-4 relative."""
    common = ["--set", "loop.steps=6", "--set", "loop.micro_batch_size=4",
              "--set", "loop.log_every=1", "--set", "loop.eval_every=0",
              "--set", "loop.sample_every=100", "--set", "loop.checkpoint_every=100"]
    one = subprocess.run([sys.executable, "-m", "segtalker_core",
                          *train_args("tsg", prepared_dataset, tmp_path / "one", *common)],
                         env=child_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", "-m", "segtalker_core",
                          *train_args("tsg", prepared_dataset, tmp_path / "two", *common)],
                         env=child_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert "2 process(es) x 1 x 4" in (tmp_path / "two" / "log.txt").read_text()
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, 7))
    for ma, mb in zip(a, b):
        for key in ("loss", "cross_entropy", "dice"):
            assert mb[key] == pytest.approx(ma[key], rel=1e-4), (ma["step"], key)
    assert a[-1]["loss"] < a[0]["loss"]
    # Rank 0 alone wrote the checkpoint, and both runs end equally trained: the final networks'
    # losses on held-out frames agree to 1 %. (Not weight for weight: where a gradient is zero
    # up to rounding -- a conv bias feeding a GroupNorm -- Adam turns the rounding of either
    # summation order into full-size steps, so such weights differ without changing the loss.)
    from segtalker_core.models.tsg_losses import cross_entropy_loss

    nets = [_network_of(tmp_path / name) for name in ("one", "two")]
    batch = torch.utils.data.default_collate(
        [TalkingSegDataset(prepared_dataset, "val", resolution=32)[i] for i in range(16)])
    losses = [float(cross_entropy_loss(net(onehot(batch["target"]), onehot(batch["reference"]),
                                           batch["mel"]), batch["target"])) for net in nets]
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


def _network_of(run_dir: Path) -> torch.nn.Module:
    from segtalker_core.models.tsg import TSG

    payload = checkpointing.newest(run_dir).payload
    config = load_stage_config(TSGStageConfig, "tsg", "tiny")
    net = TSG(config.model)
    net.load_state_dict(payload["parts"]["tsg"]["module"])
    return net.eval().requires_grad_(False)


def test_a_killed_run_resumes_to_the_same_step_count(prepared_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = train_args("tsg", prepared_dataset, run_dir, "--set", "loop.steps=40",
                      "--set", "loop.checkpoint_every=5", "--set", "loop.eval_every=0",
                      "--set", "loop.sample_every=100", "--set", "loop.log_every=5")
    child = subprocess.Popen([sys.executable, "-m", "segtalker_core", *args], env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not checkpointing.list_checkpoints(run_dir) and time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    killed_at = checkpointing.list_checkpoints(run_dir)[0][0]
    assert 5 <= killed_at < 40

    assert cli.main([*args, "--resume"]) == 0
    assert "trained tsg to step 40" in capsys.readouterr().out
    assert checkpointing.list_checkpoints(run_dir)[0][0] == 40
    log = (run_dir / "log.txt").read_text()
    assert f"resumed from step-{killed_at:08d}.pt (step {killed_at})" in log
    steps = [m["step"] for m in metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # no step logged twice
    # Resuming a finished run does nothing; a resumed run keeps what it trains.
    assert cli.main([*args, "--resume"]) == 0
    assert "nothing to do: the run is at step 40" in capsys.readouterr().out
    assert cli.main([*args, "--resume", "--config", "256"]) == 2
    assert "differs from the run's" in error_line(capsys)
