"""`python -m bnrepro.train --help` is the app's own screen (configs/hydra/help/bnrepro.yaml):
every config group a user picks with all its options, no threshold files, and the main keys
each with its default as the config composes it; `--hydra-help` stays Hydra's."""

import contextlib
import io
import runpy
import sys
from unittest import mock

import pytest
import yaml
from conftest import CONFIG_DIR, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf


def command(*args: str) -> str:
    """What `python -m bnrepro.train <args>` prints, run as that module in this process
    (Hydra prints a help screen and exits with status 0)."""
    out = io.StringIO()
    with (
        mock.patch.object(sys, "argv", ["-m", *args]),
        mock.patch.dict(sys.modules),
        contextlib.redirect_stdout(out),
    ):
        sys.modules.pop("bnrepro.train", None)  # run afresh as __main__, as `-m` runs it
        try:
            with pytest.raises(SystemExit) as ended:
                runpy.run_module("bnrepro.train", run_name="__main__", alter_sys=True)
        finally:
            GlobalHydra.instance().clear()
    assert ended.value.code == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def screen() -> str:
    return command("--help")


def main_keys(screen: str) -> dict[str, str]:
    """key -> the default the screen gives it, from its section of main keys."""
    section = screen.split("== Main keys (key=default) ==\n")[1].split("\n\n")[0]
    return dict(line.split()[0].split("=", 1) for line in section.splitlines())


def test_every_group_is_listed_with_every_option(screen) -> None:
    groups = [p for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "hydra"]
    assert {p.name for p in groups} >= {"model", "data", "optim", "trainer", "experiment"}
    lines = screen.splitlines()
    for group in groups:
        options = sorted(p.stem for p in group.glob("*.yaml"))
        assert f"{group.name}: {', '.join(options)}" in lines, group.name


def test_no_threshold_group_is_listed(screen) -> None:
    assert "thresholds" not in screen and "claims" not in screen


def test_each_main_key_has_the_default_the_config_gives_it(screen) -> None:
    keys = main_keys(screen)
    assert {"steps", "seeds", "optim.lr", "resume", "device", "data.root"} <= set(keys)
    # the MLP's (the default model's) values; log_every is the Inception trainer's own
    mlp, inception = compose_train(), compose_train(["model=inception_proxy"])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        hydra = compose("train", return_hydra_config=True)
    for key, shown in keys.items():
        value = OmegaConf.select(hydra if key.startswith("hydra.") else mlp, key)
        if value is None:  # ??? in the MLP's config
            value = OmegaConf.select(inception, key)
        assert value is not None, f"{key} is not a key of the config"
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if shown != "DIR":
            assert yaml.safe_load(shown) == value, key


def test_hydra_help_is_hydras_own() -> None:
    shown = command("--hydra-help")
    assert "Hydra (" in shown and "== Flags ==" in shown and "Main keys" not in shown
