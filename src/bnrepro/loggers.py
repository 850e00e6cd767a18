"""Metrics sinks of a run: a CSV file always, wandb and TensorBoard when enabled."""

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class CSVLogger:
    """Appends rows to `path`, flushing after each write so a killed run keeps what it logged."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.columns = list(columns)
        is_new = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="raise")
        if is_new:
            self.writer.writeheader()

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.writer.writerows(rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class RunLogger:
    """Sends each metrics row (one per seed and logged step) to every enabled sink.

    In wandb and TensorBoard a metric of seed s is named `<metric>/seed_<s>`, so one run
    of several seeds shows one curve per seed.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: DictConfig,
        columns: Sequence[str],
        wandb_id: str | None = None,
        purge_step: int | None = None,
    ):
        """For a resumed run, `wandb_id` is the id of its wandb run (continued in online mode;
        wandb cannot resume offline runs, so offline a new run joins the same group) and
        TensorBoard drops the events logged at or after `purge_step`."""
        self.csv = CSVLogger(run_dir / "metrics.csv", columns)
        self.wandb_run = None
        self.tensorboard = None
        wandb_mode = cfg.logger.wandb.mode
        if wandb_mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.logger.wandb.project,
                name=f"{cfg.name}/{cfg.model.variant}/{run_dir.name}",
                group=cfg.name,
                dir=str(run_dir),
                mode=wandb_mode,
                config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous",
                id=wandb_id if wandb_id and wandb_mode == "online" else None,
                resume="allow" if wandb_id and wandb_mode == "online" else None,
            )
        if cfg.logger.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(
                os.fspath(run_dir / "tensorboard"), purge_step=purge_step
            )

    def state_dict(self) -> dict[str, Any]:
        return {"wandb_id": self.wandb_run.id if self.wandb_run is not None else None}

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.csv.log(rows)
        if self.wandb_run is None and self.tensorboard is None:
            return
        step = rows[0]["step"]
        scalars = {
            f"{key}/seed_{row['seed']}": value
            for row in rows
            for key, value in row.items()
            if key not in ("step", "seed") and value is not None
        }
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)
        if self.tensorboard is not None:
            for tag, value in scalars.items():
                self.tensorboard.add_scalar(tag, value, step)

    def close(self, status: str) -> None:
        self.csv.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb_run is not None:
            self.wandb_run.summary["status"] = status
            self.wandb_run.finish(exit_code=0 if status == "completed" else 1)
