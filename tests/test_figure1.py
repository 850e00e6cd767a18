"""Figure 1 end to end: short runs of both nets -> curves/summary CSVs -> figure and README."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, drive

from bnrepro import drift
from bnrepro.experiments import figure1
from bnrepro.experiments.figure1 import protocol as figure1_protocol
from bnrepro.experiments.figure1 import report as figure1_report
from bnrepro.runinfo import stable_command
from bnrepro.train import train


@pytest.fixture(scope="module")
def figure1_runs(tmp_path_factory, mnist_root):
    """A sweep directory of short real runs of both nets."""
    from conftest import compose_train
    from omegaconf import open_dict

    runs = tmp_path_factory.mktemp("runs")
    for model, variant in (("mlp", "plain"), ("mlp_bn", "bn")):
        cfg = compose_train(
            ["experiment=figure1", f"model={model}", "seeds=[0,1]", "steps=200", "eval_every=100",
             "probe.every=50", "probe.size=200", "device=cpu", f"data.root={mnist_root}",
             "logger.wandb.mode=disabled"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg, runs / variant)
    return runs


@pytest.fixture(scope="module")
def figure1_csvs(tmp_path_factory, figure1_runs):
    """curves.csv and summary.csv collected from `figure1_runs`."""
    out = tmp_path_factory.mktemp("figure1")
    figure1_protocol.collect(
        figure1.DRIVER.invocation(["collect", "--runs", str(figure1_runs), "--out", str(out)])
    )
    return out


def run_driver(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/figure1.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def assert_refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    """One paragraph naming the problem and the fix, no traceback, exit status 2."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bnrepro: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Fix: " in result.stderr
    for text in expected:
        assert text in result.stderr


def test_collect_writes_the_documented_columns(figure1_csvs) -> None:
    curves = pd.read_csv(figure1_csvs / "curves.csv")
    summary = pd.read_csv(figure1_csvs / "summary.csv")
    assert list(curves.columns) == ["variant", "seed", "step", "test_acc", "p15", "p50", "p85"]
    assert list(summary.columns) == ["variant", "seed", "final_test_acc", "steps", "status"]
    assert set(curves.variant) == set(summary.variant) == {"plain", "bn"}
    assert len(summary) == 4 and (summary.steps == 200).all()
    bn_final = summary[summary.variant == "bn"].final_test_acc
    plain_final = summary[summary.variant == "plain"].final_test_acc
    assert bn_final.min() > plain_final.max(), "after 200 steps BN is far ahead of the plain net"


def test_volatile_values_are_in_provenance_only(figure1_csvs, tmp_path) -> None:
    """Wall times, date, machine, commit and the command as typed go to provenance.json; the
    CSV files and README.md hold results and the protocol, the same on every faithful run."""
    provenance = json.loads((figure1_csvs / "provenance.json").read_text())
    assert set(provenance["wall_s"]) == {"plain", "bn"}
    assert {"date", "git", "hardware", "runs_dir", "command"} <= set(provenance)
    for name in ("curves.csv", "summary.csv", "provenance.json"):
        shutil.copy(figure1_csvs / name, tmp_path / name)
    provenance["command"] = "python experiments/figure1.py run --quick --out /elsewhere"
    (tmp_path / "provenance.json").write_text(json.dumps(provenance))
    assert drive(figure1.DRIVER, "draw", "--out", str(tmp_path)).returncode == 0
    readme = (tmp_path / "README.md").read_text()
    assert "- command: `python experiments/figure1.py run --quick`" in readme
    assert (
        "- protocol: 200 steps for each of the seeds 0, 1; test accuracy on the test set "
        "every 100 steps, the percentiles every 50 steps" in readme
    )
    for volatile in (provenance["date"], str(provenance["wall_s"]["bn"]), "/elsewhere"):
        assert volatile not in readme
    for name in ("curves.csv", "summary.csv"):
        assert "wall" not in (tmp_path / name).read_text()


@pytest.mark.parametrize(
    ("command", "stable"),
    [
        ("python experiments/figure1.py run", "python experiments/figure1.py run"),
        (
            "python experiments/figure1.py run --out /tmp/a --quick --runs=/tmp/b steps=5",
            "python experiments/figure1.py run --quick steps=5",
        ),
    ],
)
def test_stable_command_drops_the_folders(command, stable) -> None:
    assert stable_command(command) == stable


def test_the_default_protocol_is_the_committed_one() -> None:
    """`python experiments/figure1.py run` trains what results/figure1/ was made with."""
    provenance = json.loads((REPO / "results" / "figure1" / "provenance.json").read_text())
    for config in provenance["config"].values():
        assert config["seeds"] == list(figure1_protocol.DEFAULT_SEEDS)
        assert config["steps"] == 50000
    assert stable_command(provenance["command"]) == "python experiments/figure1.py run"
    experiment = (REPO / "configs" / "experiment" / "figure1.yaml").read_text()
    assert "\nsteps: 50000\n" in experiment


def test_draw_works_from_the_csv_files_alone(figure1_csvs, tmp_path) -> None:
    for name in ("curves.csv", "summary.csv"):
        shutil.copy(figure1_csvs / name, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "experiments/figure1.py", "draw", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "figure1.png").stat().st_size > 10_000
    assert (tmp_path / "figure1.pdf").read_bytes().startswith(b"%PDF")
    readme = (tmp_path / "README.md").read_text()
    assert "| without BN |" in readme and "| with BN |" in readme and "≈ 0.98" in readme


def test_committed_results_redraw(tmp_path) -> None:
    """`make figures` on a fresh clone: the committed CSVs alone redraw Figure 1, and a redraw
    gives the same PDF byte for byte."""
    committed = REPO / "results" / "figure1"
    if not (committed / "curves.csv").exists():
        pytest.skip("results/figure1 has not been generated in this checkout")
    for name in ("curves.csv", "summary.csv", "provenance.json"):
        shutil.copy(committed / name, tmp_path / name)
    result = run_driver("draw", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "README.md").read_text() == (committed / "README.md").read_text()
    first = (tmp_path / "figure1.pdf").read_bytes()
    assert run_driver("draw", "--out", str(tmp_path)).returncode == 0
    assert (tmp_path / "figure1.pdf").read_bytes() == first


def test_draw_refuses_a_truncated_curves_csv_and_leaves_results_alone(tmp_path) -> None:
    """`truncate -s 5000 results/figure1/curves.csv && make figures` must not redraw."""
    committed = REPO / "results" / "figure1"
    if not (committed / "curves.csv").exists():
        pytest.skip("results/figure1 has not been generated in this checkout")
    for path in committed.iterdir():
        shutil.copy(path, tmp_path / path.name)
    with open(tmp_path / "curves.csv", "r+b") as f:
        f.truncate(5000)
    before = snapshot(tmp_path)
    result = drive(figure1.DRIVER, "draw", "--out", str(tmp_path))
    assert_refused(result, f"{tmp_path / 'curves.csv'} ends in the middle of a line")
    assert snapshot(tmp_path) == before


def drop_last_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))


def nan_accuracy(path: Path, step: int) -> None:
    """`nan` written as seed 1's test accuracy at `step` of a metrics.csv."""
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].strip().split(",")
    for number, line in enumerate(lines[1:], 1):
        fields = line.split(",")
        if (fields[header.index("step")], fields[header.index("seed")]) == (str(step), "1"):
            fields[header.index("test_acc")] = "nan"
            lines[number] = ",".join(fields)
            break
    path.write_text("".join(lines))


def set_status(path: Path, status: str) -> None:
    summary = pd.read_csv(path)
    summary.loc[len(summary) - 1, "status"] = status
    summary.to_csv(path, index=False)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda d: drop_last_row(d / "curves.csv"),
            "curves.csv holds curves that do not end at their last step: variant=plain, seed=1 "
            "ends at step 150, not 200",
        ),
        (
            lambda d: drop_last_row(d / "summary.csv"),
            "summary.csv is incomplete: no rows for variant=plain, seed=1",
        ),
        (
            lambda d: set_status(d / "summary.csv", "interrupted"),
            "variant=plain, seed=1: interrupted",
        ),
    ],
    ids=["a curve stops short", "a run missing", "a run interrupted"],
)
def test_draw_refuses_incomplete_results(figure1_csvs, tmp_path, damage, expected) -> None:
    for name in ("curves.csv", "summary.csv"):
        shutil.copy(figure1_csvs / name, tmp_path / name)
    damage(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(drive(figure1.DRIVER, "draw", "--out", str(tmp_path)), expected)
    assert snapshot(tmp_path) == before


def test_collect_refuses_an_empty_directory(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = drive(
        figure1.DRIVER, "collect", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "out")
    )
    assert_refused(result, f"{tmp_path / 'empty'} holds no runs", "--runs")
    assert not (tmp_path / "out").exists()


def stale(run_dir: Path) -> None:
    """run.json as a job leaves it while it trains, or when it is killed before it ends."""
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"
    del info["seeds"]
    (run_dir / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda runs: stale(runs / "bn"), "The sweep in {runs} is not finished: {runs}/bn: "),
        (
            lambda runs: shutil.rmtree(runs / "bn"),
            "no run of bn with seed 0; no run of bn with seed 1",
        ),
        (
            lambda runs: drop_last_row(runs / "plain" / "metrics.csv"),
            "metrics.csv holds curves that do not end at their last step: seed=1 ends at step "
            "150, not 200",
        ),
        (
            lambda runs: nan_accuracy(runs / "bn" / "metrics.csv", 0),
            "bn/metrics.csv line 3: column test_acc holds 'nan', not a finite number",
        ),
        (
            lambda runs: nan_accuracy(runs / "plain" / "metrics.csv", 200),
            "plain/metrics.csv line 11: column test_acc holds 'nan', not a finite number",
        ),
    ],
    ids=["a stale job", "a job missing", "a metrics.csv short", "nan at step 0", "nan at the end"],
)
def test_collect_refuses_an_unfinished_sweep_and_writes_nothing(
    figure1_runs, figure1_csvs, tmp_path, damage, expected
) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    shutil.copytree(figure1_runs, runs)
    shutil.copytree(figure1_csvs, out)
    damage(runs)
    before = snapshot(out)
    result = drive(figure1.DRIVER, "collect", "--runs", str(runs), "--out", str(out))
    assert_refused(result, expected.format(runs=runs))
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("args", "seeds", "steps", "out"),
    [
        ([], (0, 1, 2), None, REPO / "results" / "figure1"),
        (["--quick"], (0, 1), 1000, REPO / "runs" / "figure1-quick"),
        (["--quick", "--out", "elsewhere", "--seeds", "3"], (3,), 1000, Path("elsewhere")),
    ],
    ids=["committed protocol", "quick", "quick elsewhere"],
)
def test_run_trains_the_protocol_it_is_asked_for(args, seeds, steps, out) -> None:
    """`run` alone is the committed protocol, into results/figure1/; `--quick` writes its
    results under runs/figure1-quick/ unless `--out` says otherwise."""
    invocation = figure1.DRIVER.invocation(["run", *args])
    assert (invocation.seeds, invocation.steps) == (seeds, steps)
    assert invocation.out == out.resolve()
    assert invocation.runs.parent == REPO / "runs" / "figure1"


def test_run_draws_its_runs_curves_training_loss_included(
    figure1_runs, tmp_path, monkeypatch, capsys
) -> None:
    """curves.csv keeps no training loss, so `run` draws the runs' own curves (bnrepro.plot),
    the loss among them, into <runs>/plots/ once they are trained."""
    runs = tmp_path / "runs"
    shutil.copytree(figure1_runs, runs)
    monkeypatch.setattr(figure1_protocol.driver, "multirun", lambda *args: None)  # trained already
    argv = ["run", "--quick", "--runs", str(runs), "--out", str(tmp_path / "out")]
    figure1_protocol.run(figure1.DRIVER.invocation(argv))
    for stem in ("accuracy", "loss", "percentiles"):
        assert (runs / "plots" / f"{stem}.png").stat().st_size > 10_000
    assert f"wrote {runs / 'plots' / 'loss.pdf'}" in capsys.readouterr().out.splitlines()


def drifting_curves(amplitudes: dict[tuple[str, int], float]) -> pd.DataFrame:
    """1,000 steps probed every 10, each (variant, seed) with its three percentiles swinging
    between 0 and its amplitude after step 20, so that its percentile drift is the amplitude
    (the swing before 2% of the run left out, as bnrepro.drift does)."""
    rows = []
    for (variant, seed), amplitude in amplitudes.items():
        for step in range(0, 1001, 10):
            level = 99.0 if step < 20 else amplitude * (step // 10 % 2)
            rows.append((variant, seed, step, 0.5, level - 1, level, level + 1))
    return pd.DataFrame(rows, columns=["variant", "seed", "step", "test_acc", "p15", "p50", "p85"])


def test_the_stability_table_judges_each_seed_by_the_shared_drift() -> None:
    """Figure 1(b, c)'s stability, per seed: the drift without and with BN, their ratio, and in
    how many seeds BN's was less, named as bnrepro.drift names the measure."""
    curves = drifting_curves({("plain", 0): 2.0, ("bn", 0): 0.5, ("plain", 1): 1.0,
                              ("bn", 1): 1.5, ("plain", 2): 3.0, ("bn", 2): 1.0})  # fmt: skip
    lines = figure1_report.stability_section(curves)
    assert "| 0 | 2.0000 | 0.5000 | 4.00x |" in lines
    assert "| 1 | 1.0000 | 1.5000 | 0.67x |" in lines
    assert "| 2 | 3.0000 | 1.0000 | 3.00x |" in lines
    prose = " ".join(" ".join(lines).split())
    assert drift.DEFINITION in prose
    assert (
        "BN's sigmoid input drifted less than the plain net's in 2 of 3 seeds by percentile "
        "drift (without BN / with BN: 0.67x to 4.00x)." in prose
    )


@pytest.mark.parametrize(
    "folder",
    ["figure1", "figure1_binary", "figure1_momentum", "figure1_momentum_binary",
     "reference/figure1"],
)  # fmt: skip
def test_each_committed_readme_judges_stability_by_its_curves(folder) -> None:
    """The stability table of each committed Figure 1 folder is the shared drift of its own
    curves.csv, every seed."""
    committed = REPO / "results" / folder
    curves = pd.read_csv(committed / "curves.csv")
    readme = (committed / "README.md").read_text()
    drifts = drift.drift_by(curves, ["variant", "seed"])
    for seed in sorted(set(curves.seed)):
        plain, bn = drifts[("plain", seed)], drifts[("bn", seed)]
        assert f"| {seed} | {plain:.4f} | {bn:.4f} | {plain / bn:.2f}x |" in readme


def test_a_bn_input_that_never_moves_has_no_ratio() -> None:
    curves = drifting_curves({("plain", 0): 1.0, ("bn", 0): 0.0, ("plain", 1): 0.0,
                              ("bn", 1): 0.0})  # fmt: skip
    lines = figure1_report.stability_section(curves)
    assert "| 0 | 1.0000 | 0.0000 | only without BN |" in lines
    assert "| 1 | 0.0000 | 0.0000 | neither moved |" in lines
    prose = " ".join(" ".join(lines).split())
    assert prose.endswith("plain net's in 1 of 2 seeds by percentile drift.")
