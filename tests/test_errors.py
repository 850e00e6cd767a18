"""Bad input: one clear paragraph naming the value and the fix, no traceback, exit status 2,
and nothing already written is changed. Every example of docs/troubleshooting.md's table is run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR, REPO, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import open_dict

from bnrepro.errors import BnreproError
from bnrepro.paths import data_dir
from bnrepro.train import train


def readme_examples() -> list[tuple[list[str], str]]:
    """(overrides, expected text) for every example of the trainer's error table in
    docs/troubleshooting.md (its first section; the drivers' table follows)."""
    section = (REPO / "docs" / "troubleshooting.md").read_text().split("\n## ")[0]
    examples = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[1] in ("for example", "---", "—"):
            continue
        if "without one" in cells[1] and torch.cuda.is_available():
            continue
        expected = re.findall(r"`([^`]+)`", cells[2])[0].replace("…", "")
        examples += [(ex.split(), expected) for ex in re.findall(r"`([^`]+)`", cells[1])]
    return examples


EXAMPLES = readme_examples()


def test_the_readme_table_has_its_examples() -> None:
    assert len(EXAMPLES) >= 25


@pytest.mark.parametrize(
    ("overrides", "expected"), EXAMPLES, ids=[" ".join(o) for o, _ in EXAMPLES]
)
def test_every_readme_example_is_refused_naming_it(
    overrides, expected, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    base = [f"data.root={data_dir()}", "device=cpu", "logger.wandb.mode=disabled", "steps=20"]
    try:
        cfg = compose_train([*base, *overrides])
    except HydraException as error:
        assert expected in str(error)
        return
    with open_dict(cfg):
        cfg.pop("hydra", None)
    with pytest.raises(BnreproError) as error:
        train(cfg, tmp_path / "run")
    assert expected in str(error.value)
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or not list(run_dir.iterdir()), "a refused start wrote files"


def cli(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bnrepro.train", *overrides, "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


def every_file(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (TensorBoard's event files included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_bad_value_into_a_finished_run_exits_2_and_changes_nothing(small_cfg, tmp_path):
    train(small_cfg("steps=20", "eval_every=10", "probe.every=10"), tmp_path)
    before = every_file(tmp_path)
    result = cli("steps=abc", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "steps='abc'. steps must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr
    assert every_file(tmp_path) == before


def test_wandb_online_without_credentials_writes_nothing(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(WANDB_MODE="online", NETRC=str(tmp_path / "no-netrc"),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))  # fmt: skip
    result = cli("steps=20", f"hydra.run.dir={tmp_path / 'run'}", env=env)
    assert result.returncode == 2
    assert "wandb login" in result.stderr and "WANDB_MODE=offline" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "a refused command leaves no directory"


def test_unwritable_output_dir_is_refused_before_anything_runs(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    result = cli("steps=10", f"hydra.run.dir={blocker / 'run'}")
    assert result.returncode == 2
    assert f"hydra.run.dir={blocker / 'run'}" in result.stderr and "a file" in result.stderr
    assert "Traceback" not in result.stderr
    assert blocker.read_text() == "keep me"


@pytest.mark.integration
def test_a_sweep_with_a_bad_job_goes_on_and_exits_non_zero(tmp_path, mnist_root) -> None:
    result = cli(
        "-m", "optim.lr=0.1,-1", "steps=20", "eval_every=10", "probe.every=10",
        f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${optim.lr}",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"1 of 2 jobs failed:\n  {tmp_path / '-1'}: failed - Invalid config" in result.stderr
    assert json.loads((tmp_path / "0.1" / "run.json").read_text())["status"] == "completed"
    failed = json.loads((tmp_path / "-1" / "run.json").read_text())
    assert failed["status"] == "failed" and "optim.lr=-1" in failed["error"]


@pytest.fixture
def hydra_command():
    """Composes `overrides` as `python -m bnrepro.train` does and sets Hydra's record of the
    command (its choices and overrides), as a trainer started by Hydra finds it; cleared after.
    Returns the config the trainer is handed."""

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("hydra")
        return cfg

    yield make
    HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=inception_proxy", "trainer=mlp"],
         "probe.every=100 is not a setting of the Inception trainer (model.name=inception): it "
         "comes with trainer=mlp, which this command sets. Fix: drop trainer=mlp"),
        (["experiment=figure1", "model=inception_proxy"],
         "it comes with experiment=figure1, which this command sets. Fix: drop experiment=figure1"),
        (["model=mlp", "trainer=inception"],
         "log_every=50 is not a setting of the MLP trainer (model.name=mlp): it comes with "
         "trainer=inception, which this command sets"),
        (["model=inception"],
         "data.root has no value for the Inception trainer (it comes with data=imagenet, which "
         "model=inception picks)"),
        (["experiment=inception", "model=mlp"],
         "data.name='fashion_mnist' (it comes with data=fashion_mnist, which "
         "experiment=inception picks). The MLP trains on MNIST"),
        # a key the command sets itself is named as it is
        (["experiment=bn_x5", "+probe.size=5"], "(model.name=inception). Fix: drop probe.size"),
        (["model=mlp", "optim.lr=-1"], "Invalid config: optim.lr=-1.0. Use a positive"),
    ],
    ids=["trainer", "experiment", "mlp-trainer", "imagenet", "data", "typed-key", "typed-value"],
)  # fmt: skip
def test_a_refused_key_names_the_choice_that_brought_it(hydra_command, overrides, expected,
                                                        tmp_path) -> None:  # fmt: skip
    """A key the user never typed is named with the group option it comes with and what on
    the command line picked it (bnrepro.config_origin): what the user did set."""
    cfg = hydra_command(*overrides, "device=cpu", "logger.wandb.mode=disabled", "steps=20")
    with pytest.raises(BnreproError) as error:
        train(cfg, tmp_path / "run")
    assert expected in str(error.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.integration
def test_the_command_line_names_the_choice_that_brought_a_key(tmp_path) -> None:
    result = cli("model=inception_proxy", "trainer=mlp", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "it comes with trainer=mlp, which this command sets" in result.stderr
    assert not (tmp_path / "run").exists()
