"""Shared fixtures: the repo's Hydra configs, composed offline, and the real MNIST files;
the skip of the tests marked `cuda` where no CUDA GPU is visible. Torch runs one thread in the
tests and in the processes they start, as every trainer does by default (`threads: 1`): the
tests' tensors are too small to gain from a second thread, and two pytest-xdist workers with
two spinning OpenMP threads each would fight over the 2 cores `make test` is sized for."""

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from bnrepro.driver import Driver
from bnrepro.lifecycle import Run
from bnrepro.paths import data_dir

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

os.environ.setdefault("BNREPRO_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_hydra_record_of_another_test() -> None:
    """Hydra keeps the record of the last command it ran in this process (HydraConfig), which
    the trainers' errors read to name what brought a key: a test starts without one."""
    HydraConfig.instance().cfg = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test marked `cuda` (`make gpu-check` runs them all: `pytest -m cuda`) is skipped,
    with this one reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The verified real MNIST (`make test` fetches it first); skips when it is absent."""
    raw = data_dir() / "MNIST" / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").exists():
        pytest.skip(f"MNIST is not in {raw}; run `make data` to fetch it")
    return data_dir()


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The verified real Fashion-MNIST (`make test` fetches it first); skips when it is absent."""
    raw = data_dir() / "FashionMNIST" / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").exists():
        pytest.skip(f"Fashion-MNIST is not in {raw}; run `make data` to fetch it")
    return data_dir()


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """The config `python -m bnrepro.train <overrides>` would run with."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def drive(driver: Driver, *args: str) -> subprocess.CompletedProcess:
    """`python experiments/<name>.py <args>` run in this process: `driver.main(args)`, all its
    script calls, with the exit status and what it printed. A fresh interpreter spends seconds
    of CPU importing torch; the tests of a script's own process are those that run it."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            driver.main(list(args))
            status = 0
        except SystemExit as ended:
            status = 0 if ended.code is None else ended.code
    return subprocess.CompletedProcess(list(args), status, stdout.getvalue(), stderr.getvalue())


def tiny_proxy(experiment: str, *overrides: str) -> DictConfig:
    """`experiment` on the Fashion-MNIST proxy at a toy size on the CPU: width 1/16, 16x16
    inputs, 200 held-out images, checkpoints only at the start and the end, wandb off;
    `overrides` last. Without Hydra's own node, as a trainer is handed it."""
    cfg = compose_train(
        [
            f"experiment={experiment}", "data.size=16", "data.resize=bilinear",
            "model.width=0.0625", "data.eval_size=200", "checkpoint_every=0", "device=cpu",
            "logger.wandb.mode=disabled", f"data.root={data_dir()}", *overrides,
        ]
    )  # fmt: skip
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def stop_at(monkeypatch, step: int, action) -> None:
    """Calls `action()` right after the rows of `step` are logged."""
    log = Run.log

    def log_then_act(self, rows):
        log(self, rows)
        if rows[0]["step"] == step:
            action()

    monkeypatch.setattr(Run, "log", log_then_act)


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two CUDA GPUs, so a driver's `run` on a GPU preset or device passes the
    frame's device check on any machine (tests that reach no trainer)."""
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)


@pytest.fixture(scope="session")
def small_cfg(mnist_root):
    """A short, CPU-only training config on the real data, loggers off."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_train(
            [
                "steps=300",
                "eval_every=100",
                "probe.every=50",
                "probe.size=200",
                "device=cpu",
                "logger.wandb.mode=disabled",
                f"data.root={mnist_root}",
                *overrides,
            ]
        )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return make
