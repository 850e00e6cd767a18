"""`python -m bnrepro.plot <sweep dir>`: a user's own sweep drawn as accuracy, loss and
percentile curves, one line per setting (what differs between the runs), seeds as a mean with
a band; a folder without runs is refused with one paragraph."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from bnrepro import plot

COLUMNS = "step,seed,train_loss,test_acc,p15,p50,p85"


def fake_run(
    run_dir: Path, overrides: list[str], seeds: list[int], config: dict | None = None
) -> None:
    """A run directory as the trainer leaves it: run.json (with the command line's
    overrides), config.yaml and metrics.csv of `seeds`, 3 logged steps each."""
    run_dir.mkdir(parents=True)
    info = {"status": "completed", "overrides": overrides, "seeds": [{"seed": s} for s in seeds]}
    (run_dir / "run.json").write_text(json.dumps(info))
    config = config or {"name": "mine", "seeds": seeds, "model": {"variant": "plain"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [COLUMNS] + [
        f"{step},{seed},{2.0 - step / 100 + seed / 10},{0.5 + step / 1000},-1,0,1"
        for step in (0, 50, 100)
        for seed in seeds
    ]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A Hydra sweep of two nets, the plain one over two seeds in two jobs."""
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    fake_run(root / "0_plain", ["model=mlp", "seeds=[0]", "steps=100"], [0])
    fake_run(root / "1_plain", ["model=mlp", "seeds=[1]", "steps=100"], [1])
    fake_run(root / "2_bn", ["model=mlp_bn", "seeds=[0]", "steps=100"], [0])
    return root


def test_settings_that_differ_label_the_lines_and_seeds_are_averaged(sweep) -> None:
    runs, skipped = plot.load_logged_runs(sweep)
    assert skipped == []
    rows = plot.curves(runs, sweep.name)
    assert sorted(rows.curve.unique()) == ["model=mlp", "model=mlp_bn"]
    plain = rows[rows.curve == "model=mlp"]
    assert sorted(plain.seed.unique()) == [0, 1]


def test_plot_writes_accuracy_loss_and_percentiles_into_the_sweep(sweep) -> None:
    written = plot.plot_sweep(sweep, sweep / "plots")
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{fmt}" for stem in ("accuracy", "loss", "percentiles") for fmt in ("png", "pdf")
    )
    assert all(p.parent == sweep / "plots" and p.stat().st_size > 0 for p in written)


def test_a_grid_run_draws_a_line_per_member_setting(tmp_path) -> None:
    """A grid's members are settings of their own, labelled by their grid values; the seeds of
    one (lr, init_std) are averaged."""
    run_dir = tmp_path / "grid"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "completed", "overrides": []}))
    config = {"name": "grid", "grid": {"lr": [0.1, 0.5], "init_std": None}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    lines = ["step,member,seed,lr,init_std,train_loss,test_acc"]
    for step in (0, 10):
        for member, (lr, seed) in enumerate([(0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)]):
            lines.append(f"{step},{member},{seed},{lr},0.1,1.0,0.5")
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    runs, _ = plot.load_logged_runs(run_dir)
    rows = plot.curves(runs, run_dir.name)
    assert sorted(rows.curve.unique()) == ["grid; lr=0.1", "grid; lr=0.5"]
    written = plot.plot_sweep(run_dir, tmp_path / "out")
    assert {p.stem for p in written} == {"accuracy", "loss"}  # no percentiles logged


def test_a_run_that_logged_nothing_yet_is_named_and_left_out(sweep, capsys) -> None:
    (sweep / "3_late").mkdir()
    (sweep / "3_late" / "run.json").write_text(json.dumps({"status": "running"}))
    plot.plot_sweep(sweep, sweep / "plots")
    assert f"bnrepro: left out {sweep / '3_late'}: not readable" in capsys.readouterr().err


def run_plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bnrepro.plot", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_command_writes_to_out_and_names_the_files(sweep, tmp_path) -> None:
    result = run_plot(str(sweep), "--out", str(tmp_path / "figures"))
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "figures" / "accuracy.png") in result.stdout.splitlines()
    assert not (sweep / "plots").exists()


def test_a_folder_without_runs_is_refused_in_one_paragraph(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_plot(str(tmp_path / "empty"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"bnrepro: {tmp_path / 'empty'} holds no runs: ")
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "Nothing was written. Fix: " in result.stderr and "multirun" in result.stderr
    assert not (tmp_path / "empty" / "plots").exists()
