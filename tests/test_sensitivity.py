"""The sensitivity map: per-member numbers on hand-made curves with known answers, the rule that
decides each claim in a cell, refusals of incomplete input, and the quick protocol end to end."""

import importlib.util
import itertools
import math
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO, compose_train
from omegaconf import open_dict

from bnrepro.errors import BnreproError
from bnrepro.train import train


def load_driver():
    spec = importlib.util.spec_from_file_location(
        "sensitivity_driver", REPO / "experiments/sensitivity.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = load_driver()


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
    summary = driver.summarize(hand_made_curve(), 10_000, math.nan)
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
    summary = driver.summarize(curve, 10_000, 6_050.0)
    assert summary["diverged"] is True and summary["diverged_at_step"] == 6_050
    assert summary["acc_5k"] == pytest.approx(0.95) and math.isnan(summary["acc_10k"])
    assert summary["steps_to_095"] == 5_000 and math.isnan(summary["steps_to_097"])
    assert math.isnan(summary["final_acc"]) and math.isnan(summary["drift"])


def test_a_target_never_reached_and_a_checkpoint_past_the_end_are_empty() -> None:
    curve = hand_made_curve()
    curve = curve[curve.step <= 3_000]
    summary = driver.summarize(curve, 3_000, None)
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
    assert driver.verdict(pd.Series(advantages)) == expected


@pytest.mark.parametrize(
    ("plain", "bn", "expected"),
    [(2000.0, 500.0, 4.0), (math.nan, 500.0, math.inf), (500.0, math.nan, 0.0)],
)
def test_steps_ratio(plain, bn, expected) -> None:
    assert driver.steps_ratio(plain, bn) == expected


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
    table = driver.cells(hand_made_members()).set_index(["optimizer", "lr", "init_std"])
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
    driver.atomic_write_text(tmp_path / "members.csv", hand_made_members().to_csv(index=False))
    driver.draw(tmp_path)
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
    driver.atomic_write_text(tmp_path / "members.csv", members.to_csv(index=False))
    result = run_driver("draw", "--out", str(tmp_path))
    assert_refused(result, "members.csv is incomplete", "no rows for net=plain, optimizer=sgd")
    assert not (tmp_path / "README.md").exists()


def test_collect_refuses_a_folder_without_runs(tmp_path) -> None:
    result = run_driver("collect", "--runs", str(tmp_path), "--out", str(tmp_path / "out"))
    assert_refused(result, "holds no runs")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist_root):
    """The four runs of a tiny grid, trained in this process: lr 0.1 trains, lr 1e20 makes every
    net's loss non-finite within the first steps."""
    runs = tmp_path_factory.mktemp("runs")
    for optimizer, (model, net) in itertools.product(driver.OPTIMIZERS, driver.NETS.items()):
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
    driver.collect(sweep, out, "python experiments/sensitivity.py run --quick --jobs 4")
    driver.draw(out)
    return out


@pytest.mark.integration
def test_collect_and_draw_a_real_sweep(collected) -> None:
    members = pd.read_csv(collected / "members.csv")
    assert list(members.columns) == list(driver.MEMBER_COLUMNS)
    assert len(members) == 2 * 2 * 2 * 2 * 1, "one row per net, optimizer, lr, init std, seed"
    assert not members.duplicated(list(driver.MEMBER_KEYS)).any()
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
    provenance = driver.read_json(collected / "provenance.json", "")
    assert set(provenance["wall_s"]) == {"sgd/plain", "sgd/bn", "momentum_mlp/plain",
                                         "momentum_mlp/bn"}  # fmt: skip


@pytest.mark.integration
def test_collect_refuses_a_sweep_without_one_run(sweep, tmp_path) -> None:
    partial = tmp_path / "runs"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("wandb"))
    shutil.rmtree(partial / "momentum_mlp" / "bn")
    with pytest.raises(BnreproError, match="incomplete: no run of bn with momentum_mlp"):
        driver.collect(partial, tmp_path / "out", "test")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_collect_refuses_a_curve_cut_short(sweep, tmp_path) -> None:
    partial = tmp_path / "runs"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("wandb"))
    metrics = partial / "sgd" / "bn" / "metrics.csv"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(BnreproError, match="do not end at their last step"):
        driver.collect(partial, tmp_path / "out", "test")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_run_quick_end_to_end(tmp_path, mnist_root) -> None:
    """`run --quick`: four processes, then members.csv, the heatmaps and the README."""
    result = run_driver(
        "run", "--quick", "--jobs", "4", "--out", str(tmp_path / "out"),
        "--runs", str(tmp_path / "runs"), f"data.root={mnist_root}", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    members = pd.read_csv(tmp_path / "out" / "members.csv")
    quick = driver.QUICK
    assert len(members) == 4 * len(quick["lrs"]) * len(quick["init_stds"]) * len(quick["seeds"])
    assert (members.steps == quick["steps"]).all()
    sweep = driver.read_json(tmp_path / "runs" / "sweep.json", "")
    assert sweep["jobs"] == 4 and len(sweep["wall_s"]) == 4
    assert (tmp_path / "out" / "sensitivity.png").is_file()
