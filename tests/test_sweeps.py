"""Sweeps: the joblib launcher runs jobs in parallel, a failing job does not stop the others,
and `bnrepro.results.load_runs` gathers every job into one DataFrame."""

import subprocess
import sys

from conftest import REPO

from bnrepro.results import load_runs


def test_joblib_sweep_survives_a_bad_job_and_loads_as_one_frame(mnist_root, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bnrepro.train", "-m", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "model=mlp_bn", "batch_size=1,60", "seeds=[0],[1]",
         "steps=20", "eval_every=10", "probe.every=10", "device=cpu",
         f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = load_runs(tmp_path)
    assert len(runs) == 4
    by_batch = runs.groupby("config.batch_size").status.agg(set)
    assert by_batch[60] == {"completed"} and by_batch[1] == {"failed"}
    completed = runs[runs.status == "completed"]
    assert sorted(completed.seed) == [0, 1]
    assert (completed.final_test_acc > 0.1).all() and (completed.final_step == 20).all()
    failed = runs[runs.status == "failed"]
    assert failed.error.str.contains("batch_size=1").all()
