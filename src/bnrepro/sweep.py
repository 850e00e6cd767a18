"""A sweep's processes: started in a process group of their own, stopped together by a signal,
and, when jobs failed, each failed job named with the first sentence of its error.

bnrepro.driver's `multirun` launches every driver's sweep through `run_group`. SIGINT or
SIGTERM to the driver reaches every process of the sweep: the driver waits until all of them
have ended, each started run `interrupted` with its checkpoint, and exits with 128 + the
signal's number (`Stopped`); a sweep whose jobs failed ends with `SweepFailed` (exit status 1).
"""

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnrepro.errors import BnreproError
from bnrepro.results import failed_jobs
from bnrepro.rundir import LOCK_FILE, owner_alive


class SweepFailed(BnreproError):
    """Jobs of a sweep failed; the message names each and the first sentence of its error."""


class Stopped(BnreproError):
    """SIGINT or SIGTERM stopped the driver and, with it, every process of its sweep."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


def first_sentence(error: str) -> str:
    """The first sentence of the first line of a run's recorded error: what went wrong, short
    enough to list one failed job after another (run.json keeps the whole paragraph)."""
    line = error.strip().splitlines()[0] if error.strip() else ""
    return line.split(". ")[0].rstrip(".")


def failed_job_lines(sweep_dir: Path) -> list[str]:
    """Each failed job under `sweep_dir` (bnrepro.results.failed_jobs) with the first
    sentence of its error: '<dir>: <status> - <error>'."""
    if not sweep_dir.exists():
        return []
    _, bad = failed_jobs(sweep_dir)
    lines = []
    for run_dir, job in bad.iterrows():
        error = first_sentence(job.error) if isinstance(job.error, str) else ""
        where = Path(run_dir).relative_to(sweep_dir)
        lines.append(f"{where}: {job.status}" + (f" - {error}" if error else ""))
    return lines


def group_alive(group: int) -> bool:
    """Whether a process of process group `group` is still running (a zombie, ended but not
    yet reaped, is not): a sweep's workers outlive its Hydra process, which dies at once."""
    stats = list(Path("/proc").glob("[0-9]*/stat"))
    if not stats:  # no /proc: whether the group has any process, zombies included
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in stats:
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == group and fields[0] != "Z":
                return True
    return False


def training(sweep_dir: Path) -> bool:
    """Whether a trainer still holds a run directory under `sweep_dir` (its lock)."""
    return any(owner_alive(lock.parent) for lock in sweep_dir.rglob(LOCK_FILE))


def run_group(command: Sequence[str], sweep_dir: Path, cwd: Path) -> tuple[int, int | None]:
    """Runs `command` (a sweep into `sweep_dir`), from `cwd`, in a process group of its own and
    waits for it: (its exit status, the signal that stopped it or None). SIGINT and SIGTERM to
    this process go on to the whole group. Hydra's process dies of it at once, starting no
    further job (the jobs its launcher had already queued are stopped as they start); each
    trainer records its run `interrupted` and lets go of it; what is left of the group then
    (the launcher's idle workers and resource trackers, which outlive Hydra and ignore
    SIGTERM) is killed, and the driver waits until none of it runs."""
    stop: list[int] = []
    group: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stop.append(signum)
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        process = subprocess.Popen(command, cwd=cwd, process_group=0)
        group.append(process.pid)
        if stop:
            forward(stop[0], None)
        code = process.wait()
        if stop:
            while group_alive(process.pid) and training(sweep_dir):
                # A job the launcher queued before the stop starts in a worker that was idle
                # when the signal came (idle workers ignore it): SIGTERM is sent again until no
                # trainer holds a run, so such a job ends `interrupted` at its first step.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                time.sleep(0.5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            while group_alive(process.pid):
                time.sleep(0.1)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, stop[0] if stop else None


def check_sweep_end(command: Sequence[str], sweep_dir: Path, code: int, signum: int | None) -> None:
    """What ended the sweep `command` into `sweep_dir` with exit status `code`, unless it
    succeeded: Stopped when SIGINT or SIGTERM stopped it (`signum`), SweepFailed naming each
    failed job, or BnreproError when Hydra refused the sweep before any job started."""
    if signum is not None:
        raise Stopped(
            signum,
            f"{signal.Signals(signum).name} stopped the sweep in {sweep_dir} and every process "
            "of it; each run it had started is `interrupted` at its last checkpoint (its "
            "run.json holds its resume command). Nothing was collected. Fix: resume the sweep "
            f"with `{shlex.join([*command, 'resume=true'])}`, then collect it.",
        )
    if code == 0:
        return
    failed = failed_job_lines(sweep_dir)
    if failed:
        raise SweepFailed(
            f"{len(failed)} job(s) of the sweep in {sweep_dir} failed: {'; '.join(failed)}. "
            "Nothing was collected. Fix: each job's run.json holds its whole error (and its "
            "output is above); once the cause is fixed, rerun the sweep."
        )
    raise BnreproError(
        f"The sweep into {sweep_dir} stopped with exit status {code} before any job recorded "
        "a result; Hydra's or the trainer's message is printed above. Nothing was collected. "
        "Fix: correct the override it names and run again."
    )
