"""Real processes: SIGKILL at fixed points then resume gives the uninterrupted run's bytes;
SIGINT and SIGTERM stop a run cleanly; two processes never write one run directory."""

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

pytestmark = pytest.mark.integration

# Runs `python -m bnrepro.train <args>` and kills itself with SIGKILL at a fixed point: right
# after the rows of step K are logged ("log K"), or half-way through writing the checkpoint of
# step K ("checkpoint K"), which leaves a partial temporary file beside the previous checkpoint.
KILLED_AT = """
import os, runpy, signal, sys
import bnrepro.lifecycle as lifecycle
where, step = sys.argv.pop(1), int(sys.argv.pop(1))
if where == "log":
    log = lifecycle.Run.log
    def log_then_die(self, rows):
        log(self, rows)
        if rows[0]["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
    lifecycle.Run.log = log_then_die
else:
    save = lifecycle.torch.save
    def die_while_saving(obj, f):
        if isinstance(obj, dict) and obj.get("step") == step:
            f.write(b"the first bytes of a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        save(obj, f)
    lifecycle.torch.save = die_while_saving
runpy.run_module("bnrepro.train", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def command(mnist_root):
    return [
        "model=mlp_bn", "seeds=[0,1]", "steps=1500", "eval_every=100", "probe.every=50",
        "probe.size=200", "checkpoint_every=500", "logger.wandb.mode=disabled",
        f"data.root={mnist_root}", "device=cpu",
    ]  # fmt: skip


def train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnrepro.train", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_sigkill_at_fixed_points_then_resume_is_byte_identical(command, tmp_path) -> None:
    full = train(*command, f"hydra.run.dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr
    expected = (tmp_path / "full" / "metrics.csv").read_bytes()
    # Before the first periodic checkpoint, between two, and during the write of one.
    for where, step in (("log", 300), ("log", 800), ("checkpoint", 1000)):
        run_dir = tmp_path / f"{where}-{step}"
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AT, where, str(step), *command,
             f"hydra.run.dir={run_dir}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        resumed = train(*command, f"hydra.run.dir={run_dir}", "resume=true")
        assert resumed.returncode == 0, resumed.stderr
        assert (run_dir / "metrics.csv").read_bytes() == expected, f"killed at {where} {step}"
        assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_a_checkpoint_and_one_line(command, tmp_path, signum):
    process = subprocess.Popen(
        [sys.executable, "-m", "bnrepro.train", *command, "steps=100000",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = tmp_path / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and "\n100," in metrics.read_text()):
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    assert "Traceback" not in stderr and "resume=true" in stderr
    assert f"{signal.Signals(signum).name} stopped the run at step" in stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and run["steps"] >= 100


def test_two_writers_one_directory(command, tmp_path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "bnrepro.train", *command, f"hydra.run.dir={tmp_path}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run.json").exists():
        time.sleep(0.05)
    second = train(*command, f"hydra.run.dir={tmp_path}")
    assert second.returncode == 2 and "in use by another process" in second.stderr
    assert "Traceback" not in second.stderr
    first.communicate(timeout=300)
    assert first.returncode == 0
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines.count(lines[0]) == 1 and len(lines) == 1 + 2 * (1500 // 50 + 1)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "completed"
