"""The training harness end to end on real MNIST: files written, determinism, vectorized seeds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO

from bnrepro.errors import ConfigError
from bnrepro.tables import MLP_METRIC_COLUMNS
from bnrepro.train import train
from bnrepro.train_mlp import GRID_COLUMNS, METRIC_COLUMNS


def test_run_writes_metrics_config_and_run_info(small_cfg, tmp_path) -> None:
    info = train(small_cfg("model=mlp_bn", "seeds=[0,1]"), tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert list(metrics.columns) == list(MLP_METRIC_COLUMNS)  # the drivers read it so
    assert sorted(metrics.seed.unique()) == [0, 1]
    assert sorted(metrics.step.unique()) == list(range(0, 301, 50))
    assert sorted(metrics.dropna(subset=["test_acc"]).step.unique()) == [0, 100, 200, 300]
    assert (metrics.p15 <= metrics.p50).all() and (metrics.p50 <= metrics.p85).all()
    final = metrics[metrics.step == 300].test_acc
    assert (final > 0.8).all(), "300 steps of the BN net should already beat 80% on MNIST"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["status"] == info["status"] == "completed"
    assert run["steps"] == 300 and run["wall_s"] > 0
    assert {"commit", "dirty"} <= set(run["git"]) and run["hardware"]["device"] == "cpu"
    assert [s["final_test_acc"] for s in run["seeds"]] == final.tolist()
    assert "batch_size: 60" in (tmp_path / "config.yaml").read_text()
    assert (tmp_path / "model.pt").exists()


def test_same_seed_gives_identical_csv_on_cpu(small_cfg, tmp_path) -> None:
    for name in ("a", "b"):
        train(small_cfg("model=mlp_bn", "seeds=[3]"), tmp_path / name)
    first = (tmp_path / "a" / "metrics.csv").read_bytes()
    assert first == (tmp_path / "b" / "metrics.csv").read_bytes()
    train(small_cfg("model=mlp_bn", "seeds=[4]"), tmp_path / "c")
    assert first != (tmp_path / "c" / "metrics.csv").read_bytes()


@pytest.mark.parametrize("model", ["mlp", "mlp_bn"])
def test_member_of_vectorized_run_equals_its_single_seed_run(small_cfg, tmp_path, model) -> None:
    train(small_cfg(f"model={model}", "seeds=[5,8,13]"), tmp_path / "together")
    train(small_cfg(f"model={model}", "seeds=[8]"), tmp_path / "alone")
    together = pd.read_csv(tmp_path / "together" / "metrics.csv")
    alone = pd.read_csv(tmp_path / "alone" / "metrics.csv")
    member = together[together.seed == 8].reset_index(drop=True)
    # Float rounding only: the members' matrix products are batched, the single run's are not.
    pd.testing.assert_frame_equal(member, alone, check_exact=False, atol=1e-5, rtol=0)
    assert member.test_acc.equals(alone.test_acc)


def test_binary_input_trains(small_cfg, tmp_path) -> None:
    info = train(small_cfg("model=mlp_bn", "data.input=binary"), tmp_path)
    assert info["seeds"][0]["final_test_acc"] > 0.8


def test_nonfinite_loss_is_recorded_as_diverged(small_cfg, tmp_path) -> None:
    cfg = small_cfg("model=mlp", "model.activation=relu", "optim.lr=1e6", "model.init_std=1")
    info = train(cfg, tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == run["status"] == "diverged"
    assert run["seeds"][0]["diverged_at_step"] is not None
    assert run["steps"] < 300
    assert pd.read_csv(tmp_path / "metrics.csv").step.max() == run["steps"]


@pytest.mark.parametrize(("model", "optim"), [("mlp", "sgd"), ("mlp_bn", "momentum_mlp")])
def test_grid_member_equals_the_single_run_with_its_seed_rate_and_std(
    small_cfg, tmp_path, model, optim
) -> None:
    """Members of a grid differ in seed, learning rate and init std; each follows the run of
    its settings alone, to float rounding (the members' matrix products are batched)."""
    grid = small_cfg(
        f"model={model}",
        f"optim={optim}",
        "optim.lr=0.05",
        "seeds=[3,7]",
        "grid.lr=[0.05,0.4]",
        "grid.init_std=[0.02,0.3]",
    )
    info = train(grid, tmp_path / "grid")
    members = pd.read_csv(tmp_path / "grid" / "metrics.csv")
    assert list(members.columns) == list(GRID_COLUMNS)
    assert [(m["lr"], m["init_std"], m["seed"]) for m in info["members"]] == [
        (lr, std, seed) for lr in (0.05, 0.4) for std in (0.02, 0.3) for seed in (3, 7)
    ]
    # At optim.lr the loss scale is 1; at 0.4 it is 8, and the gradients round differently.
    for lr, std, seed, atol in [(0.05, 0.3, 7, 1e-5), (0.4, 0.02, 3, 1e-4)]:
        name = f"lr{lr}_std{std}_seed{seed}"
        single = small_cfg(
            f"model={model}", f"optim={optim}", f"optim.lr={lr}", f"model.init_std={std}",
            f"seeds=[{seed}]",
        )  # fmt: skip
        train(single, tmp_path / name)
        alone = pd.read_csv(tmp_path / name / "metrics.csv")
        rows = members[(members.lr == lr) & (members.init_std == std) & (members.seed == seed)]
        member = rows[list(METRIC_COLUMNS)].reset_index(drop=True)
        pd.testing.assert_frame_equal(member, alone, check_exact=False, atol=atol, rtol=0)
        assert (member.test_acc - alone.test_acc).abs().max() <= 2e-4  # two test images


def test_a_diverged_grid_member_is_recorded_and_the_others_go_on(small_cfg, tmp_path) -> None:
    cfg = small_cfg("model=mlp", "model.activation=relu", "grid.lr=[0.1,1e6]")
    info = train(cfg, tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == run["status"] == "diverged" and run["steps"] == 300
    steady, diverged = run["members"]
    assert steady["status"] == "completed" and steady["final_step"] == 300
    assert steady["final_test_acc"] > 0.5
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] is not None


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("batch_size=1", "batch_size=1"),
        ("optim.lr=-0.1", "optim.lr=-0.1"),
        ("seeds=[1,1]", "seeds"),
        ("grid.lr=[0.1,-1.0]", "grid.lr"),
        ("grid.init_std=[]", "grid.init_std"),
    ],
)
def test_bad_values_are_named_in_the_error(small_cfg, tmp_path, override, named) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        train(small_cfg("model=mlp_bn", override), tmp_path)


@pytest.mark.integration
def test_command_line_run_and_bad_override(mnist_root, tmp_path) -> None:
    common = [sys.executable, "-m", "bnrepro.train", f"data.root={mnist_root}", "device=cpu"]
    short = ["steps=20", "eval_every=10", "probe.every=10"]
    ok = subprocess.run(
        [*common, *short, f"hydra.run.dir={tmp_path / 'ok'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "completed" in ok.stdout
    assert (tmp_path / "ok" / "metrics.csv").exists()
    bad = subprocess.run(
        [*common, "batch_size=1", "model=mlp_bn", f"hydra.run.dir={tmp_path / 'bad'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "batch_size=1" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists(), "a failed start leaves no directory"


@pytest.mark.integration
def test_wandb_offline_gives_each_sweep_job_its_own_finished_run(mnist_root, tmp_path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "bnrepro.train", "-m", "seeds=[0],[1]", "steps=20",
         "eval_every=10", "probe.every=10", "device=cpu", f"data.root={mnist_root}",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    offline_runs = sorted(tmp_path.glob("*/wandb/offline-run-*"))
    assert len(offline_runs) == 2
    run_ids = {path.name.rsplit("-", 1)[1] for path in offline_runs}
    assert len(run_ids) == 2, "two jobs must not share a wandb run"
    for path in offline_runs:
        assert list(path.glob("*.wandb")), f"{path} holds no wandb log"


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.integration
def test_a_run_directory_holds_hydras_record_and_its_log(mnist_root, tmp_path) -> None:
    """`.hydra/` (config.yaml, hydra.yaml, overrides.yaml) and train.log in the run directory,
    written once the run owns it: a refused start changes no byte of them, and a resumed run
    appends to its log and ends with the metrics of a run never stopped."""
    common = [sys.executable, "-m", "bnrepro.train", f"data.root={mnist_root}", "device=cpu",
              "eval_every=10", "probe.every=10", "logger.tensorboard=false"]  # fmt: skip

    def train_cli(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([*common, *overrides], cwd=REPO, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    run, straight = tmp_path / "run", tmp_path / "straight"
    first = train_cli("steps=20", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr
    assert f"bnrepro: run directory {run}" in first.stdout
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert overrides == [*common[3:], "steps=20"]  # Hydra keeps its own (hydra.*) apart
    composed = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert composed["steps"] == 20 and composed["model"]["name"] == "mlp"
    hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["runtime"]["output_dir"] == str(run) and hydra["job"]["name"] == "train"
    log = (run / "train.log").read_text()
    assert "[bnrepro.lifecycle][INFO] - bnrepro: run directory" in log
    assert f"bnrepro: completed at step 20 ({run})" in log
    before = every_file(run)
    refused = train_cli("steps=40", f"hydra.run.dir={run}")
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert every_file(run) == before, "a refused start changed the run directory"
    resumed = train_cli("steps=40", f"hydra.run.dir={run}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert "resume=true" in (run / ".hydra" / "overrides.yaml").read_text()
    log = (run / "train.log").read_text()
    assert log.startswith(before["train.log"].decode()) and "resumed at step 20 of 40" in log
    assert train_cli("steps=40", f"hydra.run.dir={straight}").returncode == 0
    assert (run / "metrics.csv").read_bytes() == (straight / "metrics.csv").read_bytes()
