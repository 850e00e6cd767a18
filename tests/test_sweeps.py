"""Sweeps: the joblib launcher runs jobs in parallel, a failing job does not stop the others but
makes the sweep exit non-zero, and `bnrepro.results.load_runs` gathers every job into one
DataFrame."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

from bnrepro.results import load_runs

pytestmark = pytest.mark.integration

# After 20 steps at batch 60 the BN net reaches 0.51 (seed 0) and 0.43 (seed 1) test accuracy;
# an untrained net scores 0.10 and the same net without BN 0.02-0.08.
MIN_TEST_ACC_AT_STEP_20 = 0.3


@pytest.fixture(scope="module")
def sweep(mnist_root, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Four jobs on two workers: seeds 0 and 1 at batch 60, and the same at batch 1, which BN
    cannot train on."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    result = subprocess.run(
        [sys.executable, "-m", "bnrepro.train", "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "model=mlp_bn", "batch_size=1,60", "seeds=[0],[1]",
         "steps=20", "eval_every=10", "probe.every=10", "device=cpu",
         f"data.root={mnist_root}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return result, sweep_dir


@pytest.fixture(scope="module")
def runs(sweep) -> pd.DataFrame:
    _, sweep_dir = sweep
    return load_runs(sweep_dir)


def test_a_sweep_with_a_failed_job_exits_non_zero(sweep) -> None:
    result, _ = sweep
    assert result.returncode != 0, result.stderr


def test_the_bad_jobs_fail_and_the_good_ones_complete_in_one_frame(runs) -> None:
    assert len(runs) == 4
    by_batch = runs.groupby("config.batch_size").status.agg(set)
    assert by_batch[60] == {"completed"} and by_batch[1] == {"failed"}
    failed = runs[runs.status == "failed"]
    assert failed.error.str.contains("batch_size=1").all()
    completed = runs[runs.status == "completed"]
    assert sorted(completed.seed) == [0, 1]
    assert (completed.final_step == 20).all()


def test_the_completed_jobs_learn_and_their_seeds_differ(runs) -> None:
    completed = runs[runs.status == "completed"].set_index("seed")
    assert (completed.final_test_acc > MIN_TEST_ACC_AT_STEP_20).all(), completed.final_test_acc
    assert completed.final_test_acc[0] != completed.final_test_acc[1]


def test_each_job_logs_its_place_in_the_sweep_and_draws_no_bar_off_a_terminal(sweep) -> None:
    """Each job that ran has Hydra's record and its log, which says which job of the four it
    is; the refused jobs (batch 1) wrote neither. Output that is not a terminal gets no bar."""
    result, sweep_dir = sweep
    logs = sorted(sweep_dir.glob("*/train.log"))
    assert len(logs) == 2
    for log in logs:
        assert re.search(r"bnrepro: job [1-4] of 4, run directory ", log.read_text())
        assert (log.parent / ".hydra" / "overrides.yaml").exists()
    assert len(re.findall(r"bnrepro: job [1-4] of 4", result.stdout)) == 2
    assert "%|" not in result.stderr and "step/s" not in result.stderr


def test_two_jobs_at_a_time_draw_their_bars_on_lines_of_their_own(mnist_root, tmp_path) -> None:
    """On a terminal, each job's bar says which job of the sweep it is and the sweep's time
    left, and the two running at once are drawn on two lines (tqdm's position 1 is one line
    down, then back up) rather than over each other."""
    leader, follower = pty.openpty()
    rows_columns = struct.pack("HHHH", 24, 120, 0, 0)  # a new terminal has no width for a bar
    fcntl.ioctl(follower, termios.TIOCSWINSZ, rows_columns)
    process = subprocess.Popen(
        [sys.executable, "-m", "bnrepro.train", "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "model=mlp_bn", "seeds=[0],[1]", "steps=400",
         "eval_every=100", "probe.every=100", "device=cpu", "logger.tensorboard=false",
         f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the last process
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, shown.decode(errors="replace")[-3000:]
    text = shown.decode(errors="replace")
    assert "job 1/2:" in text and "job 2/2:" in text
    assert re.search(r"sweep \d\d:\d\d left\]", text)
    assert re.search(r"\n\rjob [12]/2: [^\n]*\x1b\[A", text), "no bar on the second line"
    # a job's messages start on a cleared line, whatever bar holds it
    assert re.search(r"\r\x1b\[Kbnrepro: job [12] of 2, run directory ", text)
