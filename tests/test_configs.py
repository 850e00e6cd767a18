"""Every config the suite ships composes, and experiment files set what they claim."""

from pathlib import Path

import pytest
from conftest import CONFIG_DIR, compose_train

from bnrepro.train import validate

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", MODELS)
def test_experiment_composes_and_validates(experiment: str, model: str) -> None:
    cfg = compose_train([f"experiment={experiment}", f"model={model}"])
    validate(cfg)
    assert cfg.name == experiment
    assert cfg.logger.wandb.mode in ("offline", "online", "disabled")


def test_figure1_is_the_papers_protocol() -> None:
    cfg = compose_train(["experiment=figure1", "model=mlp_bn"])
    assert (cfg.steps, cfg.batch_size) == (50_000, 60)
    assert list(cfg.model.sizes) == [784, 100, 100, 100, 10]
    assert cfg.model.activation == "sigmoid" and cfg.model.batch_norm
    assert len(cfg.seeds) >= 3
    assert cfg.eval_every <= 500 and cfg.probe.every <= 100


def test_plain_model_has_no_bn() -> None:
    assert not compose_train(["model=mlp"]).model.batch_norm
    assert compose_train(["model=mlp"]).model.variant == "plain"


def test_wandb_mode_defaults_to_env(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert compose_train().logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert compose_train().logger.wandb.mode == "disabled"


def test_config_files_are_all_reachable() -> None:
    groups = {p.parent.name for p in Path(CONFIG_DIR).rglob("*.yaml") if p.parent != CONFIG_DIR}
    assert {"data", "model", "optim", "logger", "experiment", "hydra"} <= groups
