"""Checks that logged results are whole before anything is collected or drawn from them.

Every experiment's `collect` and `draw` reads its inputs through these functions and writes
nothing until they pass, so a CSV cut short, a missing variant or seed, an unfinished run or a
curve that stops before its last step ends the command with a `ResultsError` that names the
file or run and the fix, and `results/` stays as it was.
"""

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from bnrepro.errors import BnreproError
from bnrepro.results import load_runs, run_dirs

RESUME = (
    "wait for running jobs to end; resume interrupted or crashed ones with the sweep's command "
    "plus `hydra.sweep.dir=<the sweep dir> resume=true`; rerun failed or diverged ones once "
    "the cause is fixed; then collect again"
)
STATUS_HINTS = {
    "running": "still training, or stopped without recording it",
    "interrupted": "stopped before its last step",
    "crashed": "its process died; resume it",
    "diverged": "this variant is not expected to diverge",
}
SHOWN = 6  # problems named in one message; the rest are counted
# Columns of a run's metrics.csv that a trainer leaves empty where it measured nothing and
# fills with a finite number where it measured: `nan` there is damage, not a missing value.
MEASURED = ("test_acc",)
# The columns of the MLP trainer's metrics.csv (`train_mlp.METRIC_COLUMNS`) and their kinds.
MLP_METRIC_COLUMNS = {
    "step": "int", "seed": "int", "train_loss": "float", "test_acc": "float",
    "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip


class ResultsError(BnreproError):
    """Logged results are malformed or incomplete; nothing was written."""


def fail(problem: str, fix: str) -> NoReturn:
    raise ResultsError(f"{problem} Nothing was written. Fix: {fix}.")


def listing(items: Sequence[str]) -> str:
    shown = "; ".join(items[:SHOWN])
    return shown + (f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def describe(keys: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{key}={value}" for key, value in zip(keys, values, strict=True))


# ---------------------------------------------------------------- tables


def kind_problem(values: pd.Series, kind: str) -> int | None:
    """The position of the first value in `values` (no NaN) that is not of `kind`, else None."""
    if kind == "str":
        numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        return 0 if numeric else None
    if kind == "bool":
        if pd.api.types.is_bool_dtype(values):
            return None
        bad = ~values.isin([True, False])
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna() | values.map(lambda v: isinstance(v, bool))
        if kind == "int":
            bad |= numbers.notna() & (numbers % 1 != 0)
    positions = bad.to_numpy().nonzero()[0]
    return int(positions[0]) if len(positions) else None


KIND_NAMES = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text"}


def check_columns(
    frame: pd.DataFrame,
    path: Path,
    columns: Mapping[str, str],
    fix: str,
    optional: Collection[str] = (),
) -> None:
    """`frame` has `columns` (name -> "int", "float", "bool" or "str"), a value in every row of
    each column not in `optional`, and only values of each column's kind."""
    absent = [name for name in columns if name not in frame.columns]
    if absent:
        fail(f"{path} lacks the column(s) {', '.join(absent)}; it has {list(frame.columns)}.", fix)
    for name, kind in columns.items():
        values = frame[name]
        empty = values.isna().to_numpy().nonzero()[0]
        if name not in optional and len(empty):
            line = int(empty[0]) + 2
            fail(f"{path} line {line}: column {name} is empty ({len(empty)} rows in all).", fix)
        position = kind_problem(values.dropna(), kind)
        if position is not None:
            row = values.dropna().index[position]
            line = frame.index.get_loc(row) + 2
            fail(
                f"{path} line {line}: column {name} holds {values[row]!r}, not {KIND_NAMES[kind]}.",
                fix,
            )


def csv_problem(path: Path) -> str | None:
    """What keeps the file at `path` from being a whole CSV file, worded to follow its name,
    or None: it is missing, empty, not text (a NUL byte or a byte that is not UTF-8), or it
    does not end with a line break (every CSV bnrepro writes does; one cut short by a full
    disk, a kill or an interrupted copy does not)."""
    if not path.is_file():
        return "does not exist"
    data = path.read_bytes()
    if not data:
        return "is empty: it holds no CSV table, not even a header"
    binary = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        binary = error.start if binary < 0 else min(binary, error.start)
    if binary >= 0:
        return f"is not a CSV table: it holds bytes that are not text, from byte {binary:,}"
    if not data.endswith(b"\n"):
        return f"ends in the middle of a line ({len(data):,} bytes): the file was cut short"
    return None


def check_finite(path: Path, columns: Collection[str], fix: str) -> None:
    """Every value written in `columns` of the CSV file at `path` is a finite number: pandas
    reads a written `nan` as an empty cell, so the text itself is read."""
    text = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=list(columns))
    for name in columns:
        written = text[name][text[name] != ""]
        numbers = pd.to_numeric(written, errors="coerce")
        bad = written[numbers.isna() | numbers.abs().eq(float("inf"))]
        if len(bad):
            line = int(bad.index[0]) + 2
            fail(
                f"{path} line {line}: column {name} holds {bad.iloc[0]!r}, not a finite number "
                f"({len(bad)} rows in all); a trainer leaves it empty where it measured nothing.",
                fix,
            )


def read_csv(
    path: Path,
    columns: Mapping[str, str],
    fix: str,
    optional: Collection[str] = (),
    finite: Collection[str] = (),
) -> pd.DataFrame:
    """The CSV file at `path` after `check_columns`, once it is known to be whole
    (`csv_problem`) and readable, with a finite number wherever a value is written in the
    columns `finite`."""
    problem = csv_problem(path)
    if problem:
        fail(f"{path} {problem}.", fix)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        fail(f"{path} is not a readable CSV file ({error}).", fix)
    check_columns(frame, path, columns, fix, optional)
    if finite:
        check_finite(path, finite, fix)
    return frame


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """The JSON object in `path`, or {} where there is no such file."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        fail(f"{path} is not valid JSON ({error}).", fix)
    if not isinstance(data, dict):
        fail(f"{path} holds a {type(data).__name__}, not a JSON object.", fix)
    return data


def check_groups(
    frame: pd.DataFrame, path: Path, keys: Sequence[str], expected: Iterable[tuple], fix: str
) -> None:
    """`frame` has rows for exactly the combinations `expected` of its `keys` columns."""
    found = set(frame[list(keys)].itertuples(index=False, name=None))
    expected = set(expected)
    problems = [f"no rows for {describe(keys, g)}" for g in sorted(expected - found)]
    problems += [f"unexpected rows for {describe(keys, g)}" for g in sorted(found - expected)]
    if problems:
        fail(f"{path} is incomplete: {listing(problems)}.", fix)


def check_unique(frame: pd.DataFrame, path: Path, keys: Sequence[str], fix: str) -> None:
    """No two rows of `frame` share their `keys` values (e.g. a curve logged twice)."""
    repeated = frame[frame.duplicated(list(keys), keep="first")]
    if not repeated.empty:
        first = tuple(repeated[list(keys)].iloc[0])
        fail(
            f"{path} holds {len(repeated)} repeated row(s), the first for "
            f"{describe(keys, first)}: two runs' rows were mixed.",
            fix,
        )


def check_final_steps(
    curves: pd.DataFrame, path: Path, keys: Sequence[str], final: int | pd.Series, fix: str
) -> None:
    """Every curve of `curves` (its rows of one `keys` group) ends at its final step: `final`,
    one step for all or a Series of steps indexed by `keys`."""
    last = curves.groupby(list(keys)).step.max()
    if not isinstance(final, pd.Series):
        final = pd.Series(final, index=last.index)
    final = final.reindex(last.index)
    problems = [
        f"{describe(keys, group if isinstance(group, tuple) else (group,))} ends at step "
        f"{step:,}, not {final[group]:,.0f}"
        for group, step in last.items()
        if step != final[group]
    ]
    if problems:
        fail(f"{path} holds curves that do not end at their last step: {listing(problems)}.", fix)


# ---------------------------------------------------------------- runs


def load_sweep(runs_dir: Path, fix: str, skip: Collection[Path] = ()) -> pd.DataFrame:
    """`load_runs(runs_dir)` with the column `variant` (the run's `model.variant`), after
    checking that there are runs and that each has a readable run.json and a config.yaml.
    Runs under the folders of `skip` are left out: other sweeps trained into folders of the
    first, each collected on its own."""
    if not runs_dir.is_dir():
        fail(f"{runs_dir} is not a directory.", fix)
    found = [d for d in run_dirs(runs_dir) if not any(d.is_relative_to(o) for o in skip)]
    if not found:
        outside = f" outside {' and '.join(map(str, skip))}" if skip else ""
        fail(f"{runs_dir} holds no runs: there is no run.json below it{outside}.", fix)
    for run_dir in found:
        rerun = f"rerun the run in {run_dir}, or move it out of the sweep, then collect again"
        read_json(run_dir / "run.json", rerun)
        if not (run_dir / "config.yaml").is_file():
            fail(f"{run_dir} holds a run.json but no config.yaml.", rerun)
    runs = load_runs(runs_dir).rename(columns={"config.model.variant": "variant"})
    return runs[runs.run_dir.isin([str(d) for d in found])].reset_index(drop=True)


MISSING_FIX = (
    "train the missing jobs (rerun the sweep's command with `hydra.sweep.dir=<the sweep dir> "
    "resume=true`), or collect a sweep directory that holds each variant and seed once"
)


def check_runs(
    runs: pd.DataFrame,
    runs_dir: Path,
    accepted: Mapping[str, Collection[str]],
    missing_fix: str = MISSING_FIX,
) -> None:
    """The runs of `runs` (as `load_sweep` gives them) are the whole sweep: only variants of
    `accepted` (variant -> the statuses it may end with), each ended as accepted, and every
    variant trained for every seed, once (`missing_fix` says how to train what is missing)."""
    problems = []
    for run_dir, rows in runs.groupby("run_dir", sort=True):
        variant = rows.variant.iloc[0]
        if variant not in accepted:
            problems.append(f"{run_dir} trained variant {variant!r}, not one of this experiment's")
            continue
        statuses = {rows.status.iloc[0], *rows.seed_status}
        bad = sorted(str(status) for status in statuses if status not in accepted[variant])
        message = rows.error.iloc[0]  # why a failed or interrupted run stopped
        for status in bad:
            hint = message if isinstance(message, str) else STATUS_HINTS.get(status)
            problems.append(f"{run_dir}: {status}" + (f" ({hint})" if hint else ""))
    if problems:
        fail(f"The sweep in {runs_dir} is not finished: {listing(problems)}.", RESUME)

    seeds = sorted(set(runs.seed))
    counts = runs.groupby(["variant", "seed"]).run_dir.nunique()
    missing = [
        f"no run of {variant} with seed {seed}"
        for variant in accepted
        for seed in seeds
        if (variant, seed) not in counts.index
    ]
    repeated = [
        f"{n} runs of {variant} with seed {seed}" for (variant, seed), n in counts.items() if n > 1
    ]
    if missing or repeated:
        fail(f"The sweep in {runs_dir} is incomplete: {listing(missing + repeated)}.", missing_fix)


def load_curves(
    runs: pd.DataFrame, columns: Mapping[str, str], optional: Collection[str] = ()
) -> pd.DataFrame:
    """The metrics.csv of every run of `runs` (as `check_runs` passed them) with a `variant`
    column, in the order of their directories, each checked to hold every seed of its run
    up to the run's last step."""
    curves = []
    for run_dir, run in runs.groupby("run_dir", sort=True):
        path = Path(run_dir) / "metrics.csv"
        fix = f"resume or rerun the run in {run_dir}, then collect again"
        metrics = read_csv(path, columns, fix, optional, [c for c in MEASURED if c in columns])
        check_groups(metrics, path, ["seed"], [(seed,) for seed in run.seed], fix)
        check_unique(metrics, path, ["seed", "step"], fix)
        check_final_steps(metrics, path, ["seed"], int(run.steps.iloc[0]), fix)
        curves.append(metrics.assign(variant=run.variant.iloc[0]))
    return pd.concat(curves, ignore_index=True)


# ---------------------------------------------------------------- collected results


def check_statuses(
    summary: pd.DataFrame, path: Path, accepted: Mapping[str, Collection[str]], fix: str
) -> None:
    """Every row of `summary` (variant, seed, status) ended as its variant may end."""
    bad = [
        f"{describe(['variant', 'seed'], (r.variant, r.seed))}: {r.status}"
        for r in summary.itertuples()
        if r.variant in accepted and r.status not in accepted[r.variant]
    ]
    if bad:
        fail(f"{path} lists runs that did not finish as expected: {listing(bad)}.", fix)


def check_curves(
    curves: pd.DataFrame,
    curves_path: Path,
    summary: pd.DataFrame,
    summary_path: Path,
    accepted: Mapping[str, Collection[str]],
    fix: str,
) -> None:
    """A collected sweep is whole: `summary` (variant, seed, status, steps) has one row for each
    variant of `accepted` and each seed, ended as `accepted` allows, and `curves` (variant,
    seed, step) one curve for each, logged once per step up to the run's last step."""
    keys = ["variant", "seed"]
    check_statuses(summary, summary_path, accepted, fix)
    groups = [(variant, seed) for variant in accepted for seed in sorted(set(summary.seed))]
    check_groups(summary, summary_path, keys, groups, fix)
    check_unique(summary, summary_path, keys, fix)
    check_groups(curves, curves_path, keys, groups, fix)
    check_unique(curves, curves_path, [*keys, "step"], fix)
    check_final_steps(curves, curves_path, keys, summary.set_index(keys).steps, fix)
