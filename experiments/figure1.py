"""Figure 1 of the paper (MNIST, Section 4.1): train both nets, then draw the figure.

    python experiments/figure1.py run [--seeds 0,1,2] [--steps 50000] [hydra overrides ...]
    python experiments/figure1.py collect --runs runs/figure1/<time>   # gather finished runs
    python experiments/figure1.py draw          # redraw from results/figure1/*.csv only

`run` trains the plain and the BN net (all seeds in one vectorized model each) through
`python -m bnrepro.train -m experiment=figure1 model=mlp,mlp_bn`, collects their logged
metrics into results/figure1/curves.csv and summary.csv, then does what `draw` does:
figure1.png/.pdf and README.md from those CSV files.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bnrepro.plots import figure1
from bnrepro.results import load_metrics, load_runs
from bnrepro.runinfo import atomic_write_text, write_json

REPO = Path(__file__).resolve().parents[1]
CURVE_COLUMNS = ["variant", "seed", "step", "test_acc", "p15", "p50", "p85"]
SUMMARY_COLUMNS = ["variant", "seed", "final_test_acc", "steps", "wall_s"]
PAPER_ACCURACY = {"plain": 0.95, "bn": 0.98}  # read off the paper's Figure 1(a) at 50k steps


def train(seeds: str, steps: int | None, overrides: list[str], runs_dir: Path) -> None:
    command = [
        sys.executable, "-m", "bnrepro.train", "-m", "experiment=figure1", "model=mlp,mlp_bn",
        f"seeds=[{seeds}]", f"hydra.sweep.dir={runs_dir}", "hydra.sweep.subdir=${model.variant}",
        *([f"steps={steps}"] if steps else []), *overrides,
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def collect(runs_dir: Path, out_dir: Path, command: str) -> None:
    """Writes curves.csv, summary.csv and provenance.json of the runs under `runs_dir`."""
    runs = load_runs(runs_dir)
    failed = runs[runs.status == "failed"]
    for row in failed.itertuples():
        print(f"skipping failed run {row.run_dir}: {row.error}", file=sys.stderr)
    runs = runs[runs.status != "failed"]
    if runs.empty:
        sys.exit(f"No finished runs under {runs_dir}: nothing to collect.")
    curves, summary = [], []
    for run_dir, run in runs.groupby("run_dir", sort=True):
        variant = run["config.model.variant"].iloc[0]
        metrics = load_metrics(run_dir).assign(variant=variant)
        curves.append(metrics[CURVE_COLUMNS])
        summary.append(run.assign(variant=variant)[SUMMARY_COLUMNS + ["seed_status"]])
    first = json.loads((Path(runs["run_dir"].iloc[0]) / "run.json").read_text())
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for run_dir, variant in runs.groupby("run_dir")["config.model.variant"].first().items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "curves.csv", pd.concat(curves).to_csv(index=False))
    summary_frame = pd.concat(summary).rename(columns={"seed_status": "status"})
    atomic_write_text(out_dir / "summary.csv", summary_frame.to_csv(index=False))
    write_json(
        out_dir / "provenance.json",
        {
            "command": command,
            "runs_dir": str(
                runs_dir.relative_to(REPO) if runs_dir.is_relative_to(REPO) else runs_dir
            ),
            "git": first["git"],
            "hardware": first["hardware"],
            "date": time.strftime("%Y-%m-%d"),
            "config": configs,
        },
    )


CHECKPOINT_STEPS = (500, 1000, 5000, 10000, 50000)
TARGETS = (0.95, 0.97)


def speed_table(curves: pd.DataFrame) -> list[str]:
    """Test accuracy early in training and steps to reach fixed accuracies, mean over seeds."""
    accuracy = curves.dropna(subset=["test_acc"])
    steps = [s for s in CHECKPOINT_STEPS if s in set(accuracy.step)]
    lines = [
        "| net | " + " | ".join(f"step {s:,}" for s in steps) + " | "
        + " | ".join(f"steps to {t:.2f}" for t in TARGETS) + " |",
        "|---|" + "---|" * (len(steps) + len(TARGETS)),
    ]  # fmt: skip
    for variant, name in (("plain", "without BN"), ("bn", "with BN")):
        rows = accuracy[accuracy.variant == variant]
        if rows.empty:
            continue
        at = rows.groupby("step").test_acc.mean()
        reach = []
        for target in TARGETS:
            first = rows[rows.test_acc >= target].groupby("seed").step.min()
            n_seeds = rows.seed.nunique()
            reach.append(
                f"{first.mean():,.0f}" if len(first) == n_seeds
                else f"not reached by {n_seeds - len(first)} of {n_seeds} seeds"
            )  # fmt: skip
        lines.append(
            f"| {name} | " + " | ".join(f"{at[s]:.4f}" for s in steps) + " | "
            + " | ".join(reach) + " |"
        )  # fmt: skip
    return lines


def readme(summary: pd.DataFrame, curves: pd.DataFrame, provenance: dict) -> str:
    lines = [
        "# Figure 1: MNIST with and without Batch Normalization",
        "",
        "Regenerated by `make reproduce-figure1` (training) or `make figures` (drawing only) from",
        "`curves.csv` and `summary.csv` in this folder; do not edit by hand.",
        "",
        "![Figure 1](figure1.png)",
        "",
        "## Test accuracy after training",
        "",
        "| net | ours (mean ± std) | min – max | seeds | steps | paper (read off Fig. 1a) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, name in (("plain", "without BN"), ("bn", "with BN")):
        rows = summary[summary.variant == variant]
        if rows.empty:
            continue
        acc = rows.final_test_acc
        lines.append(
            f"| {name} | {acc.mean():.4f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.4f} | "
            f"{acc.min():.4f} – {acc.max():.4f} | {len(rows)} | {int(rows.steps.max()):,} | "
            f"≈ {PAPER_ACCURACY[variant]:.2f} |"
        )
    means = summary.groupby("variant").final_test_acc.mean()
    if {"plain", "bn"} <= set(means.index):
        gap = (means["bn"] - means["plain"]) * 100
        lines += [
            "",
            f"Final gap, with BN minus without: {gap:.2f} points (the paper's plot: about 3).",
        ]
    lines += [
        "",
        "## How fast each net learns",
        "",
        "Test accuracy at a few steps and the steps needed to first reach an accuracy",
        "(means over seeds, evaluations every 500 steps):",
        "",
        *speed_table(curves),
    ]
    hw = provenance.get("hardware", {})
    git = provenance.get("git", {})
    wall = summary.groupby("variant").wall_s.max()
    lines += [
        "",
        "## Per seed",
        "",
        "| net | seed | final test accuracy | status |",
        "|---|---|---|---|",
        *[
            f"| {r.variant} | {r.seed} | {r.final_test_acc:.4f} | {r.status} |"
            for r in summary.itertuples()
        ],
        "",
        "## How these numbers were made",
        "",
        f"- command: `{provenance.get('command', '?')}`",
        f"- code: commit `{git.get('commit')}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- machine: {hw.get('cpu')} ({hw.get('cpu_count')} cores), {hw.get('platform')}, "
        f"device `{hw.get('device')}`{', ' + hw['gpu'] if hw.get('gpu') else ''}, "
        f"torch {hw.get('torch')}",
        "- wall time per net (all seeds trained together, logging and evaluation included): "
        + ", ".join(f"{v} {w:.0f} s" for v, w in wall.items()),
        f"- date: {provenance.get('date')}",
        "",
        "Panels (b) and (c) show the lowest seed; `curves.csv` holds every seed's percentiles.",
        "The paper gives no test accuracies in its text; the paper column is read off its plot.",
        "",
    ]
    return "\n".join(lines)


def draw(out_dir: Path) -> None:
    curves = pd.read_csv(out_dir / "curves.csv")
    summary = pd.read_csv(out_dir / "summary.csv")
    provenance_file = out_dir / "provenance.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else {}
    for path in figure1(curves, out_dir):
        print(f"wrote {path}")
    atomic_write_text(out_dir / "README.md", readme(summary, curves, provenance))
    print(f"wrote {out_dir / 'README.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["run", "collect", "draw"])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "figure1")
    parser.add_argument(
        "--runs", type=Path, default=None, help="sweep dir (default runs/figure1/<time>)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=None, help="override the paper's 50,000 steps")
    args, overrides = parser.parse_known_args()
    command = " ".join(["python experiments/figure1.py", *sys.argv[1:]])
    if args.action == "run":
        runs_dir = args.runs or REPO / "runs" / "figure1" / time.strftime("%Y-%m-%d_%H-%M-%S")
        train(args.seeds, args.steps, overrides, runs_dir)
        collect(runs_dir, args.out, command)
    elif args.action == "collect":
        if args.runs is None:
            parser.error("collect needs --runs <sweep dir>")
        collect(args.runs.resolve(), args.out, command)
    draw(args.out)


if __name__ == "__main__":
    main()
