"""What the MNIST study's `draw` writes: accuracy, percentiles, ICS and smoothness figures,
claims.csv and README.md; with the figure and README parts the proxy's report shares."""

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

from bnrepro import drift as percentile_drift
from bnrepro import markdown, plots
from bnrepro.atomic import atomic_write_text
from bnrepro.drift import PERCENTILES
from bnrepro.driver import write_csv
from bnrepro.experiments.ics.analysis import Claim, claims, conclusion
from bnrepro.experiments.ics.protocol import FULL_STEPS, LANDSCAPE, VARIANTS, layers, load
from bnrepro.plots import (
    legend_place,
    mark_short_protocol,
    paper_ylim,
    save_figure,
    short_protocol_note,
)
from bnrepro.runinfo import stable_command
from bnrepro.verdicts import runs_commit

STYLE = {
    "plain": {"label": "Without BN", "color": "tab:blue", "linestyle": "--"},
    "bn": {"label": "With BN", "color": "tab:red", "linestyle": "-"},
    "noisy": {"label": "Noisy BN", "color": "tab:green", "linestyle": "-."},
}


# ---------------------------------------------------------------- figures


def band(
    ax: Axes,
    frame: pd.DataFrame,
    column: str,
    variant: str,
    seeds: bool = True,
    styles: dict = STYLE,
) -> None:
    """`column` against steps: the median over seeds with a band from min to max."""
    per_step = frame[frame.variant == variant].dropna(subset=[column]).groupby("step")[column]
    if per_step.ngroups == 0:
        return
    n_seeds = frame[frame.variant == variant].seed.nunique()
    style = styles[variant]
    label = f"{style['label']} ({n_seeds} seed{'s' * (n_seeds > 1)})" if seeds else style["label"]
    middle = per_step.median()
    ax.plot(middle.index, middle.values, **{**style, "label": label})
    ax.fill_between(
        middle.index, per_step.min().values, per_step.max().values, color=style["color"], alpha=0.2
    )


def accuracy_figure(curves: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Test accuracy against steps on Figure 1(a)'s 0.7 to 1 (from the data for a short
    protocol, whose `note` the figure carries)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for variant in VARIANTS:
        band(ax, curves, "test_acc", variant)
    paper_ylim(ax, (0.7, 1.0), short=bool(note))
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.legend(loc=legend_place(note, "lower right"))
    ax.set_title("test accuracy (median over seeds, band: min to max)")
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "accuracy")


def percentiles_figure(
    curves: pd.DataFrame,
    out_dir: Path,
    styles: dict = STYLE,
    probed: str = "a last-layer sigmoid",
    note: str = "",
) -> list[Path]:
    """The 15/50/85th percentiles of the probed input (`probed`: the MNIST net's sigmoid, the
    proxy's ReLU), lowest seed, one panel per net (in the order of `styles`) with a shared
    scale, as the paper's Figure 1(b, c); rows without a probe are left out; a short
    protocol's `note` above."""
    fig, axes = plt.subplots(1, len(styles), figsize=(12, 3.4), sharey=True)
    for ax, (variant, style) in zip(axes, styles.items(), strict=True):
        rows = curves[curves.variant == variant].dropna(subset=list(PERCENTILES))
        rows = rows[rows.seed == rows.seed.min()].sort_values("step")
        for column in PERCENTILES:
            ax.plot(rows.step, rows[column], color="k", linewidth=0.8)
        ax.set_xlabel("training steps")
        ax.set_title(style["label"])
    axes[0].set_ylabel(f"input to {probed}\n(15th, 50th, 85th percentiles)")
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "percentiles")


def ics_figure(diagnostics: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Per layer with layers below it: ||G - G'|| / ||G|| (top) and cos(G, G') (bottom); a
    short protocol's `note` above."""
    found = layers(diagnostics.columns)
    fig, axes = plt.subplots(2, len(found), figsize=(4 * len(found), 6), squeeze=False)
    for column, layer in enumerate(found):
        for variant in VARIANTS:
            band(axes[0, column], diagnostics, f"ics_l2_{layer}", variant, seeds=False)
            band(axes[1, column], diagnostics, f"ics_cos_{layer}", variant, seeds=False)
        axes[0, column].set_yscale("log")
        axes[0, column].set_title(f"layer {layer}")
        axes[1, column].set_xlabel("training steps")
    axes[0, 0].set_ylabel("ICS: ||G - G'|| / ||G||")
    axes[1, 0].set_ylabel("ICS: cos(G, G')")
    axes[0, 0].legend()
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "ics")


def smoothness_figure(
    diagnostics: pd.DataFrame,
    out_dir: Path,
    styles: dict = STYLE,
    legend_size: int | None = None,
    note: str = "",
) -> list[Path]:
    """Each landscape measure against steps, one curve per net (in the order of `styles`); a
    short protocol's `note` above."""
    fig, axes = plt.subplots(1, len(LANDSCAPE), figsize=(13, 3.6))
    for ax, (column, label) in zip(axes, LANDSCAPE.items(), strict=True):
        for variant in styles:
            band(ax, diagnostics, column, variant, seeds=False, styles=styles)
        ax.set_yscale("log")
        ax.set_xlabel("training steps")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=legend_size)
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "smoothness")


def train_loss_figure(
    curves: pd.DataFrame, out_dir: Path, styles: dict = STYLE, what: str = "", note: str = ""
) -> list[Path]:
    """train_loss.png/.pdf: each net's training loss against steps (`what` the trainer logs
    as it, for the title), mean over seeds with a band from min to max, on a log scale."""
    title = f"training loss ({what}; mean over seeds, band: min to max)"
    return save_figure(plots.train_loss_figure(curves, styles, title, note), out_dir, "train_loss")


# ---------------------------------------------------------------- README and drawing


def claims_and_figures(found: list[Claim], rows: list[dict]) -> list[str]:
    """A results README's claims table (claims.csv's `rows`), its per-seed table and its five
    figures (Markdown)."""
    header = ("claim", "measured (mean over seeds)", "threshold", "verdict", "threshold fixed")
    cells = [
        (r["claim"], r["measured"], r["threshold"], f"**{r['verdict']}**", r["threshold_fixed"])
        for r in rows
    ]
    return [
        *markdown.table(header, cells),
        "",
        "A verdict is `pass` when every seed meets the threshold, `fail` when none does and",
        "`inconclusive` when the seeds disagree. Per seed:",
        "",
        *per_seed_table(found),
        "",
        "## Figures",
        "",
        "![accuracy](accuracy.png)",
        "",
        "![percentiles](percentiles.png)",
        "",
        "![ICS](ics.png)",
        "",
        "![smoothness](smoothness.png)",
        "",
        "![training loss](train_loss.png)",
    ]


def per_seed_table(found: list[Claim]) -> list[str]:
    seeds = list(found[0].per_seed.index)
    header = ("claim", *(f"seed {s}" for s in seeds), "threshold", "verdict")
    rows = [
        (
            claim.text, *(f"{claim.per_seed[s]:.4g}" for s in seeds), claim.threshold.text,
            f"**{claim.verdict()}**",
        )
        for claim in found
    ]  # fmt: skip
    return markdown.table(header, rows)


def noise_text(provenance: dict) -> str:
    noise = provenance.get("config", {}).get("noisy", {}).get("model", {}).get("noise")
    if not noise:
        return "the noise distribution is in `provenance.json`"
    return (
        f"every step, each unit's BN output is scaled by U({noise['scale_min']:g}, "
        f"{noise['scale_max']:g}) and shifted by U(-{noise['shift']:g}, {noise['shift']:g}) "
        "(`configs/model/mlp_noisy.yaml`)"
    )


INTRO = (
    "# Internal covariate shift put to the test (MNIST MLP)",
    "",
    "Regenerated by `make reproduce-ics` (training) or `make figures` (drawing only) from",
    "the CSV files in this folder; do not edit by hand. The diagnostics are those of",
    "Santurkar, Tsipras, Ilyas and Madry, *How Does Batch Normalization Help Optimization?*",
    "(NeurIPS 2018, arXiv:1805.11604), measured on the paper's MNIST net trained with",
    "Figure 1's protocol, without BN, with BN and with noisy BN.",
)
# How the README defines what the diagnostics measure and what the claims take of them.
DEFINITIONS = (
    "- ICS of layer k (Santurkar et al.'s Definition 2.1): G, the gradient of the loss with "
    "respect to W_k, against G', the same gradient after every layer below k (weights and BN "
    "parameters) took the batch's SGD step; relative l2 distance ||G - G'|| / ||G|| and "
    "cosine. Layer 1 has nothing below it and is not shown",
    "- landscape (their Figure 4): from the weights along the gradient g to w - m lr g for m "
    "in the trainer's `diagnostics.multipliers`; loss range (max - min over those points), "
    "gradient predictiveness max ||g - g'||, effective beta-smoothness max ||g - g'|| / "
    "||w - w'||",
    f"- {percentile_drift.DEFINITION}",
    "- the claims' medians run over every logged diagnostic step (and, for ICS, every "
    "layer); figures show the median over seeds with a band from min to max",
)


# How the thresholds are kept, for every README these drivers write.
THRESHOLD_FILES = (
    "Each threshold is a file of its own, `thresholds/{driver}/<key>.yaml` (the",
    "claim, its relation and value, and why that value), read by `bnrepro.experiments.{driver}`.",
    "The last column of the claims table says, from git, whether the file's relation and value",
    "were first committed before the commit the runs were made from (`provenance.json`): the",
    "commit that first held them and its date, then the runs'.",
)


def readme(
    curves: pd.DataFrame,
    diagnostics: pd.DataFrame,
    summary: pd.DataFrame,
    provenance: dict,
    rows: list[dict],
    history: list[str],
) -> str:
    """README.md: what the data supports, the claims (claims.csv's `rows`) and figures, the
    final accuracies, how the numbers were made and the `history` of its result
    (results/ics/HISTORY.md's)."""
    found = claims(curves, diagnostics)
    lines = [
        *INTRO, "", "## What the data supports", "", *conclusion(found), "",
        *claims_and_figures(found, rows), "",
        *(line.format(driver="ics") for line in THRESHOLD_FILES), "",
        "## Final test accuracy", "", *accuracy_table(summary), "",
        *method(curves, diagnostics, summary, provenance),
        *(["", *history] if history else []), "",
    ]  # fmt: skip
    return "\n".join(lines)


def accuracy_table(
    summary: pd.DataFrame, variants: tuple[str, ...] = VARIANTS, styles: dict = STYLE
) -> list[str]:
    """Each net's final accuracy over the seeds (`variants` in order, named as `styles` label
    them): mean, min – max and how many seeds."""
    rows = []
    for variant in variants:
        acc = summary[summary.variant == variant].final_test_acc
        rows.append(
            (
                styles[variant]["label"], f"{acc.mean():.4f}", f"{acc.min():.4f} – {acc.max():.4f}",
                len(acc),
            )
        )  # fmt: skip
    return markdown.table(("net", "mean", "min – max", "seeds"), rows)


def logged_every(steps: pd.Series, single: int) -> int:
    """The interval at which `steps` were logged; `single` where only one step was."""
    unique = pd.Series(sorted(set(steps)))
    return int(unique.diff().min()) if len(unique) > 1 else single


def method(
    curves: pd.DataFrame, diagnostics: pd.DataFrame, summary: pd.DataFrame, provenance: dict
) -> list[str]:
    """How the numbers were made: the protocol, the noise, what is measured, the command."""
    steps = int(summary.steps.max())
    seeds = ", ".join(map(str, sorted(set(summary.seed))))
    command = provenance.get("command")
    return [
        "## How these numbers were made",
        "",
        f"- protocol: {steps:,} steps of {provenance_batch(provenance)} for each of the seeds "
        f"{seeds}; diagnostics every {logged_every(diagnostics.step, steps):,} steps, on that "
        "step's batch before its update; percentiles of the probed unit every "
        f"{logged_every(curves.step, steps):,} steps",
        f"- noisy BN: {noise_text(provenance)}",
        *DEFINITIONS,
        f"- command: `{stable_command(command) if command else 'not recorded'}`; machine, "
        "commit, date and wall times: `provenance.json`",
    ]


def provenance_batch(provenance: dict) -> str:
    batch = {c.get("batch_size") for c in provenance.get("config", {}).values()}
    return str(batch.pop()) if len(batch) == 1 else "the configured batch size"


def draw(out_dir: Path) -> None:
    """Figures, claims.csv and README.md from the files in `out_dir`, once known whole."""
    curves, diagnostics, summary, provenance = load(out_dir)
    matplotlib.use("Agg")  # figures are written to files, never shown
    note = short_protocol_note(int(summary.steps.max()), FULL_STEPS, "Figure 1's")
    paths = [
        *accuracy_figure(curves, out_dir, note),
        *percentiles_figure(curves, out_dir, note=note),
        *ics_figure(diagnostics, out_dir, note),
        *smoothness_figure(diagnostics, out_dir, note=note),
        *train_loss_figure(curves, out_dir, what="each step's mini-batch", note=note),
    ]
    for path in paths:
        print(f"wrote {path}")
    rows = [claim.row(runs_commit(provenance)) for claim in claims(curves, diagnostics)]
    write_csv(out_dir / "claims.csv", pd.DataFrame(rows))
    text = readme(curves, diagnostics, summary, provenance, rows, markdown.history_lines(out_dir))
    atomic_write_text(out_dir / "README.md", text)
    print(f"wrote {out_dir / 'README.md'}")
