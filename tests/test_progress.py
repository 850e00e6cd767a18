"""A run's progress bar: in a sweep, a line of its own per running job, `job k/n` and the
sweep's time left; no bar off a terminal; the sweep's size counted as Hydra's basic sweeper
counts its jobs."""

import io
import os
import time

import pytest
from conftest import CONFIG_DIR
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from bnrepro import progress
from bnrepro.hydra_callbacks import sweep_size
from bnrepro.progress import Job, Progress, SweepBar, claim_line, launcher_slots, sweep_job


@pytest.mark.parametrize(
    ("index", "jobs", "slots", "after"),
    [(0, 4, 2, 1), (1, 4, 2, 1), (2, 4, 2, 0), (3, 4, 2, 0), (0, 5, 2, 2), (4, 5, 2, 0),
     (0, 3, 1, 2), (0, None, 2, 0), (0, 1, 4, 0)],
)  # fmt: skip
def test_the_rounds_of_jobs_left_after_a_job(index, jobs, slots, after) -> None:
    assert Job(index, jobs, slots, "/sweep").waves_after() == after


def test_the_launchers_jobs_at_a_time(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [launcher_slots(n) for n in (2, 1, -1, -2, None, "x")] == [2, 1, 8, 7, 1, 1]


def test_a_sweep_bar_names_its_job_and_the_sweeps_time_left() -> None:
    out = io.StringIO()
    job = Job(index=2, jobs=5, slots=2, sweep_dir="/sweep")
    with SweepBar(total=100, initial=0, job=job, file=out, mininterval=0) as bar:
        time.sleep(0.05)
        bar.update(20)
        bar.set_postfix(test_acc="0.5000")
        shown = str(bar)
    assert shown.startswith("job 3/5:") and " 20/100 " in shown
    # 80 steps of this job and one more round of 100: 4.5 times what 20 steps took
    assert "test_acc=0.5000, sweep " in shown and shown.endswith(" left]")
    assert Job(2, None, 2, "/sweep").label() == "job 3" and job.describe() == "job 3 of 5"


def test_jobs_running_at_once_take_different_lines_and_a_freed_line_is_taken_again(tmp_path):
    job = Job(index=0, jobs=4, slots=2, sweep_dir=str(tmp_path))
    first, first_lock = claim_line(job)
    second, second_lock = claim_line(job)
    assert (first, second) == (0, 1) and None not in (first_lock, second_lock)
    assert claim_line(Job(3, 4, 2, str(tmp_path))) == (1, None)  # every line held: its own
    os.close(first_lock)
    again, again_lock = claim_line(Job(2, 4, 2, str(tmp_path)))
    assert again == 0
    for fd in (second_lock, again_lock):
        os.close(fd)


def test_no_bar_off_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    with Progress(total=10, initial=0) as bar:
        assert bar.bar.disable


@pytest.fixture
def sweep_job_of():
    """Sets Hydra's record of a sweep's job (as a launcher's process has it); cleared after."""

    def make(*overrides: str, num: int) -> None:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = "MULTIRUN"
            cfg.hydra.job.num = num
        HydraConfig.instance().set_config(cfg)

    yield make
    HydraConfig.instance().cfg = None


def test_a_sweeps_job_reads_its_number_size_and_slots(sweep_job_of, monkeypatch) -> None:
    assert sweep_job() is None  # not in a Hydra command
    monkeypatch.setenv(progress.SWEEP_JOBS, "6")
    sweep_job_of("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", num=3)
    job = sweep_job()
    assert (job.index, job.jobs, job.slots) == (3, 6, 2)
    monkeypatch.delenv(progress.SWEEP_JOBS)
    assert sweep_job().jobs is None


@pytest.mark.parametrize(
    ("overrides", "params", "jobs"),
    [
        (["experiment=a,b,c", "seeds=[0],[1]", "steps=5"], {}, 6),
        (["steps=5"], {}, 1),
        (["optim.lr=range(1,5)"], {"seeds": "[0],[1]"}, 8),
        (["seeds=[0]"], {"seeds": "[0],[1]"}, 1),  # the command line's value counts
        (["data.root=glob(*)"], {}, None),  # only the sweeper can expand a glob
    ],
)
def test_a_sweeps_size_is_the_product_of_its_swept_values(overrides, params, jobs) -> None:
    assert sweep_size(overrides, params) == jobs
