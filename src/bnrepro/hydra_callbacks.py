"""Hydra's command line made safe: its overrides checked before Hydra reads them, callbacks that
check the output directory before Hydra touches it, keep Hydra's record of each job for its run
directory, tell each job of a sweep how many there are, and report on a sweep."""

import atexit
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bnrepro.errors import ConfigError
from bnrepro.progress import SWEEP_JOBS
from bnrepro.rundir import keep_hydra_record

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_overrides(overrides: Sequence[str]) -> None:
    """Refuses an override Hydra's grammar cannot read, saying how to quote it: Hydra's own
    message for a path holding '=' or a letter outside ASCII (a lexer error) names no fix."""
    parser = OverridesParser.create()
    for word in overrides:
        try:
            parser.parse_overrides([word])
        except OverrideParseException as error:
            said = error.message.splitlines()[0]
            key, equal, value = word.partition("=")
            if not equal:
                raise ConfigError(
                    f"Hydra cannot read the override {word!r} ({said}). Nothing was run or "
                    "written. Fix: write an override as key=value, e.g. steps=1000."
                ) from None
            raise ConfigError(
                f"Hydra cannot read the override {word!r} ({said}): unquoted, a value may hold "
                "only ASCII letters, digits and a few symbols, not '=' or a letter such as 'é'. "
                "Nothing was run or written. Fix: quote the value, in double quotes for Hydra "
                f"inside single quotes for the shell: '{key}=\"{value}\"'."
            ) from None


def _unwritable_reason(directory: Path) -> str | None:
    """Why `directory` cannot be created or written to, or None when it can."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def _remove_empty(directories: list[Path]) -> None:
    """Removes `directories` (each inside the next) while they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


class OutputDirCheck(Callback):
    """Makes the output directory before Hydra does, so that an unusable one stops the command
    with one clear paragraph before anything runs (Hydra's own attempt would end in a
    traceback), and removes what it made at exit when the command left it empty: a refused
    command leaves no directory behind."""

    def _make(self, directory: str, key: str) -> None:
        path = Path(directory).absolute()
        made = [d for d in (path, *path.parents) if not d.exists()]
        reason = _unwritable_reason(path)
        if reason:
            sys.stderr.write(
                f"bnrepro: cannot write the run directory {key}={directory}: {reason}. "
                f"Nothing was run or written. Fix: pass a writable location, e.g. "
                f"{key}=/tmp/bnrepro-runs, or fix the permissions.\n"
            )
            sys.exit(2)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            _remove_empty(made)
            sys.stderr.write(
                f"bnrepro: Could not write {error.filename or path}: {error.strerror}. Nothing "
                f"was run or written. Fix: free disk space (or fix the permissions), or pass "
                f"another location, e.g. {key}=/tmp/bnrepro-runs.\n"
            )
            sys.exit(2)
        atexit.register(_remove_empty, made)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._make(config.hydra.sweep.dir, "hydra.sweep.dir")


class SweepReport(Callback):
    """At the end of a sweep: "k of n jobs failed" with their directories, and a non-zero exit
    status when any job failed or crashed (a diverged job is a result, not a failure)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from bnrepro.results import failed_jobs

        jobs, bad = failed_jobs(config.hydra.sweep.dir)
        if bad.empty:
            return
        lines = [f"bnrepro: {len(bad)} of {jobs} jobs failed:"]
        for run_dir, job in bad.iterrows():
            error = str(job.error).splitlines()[0] if isinstance(job.error, str) else ""
            lines.append(f"  {run_dir}: {job.status}{' - ' + error if error else ''}")
        sys.stderr.write("\n".join(lines) + "\n")
        sys.exit(1)


class HydraRecord(Callback):
    """Keeps Hydra's record of each job (its config, Hydra's node, its overrides) at the job's
    start, for the run to write into its directory's .hydra/ once it owns the directory
    (bnrepro.rundir.write_hydra_record)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        keep_hydra_record(config)


def sweep_size(overrides: Sequence[str], params: Mapping[str, Any]) -> int | None:
    """How many jobs Hydra's basic sweeper makes of the command line's `overrides` and
    `hydra.sweeper.params` (the product of each swept key's values, a key's last value
    counting); None where that cannot be told here (a glob needs Hydra's config repository)."""
    parser = OverridesParser.create()
    words = [*(f"{key}={value}" for key, value in params.items()), *overrides]
    counts = {}
    try:
        for override in parser.parse_overrides(words):
            swept = override.is_sweep_override()
            values = len(list(override.sweep_string_iterator())) if swept else 1
            counts[override.get_key_element()] = values
    except HydraException:  # what the sweeper alone can expand
        return None
    return math.prod(counts.values())


class SweepProgress(Callback):
    """At the start of a sweep of Hydra's basic sweeper: the number of its jobs in the
    environment (BNREPRO_SWEEP_JOBS), which the launcher's processes inherit, so that each
    job's progress bar says which job of how many it is (bnrepro.progress)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return
        params = config.hydra.sweeper.get("params") or {}
        size = sweep_size(list(config.hydra.overrides.task), params)
        if size:
            os.environ[SWEEP_JOBS] = str(size)
