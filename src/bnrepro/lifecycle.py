"""The life of a run directory, from claim to final status, for every trainer.

A trainer builds its data and model, takes one training step and evaluates; what concerns the
run directory happens here, once:

- claim: `Run` locks `<run>/.lock` for as long as the run lives, creating the directory when
  needed; a second process is refused before it changes anything (bnrepro.rundir, which also
  names the files that make a run and writes run.json).
- refuse or resume: a directory that holds a run is never trained into afresh; with
  `resume=true` its checkpoint.pt is loaded and checked against the run (bnrepro.resume). A run
  that has nothing left to train and ended (completed or diverged) is `complete`: the trainer
  returns its run.json as it is.
- a run that never starts (refused, complete, or stopped by an error before its run.json is
  written) leaves the directory as the claim found it: the lock file's text restored, or the
  lock file and the directories the claim created removed.
- start: config.yaml, Hydra's record in .hydra/ (bnrepro.rundir.write_hydra_record), run.json
  (status `running`, pid, host, the command line's overrides, and `segments`: one per start of
  the run, resumes included, with its first step, host, commit, hardware and batch job, and the
  step and time it ended (and the signal that stopped it) where it ended with a record),
  the loggers; a fresh run writes a checkpoint of its initial state at once, so every run
  that logged a row can be resumed, and a resumed run cuts metrics.csv back to the
  checkpoint's bytes, so a resumed run's files are byte-identical to an uninterrupted run's.
- the loop: `steps()` yields the steps to train; between two steps it writes the checkpoints
  that are due and stops the run after SIGINT, SIGTERM or SIGUSR2 (the warning SLURM sends
  before a job's time limit, as submitit asks for it), or when every seed has diverged.
- end: run.json gets one of `completed`, `diverged`, `failed` (with the message; a disk too
  full for an atomic write gets run.json rewritten in place) or `interrupted` (a checkpoint
  is written and the command that resumes is printed; after SIGUSR2, `pass_on` hands the
  signal to submitit, which requeues the job, and the requeued job resumes the run);
  completed and diverged runs also get model.pt. A run.json left at `running` by a process
  that is gone reads as `crashed` (bnrepro.rundir.owner_alive, used by bnrepro.results).
- messages: the start and the end of a run go to the module's logger, which Hydra's job
  logging (configs/hydra/job_logging/bnrepro.yaml) writes to the terminal and to
  `<run>/train.log`; what refuses a start is printed only, so it touches no run's files.
"""

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bnrepro.atomic import atomic_open, atomic_write_text, write_json
from bnrepro.checkpoint import load_checkpoint
from bnrepro.errors import BnreproError, ResumeError
from bnrepro.loggers import RunLogger, check_wandb
from bnrepro.progress import sweep_job
from bnrepro.resume import ended_run, resume_command, resume_state
from bnrepro.rundir import (
    HYDRA_DIR,
    WRITE_ERRNOS,
    DirectoryClaim,
    RunWriteError,
    earlier_segments,
    write_hydra_record,
    write_run_json,
)
from bnrepro.runinfo import cluster_job, git_state, hardware

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGUSR2 stopped the run between two steps; a checkpoint was
    written."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def command_overrides() -> list[str] | None:
    """The command line's overrides, as Hydra's overrides.yaml would list them; None for a run
    started from Python (without Hydra's command line)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return None


class Run:
    """One run directory, owned by this process from `with Run(...)` to the block's end.

    `checkpoint` is the state to resume from (None for a fresh run); the trainer restores
    its own part (`checkpoint["trainer"]`), calls `start`, trains the steps of `steps()`,
    logs with `log`, and ends with `finish`. When `complete` (a resumed run with nothing left
    to train) the trainer returns `info`, the run's run.json, instead. Any exception ends the
    run `failed` (after `start`; before it, nothing is written).

    Under DDP every rank makes a `Run`; only the `main_process` claims and writes. The other
    ranks follow its decision to refuse, start or resume (`broadcast`: rank 0's object to
    every rank), and `sync_stop` (called on every rank every `stop_every` steps) makes the
    replicas agree on stopping after a signal.
    """

    def __init__(
        self,
        run_dir: Path,
        cfg: DictConfig,
        columns: Sequence[str],
        resume_keys: Sequence[str],
        *,
        main_process: bool = True,
        broadcast: Callable[[Any], Any] | None = None,
        sync_stop: Callable[[bool], bool] | None = None,
        stop_every: int = 1,
        members: Sequence[dict[str, Any]] | None = None,
    ):
        self.dir, self.cfg, self.columns = Path(run_dir), cfg, columns
        self.resume_keys, self.main = resume_keys, main_process
        self.broadcast, self.sync_stop, self.stop_every = broadcast, sync_stop, stop_every
        # What a row's status is kept by: its seed, or with `members` (a trainer whose members
        # differ in more than the seed; each a dict with its "member" index) its member.
        self.members = list(members) if members is not None else None
        self.key = "seed" if members is None else "member"
        self.keys = list(cfg.seeds) if members is None else [m["member"] for m in members]
        # Plain ints for the per-step checks: reading an OmegaConf node costs microseconds.
        self.total_steps, self.checkpoint_every = int(cfg.steps), int(cfg.checkpoint_every)
        self.checkpoint: dict[str, Any] | None = None
        self.start_step = self.step = 0
        self.diverged_at: dict[int, int] = {}
        self.last_rows: dict[int, dict[str, Any]] = {}
        self.info: dict[str, Any] = {}
        self.complete = False
        self.overrides = command_overrides()
        self.logger: RunLogger | None = None
        self._state: Callable[[], dict[str, Any]] | None = None
        self._claim = DirectoryClaim(self.dir)
        self._recorded = False
        self._started_at: float | None = None
        self._wall_before = 0.0
        self._signal: int | None = None
        self._handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ claim and resume

    def __enter__(self) -> "Run":
        error, ended = None, None
        if self.main:
            try:
                check_wandb(self.cfg.logger.wandb.mode)
                self._claim.claim()
                self.checkpoint = resume_state(self.dir, self.cfg, self.resume_keys)
                ended = ended_run(self.dir, self.checkpoint, self.total_steps, len(self.keys))
            except BaseException as caught:
                self._claim.release(self._recorded)
                if not isinstance(caught, BnreproError) or self.broadcast is None:
                    raise
                error = caught
        if self.broadcast is not None:  # the other replicas follow rank 0's decision
            decision = self.broadcast(
                {
                    "error": str(error) if error else None,
                    "resume": self.checkpoint is not None,
                    "ended": ended,
                }
            )
            if error is not None:
                raise error
            if not self.main and decision["error"]:
                raise ResumeError(decision["error"])
            ended = decision["ended"]
            if not self.main and decision["resume"] and ended is None:
                self.checkpoint = load_checkpoint(self.dir / "checkpoint.pt")
        if ended is not None:
            self.complete, self.info = True, ended
            if self.main:
                further = (
                    "every seed diverged"
                    if len(self.checkpoint["diverged_at"]) >= len(self.keys)
                    else "a larger steps= with resume=true trains it further"
                )
                print(
                    f"bnrepro: {self.dir} has nothing left to train: it ended "
                    f"{ended.get('status')} at step {ended.get('steps')}. Nothing was changed "
                    f"({further}).",
                    flush=True,
                )
            return self
        if self.checkpoint is not None:
            self.start_step = self.step = self.checkpoint["step"]
            self._wall_before = self.checkpoint["wall_s"]
            self.diverged_at = dict(self.checkpoint["diverged_at"])
            self.last_rows = dict(self.checkpoint["last_rows"])
        self._install_signal_handlers()
        return self

    # ------------------------------------------------------------------ start

    def start(self, state: Callable[[], dict[str, Any]], device: torch.device, **info: Any) -> None:
        """Writes config.yaml and run.json (`running`, with `info`), opens the loggers and, for
        a fresh run, checkpoints the initial state. `state()` returns the trainer's part of a
        checkpoint (on every rank: it may gather across replicas)."""
        self._state = state
        self._started_at = time.time()
        segment = {
            "from_step": self.checkpoint["step"] if self.checkpoint else 0,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self._started_at)),
            "host": socket.gethostname(),
            "git": git_state(),
            "hardware": hardware(device),
        }
        job = cluster_job()
        if job is not None:
            segment["job"] = job
        earlier = [] if self.checkpoint is None else earlier_segments(self.dir)
        self.info = {
            "name": self.cfg.name,
            "variant": self.cfg.model.variant,
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "git": git_state(),
            "hardware": hardware(device),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self._started_at)),
            "resumed_from_step": self.checkpoint["step"] if self.checkpoint else None,
            "overrides": self.overrides or [],
            **info,
            "segments": [*earlier, segment],
        }
        if self.main:
            # left by a process killed while writing
            for stale in (*self.dir.glob(".*.tmp"), *self.dir.glob(f"{HYDRA_DIR}/.*.tmp")):
                stale.unlink()
            atomic_write_text(self.dir / "config.yaml", OmegaConf.to_yaml(self.cfg, resolve=True))
            write_hydra_record(self.dir)
            write_json(self.dir / "run.json", self.info)
            self._recorded = True
            resume = self.checkpoint["logger"] if self.checkpoint else None
            if resume is not None:
                resume = {**resume, "step": self.checkpoint["step"]}
            self.logger = RunLogger(self.dir, self.cfg, self.columns, resume=resume)
            job = sweep_job()
            log.info(f"bnrepro: {f'{job.describe()}, ' if job else ''}run directory {self.dir}")
            if self.checkpoint is not None:
                log.info(f"bnrepro: resumed at step {self.step} of {self.total_steps}")
        if self.checkpoint is None:
            self.save_checkpoint()

    # ------------------------------------------------------------------ the loop

    def steps(self) -> Iterator[int]:
        """Yields each step to train, start+1 .. cfg.steps: the body trains from step - 1 to
        step and logs what is due at `step`. Between two steps, the due checkpoint is written,
        and the run stops after a signal or once every seed has diverged."""
        every = self.checkpoint_every
        while self.step < self.total_steps and len(self.diverged_at) < len(self.keys):
            if every and self.step > self.start_step and self.step % every == 0:
                self.save_checkpoint()
            if self._stop_requested():
                self.save_checkpoint()
                raise Interrupted(self._signal or signal.SIGTERM, self._interrupt_message())
            yield self.step + 1
            self.step += 1

    def due(self, step: int, *every: int) -> bool:
        """Whether `step` is a multiple of any of `every`, or the last step."""
        return step == self.total_steps or any(step % e == 0 for e in every)

    def log(self, rows: list[dict[str, Any]]) -> None:
        """Logs one row per seed (or member) of a step; one whose train_loss is non-finite
        diverged."""
        for row in rows:
            loss = row.get("train_loss")
            if loss is not None and not math.isfinite(loss):
                self.diverged_at.setdefault(row[self.key], row["step"])
        if self.logger is not None:
            self.logger.log(rows)
        for row in rows:
            if row.get("test_acc") is not None and row[self.key] not in self.diverged_at:
                self.last_rows[row[self.key]] = row

    def mark_diverged(self, key: int, step: int) -> None:
        self.diverged_at.setdefault(key, step)

    def wall_s(self) -> float:
        return self._wall_before + time.time() - (self._started_at or time.time())

    def save_checkpoint(self) -> None:
        """The run's state at `self.step`, written atomically (on every rank: the trainer's
        state may gather across replicas; only the main process writes)."""
        trainer_state = self._state()
        if not self.main:
            return
        with atomic_open(self.dir / "checkpoint.pt", "wb") as f:
            torch.save(
                {
                    "step": self.step,
                    "config": OmegaConf.to_container(self.cfg, resolve=True),
                    "wall_s": self.wall_s(),
                    "diverged_at": self.diverged_at,
                    "last_rows": self.last_rows,
                    "logger": self.logger.state_dict(),
                    "trainer": trainer_state,
                },
                f,
            )

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
            self._handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C does not wait for the step to end
        self._signal = signum

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers.clear()

    def _stop_requested(self) -> bool:
        if self.sync_stop is None:
            return self._signal is not None
        if self.step % self.stop_every:
            return False
        return self.sync_stop(self._signal is not None)

    def check_stop(self) -> None:
        """Raises Interrupted where a stopping signal arrived during the trainer's set-up,
        before `start`: building a large pack takes a minute, which a stop would otherwise
        wait out in silence. A new run has written nothing yet; a resumed one keeps its
        checkpoint. (One process only: replicas agree on a stop between steps, in `steps`.)"""
        if self._signal is None:
            return
        name = signal.Signals(self._signal).name
        if self.checkpoint is None:
            kept = "nothing of it was written. Start it again with the same command"
        else:
            kept = (
                f"its checkpoint at step {self.step} is as it was. Resume it with: "
                f"{resume_command(self.dir, self.overrides)}"
            )
        raise Interrupted(
            self._signal, f"{name} stopped the run in {self.dir} during its set-up; {kept}"
        )

    def _interrupt_message(self) -> str:
        name = signal.Signals(self._signal or signal.SIGTERM).name
        return (
            f"{name} stopped the run at step {self.step} of {self.cfg.steps}; its checkpoint "
            f"is in {self.dir}. Resume it with: {resume_command(self.dir, self.overrides)}"
        )

    # ------------------------------------------------------------------ end

    def finish(self, model_state: dict[str, Any]) -> dict[str, Any]:
        """Ends the run `completed` (or `diverged`): final checkpoint, model.pt, run.json."""
        self.save_checkpoint()
        if self.main:
            with atomic_open(self.dir / "model.pt", "wb") as f:
                torch.save(model_state, f)
        self._end("diverged" if self.diverged_at else "completed")
        return self.info

    def _end(self, status: str, error: str | None = None) -> None:
        wall_s = self.wall_s()
        described = self.members or [{"seed": seed} for seed in self.keys]
        outcomes = [
            {
                **description,
                "status": "diverged"
                if key in self.diverged_at
                else ("completed" if status == "diverged" else status),
                "diverged_at_step": self.diverged_at.get(key),
                "final_step": self.last_rows.get(key, {}).get("step"),
                "final_test_acc": self.last_rows.get(key, {}).get("test_acc"),
            }
            for key, description in zip(self.keys, described, strict=True)
        ]
        self.info.update(
            status=status,
            steps=self.step,
            wall_s=round(wall_s, 3),
            steps_per_s=round(self.step / wall_s, 2) if wall_s > 0 else None,
            ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **{"seeds" if self.members is None else "members": outcomes},
        )
        self.info["segments"][-1].update(
            to_step=self.step,
            ended=self.info["ended"],
            wall_s=round(time.time() - self._started_at, 3),
        )
        if status == "interrupted" and self._signal is not None:
            self.info["segments"][-1]["signal"] = signal.Signals(self._signal).name
        if error is not None:
            self.info["error"] = error
        if not self.main:
            return
        if self.logger is not None:
            self.logger.close(status)
            self.logger = None
        write_run_json(self.dir / "run.json", self.info)
        self._recorded = True
        log.info(f"bnrepro: {status} at step {self.step} ({self.dir})")

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> bool:
        self._restore_signal_handlers()
        try:
            if error is None:
                return False
            if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
                if (self.dir / "checkpoint.pt").exists():
                    kept = "its last checkpoint and the rows logged before it are intact"
                    then = f"resume with: {resume_command(self.dir, self.overrides)}"
                else:
                    kept = "it had no checkpoint yet"
                    then = "train again in a new directory (another hydra.run.dir)"
                message = (
                    f"Could not write {error.filename or self.dir}: {error.strerror}. The run "
                    f"stopped; {kept}. Fix: free disk space (or fix the permissions), then {then}"
                )
                self._record_end("failed", message)
                raise RunWriteError(message) from error
            if isinstance(error, Interrupted):
                self._record_end("interrupted", str(error))
            elif isinstance(error, KeyboardInterrupt):
                self._record_end("interrupted", "SIGINT twice: stopped without a checkpoint")
            else:
                message = str(error) if isinstance(error, BnreproError) else repr(error)
                self._record_end("failed", message)
            return False
        finally:
            if self.logger is not None:
                with contextlib.suppress(Exception):
                    self.logger.close("failed")
            self._claim.release(self._recorded)

    def _record_end(self, status: str, message: str) -> None:
        """Best effort: a full disk may refuse run.json too; the message is printed anyway.
        A run that never started records nothing (the command line records a sweep job's
        failed start, bnrepro.rundir.record_failed_start)."""
        if self._started_at is None:
            return
        with contextlib.suppress(OSError):
            self._end(status, message)


def exit_code(error: BaseException) -> int:
    """The process exit status for an error that ended a run."""
    if isinstance(error, Interrupted):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 2


def pass_on(error: Interrupted) -> None:
    """After SIGUSR2 stopped a run (checkpointed and recorded), hands the signal to the handler
    that listened before the run's: submitit's, in a job it launched, which requeues the job,
    and the requeued job resumes the run (bnrepro.resume.requeued_job). Nothing where no other
    handler listens."""
    if error.signum == signal.SIGUSR2 and callable(signal.getsignal(signal.SIGUSR2)):
        signal.raise_signal(signal.SIGUSR2)


def report(error: BaseException, file: Any = sys.stderr) -> None:
    print(f"\nbnrepro: {error}\n", file=file, flush=True)
