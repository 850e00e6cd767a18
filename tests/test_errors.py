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
from conftest import REPO, compose_train
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
