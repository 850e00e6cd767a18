"""Reruns every committed artifact under results/ and says whether it came out the same.

    python experiments/verify.py                    # every artifact, its recorded protocol
    python experiments/verify.py --quick            # the tiny protocols of results/reference/
    python experiments/verify.py --only figure1,claims
    python experiments/verify.py --collect figure1=runs/figure1/<time>   # collect, don't train

An artifact is a folder under results/ (with --quick, under results/reference/) whose
provenance.json records the command of a declared driver (bnrepro.driver.DRIVERS) that made
it, e.g. `python experiments/figure1.py run --experiment figure1_momentum`; a provenance.json
that does not (not JSON, or no driver's `run` command in it) is reported as damaged, which
fails the verify like a difference, since its folder cannot be checked. An artifact is rerun with
that command, less the options that only name folders, plus `--out <scratch>/<name> --runs
<scratch>/runs/<name>` (`--collect NAME=DIR`: `collect --runs DIR` instead), its output going
to <scratch>/<name>.log; an artifact made on a GPU (`--device cuda`, or a preset whose
configs/preset/<name>.yaml sets `device: cuda`) is reported as needing one on a machine
without, and rerun where there is one. Every CSV file of the committed folder is then
compared with the rerun's:

- identical: the bytes are equal;
- within tolerance: the same rows and columns, text and every column without a tolerance
  equal, and every numeric difference within the driver's TOLERANCES (a number without one
  may differ in its last digits: ROUNDING, relative);
- differs: anything else, with the first differences (file, row, column, committed vs rerun);
  a damaged file (truncated, NUL bytes, not UTF-8, rows of the wrong width) is named as
  damaged, never printed.

Where the rerun ran on another processor than the committed runs (`machine`: the GPU, else the
CPU model, of each folder's provenance.json), the report begins "made on <model>, rerun on
<model>: compared within tolerance", so that a difference is read against the machines that
made it. The driver's TOLERANCES apply on every machine: a CPU model name ("AMD EPYC") covers
processors whose kernels round differently.

A column of PROVENANCE_COLUMNS is left out of the comparison, and a file that differs only
there is identical: claims.csv's threshold_fixed says from git when each threshold was
committed against the commit the runs were made from, so every rerun names another commit,
while the results it stands beside are the same.

Rows are matched by their key, the fewest leading columns whose values tell every committed
row apart, none with a tolerance and none holding computed numbers (a column with a
non-integer number is not a key), so a missing or extra row is named as such; a file without
such columns is compared line by line. One table (artifact, status, first differences, wall
time) ends the output; the exit status is 1 when an artifact differs or its rerun failed,
else 0.
"""

import argparse
import csv
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import pandas as pd
import torch

from bnrepro.driver import DRIVERS, Driver, UsageError, file_in_the_way
from bnrepro.experiments import driver
from bnrepro.paths import REPO, RESULTS, RUNS
from bnrepro.presets import cuda_presets
from bnrepro.runinfo import stable_command
from bnrepro.sweep import Stopped
from bnrepro.verdicts import FIXED_COLUMN

REFERENCE = RESULTS / "reference"
SHOWN = 3  # differences named per artifact; the rest are counted
# Two numbers of a column without a tolerance that differ by at most this fraction of the
# larger are the same number computed in another order (a float's last digits).
ROUNDING = 1e-12
IDENTICAL, WITHIN, DIFFERS, FAILED = "identical", "within tolerance", "differs", "failed"
NEEDS_GPU, DAMAGED = "needs a GPU", "damaged"
NUL = b"\0"
RANK = {IDENTICAL: 0, WITHIN: 1, NEEDS_GPU: 1, DIFFERS: 2, FAILED: 3, DAMAGED: 3}
# CSV file -> columns that record provenance, not results (they name the commits of a run, so
# any rerun writes them differently): not compared.
PROVENANCE_COLUMNS: dict[str, tuple[str, ...]] = {"claims.csv": (FIXED_COLUMN,)}


@dataclass
class Comparison:
    """The outcome of comparing one or more CSV files: the worst status, what differs and,
    for values within tolerance, the largest difference seen per (file, column)."""

    status: str = IDENTICAL
    differences: list[str] = field(default_factory=list)
    largest: dict[tuple[str, str], float] = field(default_factory=dict)
    timed: list[str] = field(default_factory=list)  # how timed rows differ, not compared

    def add(self, other: "Comparison") -> None:
        self.status = max(self.status, other.status, key=RANK.__getitem__)
        self.differences += other.differences
        self.timed += other.timed
        for key, gap in other.largest.items():
            self.largest[key] = max(gap, self.largest.get(key, 0.0))

    def summary(self, tolerances: Mapping[str, Mapping[str, float]]) -> str:
        timed = "; ".join(f"{row} (a timing of this machine, not compared)" for row in self.timed)
        return "; ".join(part for part in (self.findings(tolerances), timed) if part)

    def findings(self, tolerances: Mapping[str, Mapping[str, float]]) -> str:
        if self.status == WITHIN:
            return (
                "; ".join(
                    f"{name} {column} up to {gap:.2g} ("
                    + (
                        f"tolerance {tolerances[name][column]:g}"
                        if column in tolerances.get(name, {})
                        else f"rounding, {ROUNDING:g} relative"
                    )
                    + ")"
                    for (name, column), gap in sorted(self.largest.items())
                )
                or "the same values, written differently or in another order"
            )
        shown = "; ".join(self.differences[:SHOWN])
        more = len(self.differences) - SHOWN
        return shown + (f"; and {more} more" if more > 0 else "")


def computed(column: pd.Series) -> bool:
    """Whether `column` (CSV text) holds a number that is not a whole one: a computed value,
    which a faithful rerun may write with other last digits, so never part of a row's key."""
    numbers = pd.to_numeric(column, errors="coerce").dropna()
    return bool(((numbers % 1) != 0).any())


def row_key(frame: pd.DataFrame, tolerances: Mapping[str, float]) -> list[str]:
    """The fewest leading columns of `frame`, none with a tolerance and none `computed`,
    whose values tell every row apart; [] when there are none (then rows are matched by
    their position)."""
    key = []
    for column in frame.columns:
        if column in tolerances or computed(frame[column]):
            break
        key.append(column)
        if not frame.duplicated(key).any():
            return key
    return []


def describe(key: Sequence[str], values: tuple) -> str:
    if not key:
        return f"line {values[0] + 2}"
    return ", ".join(f"{column}={value}" for column, value in zip(key, values, strict=True))


def labels(index: pd.Index) -> list[tuple]:
    return [label if isinstance(label, tuple) else (label,) for label in index]


def compare_frames(
    name: str,
    committed: pd.DataFrame,
    rerun: pd.DataFrame,
    tolerances: Mapping[str, float],
) -> Comparison:
    """Compares two CSV files read as text (`dtype=str`, empty cells as ""), cell by cell, in
    the committed file's row order; `tolerances` (column -> absolute tolerance) is the file's
    entry of the driver's TOLERANCES (0 for other columns). Numbers written differently but
    equal, or rows in another order, are within tolerance."""
    if list(committed.columns) != list(rerun.columns):
        missing = [c for c in committed.columns if c not in rerun.columns]
        extra = [c for c in rerun.columns if c not in committed.columns]
        problems = [f"no column {c} in the rerun" for c in missing]
        problems += [f"extra column {c} in the rerun" for c in extra]
        return Comparison(DIFFERS, [f"{name}: {', '.join(problems) or 'columns in another order'}"])
    key = row_key(committed, tolerances)
    if key and rerun.duplicated(key).any():
        first = tuple(rerun[rerun.duplicated(key)][key].iloc[0])
        return Comparison(DIFFERS, [f"{name} {describe(key, first)}: two rows in the rerun"])
    if key:
        committed, rerun = committed.set_index(key), rerun.set_index(key)
    result = Comparison(status=WITHIN)
    for label in labels(committed.index.difference(rerun.index, sort=False)):
        result.differences.append(f"{name} {describe(key, label)}: missing in the rerun")
    for label in labels(rerun.index.difference(committed.index, sort=False)):
        result.differences.append(f"{name} {describe(key, label)}: extra row in the rerun")
    common = committed.index.intersection(rerun.index, sort=False)
    was, now = committed.loc[common], rerun.loc[common]
    cells = []  # (row position, column) of every value outside its tolerance
    for column in committed.columns:
        unequal = (was[column] != now[column]).to_numpy()
        if not unequal.any():
            continue
        gap = pd.to_numeric(was[column], errors="coerce") - pd.to_numeric(
            now[column], errors="coerce"
        )
        gap = gap.abs().fillna(math.inf).to_numpy()
        scale = (
            pd.concat(
                [
                    pd.to_numeric(was[column], errors="coerce"),
                    pd.to_numeric(now[column], errors="coerce"),
                ],
                axis=1,
            )
            .abs()
            .max(axis=1)
            .fillna(0.0)
            .to_numpy()
        )
        allowed = tolerances.get(column, 0.0) if column in tolerances else ROUNDING * scale
        within = unequal & (gap <= allowed)
        if (gap[within] > 0).any():
            result.largest[(name, column)] = float(gap[within].max())
        cells += [(row, column) for row in (unequal & ~within).nonzero()[0]]
    rows = labels(common)
    for row, column in sorted(cells, key=lambda cell: cell[0]):
        old, new = was[column].iloc[row] or "empty", now[column].iloc[row] or "empty"
        result.differences.append(f"{name} {describe(key, rows[row])}: {column} {old} vs {new}")
    if result.differences:
        result.status = DIFFERS
    return result


def read_text_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def damage(path: Path) -> str | None:
    """Why `path` is not a whole CSV file (empty, NUL bytes, not UTF-8, truncated, a row of
    another width than the header), or None when it is."""
    data = path.read_bytes()
    if not data:
        return "empty"
    if NUL in data:
        return f"NUL bytes from byte {data.index(NUL):,}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text from byte {error.start:,}"
    if not text.endswith("\n"):
        return "truncated: its last line has no line end"
    rows = list(csv.reader(text.splitlines()))
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            return f"line {number} has {len(row)} fields, the header {len(rows[0])}"
    return None


def set_timed_aside(
    name: str, committed: pd.DataFrame, rerun: pd.DataFrame, timed: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The two frames without the rows whose first cell starts with `timed` (a measurement
    of the machine's speed, whose number and verdict belong to the machine that timed it),
    and how those rows differ, cell by cell."""
    first = committed.columns[0]
    was = committed[committed[first].str.startswith(timed)]
    now = rerun[rerun[first].str.startswith(timed)]
    notes = []
    if len(was) == len(now):
        for (_, old), (_, new) in zip(was.iterrows(), now.iterrows(), strict=True):
            notes += [
                f"{name} {first}={old[first]}: {column} {old[column]} vs {new[column]}"
                for column in committed.columns
                if old[column] != new[column]
            ]
        committed, rerun = committed.drop(was.index), rerun.drop(now.index)
    return committed, rerun, notes


def compare_folders(
    committed: Path,
    rerun: Path,
    tolerances: Mapping[str, Mapping[str, float]],
    timed: Mapping[str, str] | None = None,
) -> Comparison:
    """Every CSV file of `committed` against the file of the same name in `rerun`; a CSV file
    only one of them holds differs. `timed` (CSV file -> the text that starts its timed rows'
    first cell) names rows that are reported, not compared."""
    result = Comparison()
    names = sorted(
        {p.name for p in committed.glob("*.csv")} | {p.name for p in rerun.glob("*.csv")}
    )
    for name in names:
        was, now = committed / name, rerun / name
        if not now.exists():
            result.add(Comparison(DIFFERS, [f"{name}: not written by the rerun"]))
        elif not was.exists():
            result.add(Comparison(DIFFERS, [f"{name}: written by the rerun, not committed"]))
        elif was.read_bytes() != now.read_bytes():
            damaged = [(side, damage(path)) for side, path in (("committed", was), ("rerun", now))]
            damaged = [f"the {side} file is damaged ({why})" for side, why in damaged if why]
            if damaged:
                fix = f"; restore the committed one with `git checkout -- {was}`"
                result.add(Comparison(DIFFERS, [f"{name}: {' and '.join(damaged)}{fix}"]))
                continue
            frames = [
                frame.drop(columns=[c for c in PROVENANCE_COLUMNS.get(name, ()) if c in frame])
                for frame in (read_text_csv(was), read_text_csv(now))
            ]
            if frames[0].equals(frames[1]):
                continue  # the same results beside other provenance: identical
            notes = []
            if name in (timed or {}):
                *frames, notes = set_timed_aside(name, *frames, timed[name])
            comparison = compare_frames(name, *frames, tolerances.get(name, {}))
            comparison.timed = notes
            result.add(comparison)
    return result


# ---------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class Artifact:
    """A committed folder and the driver command, recorded in its provenance.json, that
    made it: `name` is the folder under results/ (or results/reference/). `damage` says why
    a provenance.json names no such command (no driver then)."""

    name: str
    folder: Path
    driver: Driver | None
    command: list[str]  # the recorded command's words after the action, folders left out
    damage: str = ""

    @property
    def needs_gpu(self) -> bool:
        return any(
            word in cuda_presets() or word.removeprefix("device=").startswith("cuda")
            for word in self.command
        )


def recorded_run(record: Path) -> tuple[Driver, list[str]]:
    """The driver and the words after `run` of the command `record` (a provenance.json)
    records; ValueError saying what is wrong where it records none."""
    try:
        data = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"it is not valid JSON ({error})") from None
    command = data.get("command") if isinstance(data, dict) else None
    if not isinstance(command, str):
        raise ValueError("it records no command")
    try:
        words = shlex.split(stable_command(command))
    except ValueError as error:
        raise ValueError(f"its command {command!r} cannot be read ({error})") from None
    script = words[1] if len(words) > 2 and words[2] == "run" else ""
    name = Path(script).stem
    if script != f"experiments/{name}.py" or name not in DRIVERS:
        raise ValueError(f"its command {command!r} is not a driver's `run` command")
    return driver(name), words[3:]


def artifacts(root: Path) -> dict[str, Artifact]:
    """Every folder under `root` with a provenance.json, by its path under `root`, damaged
    where the record names no driver's `run` command; results/reference/ is not an artifact
    of results/."""
    found = {}
    for record in sorted(root.rglob("provenance.json")):
        folder = record.parent
        if root == RESULTS and folder.is_relative_to(REFERENCE):
            continue
        relative = folder.relative_to(root).as_posix()
        try:
            found[relative] = Artifact(relative, folder, *recorded_run(record))
        except ValueError as damage:
            found[relative] = Artifact(relative, folder, None, [], str(damage))
    return found


@dataclass
class Outcome:
    name: str
    status: str
    detail: str
    wall_s: float


def machine(record: Path) -> str | None:
    """The processor the runs of a provenance.json were made on: its GPU where they ran on
    one, else its CPU model; None where the record names neither (or cannot be read)."""
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    hardware = data.get("hardware") if isinstance(data, dict) else None
    if not isinstance(hardware, dict):
        return None
    found = hardware.get("gpu") or hardware.get("cpu")
    return found if isinstance(found, str) and found else None


def compare_rerun(artifact: Artifact, out: Path) -> tuple[str, str]:
    """The status and report of the rerun in `out` against the committed folder, within the
    driver's TOLERANCES; the report names both processors first where they differ."""
    made = machine(artifact.folder / "provenance.json")
    rerun = machine(out / "provenance.json")
    same = made is not None and made == rerun
    tolerances = artifact.driver.tolerances
    result = compare_folders(artifact.folder, out, tolerances, artifact.driver.timed)
    found = result.summary(tolerances)
    if same:
        return result.status, found
    where = (
        f"made on {made or 'a processor not recorded'}, rerun on "
        f"{rerun or 'a processor not recorded'}: compared within tolerance"
    )
    return result.status, f"{where}; {found}" if found else where


def verify(artifact: Artifact, scratch: Path, runs: Path | None, gpu: bool) -> Outcome:
    """Reruns (or, given `runs`, collects) one artifact into `scratch`/<name> and compares its
    CSV files with the committed ones."""
    name, folder = artifact.name, artifact.folder
    if artifact.damage:
        record = folder / "provenance.json"
        where = record.relative_to(REPO) if record.is_relative_to(REPO) else record
        return Outcome(
            name,
            DAMAGED,
            f"{where} is damaged: {artifact.damage}, so the command that made this folder is "
            f"unknown and nothing was rerun. Fix: restore it with `git checkout -- {where}`",
            0.0,
        )
    if artifact.needs_gpu and not gpu and runs is None:
        return Outcome(
            name,
            NEEDS_GPU,
            f"made by `{artifact.driver.script} run "
            f"{shlex.join(artifact.command)}`: rerun it on a GPU machine",
            0.0,
        )
    out, log = scratch / name, scratch / f"{name.replace('/', '-')}.log"
    quick = ["--quick"] if "--quick" in artifact.command else []
    action = (
        ["collect", "--runs", str(runs), *quick]
        if runs
        else ["run", *artifact.command, "--runs", str(scratch / "runs" / name)]
    )
    command = [sys.executable, artifact.driver.script, *action, "--out", str(out)]
    print(f"{name}: {shlex.join(command)} (output: {log})", flush=True)
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    code, signum = run_driver(command, log)
    wall = time.monotonic() - start
    if signum is not None:
        raise Stopped(
            signum,
            f"{signal.Signals(signum).name} stopped `make verify` while it reran {name}: the "
            f"driver and its whole sweep stopped with it (its output: {log}). Nothing was "
            "compared. Fix: run verify again (`--only` names the artifacts still to check).",
        )
    if code != 0:
        lines = log.read_text().strip().splitlines()
        last = lines[-1] if lines else "no output"
        return Outcome(name, FAILED, f"exit status {code}: {last}", wall)
    return Outcome(name, *compare_rerun(artifact, out), wall)


def run_driver(command: Sequence[str], log: Path) -> tuple[int, int | None]:
    """Runs a driver's `command` with its output in `log` and waits for it: (its exit status,
    the signal that stopped verify or None). SIGTERM to verify goes on to the driver, which
    stops its own sweep's process group; SIGINT from a terminal reaches the driver itself, as
    part of the foreground group, so it is only noted here."""
    stop: list[int] = []
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)

        def forward(signum: int, frame: FrameType | None) -> None:
            stop.append(signum)
            if signum == signal.SIGTERM:
                process.send_signal(signum)

        handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = process.wait()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    return code, stop[0] if stop else None


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("artifact", "status", "first differences", "wall time")]
    rows += [(o.name, o.status, o.detail or "—", f"{o.wall_s:.0f} s") for o in outcomes]
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], ("---",) * 4, *rows[1:]])


def parse_collect(values: Sequence[str], found: Mapping[str, Artifact]) -> dict[str, Path]:
    runs = {}
    for value in values:
        name, _, folder = value.partition("=")
        if not folder:
            raise UsageError(
                f"--collect {value!r} names no runs directory. Fix: give it as NAME=DIR, e.g. "
                "--collect figure1=runs/figure1/<time>."
            )
        if name not in found:
            raise UsageError(
                f"--collect names {name!r}, which is not an artifact being verified "
                f"({', '.join(found)}). Fix: name one of them, or add it to --only."
            )
        if found[name].driver is None:
            raise UsageError(
                f"--collect {value}: the provenance.json of {name} is damaged "
                f"({found[name].damage}). Fix: restore it, or drop {name} from --collect."
            )
        if found[name].driver.collect is None:
            raise UsageError(
                f"--collect {value}: {found[name].driver.script} cannot collect runs, only "
                f"train them. Fix: drop {name} from --collect; it is then rerun."
            )
        runs[name] = Path(folder).resolve()
    return runs


def make_scratch(scratch: Path) -> None:
    """Makes the folder reruns are written into, unless it or a folder above it is a file."""
    file = file_in_the_way(scratch.absolute())
    if file is not None:
        raise UsageError(
            f"--scratch {scratch}: {file} is a file, and --scratch names the folder reruns are "
            "written into. Nothing was run or written. Fix: give --scratch a folder, new or "
            "existing, e.g. --scratch runs/verify/mine."
        )
    scratch.mkdir(parents=True, exist_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python experiments/verify.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", help="comma-separated artifacts (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="verify the tiny protocols of results/reference/"
    )
    parser.add_argument(
        "--collect",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="collect the artifact from the runs in DIR instead of training (repeatable)",
    )
    parser.add_argument(
        "--scratch", type=Path, help="where reruns are written (default runs/verify/<time>)"
    )
    args = parser.parse_args()
    known = artifacts(REFERENCE if args.quick else RESULTS)
    try:
        names = args.only.split(",") if args.only else list(known)
        unknown = [name for name in names if name not in known]
        if unknown:
            where = "results/reference/" if args.quick else "results/"
            raise UsageError(
                f"--only names {', '.join(unknown)}, not an artifact of {where} "
                f"({', '.join(known)}). Fix: name one of those."
            )
        chosen = {name: known[name] for name in names}
        runs = parse_collect(args.collect, chosen)
        scratch = args.scratch or RUNS / "verify" / time.strftime("%Y-%m-%d_%H-%M-%S")
        make_scratch(scratch)
    except UsageError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)
    start = time.monotonic()
    gpu = torch.cuda.is_available()
    try:
        outcomes = [
            verify(artifact, scratch.resolve(), runs.get(name), gpu)
            for name, artifact in chosen.items()
        ]
    except Stopped as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    print()
    print(table(outcomes))
    print(
        f"\n{'quick' if args.quick else 'full'} verify of {len(outcomes)} artifact(s) in "
        f"{time.monotonic() - start:.0f} s; reruns in {scratch}"
    )
    sys.exit(1 if any(o.status in (DIFFERS, FAILED, DAMAGED) for o in outcomes) else 0)
