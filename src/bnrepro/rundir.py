"""A run directory's files and its lock: which files make a run, who owns the directory, the
writes of run.json that must succeed even on a full disk, and Hydra's record of the command.

A trainer's process claims its run directory (`DirectoryClaim`) for as long as the run lives;
`owner_alive` tells whether a run.json left at `running` still has its process (bnrepro.results
reads a run without it as `crashed`). Nothing here imports torch: the drivers' draw and collect
read finished runs through bnrepro.results and start about a second and a half faster without.
"""

import contextlib
import copy
import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bnrepro.atomic import atomic_write_text, json_text, write_json
from bnrepro.errors import BnreproError, ResumeError

RUN_FILES = ("metrics.csv", "checkpoint.pt", "model.pt")
LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"  # Hydra's record of the command that started the run (write_hydra_record)
# The errors of a write that the user fixes on the machine: space, quota, permissions.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
WRITE_ERRNOS = (*FULL_DISK, errno.EACCES, errno.EROFS)


class RunBusyError(ResumeError):
    """Another live process owns the run directory."""


class RunWriteError(BnreproError):
    """The run directory could not be written (a full disk, permissions)."""


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES)


def owner_alive(run_dir: Path) -> bool:
    """Whether a live process holds the run directory's lock (a run.json at `running` whose
    owner is gone is a crash). Without a lock file, whether run.json's pid lives on this host."""
    lock = run_dir / LOCK_FILE
    if lock.exists():
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    try:
        info = json.loads((run_dir / "run.json").read_text())
        if info.get("host") != socket.gethostname():
            return True
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, FileNotFoundError):
        return False
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return True


def write_run_json(path: Path, info: dict[str, Any]) -> None:
    """Writes run.json atomically or, on a disk too full for the atomic write's temporary
    file, over the old run.json in place: that takes no new space while the text fits in the
    blocks the old file holds, so a run stopped by a full disk still reads `failed`, not
    `crashed`."""
    try:
        write_json(path, info)
    except OSError as error:
        if error.errno not in FULL_DISK or not path.exists():
            raise
        data = json_text(info).encode()
        with open(path, "r+b") as f:
            if len(data) > os.fstat(f.fileno()).st_blocks * 512:
                raise
            f.write(data)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())


def earlier_segments(run_dir: Path) -> list[dict[str, Any]]:
    """The segments of a resumed run before this one, from the run.json it left: each
    start of the run with its step, host, commit and hardware, and, where it ended with a
    record, the step and time it ended (a killed process leaves none)."""
    try:
        earlier = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(earlier, dict):
        return []
    if isinstance(earlier.get("segments"), list):
        return earlier["segments"]
    keys = ("started", "host", "git", "hardware")
    return [{"from_step": earlier.get("resumed_from_step") or 0,
             **{k: earlier.get(k) for k in keys}}]  # fmt: skip


def record_failed_start(run_dir: Path, cfg: DictConfig, error: BaseException) -> None:
    """Records that a sweep job failed before it started, so the sweep's report and
    bnrepro.results show it with its message. A directory that holds a run, or that another
    process owns, is left exactly as it is."""
    if holds_run(run_dir) or not run_dir.is_dir() or owner_alive(run_dir):
        return
    with contextlib.suppress(OSError):
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=False))
        write_json(
            run_dir / "run.json",
            {
                "name": OmegaConf.select(cfg, "name", default=None),
                "variant": OmegaConf.select(cfg, "model.variant", default=None),
                "status": "failed",
                "error": str(error),
                "started": None,
            },
        )


# Hydra's record of this process's job, kept at the job's start (`keep_hydra_record`) until
# the run owns its directory and writes it there (`write_hydra_record`).
_HYDRA_RECORD: dict[str, Any] = {}


def keep_hydra_record(config: DictConfig) -> None:
    """Keeps Hydra's record of the job whose composed `config` (its `hydra` node included)
    starts now: bnrepro.hydra_callbacks.HydraRecord calls it at each job's start."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    _HYDRA_RECORD.update(
        {
            "config.yaml": OmegaConf.to_yaml(task),
            "hydra.yaml": OmegaConf.to_yaml(OmegaConf.masked_copy(config, ["hydra"])),
            "overrides.yaml": OmegaConf.to_yaml(config.hydra.overrides.task),
        }
    )


def write_hydra_record(run_dir: Path) -> None:
    """Writes the kept record into `<run_dir>/.hydra/` as Hydra's `hydra.output_subdir` does
    (config.yaml: the config as composed, interpolations kept; hydra.yaml: Hydra's own node;
    overrides.yaml: the command line's overrides), at each start of the run, resumes included.
    The run writes it, once it owns the directory, rather than Hydra at the job's start
    (configs/hydra/default.yaml sets no output_subdir): a refused start leaves the directory
    as it was. Nothing for a run started from Python, without Hydra."""
    if not _HYDRA_RECORD:
        return
    folder = run_dir / HYDRA_DIR
    folder.mkdir(exist_ok=True)
    for name, text in _HYDRA_RECORD.items():
        atomic_write_text(folder / name, text)


class DirectoryClaim:
    """This process's claim on a run directory: an exclusive lock on `<run>/.lock` (fcntl.flock,
    held until `release`; the file names the owner's pid and host), creating the directory when
    needed. A second process is refused before it changes anything, the lock file included; a
    disk that cannot take the lock file is a RunWriteError."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self._lock: int | None = None
        self._lock_created = False
        self._lock_text: bytes | None = None
        self._made: list[Path] = []

    def claim(self) -> None:
        """Takes the lock and writes this process into it, creating the run directory (and its
        missing parents) first. What it creates and the lock file's former text are kept for
        `release`; a disk or a permission that refuses any of it is a RunWriteError, after
        which nothing of the claim is left."""
        lock = self.dir / LOCK_FILE
        self._made = [d for d in (self.dir, *self.dir.parents) if not d.exists()]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock, self._lock_created = self._take_lock(lock)
            self._lock_text = os.pread(self._lock, 4096, 0)
            owner = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
            os.pwrite(self._lock, owner, 0)
            os.ftruncate(self._lock, len(owner))
        except OSError as error:
            self.release(recorded=False)
            raise RunWriteError(
                f"Could not write {error.filename or lock}: {error.strerror}. Nothing was "
                "changed. Fix: free disk space (or fix the permissions), or train in another "
                "directory (hydra.run.dir=...), then run the command again."
            ) from error

    def _take_lock(self, lock: Path) -> tuple[int, bool]:
        """The locked descriptor of `lock`, and whether this call created the file. A run that
        never starts removes the lock file it created (`release`); a descriptor locked after
        that removal holds a file that is no longer the directory's, so it is dropped and the
        lock taken anew."""
        while True:
            try:
                fd, created = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
            except FileExistsError:
                try:
                    fd, created = os.open(lock, os.O_RDWR), False
                except FileNotFoundError:
                    continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunBusyError(
                    f"{self.dir} is in use by another process ({owner}). Nothing was changed. "
                    "Fix: wait for that run to end, or train in another directory "
                    "(hydra.run.dir=...)."
                ) from None
            except OSError:
                os.close(fd)
                if created:
                    lock.unlink(missing_ok=True)
                raise
            with contextlib.suppress(FileNotFoundError):
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    return fd, created
            os.close(fd)

    def release(self, recorded: bool) -> None:
        """Lets go of the lock (closing the descriptor releases the flock). A run that never
        wrote its run.json (not `recorded`) leaves the directory as the claim found it: the lock
        file is removed when the claim created it, or its former text is put back, and the
        directories the claim created are removed while empty. Best effort: a disk that refuses
        it leaves the lock file as it is, never a run's file."""
        lock = self.dir / LOCK_FILE
        if self._lock is not None:
            if not recorded:
                with contextlib.suppress(OSError):
                    if self._lock_created:
                        lock.unlink()
                    elif self._lock_text is not None:
                        os.pwrite(self._lock, self._lock_text, 0)
                        os.ftruncate(self._lock, len(self._lock_text))
            os.close(self._lock)
            self._lock = None
        if not recorded:
            for directory in self._made:  # the run directory first, then its parents
                try:
                    directory.rmdir()
                except OSError:
                    break
        self._made = []
