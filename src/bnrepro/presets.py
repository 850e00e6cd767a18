"""The Inception proxy's presets, configs/preset/<name>.yaml (its size, length and device),
read in one place for the drivers, `make verify` and the campaigns; and the results folder a
preset's runs write.

A preset is a Hydra config group applied over the experiment (`# @package _global_`), so
every key of its file lands in each run's config, whose schema (bnrepro.config) refuses a key
the trainer does not take. What a driver adds to a preset (its seeds, runs at a time, ...)
therefore stays in the driver's own PRESETS.
"""

from collections.abc import Collection

from omegaconf import DictConfig, OmegaConf

from bnrepro.paths import CONFIGS

PRESET_DIR = CONFIGS / "preset"


def names() -> tuple[str, ...]:
    """Every preset, sorted."""
    return tuple(sorted(path.stem for path in PRESET_DIR.glob("*.yaml")))


def values(name: str) -> DictConfig:
    """The values preset `name` sets over an experiment's (model.width, data.size, steps,
    device, ...), as its file states them."""
    return OmegaConf.load(PRESET_DIR / f"{name}.yaml")


def device(name: str) -> str | None:
    """The device preset `name` trains on; None where its file names none."""
    return values(name).get("device")


def cuda_presets() -> set[str]:
    """The presets that train on CUDA, whose runs need a GPU."""
    return {name for name in names() if str(device(name) or "").startswith("cuda")}


def results_folder(folder: str, preset: str, shared: Collection[str]) -> str:
    """The folder under results/ of a driver's runs with `preset`: the driver's own `folder`
    for the presets in `shared`, <folder>_<preset> for another, so that no preset writes over
    another's results."""
    return folder if preset in shared else f"{folder}_{preset}"
