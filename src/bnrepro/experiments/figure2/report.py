"""figure2's `draw` (the tables, the figures and README.md of a results folder, from its CSV
files alone) and figure2's generated blocks of the pages, from the committed results."""

from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bnrepro import markdown, plots
from bnrepro.atomic import atomic_write_text
from bnrepro.docblocks import csv, provenance
from bnrepro.driver import write_csv
from bnrepro.experiments.figure2.analysis import (
    CHANCE_MARGIN,
    decay_table,
    ladder_table,
    mean_curves,
    per_seed,
    plateau,
    relations,
    table,
    verdicts,
)
from bnrepro.experiments.figure2.collect import check_ladder, held_out_images
from bnrepro.experiments.figure2.protocol import (
    ACCEPTED,
    CURVE_COLUMNS,
    DECAY_SPEEDUPS,
    DECAY_STATUSES,
    DRAW_FIX,
    FULL_PRESET,
    FULL_STEPS,
    LABELS,
    LADDER_COLUMNS,
    LADDER_FAMILIES,
    LADDER_LABELS,
    LADDER_MULTIPLIERS,
    LADDER_SUMMARY_COLUMNS,
    MAIN,
    SUMMARY_COLUMNS,
    VARIANTS,
    decay_variant,
)
from bnrepro.experiments.figure2.readme import crossing_text, images_text, readme
from bnrepro.plots import mark_short_protocol, save_figure, short_protocol_note
from bnrepro.tables import check_columns, check_curves, fail, listing, read_csv, read_json

STYLES = {
    "inception": {"color": "tab:blue", "linestyle": "-"},
    "bn_baseline": {"color": "tab:orange", "linestyle": "-"},
    "bn_x5": {"color": "tab:green", "linestyle": "-"},
    "bn_x30": {"color": "tab:red", "linestyle": "-"},
    "bn_x5_sigmoid": {"color": "tab:purple", "linestyle": "-"},
    "inception_x5": {"color": "tab:gray", "linestyle": "--"},
    "inception_sigmoid": {"color": "tab:brown", "linestyle": ":"},
}


def figure2_figure(curves: pd.DataFrame, results: pd.DataFrame, note: str = "") -> plt.Figure:
    """(a) held-out accuracy of every run against steps, mean over seeds with a min-max band;
    (b) the same near the top for the five variants, with Inception's maximum as the target;
    for a short protocol (`note` above the panels) (b) takes its limits from the data, since
    its runs end far from the top."""
    means = mean_curves(curves)
    target = results.target_acc.iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, variants in zip(axes, (VARIANTS, MAIN), strict=True):
        for variant in variants:
            curve = means[means.variant == variant]
            if curve.empty:
                continue
            seeds = curves[curves.variant == variant].seed.nunique()
            label = f"{LABELS[variant]} ({seeds} seed{'s' * (seeds > 1)})"
            ax.plot(curve.step, curve["mean"], label=label, **STYLES[variant])
            if seeds > 1:
                ax.fill_between(
                    curve.step,
                    curve["min"],
                    curve["max"],
                    color=STYLES[variant]["color"],
                    alpha=0.15,
                )
            row = results[results.variant == variant].iloc[0]
            if row.status == "diverged":
                ax.plot(curve.step.iloc[-1], curve["mean"].iloc[-1], "x", color="k", markersize=8)
            if variant in MAIN and not pd.isna(row.steps_to_target):
                ax.plot(row.steps_to_target, target, "o", color=STYLES[variant]["color"])
        ax.axhline(target, color="k", linewidth=0.8, linestyle=":")
        ax.set_xlabel("training steps")
        ax.set_ylabel("held-out accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("(a) every run (x: diverged)")
    axes[0].legend(loc="center right", fontsize=8)
    if not note:
        top = means[means.variant.isin(MAIN)]["mean"].max()
        axes[1].set_ylim(max(0.0, target - 0.15), min(1.0, top + 0.02))
    axes[1].set_title(f"(b) the five variants; dotted: Inception's max {target:.3f}")
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return fig


def train_loss_figure(curves: pd.DataFrame, note: str = "") -> plt.Figure:
    """Every variant's training loss (the mean over each logging interval) against steps,
    mean over seeds with a min-max band, on a log scale."""
    styles = {variant: {**STYLES[variant], "label": LABELS[variant]} for variant in VARIANTS}
    title = "training loss (mean over each logging interval; band: min to max over seeds)"
    return plots.train_loss_figure(curves, styles, title, note)


def ladder_figure(
    ladder: pd.DataFrame, rungs: pd.DataFrame, target: float, out_dir: Path, note: str = ""
) -> list[Path]:
    """Held-out accuracy against steps for every rung of the ladder, one panel per family,
    one colour per learning-rate multiplier (every seed's curve in it, one legend entry per
    rung and outcome); x: the last evaluation of a diverged run; a short protocol's `note`
    under the title."""
    colors = dict(zip(LADDER_MULTIPLIERS, plt.cm.viridis(np.linspace(0, 0.9, 5)), strict=True))
    accuracy = ladder.dropna(subset=["test_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (letter, family) in zip(axes, enumerate(LADDER_FAMILIES), strict=True):
        labelled = set()
        for r in rungs[rungs.family == family].itertuples():
            run = (accuracy.family == family) & (accuracy.multiplier == r.multiplier)
            curve = accuracy[run & (accuracy.seed == r.seed)]
            label = f"x{r.multiplier}" + (
                f", diverged at step {r.diverged_at_step:,.0f}" if r.status == "diverged" else ""
            )
            if label in labelled:
                label = None
            labelled.add(label)
            ax.plot(curve.step, curve.test_acc, color=colors[r.multiplier], label=label)
            if r.status == "diverged":
                ax.plot(curve.step.iloc[-1], curve.test_acc.iloc[-1], "x", color="k")
        ax.axhline(target, color="k", linewidth=0.8, linestyle=":")
        ax.set_xlabel("training steps")
        ax.set_title(f"({'ab'[letter]}) {LADDER_LABELS[family]}")
        ax.legend(loc="lower right", fontsize=8, title="learning rate")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("held-out accuracy")
    title = f"Learning-rate ladder; dotted: Inception's maximum {target:.3f}"
    fig.suptitle(f"{title}\n{note}" if note else title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, "ladder")


def configured_images(summary: pd.DataFrame, summary_path: Path, provenance: dict) -> list[int]:
    """The held-out images of each run of a summary.csv collected before `collect` recorded
    them (column `eval_images`): from each variant's data config in provenance.json, which
    `collect` wrote from the runs' config.yaml, every seed of a variant trained with the same
    overrides."""
    configs = provenance.get("config", {})
    absent = sorted(set(summary.variant) - {v for v, c in configs.items() if "data" in c})
    if absent:
        fail(
            f"{summary_path} has no column eval_images, and provenance.json beside it records no "
            f"data config for {listing(absent)}, so the held-out images of their evaluations are "
            "unknown.",
            "collect the runs again (`python experiments/figure2.py collect --runs <sweep dir>`), "
            "which records them",
        )
    where = str(summary_path.parent / "provenance.json")
    return [held_out_images(configs[variant]["data"], where) for variant in summary.variant]


def read_decay_arm(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """decay.csv and decay_summary.csv in `out_dir`, checked whole; None where the sweep had
    no decay arm (no decay.csv)."""
    curves_path, summary_path = out_dir / "decay.csv", out_dir / "decay_summary.csv"
    if not curves_path.exists():
        return None
    curves = read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    summary = read_csv(summary_path, SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",))
    accepted = {decay_variant(s): DECAY_STATUSES for s in DECAY_SPEEDUPS}
    check_curves(curves, curves_path, summary, summary_path, accepted, DRAW_FIX)
    return curves, summary


def draw(out_dir: Path) -> None:
    """table.csv, relations.csv, seeds.csv, checks.csv, ladder_table.csv (and decay_table.csv
    for a decay arm), figure2.png/.pdf, figure2_train_loss.png/.pdf, ladder.png/.pdf and
    README.md from the files in
    `out_dir`, once they are known whole; and summary.csv's column `eval_images` where it was
    collected without it (`configured_images`). HISTORY.md, hand-written, is only linked
    (bnrepro.markdown.history_lines)."""
    curves_path, summary_path = out_dir / "curves.csv", out_dir / "summary.csv"
    ladder_path, ladder_summary_path = out_dir / "ladder.csv", out_dir / "ladder_summary.csv"
    curves = read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    collected = {name: kind for name, kind in SUMMARY_COLUMNS.items() if name != "eval_images"}
    summary = read_csv(summary_path, collected, DRAW_FIX, optional=("diverged_at_step",))
    ladder = read_csv(ladder_path, LADDER_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    ladder_summary = read_csv(
        ladder_summary_path, LADDER_SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",)
    )
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    recorded = "eval_images" in summary
    if not recorded:
        summary = summary.assign(eval_images=configured_images(summary, summary_path, provenance))
    check_columns(summary, summary_path, SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",))
    check_curves(curves, curves_path, summary, summary_path, ACCEPTED, DRAW_FIX)
    check_ladder(ladder, ladder_path, ladder_summary, ladder_summary_path)
    num_classes = provenance.get("config", {}).get("inception", {}).get("data", {})
    results = table(curves, summary, num_classes.get("num_classes", 10))
    found = relations(curves, summary, num_classes.get("num_classes", 10))
    target = results.target_acc.iloc[0]
    inception_steps = results.set_index("variant").steps_to_target["inception"]
    seeds = per_seed(curves, summary, target)
    checks = plateau(curves, summary)
    rungs = ladder_table(ladder, ladder_summary, target, inception_steps)
    arm = read_decay_arm(out_dir)
    decays = decay_table(curves, summary, *arm) if arm else None
    if not recorded:
        write_csv(summary_path, summary[list(SUMMARY_COLUMNS)])
    write_csv(out_dir / "table.csv", results)
    write_csv(out_dir / "relations.csv", found)
    write_csv(out_dir / "seeds.csv", seeds)
    write_csv(out_dir / "checks.csv", checks)
    write_csv(out_dir / "ladder_table.csv", rungs)
    if decays is not None:
        write_csv(out_dir / "decay_table.csv", decays)
    matplotlib.use("Agg")  # the figures are written to files, never shown: no display needed
    note = short_protocol_note(int(summary.steps.max()), FULL_STEPS, f"the {FULL_PRESET} preset's")
    for path in [
        *save_figure(figure2_figure(curves, results, note), out_dir, "figure2"),
        *save_figure(train_loss_figure(curves, note), out_dir, "figure2_train_loss"),
        *ladder_figure(ladder, rungs, target, out_dir, note),
    ]:
        print(f"wrote {path}")
    history = markdown.history_lines(out_dir)
    atomic_write_text(
        out_dir / "README.md",
        readme(results, found, seeds, checks, rungs, summary, provenance, decays, history),
    )
    print(f"wrote {out_dir / 'README.md'}")


# ---------------------------------------------------------------- the pages' blocks


def figure2_relations(results: Path) -> str:
    table = csv(results, "figure2/table.csv")
    found = csv(results, "figure2/relations.csv")
    check = csv(results, "figure2/checks.csv").iloc[0]
    summary = csv(results, "figure2/summary.csv")
    preset = provenance(results, "figure2").get("preset", "not recorded")
    crossings = "; ".join(
        f"{LABELS[r.variant]} {crossing_text(r)}"
        for r in table[table.variant.isin(MAIN) & (table.variant != "inception")].itertuples()
    )
    lines = [
        *markdown.table(
            ("relation (Section 4.2.2)", "paper", "ours", "verdict"), verdicts(table, found)
        ),
        "",
        "The intervals are over seeds and over the held-out sample of each evaluation "
        f"({images_text(summary)} images, redrawn as binomial proportions). Against plain "
        f"Inception's maximum, {table.target_acc.iloc[0]:.4f}: {crossings}.",
        "",
        f"Preset `{preset}`, {int(table.seeds.min())} seeds per recipe. Plain Inception "
        + (
            "had levelled off"
            if check.plateaued
            else f"had **not** levelled off (its mean curve gained {check.gain:.4f} in the last "
            f"part of the run, against a tolerance of {check.tolerance}), so the target is a "
            "lower bound and every speed-up depends on the run's length"
        )
        + " (`results/figure2/checks.csv`).",
    ]
    return "\n".join(lines)


def figure2_notes(results: Path) -> str:
    table = csv(results, "figure2/table.csv").set_index("variant")
    curves = csv(results, "figure2/curves.csv")
    seeds = csv(results, "figure2/seeds.csv")
    rungs = csv(results, "figure2/ladder_table.csv")
    chance = table.chance_acc.iloc[0]
    peaks = ", ".join(
        f"{LABELS[v]} {table.max_acc[v]:.4f} at step {int(table.step_of_max[v]):,}"
        for v in ("bn_baseline", "bn_x5", "bn_x30")
    )
    x5 = curves[(curves.variant == "bn_x5") & (curves.seed == curves.seed.min())].dropna(
        subset=["lr"]
    )
    low = x5[x5.lr < 0.02 * x5.lr.iloc[0]].step
    reached = seeds[seeds.variant == "bn_x5"].steps_to_target
    reach = ", ".join(
        "never" if pd.isna(step) else f"{step:,.0f}" for step in reached.sort_values()
    )
    ladder = []
    for family, rows in rungs.groupby("family", sort=False):
        failed = rows[rows.max_acc < chance + CHANCE_MARGIN].multiplier
        per_rung = rows.groupby("multiplier").seed.count()
        ladder.append(
            f"{LADDER_LABELS[family]}: "
            + (
                f"at chance from x{failed.min():g} on"
                if len(failed)
                else f"above chance at every rung up to x{rows.multiplier.max():g}"
            )
            + f" ({markdown.span(per_rung.min(), per_rung.max(), 'd')} seed(s) a rung)"
        )
    return "\n".join(
        [
            f"- Maxima of the mean curves: {peaks}.",
            f"- BN-x5's learning rate (seed {int(x5.seed.iloc[0])}) is below 2% of its start "
            + (f"from step {low.min():,} on." if len(low) else "at no logged step."),
            f"- Steps each BN-x5 seed took to the target: {reach}.",
            f"- The control Inception x5 (no BN) ends with a maximum of "
            f"{table.max_acc['inception_x5']:.4f}, "
            f"{'above' if table.max_acc['inception_x5'] > table.max_acc['bn_x5'] else 'below'} "
            f"BN-x5's {table.max_acc['bn_x5']:.4f}.",
            f"- The learning-rate ladder (maximum within {CHANCE_MARGIN} of chance counts as at "
            f"chance): {'; '.join(ladder)}.",
        ]
    )


def figure2_headline(results: Path) -> str:
    found = verdicts(csv(results, "figure2/table.csv"), csv(results, "figure2/relations.csv"))
    check = csv(results, "figure2/checks.csv").iloc[0]
    tally = {v: sum(1 for *_, verdict in found if verdict == v) for v in ("yes", "no")}
    unresolved = len(found) - tally["yes"] - tally["no"]
    preset = provenance(results, "figure2").get("preset", "not recorded")
    return (
        f"**Figures 2 and 3** (Inception variants on a Fashion-MNIST proxy, preset `{preset}`): "
        f"of the paper's {len(found)} relations, {tally['yes']} hold, {tally['no']} do not and "
        f"{unresolved} are unresolved; plain Inception "
        + ("had levelled off" if check.plateaued else "was still improving when the runs ended")
        + ". [results/figure2](results/figure2/README.md), [docs/figure2.md](docs/figure2.md)"
    )


# figure2's generated blocks of the pages (README.md, docs/figure2.md), which bnrepro.docs
# renders: name -> what writes the block from results/.
BLOCKS: dict[str, Callable[[Path], str]] = {
    "figure2-headline": figure2_headline,
    "figure2-relations": figure2_relations,
    "figure2-notes": figure2_notes,
}
