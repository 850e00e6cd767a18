"""The pilot that sizes a plateau preset: does plain Inception level off within a run length?

    python experiments/plateau_pilot.py RUN_DIR [RUN_DIR ...] --lengths 9000,10800 --out DIR

Each RUN_DIR is one run of plain Inception (one seed) trained at least as long as the longest
length. A longer run changes no step of a shorter one (the schedule is counted in steps), so
one pilot answers for every length up to its own: for each length, figure2's plateau check
(best held-out accuracy over the last 20% of the steps minus the best before, against the
tolerance 0.005) is computed for the mean curve over the seeds and for each seed. DIR gets
pilot.csv (one row per length and curve) and pilot.png/.pdf (the curves, the lengths marked);
the runs' records (metrics.csv, run.json, config.yaml) are copied into DIR/<run folder name>/.
"""

import argparse
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bnrepro.campaign import RECORD_FILES  # noqa: E402
from bnrepro.driver import write_csv  # noqa: E402
from bnrepro.experiments.figure2.analysis import PLATEAU_TOLERANCE, plateau  # noqa: E402
from bnrepro.plots import save_figure  # noqa: E402


def checks(curves: pd.DataFrame, lengths: list[int]) -> pd.DataFrame:
    """The plateau check at each length: for the mean curve (seed "mean") and each seed."""
    rows = []
    for length in lengths:
        within = curves[curves.step <= length]
        summary = pd.DataFrame({"variant": ["inception"], "steps": [length]})
        groups = [("mean", within)] + [(str(s), g) for s, g in within.groupby("seed")]
        for name, group in groups:
            check = plateau(group, summary).iloc[0]
            rows.append(
                {
                    "length": length,
                    "curve": name,
                    "best_before": check.best_before,
                    "best_after": check.best_after,
                    "gain": check.gain,
                    "half_tolerance": PLATEAU_TOLERANCE / 2,
                    "passes_with_margin": bool(check.gain < PLATEAU_TOLERANCE / 2),
                    "step_of_max": check.step_of_max,
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--lengths", required=True, help="comma-separated run lengths (steps)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    lengths = [int(word) for word in args.lengths.split(",")]
    curves = pd.concat(pd.read_csv(run / "metrics.csv") for run in args.runs)
    curves = curves.dropna(subset=["test_acc"]).assign(variant="inception")
    args.out.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        (args.out / run.name).mkdir(exist_ok=True)
        for name in RECORD_FILES:
            shutil.copyfile(run / name, args.out / run.name / name)
    table = checks(curves, lengths)
    write_csv(args.out / "pilot.csv", table)
    print(table.to_string(index=False))

    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, group in curves.groupby("seed"):
        ax.plot(group.step, group.test_acc, lw=0.8, label=f"seed {seed}")
    mean = curves.groupby("step").test_acc.mean()
    ax.plot(mean.index, mean.to_numpy(), color="black", lw=1.2, label="mean")
    for length in lengths:
        ax.axvline(length, color="gray", ls=":", lw=0.8)
        ax.axvline(0.8 * length, color="gray", ls="--", lw=0.5)
    low = mean[mean.index >= 0.3 * max(lengths)].min()
    ax.set_ylim(low - 0.02, mean.max() + 0.01)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (10,000 images)")
    ax.set_title("Plain Inception, plateau pilot (dotted: lengths; dashed: their last 20%)")
    ax.legend(fontsize=8)
    save_figure(fig, args.out, "pilot")


if __name__ == "__main__":
    main()
