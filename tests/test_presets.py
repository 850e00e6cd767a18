"""bnrepro.presets (configs/preset/ read in one place) and bnrepro.paths (the repository's
folders)."""

import pytest
from conftest import CONFIG_DIR, REPO

from bnrepro import paths, presets
from bnrepro.experiments import driver


def test_the_presets_are_the_files_of_the_config_group() -> None:
    files = sorted(p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml"))
    assert list(presets.names()) == files
    assert presets.values("cpu").model.width == 0.125
    assert presets.device("cpu") == "cpu" and presets.device("gpu_plateau") == "cuda"


def test_the_presets_on_cuda_are_those_whose_file_names_a_gpu() -> None:
    """A preset whose configs/preset/ file sets `device: cuda` needs a GPU to rerun."""
    assert {"gpu", "gpu_plateau"} <= presets.cuda_presets()
    assert "cpu" not in presets.cuda_presets()


@pytest.mark.parametrize(
    ("name", "preset", "folder"),
    [
        ("figure2", "cpu", "figure2"),
        ("figure2", "quick", "figure2"),
        ("figure2", "gpu", "figure2_gpu"),
        ("figure2", "gpu_plateau", "figure2_gpu_plateau"),
        ("ics_proxy", "cpu", "ics/proxy"),
        ("ics_proxy", "gpu", "ics/proxy"),
        ("ics_proxy", "quick", "ics/proxy"),
    ],
)
def test_each_preset_names_its_drivers_results_folder(name, preset, folder) -> None:
    """figure2 keeps a folder per preset (its cpu protocol's in results/figure2/); every
    preset of ics_proxy writes results/ics/proxy/."""
    assert driver(name).folder_of({"preset": preset}) == folder


def test_the_folders_are_the_repositorys(monkeypatch) -> None:
    assert paths.REPO == REPO
    assert (paths.RESULTS, paths.RUNS, paths.CONFIGS) == (
        REPO / "results",
        REPO / "runs",
        REPO / "configs",
    )
    monkeypatch.delenv("BNREPRO_DATA", raising=False)
    assert paths.data_dir() == REPO / "data"
    monkeypatch.setenv("BNREPRO_DATA", "elsewhere")
    assert paths.data_dir() == REPO / "elsewhere"
    monkeypatch.setenv("BNREPRO_DATA", "/abs/data")
    assert str(paths.data_dir()) == "/abs/data"
