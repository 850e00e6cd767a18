"""A campaign's plan file: the runs of a long protocol, each with its folder, experiment, seed,
length and overrides, read and checked before anything trains (bnrepro.campaign trains them).

A plan is YAML with `name`, `preset`, `groups` (config groups every run takes), `seeds`,
optional `overrides` (every run's) and `runs`: each `{dir, experiment, steps, overrides}`,
whose `dir` holds `{seed}` and is expanded for every seed, in the plan's order.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from bnrepro import presets
from bnrepro.errors import BnreproError
from bnrepro.paths import CONFIGS


class CampaignError(BnreproError):
    """A plan, runs folder or code clone the campaign cannot go on with; nothing was changed."""


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its folder under the runs folder, its experiment, seed, length and
    the overrides that make it what it is (after the plan's own)."""

    dir: str
    experiment: str
    seed: int
    steps: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    preset: str
    groups: tuple[str, ...]
    overrides: tuple[str, ...]
    runs: tuple[PlannedRun, ...]
    sha256: str

    def train_args(self, run: PlannedRun, run_dir: Path) -> list[str]:
        """The overrides of `python -m bnrepro.train` for `run` in `run_dir`."""
        return [
            f"experiment={run.experiment}",
            *self.groups,
            f"preset={self.preset}",
            f"seeds=[{run.seed}]",
            *self.overrides,
            *run.overrides,
            f"steps={run.steps}",
            f"hydra.run.dir={run_dir}",
        ]


def plan_error(path: Path, problem: str) -> CampaignError:
    return CampaignError(
        f"The plan {path} {problem}. Nothing was trained or changed. Fix: correct the plan "
        "file; a plan whose campaign has started must not change (start a new campaign, in a "
        "new --runs folder, from a new plan file)."
    )


def load_plan(path: Path) -> Plan:
    """The plan file at `path`, checked: every key present and of its type, every experiment
    one of configs/experiment/, every run's folder distinct."""
    try:
        raw = path.read_bytes()
        data = OmegaConf.to_container(OmegaConf.create(raw.decode()))
    except OSError as error:
        raise plan_error(path, f"cannot be read ({error.strerror})") from error
    except Exception as error:  # noqa: BLE001 - any YAML or decoding error is the file's
        raise plan_error(path, f"is not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise plan_error(path, "is not a mapping of name, preset, groups, seeds and runs")
    missing = [k for k in ("name", "preset", "groups", "seeds", "runs") if k not in data]
    if missing:
        raise plan_error(path, f"lacks the key(s) {', '.join(missing)}")
    seeds = data["seeds"]
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise plan_error(path, f"has seeds {seeds!r}: it needs a list of whole numbers")
    if str(data["preset"]) not in presets.names():
        raise plan_error(path, f"names the preset {data['preset']!r}, not in configs/preset/")
    experiments = {p.stem for p in (CONFIGS / "experiment").glob("*.yaml")}
    runs = []
    for index, entry in enumerate(data["runs"] or []):
        where = f"run {index + 1}"
        if not isinstance(entry, dict) or not {"dir", "experiment", "steps"} <= entry.keys():
            raise plan_error(path, f"has {where} without dir, experiment and steps")
        if "{seed}" not in str(entry["dir"]):
            raise plan_error(path, f"has {where} whose dir {entry['dir']!r} lacks {{seed}}")
        if entry["experiment"] not in experiments:
            raise plan_error(path, f"has {where} with experiment {entry['experiment']!r}")
        if not isinstance(entry["steps"], int) or entry["steps"] < 1:
            raise plan_error(path, f"has {where} with steps {entry['steps']!r}")
        for seed in seeds:
            runs.append(
                PlannedRun(
                    dir=str(entry["dir"]).format(seed=seed),
                    experiment=entry["experiment"],
                    seed=seed,
                    steps=entry["steps"],
                    overrides=tuple(entry.get("overrides") or ()),
                )
            )
    if not runs:
        raise plan_error(path, "has no runs")
    dirs = [r.dir for r in runs]
    repeated = sorted({d for d in dirs if dirs.count(d) > 1})
    if repeated:
        raise plan_error(path, f"names the folder(s) {', '.join(repeated)} more than once")
    # The plan's order, each entry for every seed before the next.
    return Plan(
        path=path,
        name=str(data["name"]),
        preset=str(data["preset"]),
        groups=tuple(data["groups"]),
        overrides=tuple(data.get("overrides") or ()),
        runs=tuple(runs),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
