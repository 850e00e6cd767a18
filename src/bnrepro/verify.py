"""Reruns every committed artifact under results/ and says whether it came out the same.

    python experiments/verify.py                    # every artifact, its committed protocol
    python experiments/verify.py --quick            # the tiny protocols of results/reference/
    python experiments/verify.py --only figure1,claims
    python experiments/verify.py --collect figure1=runs/figure1/<time>   # collect, don't train

An artifact is a folder results/<name>/ with a driver experiments/<name>.py; a new one joins
by adding both, its driver exporting TOLERANCES (CSV file -> {column: absolute tolerance}).
Each is rerun with `python experiments/<name>.py run --out <scratch>/<name> --runs
<scratch>/runs/<name>` (`--quick` adds `--quick`; `--collect NAME=DIR` runs `collect --runs DIR
--out <scratch>/<name>` instead, where the driver has a `collect`), its output going to
<scratch>/<name>.log, and every CSV file of the committed folder (results/<name>/, or
results/reference/<name>/ with --quick) is compared with the rerun's:

- identical: the bytes are equal;
- within tolerance: the same rows and columns, text and every column without a tolerance
  equal, and every numeric difference within the driver's TOLERANCES;
- differs: anything else, with the first differences (file, row, column, committed vs rerun).

Rows are matched by their key, the fewest leading columns (none with a tolerance) whose values
tell every committed row apart, so a missing or extra row is named as such; a file without such
columns is compared line by line. One table (artifact, status, first differences, wall time)
ends the output; the exit status is 1 when an artifact differs or its rerun failed, else 0.
"""

import argparse
import importlib.util
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
REFERENCE = RESULTS / "reference"
SHOWN = 3  # differences named per artifact; the rest are counted
IDENTICAL, WITHIN, DIFFERS, FAILED = "identical", "within tolerance", "differs", "failed"
RANK = {IDENTICAL: 0, WITHIN: 1, DIFFERS: 2, FAILED: 3}


class UsageError(Exception):
    """A bad option value; its message names the value and the fix."""


@dataclass
class Comparison:
    """The outcome of comparing one or more CSV files: the worst status, what differs and,
    for values within tolerance, the largest difference seen per (file, column)."""

    status: str = IDENTICAL
    differences: list[str] = field(default_factory=list)
    largest: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, other: "Comparison") -> None:
        self.status = max(self.status, other.status, key=RANK.__getitem__)
        self.differences += other.differences
        for key, gap in other.largest.items():
            self.largest[key] = max(gap, self.largest.get(key, 0.0))

    def summary(self, tolerances: Mapping[str, Mapping[str, float]]) -> str:
        if self.status == WITHIN:
            return (
                "; ".join(
                    f"{name} {column} up to {gap:.2g} (tolerance {tolerances[name][column]:g})"
                    for (name, column), gap in sorted(self.largest.items())
                )
                or "the same values, written differently or in another order"
            )
        shown = "; ".join(self.differences[:SHOWN])
        more = len(self.differences) - SHOWN
        return shown + (f"; and {more} more" if more > 0 else "")


def row_key(frame: pd.DataFrame, tolerances: Mapping[str, float]) -> list[str]:
    """The fewest leading columns of `frame`, none with a tolerance, whose values tell every
    row apart; [] when there are none (then rows are matched by their position)."""
    key = []
    for column in frame.columns:
        if column in tolerances:
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
        within = unequal & (gap <= tolerances.get(column, 0.0))
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


def compare_folders(
    committed: Path, rerun: Path, tolerances: Mapping[str, Mapping[str, float]]
) -> Comparison:
    """Every CSV file of `committed` against the file of the same name in `rerun`; a CSV file
    only one of them holds differs."""
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
            try:
                frames = read_text_csv(was), read_text_csv(now)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
                result.add(Comparison(DIFFERS, [f"{name}: not a readable CSV file ({error})"]))
                continue
            result.add(compare_frames(name, *frames, tolerances.get(name, {})))
    return result


# ---------------------------------------------------------------- artifacts


def artifacts() -> list[str]:
    """The folders under results/ that a driver experiments/<name>.py regenerates."""
    return sorted(
        p.name
        for p in RESULTS.iterdir()
        if p.is_dir() and (REPO / "experiments" / f"{p.name}.py").is_file()
    )


def load_driver(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"{name}_driver", REPO / "experiments" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Outcome:
    name: str
    status: str
    detail: str
    wall_s: float


def verify(name: str, scratch: Path, quick: bool, runs: Path | None) -> Outcome:
    """Reruns (or, given `runs`, collects) one artifact into `scratch`/<name> and compares its
    CSV files with the committed ones."""
    committed = (REFERENCE if quick else RESULTS) / name
    if not committed.is_dir():
        fix = f"python experiments/{name}.py run --quick --out results/reference/{name}"
        return Outcome(name, FAILED, f"no reference in {committed.relative_to(REPO)}: `{fix}`", 0.0)
    out, log = scratch / name, scratch / f"{name}.log"
    action = (
        ["collect", "--runs", str(runs)]
        if runs
        else ["run", "--runs", str(scratch / "runs" / name)]
    )
    command = [
        sys.executable, f"experiments/{name}.py", *action, "--out", str(out),
        *(["--quick"] if quick else []),
    ]  # fmt: skip
    print(f"{name}: {shlex.join(command)} (output: {log})", flush=True)
    start = time.monotonic()
    with open(log, "w") as output:
        code = subprocess.run(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    if code != 0:
        lines = log.read_text().strip().splitlines()
        last = lines[-1] if lines else "no output"
        return Outcome(name, FAILED, f"exit status {code}: {last}", wall)
    try:
        tolerances = getattr(load_driver(name), "TOLERANCES", {})
    except Exception as error:  # a driver that cannot be imported is reported, not raised
        return Outcome(name, FAILED, f"experiments/{name}.py cannot be imported: {error}", wall)
    result = compare_folders(committed, out, tolerances)
    return Outcome(name, result.status, result.summary(tolerances), wall)


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [("artifact", "status", "first differences", "wall time")]
    rows += [(o.name, o.status, o.detail or "—", f"{o.wall_s:.0f} s") for o in outcomes]
    return "\n".join("| " + " | ".join(row) + " |" for row in [rows[0], ("---",) * 4, *rows[1:]])


def parse_collect(values: Sequence[str], names: Sequence[str]) -> dict[str, Path]:
    runs = {}
    for value in values:
        name, _, folder = value.partition("=")
        if not folder:
            raise UsageError(
                f"--collect {value!r} names no runs directory. Fix: give it as NAME=DIR, e.g. "
                "--collect figure1=runs/figure1/<time>."
            )
        if name not in names:
            raise UsageError(
                f"--collect names {name!r}, which is not an artifact being verified "
                f"({', '.join(names)}). Fix: name one of them, or add it to --only."
            )
        if not hasattr(load_driver(name), "collect"):
            raise UsageError(
                f"--collect {value}: experiments/{name}.py cannot collect runs, only train them. "
                f"Fix: drop {name} from --collect; it is then rerun."
            )
        runs[name] = Path(folder).resolve()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    known = artifacts()
    try:
        names = args.only.split(",") if args.only else known
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(
                f"--only names {', '.join(unknown)}, not an artifact of results/ "
                f"({', '.join(known)}). Fix: name one of those."
            )
        runs = parse_collect(args.collect, names)
    except UsageError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)
    scratch = args.scratch or REPO / "runs" / "verify" / time.strftime("%Y-%m-%d_%H-%M-%S")
    scratch.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    outcomes = [verify(name, scratch.resolve(), args.quick, runs.get(name)) for name in names]
    print()
    print(table(outcomes))
    print(
        f"\n{'quick' if args.quick else 'full'} verify of {len(outcomes)} artifact(s) in "
        f"{time.monotonic() - start:.0f} s; reruns in {scratch}"
    )
    sys.exit(1 if any(o.status in (DIFFERS, FAILED) for o in outcomes) else 0)


if __name__ == "__main__":
    main()
