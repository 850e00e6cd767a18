"""Checkpoint and resume: a killed run, resumed, ends exactly as an uninterrupted one."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from bnrepro.checkpoint import CheckpointError
from bnrepro.errors import ResumeError
from bnrepro.train import train


def test_extending_a_finished_run_equals_the_longer_run(small_cfg, tmp_path) -> None:
    train(small_cfg("model=mlp_bn", "seeds=[0,1]", "steps=400"), tmp_path / "straight")
    train(small_cfg("model=mlp_bn", "seeds=[0,1]", "steps=200"), tmp_path / "split")
    info = train(
        small_cfg("model=mlp_bn", "seeds=[0,1]", "steps=400", "resume=true"), tmp_path / "split"
    )
    assert info["resumed_from_step"] == 200 and info["status"] == "completed"
    straight = (tmp_path / "straight" / "metrics.csv").read_text()
    assert (tmp_path / "split" / "metrics.csv").read_text() == straight


def test_resume_refuses_a_changed_config(small_cfg, tmp_path) -> None:
    train(small_cfg("model=mlp_bn", "steps=100"), tmp_path)
    written = {name: (tmp_path / name).read_bytes() for name in ("config.yaml", "run.json")}
    with pytest.raises(ResumeError, match=r"optim\.lr=0\.1 \(now 0\.2\)"):
        train(small_cfg("model=mlp_bn", "steps=200", "optim.lr=0.2", "resume=true"), tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in written} == written


def test_refused_resume_from_the_command_line_keeps_the_run(mnist_root, tmp_path) -> None:
    command = [
        sys.executable,
        "-m",
        "bnrepro.train",
        f"data.root={mnist_root}",
        "device=cpu",
        "steps=20",
        "eval_every=10",
        "probe.every=10",
        f"hydra.run.dir={tmp_path}",
    ]
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    run_json = (tmp_path / "run.json").read_bytes()
    refused = subprocess.run(
        [*command, "optim.lr=0.5", "resume=true"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "optim.lr=0.1 (now 0.5)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (tmp_path / "run.json").read_bytes() == run_json


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_a_clear_error_and_nothing_is_lost(small_cfg, tmp_path, damage):
    train(small_cfg("model=mlp_bn", "steps=100"), tmp_path)
    checkpoint = tmp_path / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    metrics = (tmp_path / "metrics.csv").read_text()
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(small_cfg("model=mlp_bn", "steps=200", "resume=true"), tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == metrics
    assert checkpoint.exists()


def test_sigkill_at_a_random_step_then_resume_matches_uninterrupted(mnist_root, tmp_path) -> None:
    command = [
        sys.executable, "-m", "bnrepro.train", f"data.root={mnist_root}", "device=cpu",
        "model=mlp_bn", "seeds=[0,1]", "steps=3000", "eval_every=100", "probe.every=50",
        "probe.size=200", "checkpoint_every=100", "logger.wandb.mode=disabled",
    ]  # fmt: skip
    full = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path / 'full'}"], cwd=REPO, capture_output=True, timeout=300
    )
    assert full.returncode == 0, full.stderr.decode()

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, f"hydra.run.dir={killed_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Kill at a random moment after the first checkpoint (step 100) and its next logged row.
    deadline = time.time() + 120
    metrics = killed_dir / "metrics.csv"
    while time.time() < deadline and not (metrics.exists() and "\n150," in metrics.read_text()):
        time.sleep(0.02)
    delay = random.Random(os.getpid()).uniform(0.0, 0.5)
    print(f"killing {delay:.3f} s after step 150 was logged")
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL, "the run finished before it was killed"
    partial = (killed_dir / "metrics.csv").read_text()
    assert len(partial) < len((tmp_path / "full" / "metrics.csv").read_text())

    resumed = subprocess.run(
        [*command, f"hydra.run.dir={killed_dir}", "resume=true"],
        cwd=REPO, capture_output=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()
    expected = (tmp_path / "full" / "metrics.csv").read_text()
    assert (killed_dir / "metrics.csv").read_text() == expected
