"""Metrics sinks of a run: a CSV file always, wandb and TensorBoard when enabled."""

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnrepro.errors import ConfigError


class CSVLogger:
    """Appends rows to `path` with '\\n' line endings, flushing after each write so a killed run
    keeps what it logged. It keeps the byte length and sha256 of everything written, which a
    checkpoint records so that a resume can check the file and cut it back exactly."""

    def __init__(self, path: Path, columns: Sequence[str], resume_from: int | None = None):
        """A new file with its header, or with `resume_from` the first `resume_from` bytes of
        the existing file (the caller has checked them against the checkpoint)."""
        self.columns = list(columns)
        self.hash = hashlib.sha256()
        if resume_from is None:
            self.file = open(path, "w", newline="")  # noqa: SIM115 (closed in close())
            self._write(header=True)
        else:
            self.file = open(path, "r+", newline="")  # noqa: SIM115 (closed in close())
            self.hash.update(prefix_bytes(path, resume_from))
            self.file.truncate(resume_from)
            self.file.seek(resume_from)

    def _write(self, rows: Sequence[dict[str, Any]] = (), header: bool = False) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, extrasaction="raise", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
        self.file.write(text)
        self.file.flush()
        self.hash.update(text.encode())

    def log(self, rows: list[dict[str, Any]]) -> None:
        self._write(rows)

    def position(self) -> dict[str, Any]:
        """What a checkpoint records of the file: its length and the sha256 of its content."""
        return {"bytes": self.file.tell(), "sha256": self.hash.hexdigest()}

    def close(self) -> None:
        self.file.close()


def prefix_bytes(path: Path, length: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(length)


def check_wandb(mode: str) -> None:
    """Fails before anything is written when wandb would need credentials it does not have."""
    if mode != "online":
        return
    import wandb

    if not wandb.login(prompt=False, verify=False):
        raise ConfigError(
            "logger.wandb.mode=online, but wandb has no credentials on this machine. Nothing "
            "was written. Fix: run `wandb login` (or set WANDB_API_KEY), or log offline with "
            "WANDB_MODE=offline and upload later with `make wandb-sync`."
        )


# The columns that say which curve a row belongs to rather than hold a metric.
ROW_LABELS = ("step", "seed", "member", "lr", "init_std")


def curve_name(row: dict[str, Any]) -> str:
    return f"member_{row['member']}" if "member" in row else f"seed_{row['seed']}"


class RunLogger:
    """Sends each metrics row (one per seed and logged step) to every enabled sink.

    In wandb and TensorBoard a metric of seed s is named `<metric>/seed_<s>`, so one run
    of several seeds shows one curve per seed; rows of a member grid (with a `member` column,
    whose lr and init_std are in metrics.csv) are named `<metric>/member_<m>`.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: DictConfig,
        columns: Sequence[str],
        resume: dict[str, Any] | None = None,
    ):
        """`resume` is what a checkpoint recorded (`state_dict()` and the step): metrics.csv
        is cut back to its length, wandb continues the same run in online mode (wandb cannot
        resume offline runs, so offline a new run joins the same group) and TensorBoard drops
        the events logged after the checkpoint's step."""
        self.csv = CSVLogger(
            run_dir / "metrics.csv", columns, resume["metrics"]["bytes"] if resume else None
        )
        wandb_id = resume["wandb_id"] if resume else None
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
                settings=wandb.Settings(silent=True),
            )
        if cfg.logger.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(
                os.fspath(run_dir / "tensorboard"), purge_step=resume["step"] + 1 if resume else 0
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "wandb_id": self.wandb_run.id if self.wandb_run is not None else None,
            "metrics": self.csv.position(),
        }

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.csv.log(rows)
        if self.wandb_run is None and self.tensorboard is None:
            return
        step = rows[0]["step"]
        scalars = {
            f"{key}/{curve_name(row)}": value
            for row in rows
            for key, value in row.items()
            if key not in ROW_LABELS and value is not None
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
