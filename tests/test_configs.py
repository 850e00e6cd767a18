"""Every config the suite ships composes, and experiment files set what they claim."""

from functools import cache
from pathlib import Path

import pandas as pd
import pytest
from conftest import CONFIG_DIR, compose_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnrepro import inception_checks, train_mlp
from bnrepro.errors import ConfigError
from bnrepro.experiments.figure2 import protocol as figure2_protocol

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
# Each model family has its own harness, and so its own validation.
VALIDATORS = {"mlp": train_mlp.validate, "inception": inception_checks.validate}


@cache
def family(override: str) -> str:
    """The model family `override` selects, composed once per override (the pairs below would
    compose every experiment with every model otherwise)."""
    return compose_train([override]).model.name


# An experiment is meant for the models of the family its own defaults select.
PAIRS = [
    (experiment, model)
    for experiment in EXPERIMENTS
    for model in MODELS
    if family(f"experiment={experiment}") == family(f"model={model}")
]


def test_every_experiment_and_model_is_paired() -> None:
    assert {e for e, _ in PAIRS} == set(EXPERIMENTS)
    assert {m for _, m in PAIRS} == set(MODELS)
    assert {family(f"model={m}") for m in MODELS} == set(VALIDATORS)


@pytest.mark.parametrize(("experiment", "model"), PAIRS)
def test_experiment_composes_and_validates(experiment: str, model: str) -> None:
    cfg = compose_train([f"experiment={experiment}", f"model={model}"])
    VALIDATORS[cfg.model.name](cfg)
    assert cfg.name == experiment
    assert cfg.model.name == family(f"model={model}")
    assert cfg.logger.wandb.mode in ("offline", "online", "disabled")


# What each model brings (its defaults list in configs/model/): data, optim, trainer.
PAIRING = {
    "mlp": ("mnist", "sgd", "mlp"),
    "mlp_bn": ("mnist", "sgd", "mlp"),
    "mlp_noisy": ("mnist", "sgd", "mlp"),
    "inception_proxy": ("fashion_mnist", "momentum_proxy", "inception"),
    "inception": ("imagenet", "momentum", "inception"),
}


@pytest.mark.parametrize("model", MODELS)
def test_a_model_alone_brings_its_data_optim_and_trainer(model: str) -> None:
    """`model=X` alone composes the config `model=X data=.. optim=.. trainer=..` does, and
    every one of those groups can still be picked over the model's choice."""
    data, optim, trainer = PAIRING[model]
    alone = compose_train([f"model={model}"])
    groups = [f"data={data}", f"optim={optim}", f"trainer={trainer}"]
    named = compose_train([f"model={model}", *groups])
    assert OmegaConf.to_yaml(alone) == OmegaConf.to_yaml(named)
    if data != "imagenet":  # ImageNet has no folder until data.root names one
        VALIDATORS[alone.model.name](alone)
    other = {"mnist": "fashion_mnist", "fashion_mnist": "mnist_proxy", "imagenet": "mnist_proxy"}
    picked = compose_train([f"model={model}", f"data={other[data]}", "optim=momentum_mlp"])
    assert picked.data.name == {"mnist_proxy": "mnist"}.get(other[data], other[data])
    assert picked.optim.name == "momentum_mlp"


def test_the_groups_the_drivers_name_are_the_models_own() -> None:
    """The groups figure2 and ics_proxy name beside the proxy's experiments (GROUPS) are the
    ones its model and experiments pick: naming them changes nothing."""
    for experiment in ("inception", "bn_x5"):
        alone = compose_train([f"experiment={experiment}"])
        named = compose_train([f"experiment={experiment}", *figure2_protocol.GROUPS])
        assert OmegaConf.to_yaml(alone) == OmegaConf.to_yaml(named)
    assert set(PAIRING) == set(MODELS)


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
    assert {
        "data",
        "model",
        "optim",
        "trainer",
        "logger",
        "experiment",
        "hydra",
        "preset",
    } <= groups


def differences(a: str, b: str) -> set[str]:
    """The keys whose values differ between experiments `a` and `b`."""
    flat = [
        pd.json_normalize(OmegaConf.to_container(compose_train([f"experiment={e}"]))).iloc[0]
        for e in (a, b)
    ]
    return {k for k in flat[0].index.union(flat[1].index) if flat[0].get(k) != flat[1].get(k)}


def test_inception_recipes_differ_from_their_bases_as_the_paper_says() -> None:
    label = {"name", "model.variant"}
    changes = {f"recipe.{k}" for k in compose_train(["experiment=inception"]).recipe}
    assert len(changes) == 7  # Section 4.2.1's seven changes, one switch each
    assert differences("inception", "bn_baseline") == label | {"model.batch_norm"}
    assert differences("inception", "bn_x5") == label | {"model.batch_norm"} | changes
    assert differences("bn_x5", "bn_x30") == label | {"recipe.lr_multiplier"}
    assert differences("bn_x5", "bn_x5_sigmoid") == label | {"model.activation"}
    assert differences("inception", "inception_x5") == label | {"recipe.lr_multiplier"}
    assert differences("inception", "inception_sigmoid") == label | {"model.activation"}
    bn_x5 = compose_train(["experiment=bn_x5"]).recipe
    assert (bn_x5.lr_multiplier, bn_x5.l2_divisor, bn_x5.decay_speedup) == (5, 5, 6)
    assert bn_x5.dropout_off and bn_x5.lrn_off and bn_x5.thorough_shuffle
    assert bn_x5.reduced_distortion
    assert compose_train(["experiment=bn_x30"]).recipe.lr_multiplier == 30
    inception = compose_train(["experiment=inception"])
    assert inception.model.dropout == 0.4 and inception.model.lrn
    assert inception.batch_size == 32 and inception.optim.momentum == 0.9


def flat(cfg) -> pd.Series:
    """`cfg` as one value per dotted key (model.width, ...)."""
    return pd.json_normalize(OmegaConf.to_container(cfg, resolve=True)).iloc[0]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_wins_over_the_experiment(preset: str) -> None:
    """`python -m bnrepro.train experiment=bn_x5 preset=NAME`: every value of
    configs/preset/NAME.yaml replaces the experiment's own (bn_x5 trains 10,000 steps and
    evaluates every 250), and the recipe is kept."""
    values = flat(OmegaConf.load(CONFIG_DIR / "preset" / f"{preset}.yaml"))
    cfg = compose_train(["experiment=bn_x5", f"preset={preset}"])
    composed, experiment = flat(cfg), flat(compose_train(["experiment=bn_x5"]))
    for key, value in values.items():
        assert composed[key] == value, key
    assert (experiment.steps, experiment.eval_every) == (10_000, 250)
    assert cfg.name == "bn_x5" and cfg.recipe.lr_multiplier == 5 and cfg.model.batch_norm
    inception_checks.validate(cfg)


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "joblib"])
def test_launcher_configs_compose(launcher: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"hydra/launcher={launcher}", "experiment=bn_x5"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


@pytest.mark.parametrize(
    ("override", "experiment"),
    [("grid.lr_multiplier=[1,5]", "bn_x5"), ("grid.lr=[0.1,0.5]", "figure1")],
)
def test_a_trainers_grid_key_composes_before_any_experiment(override, experiment) -> None:
    """A sweep over experiments (`-m experiment=bn_x5,inception grid.lr_multiplier=[1,5]`) is
    checked against the base config, whose trainer is the MLP's: both trainers' grid keys are
    declared there, and each trainer keeps its own and refuses the other's."""
    key, value = override.removeprefix("grid.").split("=")
    assert list(compose_train([override]).grid[key]) == [float(v) for v in value[1:-1].split(",")]
    cfg = compose_train([f"experiment={experiment}", override])
    VALIDATORS[cfg.model.name](cfg)
    other = "grid.lr=[0.1]" if cfg.model.name == "inception" else "grid.lr_multiplier=[5]"
    with pytest.raises(ConfigError, match=other.split("=")[0].replace(".", r"\.")):
        VALIDATORS[cfg.model.name](compose_train([f"experiment={experiment}", other]))
