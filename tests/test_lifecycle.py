"""The run lifecycle: a run directory is never lost, clobbered or mislabelled, and a resumed
run's files are byte-identical to an uninterrupted run's."""

import errno
import json
import os
import shutil
import signal

import pytest
import torch
from conftest import stop_at

from bnrepro import lifecycle
from bnrepro.checkpoint import CheckpointError
from bnrepro.errors import ResumeError
from bnrepro.lifecycle import Run
from bnrepro.results import load_runs
from bnrepro.rundir import RunBusyError, RunWriteError
from bnrepro.train import train
from bnrepro.train_mlp import METRIC_COLUMNS, RESUME_KEYS

RUN = ("model=mlp_bn", "seeds=[0,1]", "steps=300", "checkpoint_every=100")


def snapshot(run_dir) -> dict[str, bytes]:
    """Every file under a run directory (the lock file aside; TensorBoard's event files
    included) and its bytes, by its path in the run directory."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def straight(small_cfg, tmp_path_factory):
    """The uninterrupted run every interrupted one is compared with, trained once: the tests
    read it and never write to it."""
    run_dir = tmp_path_factory.mktemp("straight")
    train(small_cfg(*RUN), run_dir)
    return run_dir


@pytest.fixture
def finished(straight, tmp_path):
    """A copy of the uninterrupted run, for a test to damage or to try to train into."""
    shutil.copytree(straight, tmp_path / "finished")
    return tmp_path / "finished"


class Crash(Exception):
    pass


def crash() -> None:
    raise Crash("simulated crash")


@pytest.mark.parametrize("step", [50, 150])  # before the first periodic checkpoint; between two
def test_a_crashed_run_resumes_byte_identical(small_cfg, straight, tmp_path, monkeypatch, step):
    stop_at(monkeypatch, step, crash)
    with pytest.raises(Crash):
        train(small_cfg(*RUN), tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and "simulated crash" in run["error"]
    monkeypatch.undo()
    info = train(small_cfg(*RUN, "resume=true"), tmp_path)
    assert info["resumed_from_step"] == (step // 100) * 100 and info["status"] == "completed"
    assert (tmp_path / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()
    final, expected = torch.load(tmp_path / "model.pt"), torch.load(straight / "model.pt")
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_sigterm_stops_between_steps_with_a_checkpoint(small_cfg, straight, tmp_path, monkeypatch):
    stop_at(monkeypatch, 150, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(lifecycle.Interrupted, match="Resume it with: .*resume=true") as caught:
        train(small_cfg(*RUN), tmp_path)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "interrupted" and run["steps"] == 150
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 150
    monkeypatch.undo()
    train(small_cfg(*RUN, "resume=true"), tmp_path)
    assert (tmp_path / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()


@pytest.fixture(scope="module")
def shorter(small_cfg, tmp_path_factory):
    """The same run finished at step 200, trained once; each test extends a copy of it."""
    run_dir = tmp_path_factory.mktemp("shorter")
    train(small_cfg(*RUN[:-2], "steps=200", "checkpoint_every=100"), run_dir)
    return run_dir


def test_extending_a_finished_run_equals_the_longer_run(small_cfg, straight, shorter, tmp_path):
    shutil.copytree(shorter, tmp_path, dirs_exist_ok=True)
    info = train(small_cfg(*RUN, "resume=true"), tmp_path)
    assert info["resumed_from_step"] == 200 and info["status"] == "completed"
    assert (tmp_path / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()


def test_rows_appended_after_the_checkpoint_are_cut_back(small_cfg, straight, shorter, tmp_path):
    shutil.copytree(shorter, tmp_path, dirs_exist_ok=True)
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("garbage,line\n")
    train(small_cfg(*RUN, "resume=true"), tmp_path)
    assert (tmp_path / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()


def damage_checkpoint(run_dir) -> None:
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])


def delete_checkpoint(run_dir) -> None:
    (run_dir / "checkpoint.pt").unlink()


def delete_metrics(run_dir) -> None:
    (run_dir / "metrics.csv").unlink()


def change_a_logged_row(run_dir) -> None:
    metrics = run_dir / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[3] = "x" * (len(lines[3]) - 1) + "\n"
    metrics.write_text("".join(lines))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (None, ResumeError, "already holds a run"),
        (damage_checkpoint, CheckpointError, "corrupt or truncated"),
        (delete_checkpoint, ResumeError, "no checkpoint.pt"),
        (delete_metrics, ResumeError, "metrics.csv is missing"),
        (change_a_logged_row, ResumeError, "rows of metrics.csv up to the checkpoint"),
    ],
)
def test_a_refused_start_changes_nothing(small_cfg, finished, damage, error, message) -> None:
    if damage:
        damage(finished)
    before = snapshot(finished)
    resume = "resume=false" if damage is None else "resume=true"
    with pytest.raises(error, match=message):
        train(small_cfg(*RUN[:-2], "steps=400", "checkpoint_every=100", resume), finished)
    assert snapshot(finished) == before


def test_resume_refuses_a_changed_config(small_cfg, finished) -> None:
    before = snapshot(finished)
    with pytest.raises(ResumeError, match=r"optim\.lr=0\.1 \(now 0\.2\)"):
        train(small_cfg(*RUN, "optim.lr=0.2", "resume=true"), finished)
    assert snapshot(finished) == before


def test_a_second_writer_is_refused_and_changes_nothing(small_cfg, tmp_path) -> None:
    cfg = small_cfg(*RUN)
    with Run(tmp_path, cfg, METRIC_COLUMNS, RESUME_KEYS):
        with pytest.raises(RunBusyError, match=f"pid {os.getpid()}"):
            train(cfg, tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_a_full_disk_fails_clearly_and_keeps_the_last_checkpoint(small_cfg, tmp_path, monkeypatch):
    save, saved = torch.save, []

    def save_until_the_disk_is_full(obj, f):
        if isinstance(obj, dict) and obj.get("step") == 200:
            f.write(b"part of a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f.name))
        saved.append(obj.get("step") if isinstance(obj, dict) else None)
        save(obj, f)

    monkeypatch.setattr(lifecycle.torch, "save", save_until_the_disk_is_full)
    with pytest.raises(RunWriteError, match="No space left on device.*resume=true"):
        train(small_cfg(*RUN), tmp_path)
    monkeypatch.undo()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == "failed" and "No space left" in run["error"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 100


def test_a_run_whose_process_is_gone_reads_as_crashed(small_cfg, tmp_path) -> None:
    cfg = small_cfg(*RUN)
    with Run(tmp_path, cfg, METRIC_COLUMNS, RESUME_KEYS) as run:
        run.start(lambda: {}, torch.device("cpu"))
        assert load_runs(tmp_path).status.unique().tolist() == ["running"]
        run.logger.close("failed")
        run.logger = None
    # The lock is released but run.json still says running: its owner died without a word.
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    assert load_runs(tmp_path).status.unique().tolist() == ["crashed"]
