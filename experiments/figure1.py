"""Figure 1 of the paper (MNIST, Section 4.1): train both nets, then draw the figure.

    python experiments/figure1.py run [--seeds 0,1,2] [--steps 50000] [hydra overrides ...]
    python experiments/figure1.py collect --runs runs/figure1/<time>   # gather finished runs
    python experiments/figure1.py draw          # redraw from results/figure1/*.csv only

`run` trains the plain and the BN net (all seeds in one vectorized model each) through
`python -m bnrepro.train -m experiment=figure1 model=mlp,mlp_bn`, collects their logged
metrics into results/figure1/curves.csv and summary.csv, then does what `draw` does:
figure1.png/.pdf and README.md from those CSV files.

`collect` and `draw` write nothing unless their inputs are whole (bnrepro.tables): both nets
for every seed, each run `completed`, each curve logged to its last step. Otherwise they print
one paragraph naming the file or run and the fix, and exit with status 2.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bnrepro.atomic import atomic_write_text, write_json
from bnrepro.errors import BnreproError
from bnrepro.plots import figure1
from bnrepro.tables import check_curves, check_runs, load_curves, load_sweep, read_csv, read_json

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "bn")
ACCEPTED = {variant: {"completed"} for variant in VARIANTS}
METRIC_COLUMNS = {
    "step": "int", "seed": "int", "train_loss": "float", "test_acc": "float",
    "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip
CURVE_COLUMNS = {
    "variant": "str", "seed": "int", "step": "int", "test_acc": "float",
    "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip
SUMMARY_COLUMNS = {
    "variant": "str", "seed": "int", "final_test_acc": "float", "steps": "int",
    "wall_s": "float", "status": "str",
}  # fmt: skip
PAPER_ACCURACY = {"plain": 0.95, "bn": 0.98}  # read off the paper's Figure 1(a) at 50k steps
SWEEP_FIX = (
    "give --runs the sweep directory that `python experiments/figure1.py run` trained into "
    "(runs/figure1/<time>)"
)
DRAW_FIX = (
    "rebuild the CSV files with `python experiments/figure1.py collect --runs <sweep dir>`, or "
    "restore the committed ones with `git checkout -- results/figure1`"
)


def train(seeds: str, steps: int | None, overrides: list[str], runs_dir: Path) -> None:
    command = [
        sys.executable, "-m", "bnrepro.train", "-m", "experiment=figure1", "model=mlp,mlp_bn",
        f"seeds=[{seeds}]", f"hydra.sweep.dir={runs_dir}", "hydra.sweep.subdir=${model.variant}",
        *([f"steps={steps}"] if steps else []), *overrides,
    ]  # fmt: skip
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def collect(runs_dir: Path, out_dir: Path, command: str) -> None:
    """Writes curves.csv, summary.csv and provenance.json of the runs under `runs_dir`, once
    they are known to be the whole sweep (both nets, every seed), finished."""
    runs = load_sweep(runs_dir, SWEEP_FIX)
    check_runs(runs, runs_dir, ACCEPTED)
    curves = load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    first = json.loads((Path(runs["run_dir"].iloc[0]) / "run.json").read_text())
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for run_dir, variant in runs.groupby("run_dir").variant.first().items()
    }
    atomic_write_text(out_dir / "curves.csv", curves[list(CURVE_COLUMNS)].to_csv(index=False))
    atomic_write_text(out_dir / "summary.csv", summary[list(SUMMARY_COLUMNS)].to_csv(index=False))
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
        acc = rows.final_test_acc
        lines.append(
            f"| {name} | {acc.mean():.4f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.4f} | "
            f"{acc.min():.4f} – {acc.max():.4f} | {len(rows)} | {int(rows.steps.max()):,} | "
            f"≈ {PAPER_ACCURACY[variant]:.2f} |"
        )
    means = summary.groupby("variant").final_test_acc.mean()
    gap = (means["bn"] - means["plain"]) * 100
    lines += [
        "",
        f"Final gap, with BN minus without: {gap:.2f} points (the paper's plot: about 3).",
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
    """figure1.png/.pdf and README.md from the files in `out_dir`, once they are known whole."""
    curves_path, summary_path = out_dir / "curves.csv", out_dir / "summary.csv"
    curves = read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=("test_acc",))
    summary = read_csv(summary_path, SUMMARY_COLUMNS, DRAW_FIX)
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    check_curves(curves, curves_path, summary, summary_path, ACCEPTED, DRAW_FIX)
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
    if args.action == "collect" and args.runs is None:
        parser.error("collect needs --runs <sweep dir>")
    try:
        if args.action == "run":
            runs_dir = args.runs or REPO / "runs" / "figure1" / time.strftime("%Y-%m-%d_%H-%M-%S")
            train(args.seeds, args.steps, overrides, runs_dir)
            collect(runs_dir, args.out, command)
        elif args.action == "collect":
            collect(args.runs.resolve(), args.out, command)
        draw(args.out)
    except BnreproError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
