"""Metrics sinks of a run: a CSV file always, wandb and TensorBoard when enabled."""

import csv
import hashlib
import io
import math
import os
import time
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


# Keys of a run's config that say where and how it trains rather than what: left out of the
# hyperparameters TensorBoard's HParams view lists (a dotted key and everything under it).
NOT_HYPERPARAMETERS = (
    "hydra", "paths", "logger", "resume", "checkpoint_every", "device", "threads", "cuda_graph",
    "data.root", "data.train_dir", "data.val_dir",
)  # fmt: skip


def curve_labels(row: dict[str, Any], cfg: DictConfig) -> tuple[str, ...]:
    """The columns of `row` that say which curve it belongs to rather than hold a metric: the
    step and seed, and for a member of a grid its index and its values of the grid's keys (the
    MLP's lr and init_std; a packed Inception's recipe keys, beside which its `lr` column is the
    schedule's rate, a metric)."""
    if "member" not in row:
        return ("step", "seed")
    grid = cfg.get("grid") or {}
    return ("step", "member", "seed", *(key for key in grid if key in row))


def metrics(row: dict[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """The logged metrics of `row`: its columns but the curve's labels, without empty ones."""
    return {key: value for key, value in row.items() if key not in labels and value is not None}


def curve_name(row: dict[str, Any]) -> str:
    return f"member_{row['member']}" if "member" in row else f"seed_{row['seed']}"


def flat_scalars(node: Any, prefix: str = "") -> dict[str, Any]:
    """The scalar leaves of a nested dict, by dotted key; lists and nulls are left out."""
    if isinstance(node, dict):
        return {
            key: value
            for name, child in node.items()
            for key, value in flat_scalars(child, f"{prefix}{name}.").items()
        }
    return {prefix[:-1]: node} if isinstance(node, bool | int | float | str) else {}


def hyperparameters(cfg: DictConfig, row: dict[str, Any], labels: Sequence[str]) -> dict:
    """The scalar keys of `cfg` but NOT_HYPERPARAMETERS, by dotted name (`optim.lr`,
    `model.variant`), and the curve's `seed` from `row`. A grid member also has its `member`
    index, and its value of each grid key replaces the config key it stands for (the MLP's
    `lr` is `optim.lr`, `init_std` is `model.init_std`; a packed run's `lr_multiplier` is
    `recipe.lr_multiplier`, ...), so a member and a separate run of the same settings line up
    in the HParams view. A boolean is written as the string true or false: torch's `hparams`
    would record it as the number 1 or 0."""
    values = {
        key: value
        for key, value in flat_scalars(OmegaConf.to_container(cfg, resolve=True)).items()
        if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_HYPERPARAMETERS)
    }
    values["seed"] = row["seed"]
    if "member" in row:
        values["member"] = row["member"]
        for grid_key in (key for key in labels if key not in ("step", "member", "seed")):
            replaced = [key for key in values if key.endswith(f".{grid_key}")]
            values.update(dict.fromkeys(replaced or [f"grid.{grid_key}"], row[grid_key]))
    return {key: str(v).lower() if isinstance(v, bool) else v for key, v in values.items()}


class TensorBoardRuns:
    """One TensorBoard run (event folder) per curve, `<folder>/seed_<s>/` or `member_<m>/`,
    each with plain tags (`test_acc`, `train_loss`, ...), so that TensorBoard overlays the seeds
    and members of a run, and every run under a --logdir, in one chart per metric.

    A curve's writer opens at its first row and starts with the curve's hyperparameters (the
    HParams plugin's session start, `hyperparameters`); the HParams view reads its metrics from
    the run's own scalars, so its `test_acc` column is the final test accuracy. No experiment
    summary is written: without one, the view gathers the hyperparameters and metrics of every
    run it finds, MLP and Inception runs alike. `close` ends each session: success for a
    completed run, failure for a diverged or failed one and for a seed whose training loss
    became non-finite; an interrupted run, to be resumed, is left running. A resumed run's
    writers purge the events logged after its checkpoint (`purge_step`)."""

    def __init__(self, folder: Path, cfg: DictConfig, purge_step: int):
        self.folder, self.cfg, self.purge_step = folder, cfg, purge_step
        self.writers: dict[str, Any] = {}
        self.diverged: set[str] = set()

    def log(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            labels = curve_labels(row, self.cfg)
            name = curve_name(row)
            if name not in self.writers:
                self.writers[name] = self._open(name, row, labels)
            loss = row.get("train_loss")
            if loss is not None and not math.isfinite(loss):
                self.diverged.add(name)
            for key, value in metrics(row, labels).items():
                self.writers[name].add_scalar(key, value, row["step"])

    def _open(self, name: str, row: dict[str, Any], labels: Sequence[str]) -> Any:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        writer = SummaryWriter(os.fspath(self.folder / name), purge_step=self.purge_step)
        _, session_start, _ = hparams(hyperparameters(self.cfg, row, labels), {})
        writer.file_writer.add_summary(session_start)
        return writer

    def close(self, status: str) -> None:
        for name, writer in self.writers.items():
            if status in SESSION_END:
                ended = "diverged" if name in self.diverged else status
                writer.file_writer.add_summary(session_end(SESSION_END[ended]))
            writer.close()


# A run's status -> the HParams session's (api_pb2.Status); an interrupted run has none yet.
SESSION_END = {
    "completed": "STATUS_SUCCESS",
    "diverged": "STATUS_FAILURE",
    "failed": "STATUS_FAILURE",
}


def session_end(status: str) -> Any:
    """The HParams plugin's session-end summary with `status` (one of api_pb2.Status's names)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.Status.Value(status), end_time_secs=time.time()
    )
    content = metadata.create_summary_metadata(
        plugin_data_pb2.HParamsPluginData(session_end_info=info)
    )
    return Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=content)])


class RunLogger:
    """Sends each metrics row (one per seed and logged step) to every enabled sink.

    TensorBoard: one run per seed (or member) under `<run>/tensorboard/`, tags named by the
    metric alone, so seeds overlay in one chart per metric, and each with its hyperparameters
    for the HParams view (`TensorBoardRuns`).

    wandb: one wandb run holds one run directory, so a metric of seed s is named
    `<metric>/seed_<s>` (a member grid's: `<metric>/member_<m>`, its lr and init_std in
    metrics.csv); wandb cannot overlay several seeds of one wandb run as separate runs. Each
    wandb run is tagged with the experiment's name and the model variant (`cfg.name`,
    `cfg.model.variant`), grouped by the name, and has job type `train`, so wandb's run table
    filters and groups them.
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
                job_type="train",
                tags=[cfg.name, cfg.model.variant],
                dir=str(run_dir),
                mode=wandb_mode,
                config=OmegaConf.to_container(cfg, resolve=True),
                reinit="finish_previous",
                id=wandb_id if wandb_id and wandb_mode == "online" else None,
                resume="allow" if wandb_id and wandb_mode == "online" else None,
                settings=wandb.Settings(silent=True),
            )
        if cfg.logger.tensorboard:
            self.tensorboard = TensorBoardRuns(
                run_dir / "tensorboard", cfg, purge_step=resume["step"] + 1 if resume else 0
            )
        self.cfg = cfg

    def state_dict(self) -> dict[str, Any]:
        return {
            "wandb_id": self.wandb_run.id if self.wandb_run is not None else None,
            "metrics": self.csv.position(),
        }

    def log(self, rows: list[dict[str, Any]]) -> None:
        self.csv.log(rows)
        if self.wandb_run is not None:
            scalars = {
                f"{key}/{curve_name(row)}": value
                for row in rows
                for key, value in metrics(row, curve_labels(row, self.cfg)).items()
            }
            self.wandb_run.log(scalars, step=rows[0]["step"])
        if self.tensorboard is not None:
            self.tensorboard.log(rows)

    def close(self, status: str) -> None:
        self.csv.close()
        if self.tensorboard is not None:
            self.tensorboard.close(status)
        if self.wandb_run is not None:
            self.wandb_run.summary["status"] = status
            self.wandb_run.finish(exit_code=0 if status == "completed" else 1)
