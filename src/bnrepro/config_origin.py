"""Which choice of the command line brought a config key, for the errors that name a key the
user never typed.

A model brings its trainer, data and optimizer (configs/model/), an experiment overrides some
of them and sets keys of its own, a preset sizes the run: a key the trainer refuses or misses
may come from any of these files. `origin` finds the group option whose file sets the key and
what on the command line picked that option, so that the error names what the user set
(`trainer=mlp`, `experiment=figure1`, `model=inception`) rather than a key they never wrote.
It reads Hydra's record of the command (the groups' choices and the overrides); a config
composed without Hydra's command line has none, and the errors then name the key alone.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from bnrepro.paths import CONFIGS

# The groups whose options may set a key, the last merged first (configs/train.yaml's order).
GROUPS = ("preset", "experiment", "trainer", "optim", "data", "model", "logger")
MODEL_BRINGS = ("data", "optim", "trainer")  # what each model's defaults pick (configs/model/)


@dataclass(frozen=True)
class Origin:
    """Where a key came from: `source`, the group option whose file sets it (`trainer=mlp`);
    `picked`, how that option was chosen (`which this command sets`); `typed`, the override on
    the command line that brought it (None when only defaults did)."""

    source: str
    picked: str
    typed: str | None

    def __str__(self) -> str:
        return f"it comes with {self.source}, {self.picked}"


def option_keys(group: str, option: str, configs: Path = CONFIGS) -> set[str]:
    """The dotted keys the file configs/<group>/<option>.yaml sets, with those of the options of
    its own group that its defaults list includes (mlp_bn includes mlp)."""
    path = configs / group / f"{option}.yaml"
    if not path.is_file():
        return set()
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    keys: set[str] = set()
    for entry in data.pop("defaults", None) or []:
        if isinstance(entry, str) and entry != "_self_" and not entry.startswith("/"):
            keys |= option_keys(group, entry, configs)
    if "@package _global_" not in text.split("\n", 1)[0]:
        data = {group: data}
    flat = OmegaConf.to_container(OmegaConf.create(data), resolve=False)
    return keys | set(_dotted(flat))


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    found = []
    for key, value in tree.items():
        found.append(f"{prefix}{key}")
        if isinstance(value, dict):
            found.extend(_dotted(value, f"{prefix}{key}."))
    return found


def experiment_picks(experiment: str, group: str, configs: Path = CONFIGS) -> bool:
    """Whether configs/experiment/<experiment>.yaml (or an experiment it includes) overrides
    `group`'s choice in its defaults list (`override /optim: momentum_mlp`)."""
    path = configs / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return False
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults") or []:
        if isinstance(entry, dict) and f"override /{group}" in entry:
            return True
        if isinstance(entry, str) and entry != "_self_" and experiment_picks(entry, group, configs):
            return True
    return False


def typed_key(override: str) -> str:
    """The key an override sets: `++late_probe.every=5` -> late_probe.every."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def origin(key: str, configs: Path = CONFIGS) -> Origin | None:
    """Where `key` came from in the running Hydra command; None when the command's overrides
    set it (the error then rightly names it), or without Hydra's record of a command."""
    try:
        hydra = HydraConfig.get()
    except ValueError:
        return None
    choices = {g: c for g, c in hydra.runtime.choices.items() if isinstance(c, str)}
    overrides = list(hydra.overrides.task)
    typed = {typed_key(o): o for o in overrides}
    if any(key == k or key.startswith(f"{k}.") for k in typed if k not in choices):
        return None
    for group in GROUPS:
        option = choices.get(group)
        if option is None or key not in option_keys(group, option, configs):
            continue
        source = f"{group}={option}"
        if group in typed:
            return Origin(source, "which this command sets", typed[group])
        experiment = choices.get("experiment")
        if experiment and experiment_picks(experiment, group, configs):
            return Origin(source, f"which experiment={experiment} picks", typed.get("experiment"))
        if group in MODEL_BRINGS:
            model = choices.get("model")
            by = "" if "model" in typed else "the default "
            return Origin(source, f"which {by}model={model} picks", typed.get("model"))
        return Origin(source, "a default of configs/train.yaml", None)
    return None
