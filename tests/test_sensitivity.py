"""The sensitivity map: per-member numbers on hand-made curves with known answers, the rule that
decides each claim in a cell, the command line's refusals, the multirun it launches, refusals of
incomplete input, and the quick protocol end to end."""

import dataclasses
import itertools
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose_train, drive
from omegaconf import open_dict

from bnrepro import drift
from bnrepro.atomic import atomic_write_text
from bnrepro.driver import UsageError
from bnrepro.errors import BnreproError
from bnrepro.experiments import sensitivity
from bnrepro.experiments.sensitivity import analysis, protocol, report
from bnrepro.experiments.sensitivity import readme as map_readme
from bnrepro.tables import read_json
from bnrepro.train import train


def run_driver(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/sensitivity.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def assert_refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    """One paragraph naming the problem and the fix, no traceback, exit status 2."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("bnrepro: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Fix: " in result.stderr
    for text in expected:
        assert text in result.stderr


def hand_made_curve() -> pd.DataFrame:
    """10,000 steps: test accuracy every 1,000 steps rising 0.90, 0.91, ... (0.95 first at step
    5,000, 0.97 at 7,000); percentiles every 100 steps, p50 = step / 1,000, p15 = p50 - 1,
    p85 constant 2."""
    steps = range(0, 10_001, 100)
    return pd.DataFrame(
        {
            "step": list(steps),
            "test_acc": [0.90 + s / 100_000 if s % 1000 == 0 else math.nan for s in steps],
            "p15": [s / 1000 - 1 for s in steps],
            "p50": [s / 1000 for s in steps],
            "p85": [2.0 for _ in steps],
        }
    )


def test_summarize_a_member_with_known_answers() -> None:
    summary = protocol.summarize(hand_made_curve(), 10_000, math.nan)
    assert summary["final_acc"] == pytest.approx(1.00)
    assert summary["acc_1k"] == pytest.approx(0.91)
    assert summary["acc_5k"] == pytest.approx(0.95)
    assert summary["acc_10k"] == pytest.approx(1.00)
    assert summary["steps_to_095"] == 5_000
    assert summary["steps_to_097"] == 7_000
    # Drift over steps >= 2% of 10,000 = 200: p50 runs from 0.2 to 10, p15 from -0.8 to 9.
    assert summary["drift_p50"] == pytest.approx(9.8)
    assert summary["drift_p15"] == pytest.approx(9.8)
    assert summary["drift_p85"] == 0.0
    assert summary["drift"] == pytest.approx(9.8 * 2 / 3)
    assert summary["diverged"] is False and math.isnan(summary["diverged_at_step"])


def test_summarize_leaves_out_what_follows_divergence() -> None:
    curve = hand_made_curve()
    curve.loc[curve.step >= 6_000, ["test_acc", "p15", "p50", "p85"]] = math.nan
    summary = protocol.summarize(curve, 10_000, 6_050.0)
    assert summary["diverged"] is True and summary["diverged_at_step"] == 6_050
    assert summary["acc_5k"] == pytest.approx(0.95) and math.isnan(summary["acc_10k"])
    assert summary["steps_to_095"] == 5_000 and math.isnan(summary["steps_to_097"])
    assert math.isnan(summary["final_acc"]) and math.isnan(summary["drift"])


def test_a_target_never_reached_and_a_checkpoint_past_the_end_are_empty() -> None:
    curve = hand_made_curve()
    curve = curve[curve.step <= 3_000]
    summary = protocol.summarize(curve, 3_000, None)
    assert summary["final_acc"] == pytest.approx(0.93)
    assert math.isnan(summary["acc_5k"]) and math.isnan(summary["steps_to_095"])


@pytest.mark.parametrize(
    ("advantages", "expected"),
    [
        ([0.01, 0.02, 0.001], "holds"),
        ([-0.01, -0.02, -0.001], "reversed"),
        ([0.01, -0.02, 0.03], "mixed"),
        ([0.01, 0.0, 0.03], "mixed"),
        ([0.01, math.nan, 0.03], "undefined"),
    ],
)
def test_the_verdict_rule(advantages, expected) -> None:
    assert analysis.verdict(pd.Series(advantages)) == expected


@pytest.mark.parametrize(
    ("plain", "bn", "expected"),
    [(2000.0, 500.0, 4.0), (math.nan, 500.0, math.inf), (500.0, math.nan, 0.0)],
)
def test_steps_ratio(plain, bn, expected) -> None:
    assert analysis.steps_ratio(plain, bn) == expected


def hand_made_members() -> pd.DataFrame:
    """A 2 x 2 grid, 2 seeds: BN ends 1 point higher, is 5 points ahead at step 5,000, reaches
    0.95 in a quarter of the steps and drifts half as much, except that at lr 1, std 1 the
    plain net with seed 1 diverged."""
    rows = []
    for net, optimizer, lr, std, seed in itertools.product(
        ("bn", "plain"), ("momentum_mlp", "sgd"), (0.1, 1.0), (0.01, 1.0), (0, 1)
    ):
        bn = net == "bn"
        diverged = not bn and lr == 1.0 and std == 1.0 and seed == 1
        rows.append(
            {
                "net": net, "optimizer": optimizer, "lr": lr, "init_std": std, "seed": seed,
                "steps": 10_000, "final_acc": math.nan if diverged else 0.97 + 0.01 * bn,
                "acc_1k": 0.8, "acc_5k": 0.90 + 0.05 * bn, "acc_10k": 0.97 + 0.01 * bn,
                "steps_to_095": 1_000 if bn else 4_000, "steps_to_097": 2_000 if bn else math.nan,
                "drift_p15": 1.0, "drift_p50": 1.0, "drift_p85": 1.0,
                "drift": math.nan if diverged else 1.0 if bn else 2.0, "diverged": diverged,
                "diverged_at_step": 700 if diverged else math.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_cells_pair_the_nets_seed_by_seed() -> None:
    table = analysis.cells(hand_made_members()).set_index(["optimizer", "lr", "init_std"])
    assert len(table) == 8
    cell = table.loc[("sgd", 0.1, 0.01)]
    assert cell.final_gap == pytest.approx(0.01) and cell.early_gap == pytest.approx(0.05)
    assert cell.steps_ratio == pytest.approx(4.0) and cell.drift_ratio == pytest.approx(2.0)
    assert (cell.ends_higher, cell.faster_early, cell.stabler) == ("holds",) * 3
    diverged = table.loc[("sgd", 1.0, 1.0)]
    assert diverged.plain_diverged == 1 and diverged.bn_diverged == 0
    assert (diverged.ends_higher, diverged.faster_early, diverged.stabler) == ("diverged",) * 3


def test_draw_from_a_hand_made_csv(tmp_path) -> None:
    """draw writes the heatmaps and a README that names each claim's region and the diverged
    member, from members.csv alone."""
    atomic_write_text(tmp_path / "members.csv", hand_made_members().to_csv(index=False))
    report.draw(tmp_path)
    assert (tmp_path / "sensitivity.png").stat().st_size > 10_000
    assert (tmp_path / "sensitivity.pdf").exists()
    readme = (tmp_path / "README.md").read_text()
    assert "plain SGD: holds in 3 of 4 cells (1 diverged)" in readme
    assert "| plain | sgd | 1 | 1 | 1 | 700 |" in readme
    assert "10,000 steps, shorter than Figure 1's 50,000" in readme
    assert "at step 5,000." in readme


def test_draw_refuses_a_members_csv_with_a_member_missing(tmp_path) -> None:
    members = hand_made_members()
    members = members.drop(index=members.index[-1])
    atomic_write_text(tmp_path / "members.csv", members.to_csv(index=False))
    result = drive(sensitivity.DRIVER, "draw", "--out", str(tmp_path))
    assert_refused(result, "members.csv is incomplete", "no rows for net=plain, optimizer=sgd")
    assert not (tmp_path / "README.md").exists()


def test_collect_refuses_a_folder_without_runs(tmp_path) -> None:
    result = drive(
        sensitivity.DRIVER, "collect", "--runs", str(tmp_path), "--out", str(tmp_path / "out")
    )
    assert_refused(result, "holds no runs")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", ["results/sensitivity", "results/reference/sensitivity"])
def test_the_committed_results_redraw_byte_identical(tmp_path, folder) -> None:
    committed = REPO / folder
    shutil.copytree(committed, tmp_path / "out")
    report.draw(tmp_path / "out")
    for name in ("README.md", "sensitivity.png", "sensitivity.pdf"):
        assert (tmp_path / "out" / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.parametrize(
    ("argv", "folder", "seeds", "steps"),
    [
        (["run"], "results/sensitivity", protocol.SEEDS, 50_000),
        (["run", "--quick"], "results/reference/sensitivity", protocol.QUICK["seeds"], 300),
    ],
)
def test_the_default_protocols_are_the_committed_ones(argv, folder, seeds, steps) -> None:
    """`run` retrains results/sensitivity's grid, `run --quick` results/reference's."""
    invocation = sensitivity.DRIVER.invocation(argv)
    members = pd.read_csv(REPO / folder / "members.csv")
    assert tuple(sorted(set(members.lr))) == invocation.lrs
    assert tuple(sorted(set(members.init_std))) == invocation.init_stds
    assert tuple(sorted(set(members.seed))) == seeds
    assert (members.steps == steps).all() and invocation.steps in (None, steps)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--steps", "0"], "--steps 0 is not a number of training steps"),
        (["run", "--steps", "-5"], "--steps -5 is not a number of training steps"),
        (["run", "--jobs", "0"], "--jobs 0 is not a number of processes at a time"),
        (["run", "--jobs", "-1"], "--jobs -1 is not a number of processes at a time"),
        (["run", "--lrs", "0.1,0.1"], "--lrs 0.1,0.1 names a value twice"),
        (["run", "--lrs", "inf"], "--lrs 'inf' is not a list of finite numbers above 0"),
        (["run", "--init-stds", "0,0.1"], "--init-stds '0,0.1' is not a list of finite numbers"),
        (["draw", "--jobs", "2"], "--jobs: not taken by `draw`"),
    ],
)
def test_bad_options_are_refused_before_anything_starts(argv, expected) -> None:
    """`--steps 0` once trained the full 50,000 steps and `--jobs -1` hung forever."""
    with pytest.raises(UsageError, match=re.escape(expected)):
        sensitivity.DRIVER.invocation(argv)


def test_a_bad_option_exits_2_and_creates_nothing(tmp_path) -> None:
    result = run_driver(
        "run", "--jobs", "-1", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
        timeout=60,
    )  # fmt: skip
    assert_refused(result, "--jobs -1 is not a number of processes at a time")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "jobs", "expected"),
    [
        (["run"], 2, ["seeds=[0,1,2]", "grid.lr=[0.01,0.03,0.1,0.3,1.0]",
                      "grid.init_std=[0.01,0.1,0.3,1.0]"]),
        (["run", "--device", "cuda"], 4, ["device=cuda"]),
        (["run", "--device", "cuda:1", "--jobs", "1"], 1, ["device=cuda:1"]),
        (["run", "--quick", "data.input=binary"], 2,
         ["seeds=[0]", "grid.lr=[0.1,1.0]", "grid.init_std=[0.01,0.1]", "steps=300",
          "eval_every=50", "probe.every=25", "data.input=binary"]),
        (["run", "--lrs", "0.0123456789,1e-05", "--steps", "2000"], 2,
         ["grid.lr=[0.0123456789,1e-05]", "steps=2000"]),
    ],
)  # fmt: skip
def test_run_launches_the_four_runs_as_one_multirun(
    monkeypatch, two_gpus, tmp_path, argv, jobs, expected
) -> None:
    launched = []
    monkeypatch.setattr(protocol.driver, "multirun", lambda *args: launched.append(args))
    protocol.run(sensitivity.DRIVER.invocation([*argv, "--runs", str(tmp_path)]))
    [(overrides, sweep_dir, subdir, n_jobs)] = launched
    assert overrides[:4] == [
        "experiment=figure1", "name=sensitivity", "model=mlp_bn,mlp", "optim=sgd,momentum_mlp",
    ]  # fmt: skip
    assert set(expected) <= set(overrides)
    assert (sweep_dir, subdir, n_jobs) == (tmp_path, "${optim.name}/${model.variant}", jobs)
    if argv == ["run"]:
        assert not [o for o in overrides if o.startswith(("steps=", "device="))]


def test_hydra_launches_the_bn_runs_first() -> None:
    """The order `run` relies on: Hydra's basic sweeper launches the product of the swept
    values with the last override's varying fastest, so both BN runs start first."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["model=mlp_bn,mlp", "optim=sgd,x"])
    [jobs] = BasicSweeper.split_arguments(overrides, None)
    assert [job[0] for job in jobs] == ["model=mlp_bn", "model=mlp_bn", "model=mlp", "model=mlp"]


def collect(runs: Path, out: Path, command: str = "test") -> None:
    """`collect --runs runs --out out`, in this process, recording `command` as typed."""
    invocation = sensitivity.DRIVER.invocation(["collect", "--runs", str(runs), "--out", str(out)])
    protocol.collect(dataclasses.replace(invocation, command=command))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist_root):
    """The four runs of a tiny grid, trained in this process: lr 0.1 trains, lr 1e20 makes every
    net's loss non-finite within the first steps."""
    runs = tmp_path_factory.mktemp("runs")
    for optimizer, (model, net) in itertools.product(protocol.OPTIMIZERS, protocol.NETS.items()):
        cfg = compose_train(
            ["experiment=figure1", "name=sensitivity", f"model={model}",
             f"optim={optimizer}", "seeds=[0]", "grid.lr=[0.1,1e20]", "grid.init_std=[0.1,1.0]",
             "steps=200", "eval_every=50", "probe.every=25", "probe.size=200", "device=cpu",
             f"data.root={mnist_root}", "logger.wandb.mode=disabled"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg, runs / optimizer / net)
    return runs


@pytest.fixture(scope="module")
def collected(tmp_path_factory, sweep):
    out = tmp_path_factory.mktemp("sensitivity")
    collect(sweep, out, "python experiments/sensitivity.py run --quick --jobs 4")
    report.draw(out)
    return out


@pytest.mark.integration
def test_collect_and_draw_a_real_sweep(collected) -> None:
    members = pd.read_csv(collected / "members.csv")
    assert list(members.columns) == list(protocol.MEMBER_COLUMNS)
    assert len(members) == 2 * 2 * 2 * 2 * 1, "one row per net, optimizer, lr, init std, seed"
    assert not members.duplicated(list(protocol.MEMBER_KEYS)).any()
    trained, diverged = members[members.lr == 0.1], members[members.lr == 1e20]
    assert not trained.diverged.any() and trained.final_acc.notna().all()
    assert diverged.diverged.all() and diverged.diverged_at_step.notna().all()
    assert diverged.final_acc.isna().all() and diverged.drift.isna().all()
    assert (trained.drift > 0).all()
    for name in ("sensitivity.png", "sensitivity.pdf", "README.md", "provenance.json"):
        assert (collected / name).is_file()
    readme = (collected / "README.md").read_text()
    assert "| bn | momentum_mlp | 1e+20 | 0.1 | 0 |" in readme
    assert "- command: `python experiments/sensitivity.py run --quick`" in readme
    provenance = read_json(collected / "provenance.json", "")
    assert set(provenance["wall_s"]) == {"sgd/plain", "sgd/bn", "momentum_mlp/plain",
                                         "momentum_mlp/bn"}  # fmt: skip


@pytest.mark.integration
def test_collect_refuses_a_sweep_without_one_run(sweep, tmp_path) -> None:
    partial = tmp_path / "runs"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("wandb"))
    shutil.rmtree(partial / "momentum_mlp" / "bn")
    with pytest.raises(BnreproError, match="incomplete: no run of bn with momentum_mlp"):
        collect(partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_collect_refuses_a_curve_cut_short(sweep, tmp_path) -> None:
    partial = tmp_path / "runs"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("wandb"))
    metrics = partial / "sgd" / "bn" / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(BnreproError, match="do not end at their last step"):
        collect(partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_run_quick_end_to_end(tmp_path, mnist_root) -> None:
    """`run --quick`: four jobs of one multirun, each into <runs>/<optimizer>/<net>/, then
    members.csv, the heatmaps and the README."""
    result = run_driver(
        "run", "--quick", "--jobs", "4", "--out", str(tmp_path / "out"),
        "--runs", str(tmp_path / "runs"), f"data.root={mnist_root}", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    members = pd.read_csv(tmp_path / "out" / "members.csv")
    quick = protocol.QUICK
    assert len(members) == 4 * len(quick["lrs"]) * len(quick["init_stds"]) * len(quick["seeds"])
    assert (members.steps == quick["steps"]).all()
    provenance = read_json(tmp_path / "out" / "provenance.json", "")
    assert provenance["jobs"] == 4 and provenance["sweep_wall_s"] > 0
    assert set(provenance["wall_s"]) == {
        f"{optimizer}/{net}" for optimizer in protocol.OPTIMIZERS for net in ("plain", "bn")
    }
    for name in provenance["wall_s"]:
        assert (tmp_path / "runs" / name / "run.json").is_file()
    assert (tmp_path / "out" / "sensitivity.png").is_file()


@pytest.mark.integration
def test_a_sweep_whose_jobs_fail_exits_1_naming_them(tmp_path) -> None:
    """Every job fails at its start (no MNIST under data.root): each records `failed` in its
    run.json, and the driver names each with its error's first line, exit status 1, nothing
    collected."""
    result = run_driver(
        "run", "--quick", "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
        f"data.root={tmp_path / 'nowhere'}", timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bnrepro: 4 job(s) of the sweep in ")
    for optimizer in protocol.OPTIMIZERS:
        for net in ("plain", "bn"):
            assert f"{optimizer}/{net}: failed - MNIST file(s) " in last
            info = read_json(tmp_path / "runs" / optimizer / net / "run.json", "")
            assert info["status"] == "failed"
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- one drift measure


def old_summarize_drift(curve: pd.DataFrame, steps: int) -> dict[str, float]:
    """The drift summarize computed by itself when members.csv was collected (before it used
    bnrepro.drift), kept here to show that the shared measure gives the same numbers."""
    late = curve[curve.step >= 0.02 * steps]
    drifts = {f"drift_{p}": float(late[p].max() - late[p].min()) for p in ("p15", "p50", "p85")}
    return {**drifts, "drift": float(np.mean(list(drifts.values())))}


@pytest.mark.parametrize("seed", range(5))
def test_summarize_drift_is_the_shared_measure_and_what_it_was(seed) -> None:
    """On random walks with steps that have no probe (as a metrics.csv logs them: the three
    percentiles of a step are there or missing together), summarize's drift is bnrepro.drift's
    and is what summarize computed by itself, to the bit: members.csv need not change."""
    rng = np.random.default_rng(seed)
    steps = 5_000
    curve = pd.DataFrame({"step": range(0, steps + 1, 25)})
    for p in ("p15", "p50", "p85"):
        curve[p] = rng.normal(0, 0.1, len(curve)).cumsum()
    curve.loc[rng.random(len(curve)) < 0.2, ["p15", "p50", "p85"]] = math.nan
    curve["test_acc"] = [0.9 if s % 500 == 0 else math.nan for s in curve.step]
    summary = protocol.summarize(curve, steps, None)
    old = old_summarize_drift(curve, steps)
    assert {key: summary[key] for key in old} == old
    assert summary["drift"] == drift.drift(curve, steps)
    ranges = drift.percentile_ranges(curve, steps)
    assert {f"drift_{p}": r for p, r in ranges.items()} == {
        key: old[key] for key in ("drift_p15", "drift_p50", "drift_p85")
    }


@pytest.mark.parametrize(
    ("folder", "optimizer", "lr", "init_std"),
    [("figure1", "sgd", 0.1, 0.1), ("figure1_momentum", "momentum_mlp", 0.01, 0.01)],
)
def test_members_drift_is_the_shared_measure_of_figure1s_curves(
    folder, optimizer, lr, init_std
) -> None:
    """members.csv was collected on a GPU from runs no longer kept; two of its cells are the
    protocols of results/figure1 and results/figure1_momentum, trained again on a CPU. The
    shared measure on those folders' curves gives members.csv's drift of each net and seed
    within the map's tolerance for a drift."""
    members = pd.read_csv(REPO / "results" / "sensitivity" / "members.csv")
    cell = members[
        (members.optimizer == optimizer) & (members.lr == lr) & (members.init_std == init_std)
    ].set_index(["net", "seed"])
    curves = pd.read_csv(REPO / "results" / folder / "curves.csv")
    shared = drift.drift_by(curves, ["variant", "seed"])
    tolerance = protocol.TOLERANCES["members.csv"]["drift"]
    assert len(shared) == len(cell) == 6
    for (net, seed), value in shared.items():
        assert abs(value - cell.at[(net, seed), "drift"]) <= tolerance, (net, seed)


def test_the_drift_minimums_reason_holds_on_the_committed_curves() -> None:
    """MIN_EFFECT's drift ratio rests on DRIFT_HALVES_GAP: how far one run's drift from every
    other probe and from the probes between differ, over the runs of results/figure1*."""
    gaps = []
    for folder in analysis.DRIFT_HALVES_FOLDERS:
        curves = pd.read_csv(REPO / "results" / folder / "curves.csv")
        for _, rows in curves.groupby(["variant", "seed"]):
            steps, every = int(rows.step.max()), int(rows.step.diff().min())
            halves = [drift.drift(rows[(rows.step // every) % 2 == k], steps) for k in (0, 1)]
            gaps.append(abs(halves[0] - halves[1]) / drift.drift(rows, steps))
    assert len(gaps) == 24
    assert round(max(gaps), 3) == analysis.DRIFT_HALVES_GAP
    assert round(float(np.median(gaps)), 3) == analysis.DRIFT_HALVES_MEDIAN
    assert analysis.MIN_EFFECT["drift ratio"] >= max(gaps)


# ---------------------------------------------------------------- the minimum effect


@pytest.mark.parametrize(
    ("effects", "minimum", "ratio", "expected"),
    [
        ([0.003, 0.004, 0.0025], 0.002, False, "holds"),
        ([0.001, 0.002, 0.0015], 0.002, False, "small"),
        ([-0.001, -0.002, -0.0015], 0.002, False, "small"),
        ([-0.003, -0.004, -0.0025], 0.002, False, "reversed"),
        ([0.01, -0.001, 0.01], 0.002, False, "mixed"),
        ([1.2, 1.3, 1.15], 0.1, True, "holds"),
        ([1.05, 1.08, 1.02], 0.1, True, "small"),
        ([0.95, 0.93, 0.97], 0.1, True, "small"),
        ([0.8, 0.85, 0.7], 0.1, True, "reversed"),
        ([1.05, 0.5, 1.5], 0.1, True, "mixed"),
        ([math.inf, 1.01, 1.02], 0.15, True, "holds"),
        ([0.0, 0.95, 0.9], 0.15, True, "reversed"),
        ([1.2, math.nan, 1.3], 0.1, True, "undefined"),
    ],
)
def test_agreement_in_sign_needs_a_mean_beyond_the_minimum(
    effects, minimum, ratio, expected
) -> None:
    assert analysis.verdict(pd.Series(effects), minimum, ratio) == expected


def test_decided_is_the_verdict_rule_on_many_cells() -> None:
    rng = np.random.default_rng(0)
    for minimum, ratio in ((0.002, False), (0.1, True), (0.0, False)):
        effects = rng.normal(0, 0.003, (2_000, 3))
        effects = np.exp(effects * 30) if ratio else effects
        expected = [
            analysis.verdict(pd.Series(row), minimum, ratio) in ("holds", "reversed")
            for row in effects
        ]
        assert analysis.decided(effects, minimum, ratio).tolist() == expected


def one_cell(final_gaps, steps_ratios, drift_ratios) -> pd.DataFrame:
    """Members of one cell (plain SGD, lr 0.1, std 0.1), a seed per value: BN's final accuracy
    and its accuracy at 5,000 steps `final_gaps` above the plain net's, the plain net's steps
    to 0.95 `steps_ratios` times BN's 4,000 and its drift `drift_ratios` times BN's 0.5."""
    rows = []
    for seed, (gap, steps, ratio) in enumerate(
        zip(final_gaps, steps_ratios, drift_ratios, strict=True)
    ):
        for net, bn in (("plain", 0), ("bn", 1)):
            rows.append(
                {
                    "net": net, "optimizer": "sgd", "lr": 0.1, "init_std": 0.1, "seed": seed,
                    "steps": 50_000, "final_acc": 0.97 + gap * bn, "acc_1k": 0.5,
                    "acc_5k": 0.9 + gap * bn, "acc_10k": 0.95,
                    "steps_to_095": 4_000 if bn else 4_000 * steps, "steps_to_097": 9_000,
                    "drift_p15": 0.5, "drift_p50": 0.5, "drift_p85": 0.5,
                    "drift": 0.5 if bn else 0.5 * ratio, "diverged": False,
                    "diverged_at_step": math.nan,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_minimum_is_each_measures_own() -> None:
    """One cell where every seed agrees in every measure: a gap of 0.1 points is under the
    accuracy minimum (0.2 points), a steps ratio of 1.12 under the steps minimum (15%), while a
    drift ratio of 1.12 is beyond the drift minimum (10%)."""
    [cell] = analysis.cells(
        one_cell([0.001, 0.0012, 0.0008], [1.12, 1.12, 1.12], [1.12, 1.12, 1.12])
    ).to_dict("records")
    assert (cell["ends_higher"], cell["faster_early"]) == ("small", "small")
    assert cell["sooner_to_095"] == "small" and cell["stabler"] == "holds"
    [cell] = analysis.cells(
        one_cell([0.003, 0.004, 0.005], [1.2, 1.3, 1.2], [1.05, 1.08, 1.06])
    ).to_dict("records")
    assert (cell["ends_higher"], cell["faster_early"]) == ("holds", "holds")
    assert cell["sooner_to_095"] == "holds" and cell["stabler"] == "small"


def test_false_positive_rates_from_the_seeds_spread() -> None:
    """By sign alone a cell without an effect reads holds or reversed a quarter of the time
    with three seeds; a minimum far beyond the seeds' spread brings that to nothing, one far
    within it leaves it; the numbers are the same on every call (the draws are seeded), and
    a map of one seed has no spread to measure."""
    wide = one_cell([0.01, -0.01, 0.02], [1.5, 0.7, 1.1], [2.0, 0.5, 1.3])
    narrow = one_cell([0.0001, -0.0001, 0.0002], [1.01, 0.99, 1.0], [1.01, 0.99, 1.02])
    rates = analysis.false_positive_rates(wide)
    assert rates == analysis.false_positive_rates(wide)
    for claim, (with_minimum, by_sign) in rates.items():
        assert by_sign == pytest.approx(0.25, abs=0.01), claim
        assert with_minimum < by_sign
    assert rates["ends_higher"][0] > 0.2  # a spread of 1.5 points dwarfs 0.2 points
    for claim, (with_minimum, by_sign) in analysis.false_positive_rates(narrow).items():
        assert with_minimum == 0 and by_sign == pytest.approx(0.25, abs=0.01), claim
    one_seed = wide[wide.seed == 0]
    assert set(analysis.false_positive_rates(one_seed).values()) == {None}


def test_the_readme_states_the_rule_its_minimums_and_rates(tmp_path) -> None:
    atomic_write_text(tmp_path / "members.csv", hand_made_members().to_csv(index=False))
    report.draw(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    prose = " ".join(readme.split())
    assert drift.DEFINITION[1:] in prose, "the drift is named as bnrepro.drift defines it"
    assert "is **small**, one whose seeds disagree is **mixed**" in prose
    assert "| (a) BN ends higher | accuracy gap | ± 0.20 points (20 test images) |" in readme
    assert "| 1 ± 10% (above 1.10x or below 0.91x) |" in readme
    rates = analysis.false_positive_rates(hand_made_members())
    for claim, (title, _, _) in analysis.CLAIMS.items():
        rate = rates[claim]
        assert f"| {title} |" in readme and f"| {rate[0]:.1%} | {rate[1]:.1%} |" in readme


def test_a_short_map_does_not_name_the_results_folders_as_its_numbers() -> None:
    """On a map of Figure 1's length the cell is results/figure1's protocol; on a shorter one
    only its optimizer, lr and init std are."""
    assert map_readme.protocol_name("ours", "results/figure1", 50_000) == "ours (results/figure1)"
    short = map_readme.protocol_name("ours", "results/figure1", 300)
    assert short == "ours at 300 steps (results/figure1 trains 50,000)"
    reference = (REPO / "results" / "reference" / "sensitivity" / "README.md").read_text()
    assert "| ours (results/figure1) |" not in reference
    assert "| ours at 300 steps (results/figure1 trains 50,000) |" in reference


# ---------------------------------------------------------------- headline


def test_headline_of_a_hand_made_map() -> None:
    numbers = analysis.headline(hand_made_members())
    assert (numbers["steps"], numbers["members"], numbers["cells"]) == (10_000, 32, 8)
    assert numbers["verdicts"]["ends_higher"]["sgd"] == {"holds": 3, "diverged": 1}
    for optimizer in ("sgd", "momentum_mlp"):
        for std in (0.01, 1.0):
            assert numbers["final_gap_range_points"][optimizer][std] == pytest.approx((1, 1))
            assert numbers["final_gap_points"][optimizer][std] == pytest.approx({0.1: 1, 1.0: 1})


def test_headline_is_what_the_committed_readme_shows() -> None:
    """Every final gap headline gives is the number results/sensitivity/README.md shows for
    that cell, and each range is the least and greatest of its row."""
    members = pd.read_csv(REPO / "results" / "sensitivity" / "members.csv")
    members["diverged"] = members.diverged.astype(bool)
    numbers = analysis.headline(members)
    readme = (REPO / "results" / "sensitivity" / "README.md").read_text()
    section = readme.split("### (a) BN ends higher")[1].split("### (b)")[0]
    for optimizer, name in protocol.OPTIMIZERS.items():
        table = section.split(f"{name}:\n")[-1]
        for std, by_lr in numbers["final_gap_points"][optimizer].items():
            row = next(line for line in table.splitlines() if line.startswith(f"| {std:g} |"))
            assert [cell.split()[0] for cell in row.split("|")[2:-1]] == [
                f"{gap:+.2f}" for gap in by_lr.values()
            ]
            assert numbers["final_gap_range_points"][optimizer][std] == (
                min(by_lr.values()), max(by_lr.values())
            )  # fmt: skip
    counts = numbers["verdicts"]["ends_higher"]["sgd"]
    assert f"plain SGD: holds in {counts['holds']} of {sum(counts.values())} cells" in readme


def test_the_accuracy_and_steps_minimums_reasons_hold_on_the_committed_map() -> None:
    """MIN_EFFECT's accuracy gap is about the binomial standard error of one test accuracy
    where the map's final accuracies lie, and its steps ratio at least one evaluation (500
    steps) over the steps the median BN member takes to 0.95."""
    members = pd.read_csv(REPO / "results" / "sensitivity" / "members.csv")
    median = members.final_acc.median()
    error = math.sqrt(median * (1 - median) / analysis.TEST_IMAGES)
    assert error <= analysis.MIN_EFFECT["accuracy gap"] <= math.sqrt(0.95 * 0.05 / 10_000)
    bn_steps = members[members.net == "bn"].steps_to_095.median()
    assert bn_steps == 3_500
    assert 500 / bn_steps <= analysis.MIN_EFFECT["steps ratio"]
