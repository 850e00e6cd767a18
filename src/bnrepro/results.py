"""Logged runs as pandas DataFrames: the one place figures and notebooks read results from."""

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bnrepro.rundir import owner_alive


def run_dirs(root: str | Path) -> list[Path]:
    """Every run directory (one holding run.json) under `root`, sorted by path."""
    return sorted(p.parent for p in Path(root).rglob("run.json"))


def run_status(run_dir: Path, info: dict) -> str:
    """run.json's status; `crashed` for a run left at `running` whose process is gone."""
    status = info.get("status")
    if status != "running":
        return status
    return status if owner_alive(run_dir) else "crashed"


def failed_jobs(root: str | Path) -> tuple[int, pd.DataFrame]:
    """How many jobs (run directories) `root` holds, and those that ended neither completed
    nor diverged (a diverged job is a result, not a failure), one row each, by run_dir."""
    runs = load_runs(root)
    if runs.empty:
        return 0, runs
    jobs = runs.groupby("run_dir", sort=True).first()
    return len(jobs), jobs[~jobs.status.isin(["completed", "diverged"])]


def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per (run, seed): flattened config, status and final metrics of every run."""
    records = []
    for run_dir in run_dirs(root):
        info = json.loads((run_dir / "run.json").read_text())
        config_file = run_dir / "config.yaml"
        config = {}
        if config_file.exists():
            container = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
            config = pd.json_normalize(container).iloc[0].to_dict()
        status = run_status(run_dir, info)
        base = {
            "run_dir": str(run_dir),
            "status": status,
            "wall_s": info.get("wall_s"),
            "steps": info.get("steps"),
            "error": info.get("error"),
            **{f"config.{k}": v for k, v in config.items()},
        }
        for seed_info in info.get("seeds") or info.get("members") or [{}]:
            records.append(
                {
                    **base,
                    **{k: v for k, v in seed_info.items() if k != "status"},
                    "seed_status": status
                    if status == "crashed"
                    else seed_info.get("status", status),
                }
            )
    return pd.DataFrame.from_records(records)
