"""The command line: `python -m bnrepro.train [experiment=figure1] [model=mlp_bn] [key=value ...]`.

It only dispatches, by the config's own keys: `model.name` picks the trainer (mlp:
bnrepro.train_mlp; inception: bnrepro.train_inception, or bnrepro.train_packed as `packed`
says, `packs`), which trains in the run directory Hydra names. A problem the user
can fix ends the process with one paragraph and exit status 2 (a signal: 130, 143, or 140
for SIGUSR2, which in a submitit job then requeues the job, bnrepro.lifecycle.pass_on) and
writes nothing that was not there; in a sweep (`-m`) the job is recorded as failed, the sweep
goes on, and it exits non-zero at its end (bnrepro.hydra_callbacks.SweepReport).
"""

import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from bnrepro.errors import BnreproError, ConfigError
from bnrepro.hydra_callbacks import check_overrides
from bnrepro.lifecycle import Interrupted, exit_code, pass_on, report
from bnrepro.rundir import record_failed_start

TRAINERS = ("mlp", "inception")


def packs(cfg: DictConfig) -> bool:
    """Whether an Inception config trains packed members (bnrepro.train_packed) rather than
    one run (bnrepro.train_inception): its key `packed` (configs/trainer/inception.yaml) or,
    where that is null, whether it names several members: several seeds, or a `grid` list."""
    packed = cfg.get("packed")
    if packed is not None:
        return bool(packed)
    grid = cfg.get("grid") or {}
    seeds = cfg.get("seeds")
    several = isinstance(seeds, ListConfig | list) and len(seeds) > 1
    # The MLP's grid keys stay ??? (train.yaml) in an Inception config until it is validated.
    lists = [grid[key] for key in grid if not OmegaConf.is_missing(grid, key)]
    return several or any(values is not None for values in lists)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains `cfg` with the trainer its `model.name` names, in `run_dir`; returns run info."""
    name = cfg.model.name
    if name == "mlp":
        from bnrepro.train_mlp import train as train_fn
    elif name == "inception":
        if packs(cfg):
            from bnrepro.train_packed import train as train_fn
        else:
            from bnrepro.train_inception import train as train_fn
    else:
        raise ConfigError(
            f"Invalid config: model.name={name!r}. No trainer trains it: use a model whose name "
            f"is one of {list(TRAINERS)} (model=mlp, mlp_bn, inception_proxy or inception)."
        )
    return train_fn(cfg, Path(run_dir))


@hydra.main(version_base="1.3", config_path="pkg://bnrepro.configs", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        info = train(cfg, run_dir)
    except (BnreproError, Interrupted, KeyboardInterrupt) as error:
        report(error)
        if isinstance(error, Interrupted):
            pass_on(error)  # SIGUSR2 in a submitit job: submitit requeues it
        if sweep and not isinstance(error, Interrupted | KeyboardInterrupt):
            record_failed_start(run_dir, cfg, error)
            return
        sys.exit(exit_code(error))
    except Exception as error:
        if not sweep:
            raise
        record_failed_start(run_dir, cfg, error)
        traceback.print_exc()
        return
    if "members" in info:
        diverged = sum(m["status"] == "diverged" for m in info["members"])
        print(
            f"{info['status']} in {info['wall_s']:.1f} s; {len(info['members'])} members, "
            f"{diverged} diverged (run.json lists each member's final test accuracy)"
        )
        return
    seeds = ", ".join(f"{s['seed']}: {s['final_test_acc']}" for s in info["seeds"])
    print(f"{info['status']} in {info['wall_s']:.1f} s; final test accuracy by seed {seeds}")


def cli() -> None:
    """`python -m bnrepro.train`: Hydra's command line, its overrides checked first
    (`check_overrides`), so that one Hydra cannot read ends with one paragraph and the fix."""
    try:
        check_overrides(get_args_parser().parse_args().overrides)
    except ConfigError as error:
        report(error)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
