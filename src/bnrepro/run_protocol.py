"""The protocol of a set of runs: the config values that make what they measure comparable
(PROTOCOL_KEYS), read from the runs' configs or from a results folder's provenance.json.

bnrepro.driver records the protocol in provenance.json and refuses to collect runs of another
protocol into a results folder (`check_protocol`).
"""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from bnrepro.results import run_dirs

# The config keys whose values make a run's protocol: what it trains, for how long and on what
# (a preset sets the proxy's width, size and held-out images); not where or on which machine.
PROTOCOL_KEYS = (
    "name", "steps", "seeds", "model.width", "data.size", "data.eval_size", "data.input",
    "grid.lr", "grid.init_std",
)  # fmt: skip


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """The value of dotted `key` in `config`, None where it has no such key."""
    for part in key.split("."):
        if not isinstance(config, Mapping):
            return None
        config = config.get(part)
    return config


def protocol_of(configs: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each PROTOCOL_KEYS key's distinct values over `configs` as sorted JSON text (null where
    a config has no such key); `seeds` holds every seed any config trains."""
    values: dict[str, set[str]] = {key: set() for key in PROTOCOL_KEYS}
    for config in configs:
        for key in PROTOCOL_KEYS:
            value = config_value(config, key)
            if key == "seeds" and isinstance(value, list):
                values[key] |= {json.dumps(seed) for seed in value}
            else:
                values[key].add(json.dumps(value))
    return {key: sorted(found) for key, found in values.items() if found}


def trained_protocol(runs_dir: Path) -> dict[str, list[str]]:
    """The protocol of the runs under `runs_dir`, from each run's config.yaml."""
    configs = [
        OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        for run_dir in run_dirs(runs_dir)
        if (run_dir / "config.yaml").is_file()
    ]
    return protocol_of(configs)


def recorded_protocol(record: Mapping[str, Any]) -> dict[str, list[str]]:
    """The protocol a results folder's provenance.json records: its `protocol`, or, in one
    written before it had one, what its `config` (one config per net or variant) gives except
    the seeds, which a variant's first run does not give."""
    if isinstance(record.get("protocol"), dict):
        return record["protocol"]
    configs = record.get("config")
    if not isinstance(configs, dict):
        return {}
    protocol = protocol_of(c for c in configs.values() if isinstance(c, dict))
    protocol.pop("seeds", None)
    return protocol


def describe_protocol(protocol: Mapping[str, list[str]], keys: Iterable[str]) -> str:
    """`keys` of `protocol` as Hydra would take them: steps=2000; seeds=0,1,2."""
    return "; ".join(key + "=" + ",".join(v.strip('"') for v in protocol[key]) for key in keys)
