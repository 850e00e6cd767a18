"""`python -m bnrepro.plot <sweep dir> [--out DIR]`: the curves of a user's own runs.

For a Hydra sweep (`python -m bnrepro.train -m ...`) or a single run's directory: every run
below it (a directory with run.json, `bnrepro.results.run_dirs`) and its metrics.csv, drawn as
test accuracy, training loss and, where the runs logged them, the percentiles of the probed
sigmoid's input (p15, p50, p85), each against the training step:

- one line per setting, labelled by what differs between the runs: the command-line overrides
  each run recorded in run.json (a Hydra sweep's), or, for runs started from Python, the keys of
  their config.yaml; the keys that say where and how a run trains rather than what
  (`bnrepro.loggers.NOT_HYPERPARAMETERS`, and `seeds`) are left out;
- the seeds of one setting, in one run or in several, as their mean with a min-max band;
- a grid run's members (`grid.*`) as settings of their own, labelled by their grid values.

The figures go to `<sweep dir>/plots/` (or `--out`) as accuracy, loss and percentiles, each a
PNG and a PDF. A run that logged nothing yet, or whose files cannot be read, is named and left
out; a folder with no run at all is refused with one paragraph and exit status 2.
"""

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bnrepro.drift import PERCENTILES
from bnrepro.errors import BnreproError  # noqa: E402
from bnrepro.loggers import NOT_HYPERPARAMETERS, flat_scalars  # noqa: E402
from bnrepro.plots import save_figure  # noqa: E402
from bnrepro.results import run_dirs  # noqa: E402
from bnrepro.tables import fail, read_json  # noqa: E402

# Left out of the labels beside NOT_HYPERPARAMETERS: the seeds a setting is averaged over.
NOT_LABELS = ("seeds",)
FIX = (
    "give the directory a sweep trained into (e.g. runs/<name>/multirun/<time>/ after "
    "`python -m bnrepro.train -m ...`) or one run's directory (runs/<name>/<time>/); "
    "each run there holds run.json, config.yaml and metrics.csv"
)


@dataclass
class LoggedRun:
    """One run directory as drawn: its settings (key -> value, as text) and its rows."""

    path: Path
    settings: dict[str, str]
    metrics: pd.DataFrame


def labelled(key: str) -> bool:
    """Whether a setting's key may tell runs apart in a label."""
    key = key.lstrip("+~")
    skipped = (*NOT_HYPERPARAMETERS, *NOT_LABELS)
    return not any(key == skip or key.startswith(f"{skip}.") for skip in skipped)


def run_settings(info: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The run's command-line overrides as key -> value, or its config's scalar keys where it
    recorded none (a run started from Python)."""
    overrides = info.get("overrides") or []
    if overrides:
        pairs = (o.split("=", 1) for o in overrides if "=" in o)
        return {key: value for key, value in pairs if labelled(key)}
    return {key: str(value) for key, value in flat_scalars(config).items() if labelled(key)}


def read_run(run_dir: Path) -> LoggedRun | str:
    """The run in `run_dir`, or why it is left out."""
    try:
        info = read_json(run_dir / "run.json", FIX)
        config_file = run_dir / "config.yaml"
        if not config_file.is_file():
            config_file = run_dir / ".hydra" / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
        metrics = pd.read_csv(run_dir / "metrics.csv")
    except (BnreproError, OSError, ValueError, pd.errors.ParserError) as error:
        return f"{run_dir}: not readable ({error})"
    if metrics.empty or "step" not in metrics.columns:
        return f"{run_dir}: no metrics logged yet"
    # A member is labelled by the grid's keys whose value differs between the run's members.
    grid = [k for k in (config.get("grid") or {}) if k in metrics and metrics[k].nunique() > 1]
    if "member" in metrics.columns and grid:
        values = metrics[grid].astype(str)
        member = values.apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)
        metrics = metrics.assign(member_label=member)
    return LoggedRun(run_dir, run_settings(info, config), metrics)


def load_logged_runs(root: Path) -> tuple[list[LoggedRun], list[str]]:
    """Every run under `root` that logged rows, and one line for each run left out."""
    if not root.is_dir():
        fail(f"{root} is not a directory.", FIX)
    found = run_dirs(root)
    if not found:
        fail(f"{root} holds no runs: there is no run.json below it.", FIX)
    runs, skipped = [], []
    for run_dir in found:
        run = read_run(run_dir)
        (runs if isinstance(run, LoggedRun) else skipped).append(run)
    if not runs:
        fail(
            f"{root} holds {len(found)} run(s), none with logged metrics: {'; '.join(skipped)}.",
            FIX,
        )
    return runs, skipped


def curves(runs: Sequence[LoggedRun], name: str) -> pd.DataFrame:
    """The rows of every run with a `curve` column: the settings that differ between runs
    (when none do, the runs are one setting, called `name`), and a grid member's values."""
    keys = sorted({key for run in runs for key in run.settings})
    differ = [k for k in keys if len({run.settings.get(k, "-") for run in runs}) > 1]
    frames = []
    for run in runs:
        label = ", ".join(f"{k}={run.settings.get(k, '-')}" for k in differ) or name
        frame = run.metrics.assign(curve=label)
        if "member_label" in frame.columns:
            frame = frame.assign(curve=frame.curve + "; " + frame.member_label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def draw(rows: pd.DataFrame, column: str, ylabel: str, title: str, log: bool = False) -> Any:
    """One figure of `column` against the step: per curve, the mean over its seeds with a
    min-max band (one seed: the line alone)."""
    values = rows.dropna(subset=[column])
    values = values[values[column].map(math.isfinite)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    count = values.curve.nunique()
    colors = plt.get_cmap("tab10") if count <= 10 else plt.get_cmap("viridis", count)
    for i, (curve, group) in enumerate(values.groupby("curve", sort=True)):
        color = colors(i)
        per_step = group.groupby("step")[column]
        mean = per_step.mean()
        seeds = group.seed.nunique() if "seed" in group.columns else 1
        ax.plot(
            mean.index, mean.values, color=color, label=f"{curve} ({seeds} seed{'s' * (seeds > 1)})"
        )
        if seeds > 1:
            ax.fill_between(mean.index, per_step.min(), per_step.max(), color=color, alpha=0.2)
    if log and (values[column] > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig


def draw_percentiles(rows: pd.DataFrame, title: str) -> Any:
    """The p15, p50 and p85 curves, one panel per curve (mean over seeds), one y-axis."""
    probed = rows.dropna(subset=list(PERCENTILES))
    names = sorted(probed.curve.unique())
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(
        lines, columns, figsize=(4 * columns, 3.2 * lines), sharey=True, squeeze=False
    )
    for ax, name in zip(axes.flat, names, strict=False):
        mean = probed[probed.curve == name].groupby("step")[list(PERCENTILES)].mean()
        for percentile in PERCENTILES:
            ax.plot(mean.index, mean[percentile], color="k", linewidth=1)
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("training steps")
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("probed sigmoid's input\n(15th, 50th, 85th percentiles)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sweep(root: Path, out_dir: Path) -> list[Path]:
    """Draws the figures of the runs under `root` into `out_dir`; returns the files written."""
    runs, skipped = load_logged_runs(root)
    for line in skipped:
        print(f"bnrepro: left out {line}", file=sys.stderr)
    rows = curves(runs, root.resolve().name)
    title = f"{root.resolve().name} ({len(runs)} run{'s' * (len(runs) > 1)})"
    figures = {}
    if "test_acc" in rows.columns:
        figures["accuracy"] = draw(rows, "test_acc", "test accuracy", title)
    if "train_loss" in rows.columns:
        figures["loss"] = draw(rows, "train_loss", "training loss", title, log=True)
    if set(PERCENTILES) <= set(rows.columns) and rows[list(PERCENTILES)].notna().any().all():
        figures["percentiles"] = draw_percentiles(rows, title)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [path for stem, fig in figures.items() for path in save_figure(fig, out_dir, stem)]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bnrepro.plot",
        description="Accuracy, training loss and percentile curves of the runs in a sweep "
        "directory (or one run's directory), one line per setting, seeds as mean and band.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a Hydra sweep's directory or a run's")
    parser.add_argument("--out", type=Path, help="where the figures go (default <sweep_dir>/plots)")
    args = parser.parse_args(argv)
    try:
        written = plot_sweep(args.sweep_dir, args.out or args.sweep_dir / "plots")
    except BnreproError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
