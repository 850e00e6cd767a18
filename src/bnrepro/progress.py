"""A run's progress bar on the terminal: in a sweep, one line per job running, each saying
which job of how many it is and about when the whole sweep ends.

The jobs of a sweep run side by side in processes of their own (the joblib launcher), all
writing to one terminal. Each bar takes a line of its own (tqdm's `position`): the first line
no other running job of the sweep holds, claimed with a lock that the process lets go of when
its bar ends or it dies, so a job that starts when another ends takes the line that job left.
The sweep's size comes from the environment its callback sets (bnrepro.hydra_callbacks
.SweepProgress), its number of jobs at a time from the launcher's config. Off a terminal (a
CI log, a file) there is no bar at all: the run's log lines say what it did.
"""

import fcntl
import hashlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from tqdm import tqdm

SWEEP_JOBS = "BNREPRO_SWEEP_JOBS"  # the environment variable holding a sweep's job count


@dataclass(frozen=True)
class Job:
    """This process's job in a sweep: `index` (0-based, Hydra's hydra.job.num) of `jobs` (None
    when not known), `slots` jobs at a time, in the sweep directory `sweep_dir`."""

    index: int
    jobs: int | None
    slots: int
    sweep_dir: str

    def label(self) -> str:
        """`job 2/4`, the bar's description."""
        return f"job {self.index + 1}" + (f"/{self.jobs}" if self.jobs else "")

    def describe(self) -> str:
        """`job 2 of 4`, as the run's log says it."""
        return f"job {self.index + 1}" + (f" of {self.jobs}" if self.jobs else "")

    def waves_after(self) -> int:
        """How many rounds of `slots` jobs are left to start after this job's round."""
        if not self.jobs:
            return 0
        return max(0, math.ceil(self.jobs / self.slots) - 1 - self.index // self.slots)


def launcher_slots(n_jobs: Any) -> int:
    """How many jobs the launcher runs at a time: joblib's `n_jobs` (-1 all CPUs, -2 all but
    one, ...), 1 for a launcher without it (Hydra's basic one runs jobs one after another)."""
    if not isinstance(n_jobs, int) or n_jobs == 0:
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def sweep_job() -> Job | None:
    """This process's job when it runs in a Hydra sweep (`-m`), else None."""
    try:
        hydra = HydraConfig.get()
    except ValueError:
        return None
    if hydra.mode != RunMode.MULTIRUN:
        return None
    jobs = os.environ.get(SWEEP_JOBS, "")
    slots = launcher_slots(hydra.launcher.get("n_jobs"))
    return Job(int(hydra.job.num), int(jobs) if jobs.isdigit() else None, slots, hydra.sweep.dir)


class SweepBar(tqdm):
    """tqdm's bar with the sweep's job as its description and, after its own numbers, about
    how long the sweep has left: this job's remaining time plus one job's length for every
    round of jobs still to start (jobs are taken to be about as long as this one)."""

    def __init__(self, *args: Any, job: Job, **kwargs: Any):
        self.job = job
        super().__init__(*args, desc=job.label(), **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        numbers = super().format_dict
        done, total = numbers["n"] - numbers["initial"], numbers["total"]
        if done > 0 and total and numbers["elapsed"] > 0:
            rate = done / numbers["elapsed"]
            left = (total - numbers["n"]) / rate + self.job.waves_after() * total / rate
            sweep = f"sweep {self.format_interval(left)} left"
            postfix = numbers.get("postfix")
            numbers["postfix"] = f"{postfix}, {sweep}" if postfix else sweep
        return numbers


def claim_line(job: Job) -> tuple[int, int | None]:
    """The first of the sweep's `slots` terminal lines that no running job holds, and the
    descriptor whose lock holds it (closing it, or the process ending, lets go); the job's
    own slot by its number, without a lock, where no lock can be taken."""
    key = hashlib.sha256(str(Path(job.sweep_dir).absolute()).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"bnrepro-{os.getuid()}" / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for line in range(job.slots):
            fd = os.open(folder / f"line{line}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return line, fd
    except OSError:
        pass
    return job.index % job.slots, None


class Progress:
    """The bar of a run's steps, `total` of them from `initial`: on a terminal only (stderr),
    and in a sweep on a line of its own (`SweepBar`), cleared when it ends so that a finished
    job's line is free for the next. Use as a context manager; `update` and `set_postfix` as
    tqdm's."""

    def __init__(self, total: int, initial: int, show: bool = True):
        show = show and sys.stderr.isatty()
        job = sweep_job() if show else None
        self._line_lock: int | None = None
        if job is None:
            self.bar = tqdm(total=total, initial=initial, unit="step", disable=not show)
            return
        line, self._line_lock = claim_line(job)
        self.bar = SweepBar(
            total=total, initial=initial, unit="step", job=job, position=line, leave=False
        )

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
        if self._line_lock is not None:
            os.close(self._line_lock)
            self._line_lock = None


class TerminalHandler(logging.StreamHandler):
    """The console handler of a run's log (configs/hydra/job_logging/bnrepro.yaml): on a
    terminal each message starts on a cleared line, since the line may hold the progress bar of
    another job of the sweep, which redraws itself below; elsewhere the plain message."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        terminal = getattr(self.stream, "isatty", None)
        return f"\r\x1b[K{text}" if terminal and terminal() else text
