"""What TensorBoard shows of a run, read through TensorBoard's own reader (EventAccumulator):
one TensorBoard run per seed (or grid member) with plain tags, so the seeds overlay in one
chart per metric; each with its hyperparameters for the HParams view; a resume that purges
what the interrupted process logged after its checkpoint; wandb's tags and job type; and,
after the quick Figure 1 driver, both nets' runs with every seed (integration)."""

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, compose_train
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from bnrepro.loggers import RunLogger
from bnrepro.train import train


def tiny_mlp(mnist_root: Path, *overrides: str):
    cfg = compose_train(
        ["steps=60", "eval_every=30", "probe.every=30", "probe.size=200", "device=cpu",
         "logger.wandb.mode=disabled", "logger.tensorboard=true", f"data.root={mnist_root}",
         *overrides]
    )  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def tensorboard_runs(root: Path) -> dict[str, EventAccumulator]:
    """Every TensorBoard run under `root` (a folder with event files), by its path relative
    to `root` as `tensorboard --logdir root` names it, loaded."""
    runs = {}
    for folder in sorted({p.parent for p in root.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        runs[folder.relative_to(root).as_posix()] = accumulator
    return runs


def scalars(run: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in run.Scalars(tag)]


def logged(metrics: pd.DataFrame, column: str) -> list[tuple[int, float]]:
    rows = metrics.dropna(subset=[column])
    return list(zip(rows.step.tolist(), rows[column].tolist(), strict=True))


def assert_curve(run: EventAccumulator, tag: str, metrics: pd.DataFrame) -> None:
    """The run's `tag` holds the CSV column's rows, step for step (float32 in the events)."""
    expected = logged(metrics, tag)
    found = scalars(run, tag)
    assert [step for step, _ in found] == [step for step, _ in expected], tag
    assert [v for _, v in found] == pytest.approx([v for _, v in expected], rel=1e-6), tag


def hparams_of(run: EventAccumulator) -> dict[str, Any]:
    """The HParams session's hyperparameters of a run, as Python values."""
    content = run.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(content)
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}


def session_status(run: EventAccumulator) -> str:
    content = run.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG]
    return api_pb2.Status.Name(metadata.parse_session_end_info_plugin_data(content).status)


def test_each_seed_is_a_run_with_plain_tags_and_its_hparams(mnist_root, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_mlp(mnist_root, "seeds=[0,1]", "optim.lr=0.2"), run_dir)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    runs = tensorboard_runs(tmp_path)
    assert set(runs) == {"run/tensorboard/seed_0", "run/tensorboard/seed_1"}
    for seed in (0, 1):
        run = runs[f"run/tensorboard/seed_{seed}"]
        assert set(run.Tags()["scalars"]) == {"train_loss", "test_acc", "p15", "p50", "p85"}
        for tag in ("test_acc", "train_loss", "p50"):
            assert_curve(run, tag, metrics[metrics.seed == seed])
        hparams = hparams_of(run)
        assert hparams["seed"] == seed and hparams["optim.lr"] == pytest.approx(0.2)
        assert hparams["model.variant"] == "plain" and hparams["steps"] == 60
        assert hparams["model.batch_norm"] == "false"
        assert not {"device", "data.root", "resume"} & set(hparams), "not hyperparameters"
        assert session_status(run) == "STATUS_SUCCESS"


def test_each_grid_member_is_a_run_with_its_grid_values(mnist_root, tmp_path) -> None:
    """A member's lr and init_std are its hyperparameters (optim.lr and model.init_std, as a
    separate run's), not tags."""
    run_dir = tmp_path / "run"
    train(tiny_mlp(mnist_root, "seeds=[3]", "grid.lr=[0.1,0.5]"), run_dir)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    runs = tensorboard_runs(run_dir / "tensorboard")
    assert set(runs) == {"member_0", "member_1"}
    for member, lr in ((0, 0.1), (1, 0.5)):
        run = runs[f"member_{member}"]
        assert set(run.Tags()["scalars"]) == {"train_loss", "test_acc", "p15", "p50", "p85"}
        assert_curve(run, "test_acc", metrics[metrics.member == member])
        hparams = hparams_of(run)
        assert (hparams["member"], hparams["seed"]) == (member, 3)
        assert hparams["optim.lr"] == pytest.approx(lr)
        assert hparams["model.init_std"] == pytest.approx(0.1)  # no grid: the config's
        assert not [key for key in hparams if key.startswith("grid.")]


def rows_at(step: int, scale: float) -> list[dict[str, Any]]:
    return [{"step": step, "seed": seed, "train_loss": scale * (seed + 1), "test_acc": None,
             "p15": 0.0, "p50": 0.0, "p85": 0.0} for seed in (0, 1)]  # fmt: skip


def test_a_resume_purges_what_was_logged_after_the_checkpoint(tmp_path) -> None:
    """The first process logs steps 0-40 and checkpoints at 20; the resumed one logs 30-40
    again: each seed's run shows steps 0-20 of the first and 30-40 of the second."""
    cfg = compose_train(["logger.wandb.mode=disabled", "logger.tensorboard=true"])
    columns = ["step", "seed", "train_loss", "test_acc", "p15", "p50", "p85"]
    first = RunLogger(tmp_path, cfg, columns)
    for step in (0, 10, 20):
        first.log(rows_at(step, 1.0))
    checkpoint = first.state_dict()
    for step in (30, 40):
        first.log(rows_at(step, 1.0))
    first.close("interrupted")
    resumed = RunLogger(tmp_path, cfg, columns, resume={**checkpoint, "step": 20})
    for step in (30, 40):
        resumed.log(rows_at(step, 2.0))
    resumed.close("completed")
    runs = tensorboard_runs(tmp_path / "tensorboard")
    for seed in (0, 1):
        losses = scalars(runs[f"seed_{seed}"], "train_loss")
        assert losses == [(0, seed + 1), (10, seed + 1), (20, seed + 1),
                          (30, 2 * (seed + 1)), (40, 2 * (seed + 1))]  # fmt: skip
        assert hparams_of(runs[f"seed_{seed}"])["seed"] == seed
        assert session_status(runs[f"seed_{seed}"]) == "STATUS_SUCCESS"
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 10


def test_a_seed_whose_loss_became_non_finite_ends_as_a_failure(tmp_path) -> None:
    """The run completed (its other seed trained on): the diverged seed's HParams session
    failed, the other's succeeded."""
    cfg = compose_train(["logger.wandb.mode=disabled", "logger.tensorboard=true"])
    logger = RunLogger(tmp_path, cfg, ["step", "seed", "train_loss", "test_acc"])
    logger.log([{"step": 10, "seed": 0, "train_loss": 1.0, "test_acc": None},
                {"step": 10, "seed": 1, "train_loss": float("nan"), "test_acc": None}])  # fmt: skip
    logger.close("completed")
    runs = tensorboard_runs(tmp_path / "tensorboard")
    assert session_status(runs["seed_0"]) == "STATUS_SUCCESS"
    assert session_status(runs["seed_1"]) == "STATUS_FAILURE"


class FakeWandbRun:
    id = "fake"

    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict[str, Any] = {}

    def log(self, scalars: dict, step: int) -> None:
        self.logged.append((scalars, step))

    def finish(self, exit_code: int) -> None:
        self.exit_code = exit_code


def test_wandb_runs_carry_tags_job_type_and_seed_named_metrics(monkeypatch, tmp_path) -> None:
    import wandb

    calls, run = [], FakeWandbRun()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or run)
    cfg = compose_train(["experiment=figure1", "model=mlp_bn", "logger.wandb.mode=offline"])
    logger = RunLogger(tmp_path, cfg, ["step", "seed", "train_loss", "test_acc"])
    logger.log([{"step": 5, "seed": s, "train_loss": 1.0 + s, "test_acc": None} for s in (0, 1)])
    logger.close("completed")
    (kwargs,) = calls
    assert kwargs["tags"] == ["figure1", "bn"] and kwargs["job_type"] == "train"
    assert kwargs["group"] == "figure1"
    assert run.logged == [({"train_loss/seed_0": 1.0, "train_loss/seed_1": 2.0}, 5)]
    assert run.exit_code == 0


@pytest.mark.integration
def test_quick_figure1_shows_both_nets_every_seed_and_hparams(mnist_root, tmp_path) -> None:
    """`experiments/figure1.py run --quick` (what `make reproduce-figure1 QUICK=1` runs), with
    its defaults: `tensorboard --logdir <runs>` finds a run per net and seed, with the accuracy
    and loss of metrics.csv and the hyperparameters."""
    runs_dir = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "experiments/figure1.py", "run", "--quick", "--out", str(tmp_path / "out"),
         "--runs", str(runs_dir), f"data.root={mnist_root}", "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = tensorboard_runs(runs_dir)
    found = {}
    for name, run in runs.items():
        run_dir, seed = runs_dir / Path(name).parent.parent, int(name.rsplit("_", 1)[1])
        metrics = pd.read_csv(run_dir / "metrics.csv")
        assert_curve(run, "test_acc", metrics[metrics.seed == seed])
        assert_curve(run, "train_loss", metrics[metrics.seed == seed])
        hparams = hparams_of(run)
        assert hparams["seed"] == seed and hparams["steps"] == 1000
        found[hparams["model.variant"], seed] = name
    assert set(found) == {(variant, seed) for variant in ("plain", "bn") for seed in (0, 1)}
    assert len(runs) == 4

    plotted = subprocess.run(
        [sys.executable, "-m", "bnrepro.plot", str(runs_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plotted.returncode == 0, plotted.stderr
    for stem in ("accuracy", "loss", "percentiles"):
        assert (runs_dir / "plots" / f"{stem}.png").stat().st_size > 0
