"""Where the folders are (bnrepro.paths and the training app's `paths` group): a clone's own
from a clone, the current directory's from an installed package; $BNREPRO_DATA and each
`paths.*` override win."""

from pathlib import Path

from conftest import CONFIG_DIR, REPO, compose_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bnrepro import paths


def test_a_clone_is_told_from_an_installed_package(tmp_path: Path) -> None:
    assert paths.CLONE == REPO and paths.REPO == REPO and paths.CONFIGS == CONFIG_DIR
    clone = tmp_path / "clone"
    (clone / "src" / "bnrepro").mkdir(parents=True)
    (clone / "configs").mkdir()
    assert paths.clone_of(clone / "src" / "bnrepro") is None  # no pyproject.toml
    (clone / "pyproject.toml").write_text("[project]\nname = 'bnrepro'\n")
    assert paths.clone_of(clone / "src" / "bnrepro") == clone
    installed = tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "bnrepro"
    installed.mkdir(parents=True)
    (installed.parents[1] / "pyproject.toml").write_text("")
    assert paths.clone_of(installed) is None


def test_the_training_app_takes_its_folders_from_the_paths_group(monkeypatch) -> None:
    monkeypatch.delenv("BNREPRO_DATA", raising=False)
    cfg = compose_train()
    assert OmegaConf.to_container(cfg.paths, resolve=True) == {
        "root": str(REPO), "data": str(REPO / "data"), "runs": str(REPO / "runs"),
    }  # fmt: skip
    assert cfg.data.root == str(REPO / "data")
    monkeypatch.setenv("BNREPRO_DATA", "/datasets")
    assert compose_train().data.root == "/datasets"
    assert compose_train(["paths.data=/elsewhere"]).data.root == "/elsewhere"
    assert compose_train(["paths.root=/r", "data=fashion_mnist"]).data.root == "/datasets"


def test_runs_and_sweeps_go_under_paths_runs(monkeypatch) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", ["paths.runs=/scratch/runs", "name=x"], return_hydra_config=True)
    assert cfg.hydra.run.dir.startswith("/scratch/runs/x/")
    assert cfg.hydra.sweep.dir.startswith("/scratch/runs/x/multirun/")
