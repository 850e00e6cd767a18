"""Resuming a run directory: whether it may be resumed, the checkpoint it resumes from, and the
command that resumes it.

A directory that holds a run (metrics.csv, checkpoint.pt or model.pt) is never trained into
afresh. With `resume=true` its checkpoint.pt is loaded and checked: the settings that shape the
results must match (only steps, logging and device may change), and metrics.csv must still be
the file the checkpoint saw (length and sha256 of its first part). A run that has nothing left
to train and ended (completed or diverged) is `ended_run`: the trainer returns its run.json as
it is.

A requeued batch job resumes its own run without `resume=true` (`requeued_job`): the run's
last segment names this very job (its id survives the requeue), and the job restarted (SLURM's
SLURM_RESTART_COUNT) or the run stopped on SIGUSR2, the signal on which submitit requeues a
job. Every other run in the directory is refused as before.
"""

import hashlib
import json
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnrepro.checkpoint import load_checkpoint
from bnrepro.errors import ResumeError
from bnrepro.loggers import prefix_bytes
from bnrepro.rundir import earlier_segments, holds_run
from bnrepro.runinfo import cluster_job

CHECKPOINT_KEYS = ("step", "config", "wall_s", "diverged_at", "last_rows", "logger", "trainer")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_command(run_dir: Path, overrides: Sequence[str] | None) -> str:
    """The command line that continues the run in `run_dir`, started with `overrides` (None:
    not known, a placeholder stands for them)."""
    if overrides is None:
        overrides = ["<the run's overrides>"]
    kept = [
        o for o in overrides if not o.startswith(("resume=", "hydra.run.dir=", "hydra.sweep.dir="))
    ]
    args = ["python", "-m", "bnrepro.train", *kept, f"hydra.run.dir={run_dir}", "resume=true"]
    return shlex.join(args)


def resume_state(
    run_dir: Path, cfg: DictConfig, resume_keys: Sequence[str]
) -> dict[str, Any] | None:
    """The checkpoint to resume the run in `run_dir` from, checked against `cfg` (the
    `resume_keys` that shape the results must match) and against metrics.csv; None for a
    directory that holds no run. A directory that holds one is refused without `resume=true`,
    or when its checkpoint is missing, unreadable or of another layout; a requeued job's own
    run resumes without it."""
    path = run_dir / "checkpoint.pt"
    if not holds_run(run_dir):
        return None
    job = None if cfg.resume else requeued_job(run_dir)
    if job is not None:
        print(f"bnrepro: resuming {run_dir}, the run of this job ({job}), requeued", flush=True)
    elif not cfg.resume:
        raise ResumeError(
            f"{run_dir} already holds a run. Nothing was changed. Fix: continue it with "
            "resume=true, or train in a new directory (another hydra.run.dir)."
        )
    if not path.exists():
        raise ResumeError(
            f"Cannot resume {run_dir}: it holds a run but no checkpoint.pt. Nothing was "
            "changed. Fix: train in a new directory (another hydra.run.dir), or restore "
            "the checkpoint."
        )
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(key in state for key in CHECKPOINT_KEYS):
        raise ResumeError(
            f"Cannot resume {run_dir}: its checkpoint.pt was written by an earlier version "
            "of bnrepro, in another layout. Nothing was changed. Fix: train in a new "
            "directory, or resume it with the bnrepro commit named in its run.json."
        )
    check_config(run_dir, cfg, resume_keys, state)
    check_metrics(run_dir, state["logger"]["metrics"])
    return state


def requeued_job(run_dir: Path) -> str | None:
    """This process's batch job where the run in `run_dir` is its own, left by an earlier start
    of the job: its last segment names the job, and SLURM restarted the job or SIGUSR2 stopped
    the run (submitit then requeues the job); None otherwise."""
    job = cluster_job()
    if job is None:
        return None
    segments = earlier_segments(run_dir)
    last = segments[-1] if segments and isinstance(segments[-1], dict) else {}
    if last.get("job") != job:
        return None
    restarted = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
    return job if restarted or last.get("signal") == "SIGUSR2" else None


def ended_run(
    run_dir: Path, state: dict[str, Any] | None, total_steps: int, seeds: int
) -> dict[str, Any] | None:
    """The run.json of a resumed run that has nothing left to train (at its last step of
    `total_steps`, or each of its `seeds` (or members) diverged) and ended completed or
    diverged, with its model.pt; None when there is something to do, finishing it included."""
    if state is None or not (run_dir / "model.pt").exists():
        return None
    if state["step"] < total_steps and len(state["diverged_at"]) < seeds:
        return None
    try:
        info = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    ended = isinstance(info, dict) and info.get("status") in ("completed", "diverged")
    return info if ended else None


def recorded_overrides(run_dir: Path) -> list[str] | None:
    """The overrides the run.json in the directory records (None: none recorded, by an
    older version or a run started from Python)."""
    try:
        overrides = json.loads((run_dir / "run.json").read_text()).get("overrides")
    except (OSError, ValueError, AttributeError):
        return None
    return overrides if isinstance(overrides, list) and overrides else None


def check_config(
    run_dir: Path, cfg: DictConfig, resume_keys: Sequence[str], state: dict[str, Any]
) -> None:
    """Refuses a checkpoint made with other `resume_keys` settings than `cfg`'s, or past
    `cfg.steps`."""

    def settings(container: dict[str, Any]) -> dict[str, Any]:
        conf = OmegaConf.create(container)
        picked = {key: OmegaConf.select(conf, key) for key in resume_keys}
        return flatten(
            {
                k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                for k, v in picked.items()
            }
        )

    saved = settings(state["config"])
    now = settings(OmegaConf.to_container(cfg, resolve=True))
    changed = [
        f"{k}={saved.get(k)!r} (now {now.get(k)!r})"
        for k in sorted(saved | now)
        if saved.get(k) != now.get(k)
    ]
    if changed:
        recorded = recorded_overrides(run_dir)
        original = (
            f"(its run.json records them: {shlex.join(recorded)}), for example: "
            f"{resume_command(run_dir, recorded)}"
            if recorded
            else "(see its config.yaml)"
        )
        raise ResumeError(
            f"Cannot resume {run_dir}: its checkpoint was made with {'; '.join(changed)}. "
            f"Nothing was changed. Fix: resume with the run's original overrides {original}; "
            "or drop resume and train in a new directory. Only steps, logging and device "
            "may change on resume."
        )
    if state["step"] > cfg.steps:
        raise ResumeError(
            f"Cannot resume {run_dir} with steps={cfg.steps}: it is already at step "
            f"{state['step']}. Nothing was changed. Fix: pass steps >= {state['step']}."
        )


def check_metrics(run_dir: Path, recorded: dict[str, Any]) -> None:
    """Refuses a metrics.csv that is not the file the checkpoint saw (`recorded`: its length
    and the sha256 of its first part)."""
    path = run_dir / "metrics.csv"
    problem = None
    if not path.exists():
        problem = "metrics.csv is missing"
    elif path.stat().st_size < recorded["bytes"]:
        problem = "metrics.csv is shorter than when the checkpoint was written"
    elif hashlib.sha256(prefix_bytes(path, recorded["bytes"])).hexdigest() != recorded["sha256"]:
        problem = "the rows of metrics.csv up to the checkpoint were changed"
    if problem:
        raise ResumeError(
            f"Cannot resume {run_dir}: {problem}, so the resumed run's log would not be "
            "the run's. Nothing was changed. Fix: restore metrics.csv, or train in a new "
            "directory (another hydra.run.dir)."
        )
