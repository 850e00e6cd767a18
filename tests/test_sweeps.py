"""Sweeps: the joblib launcher runs jobs in parallel, a failing job does not stop the others but
makes the sweep exit non-zero, and `bnrepro.results.load_runs` gathers every job into one
DataFrame."""

import subprocess
import sys
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
