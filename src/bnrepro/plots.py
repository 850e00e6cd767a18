"""The paper's figures, drawn from logged curves (never from anything else).

No matplotlib backend is chosen here: a notebook keeps its own, MPLBACKEND chooses one, and
without a display matplotlib falls back to Agg by itself, so `save_figure` writes headless."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from bnrepro.atomic import atomic_open

VARIANT_STYLE = {
    "plain": {"label": "Without BN", "color": "tab:blue", "linestyle": "--"},
    "bn": {"label": "With BN", "color": "tab:red", "linestyle": "-"},
}
PERCENTILE_COLUMNS = ("p15", "p50", "p85")


def save_figure(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    """Writes `fig` as <stem>.png and <stem>.pdf into `out_dir` atomically, then closes it."""
    paths = []
    try:
        for fmt in ("png", "pdf"):
            path = out_dir / f"{stem}.{fmt}"
            # No creation date in the PDF: a redraw of the same data gives the same file.
            metadata = {"CreationDate": None} if fmt == "pdf" else {}
            with atomic_open(path, "wb") as f:
                fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight", metadata=metadata)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def short_protocol_note(steps: int, full_steps: int, full: str) -> str:
    """The line a figure of runs shorter than the protocol they stand for carries: `steps`
    against `full_steps`, the steps of `full` (possessive: "the paper's"); "" where the runs
    are as long, whose figures carry no note."""
    if steps >= full_steps:
        return ""
    return f"short protocol: {steps:,} steps, not {full} {full_steps:,}"


def mark_short_protocol(fig: plt.Figure, note: str) -> None:
    """`note` (short_protocol_note's) above the panels of `fig`, in red, so that a figure of
    a short protocol is not read as the paper's; nothing where `note` is empty."""
    if note:
        fig.suptitle(note, color="tab:red", fontsize=10)


def paper_ylim(ax: plt.Axes, limits: tuple[float, float], short: bool) -> None:
    """The paper's y range `limits` on `ax` where every line drawn on it ends inside it and
    the protocol is the full one; else the limits matplotlib takes from the data, so that no
    curve the legend lists lies outside the axes (a short protocol's plain net ends far below
    Figure 1(a)'s 0.7)."""
    low, high = limits
    if not short and all(low <= line.get_ydata()[-1] <= high for line in ax.lines):
        ax.set_ylim(low, high)


def legend_place(note: str, paper: str) -> str:
    """Where a legend goes: `paper`, the corner the full protocol's curves leave free, or, for a
    short protocol (`note`), whose curves may run through that corner, where matplotlib finds
    the fewest points under it."""
    return "best" if note else paper


def figure1_figure(curves: pd.DataFrame, note: str = "") -> plt.Figure:
    """Figure 1 of the paper from `curves` (variant, seed, step, test_acc, p15, p50, p85).

    (a) test accuracy against steps, mean over seeds with a min-max band, both nets, on the
    paper's 0.7 to 1 (from the data for a short protocol, whose `note` the figure carries);
    (b, c) the 15/50/85th percentiles of the probed sigmoid's input without and with BN,
    for the lowest seed (the other seeds look alike; their curves are in curves.csv).
    """
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    accuracy = curves.dropna(subset=["test_acc"])
    for variant, style in VARIANT_STYLE.items():
        per_step = accuracy[accuracy.variant == variant].groupby("step").test_acc
        if per_step.ngroups == 0:
            continue
        mean, low, high = per_step.mean(), per_step.min(), per_step.max()
        n_seeds = accuracy[accuracy.variant == variant].seed.nunique()
        axes[0].plot(
            mean.index, mean.values, **{**style, "label": f"{style['label']} ({n_seeds} seeds)"}
        )
        axes[0].fill_between(mean.index, low.values, high.values, color=style["color"], alpha=0.2)
    paper_ylim(axes[0], (0.7, 1.0), short=bool(note))
    axes[0].set_xlabel("training steps")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc=legend_place(note, "lower right"))
    axes[0].set_title("(a)")

    for ax, variant, title in (
        (axes[1], "plain", "(b) without BN"),
        (axes[2], "bn", "(c) with BN"),
    ):
        rows = curves[curves.variant == variant]
        if rows.empty:
            ax.set_visible(False)
            continue
        rows = rows[rows.seed == rows.seed.min()].sort_values("step")
        for column in PERCENTILE_COLUMNS:
            ax.plot(rows.step, rows[column], color="k", linewidth=1)
        ax.set_xlabel("training steps")
        ax.set_title(title)
    axes[1].set_ylabel("input to a last-layer sigmoid\n(15th, 50th, 85th percentiles)")
    if axes[1].get_visible() and axes[2].get_visible():
        low = min(axes[1].get_ylim()[0], axes[2].get_ylim()[0])
        high = max(axes[1].get_ylim()[1], axes[2].get_ylim()[1])
        axes[1].set_ylim(low, high)
        axes[2].set_ylim(low, high)
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return fig


def figure1(curves: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """figure1.png/.pdf in `out_dir` (`figure1_figure`)."""
    return save_figure(figure1_figure(curves, note), out_dir, "figure1")


def train_loss_figure(
    curves: pd.DataFrame, styles: Mapping[str, Mapping[str, Any]], title: str, note: str = ""
) -> plt.Figure:
    """The training loss against steps from `curves` (variant, seed, step, train_loss), one
    line per variant of `styles` (in its order, labelled as it labels them): the mean over the
    seeds logged at each step with a band from min to max. The y axis is logarithmic, as a
    cross-entropy falling over decades is drawn, where every loss is above 0; rows without a
    finite loss (evaluations, a diverged run's last ones) are left out. A short protocol's
    `note` goes above the axes."""
    loss = curves[np.isfinite(curves.train_loss.astype(float))]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for variant, style in styles.items():
        rows = loss[loss.variant == variant]
        if rows.empty:
            continue
        per_step = rows.groupby("step").train_loss
        mean = per_step.mean()
        seeds = rows.seed.nunique()
        label = f"{style['label']} ({seeds} seed{'s' * (seeds > 1)})"
        ax.plot(mean.index, mean.values, **{**style, "label": label, "linewidth": 1})
        if seeds > 1:
            ax.fill_between(
                mean.index, per_step.min().values, per_step.max().values, color=style["color"],
                alpha=0.2, linewidth=0,
            )  # fmt: skip
    if len(loss) and (loss.train_loss > 0).all():
        ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title(title, fontsize=9)
    if ax.lines:  # beside the axes, where no curve runs under it
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the paper's claims

BN_POSITION_STYLE = {
    "plain": {"label": "Without BN", "color": "tab:blue", "linestyle": "--"},
    "bn_before": {"label": "BN before sigmoid: g(BN(Wu))", "color": "tab:red", "linestyle": "-"},
    "bn_after": {"label": "BN after sigmoid: BN(g(Wu+b))", "color": "tab:green", "linestyle": "-."},
}
STATS_BACKPROP_STYLE = {
    False: {"label": "statistics as constants", "color": "tab:orange", "linestyle": "-"},
    True: {"label": "backprop through statistics", "color": "tab:purple", "linestyle": "--"},
}
ZERO_FLOOR = 1e-18  # where exact zeros are drawn on a log axis


def claim_scale_invariance(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Claim 1 from `frame` (a, eps, out_dev, du_dev, dw_dev, dw_norm, dw_norm_at_1).

    (a) |d/d(aW)| against a, log-log, for eps = 0 with the line |d/dW| / a;
    (b) the max relative deviations from the identities, for every eps in `frame`.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    exact = frame[frame.eps == 0].sort_values("a")
    axes[0].plot(exact.a, exact.dw_norm, "o", color="tab:red", label="measured, eps = 0")
    axes[0].plot(exact.a, exact.dw_norm_at_1 / exact.a, "k-", linewidth=1, label="|d/dW| / a")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("weight scale a")
    axes[0].set_ylabel("|d loss / d(aW)|")
    axes[0].legend()
    axes[0].set_title("(a) larger weights, smaller gradients")

    columns = {
        "out_dev": "BN((aW)u) vs BN(Wu)",
        "du_dev": "d/du",
        "dw_dev": "d/d(aW) vs (1/a) d/dW",
    }
    markers = {"out_dev": "o", "du_dev": "s", "dw_dev": "^"}
    for eps, rows in frame.groupby("eps"):
        rows = rows.sort_values("a")
        color = "tab:red" if eps == 0 else "tab:gray"
        for column, label in columns.items():
            axes[1].plot(
                rows.a,
                rows[column].clip(lower=ZERO_FLOOR),
                marker=markers[column],
                markersize=3,
                linewidth=0.8,
                color=color,
                label=f"{label}, eps = {eps:g}",
            )
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("weight scale a")
    axes[1].set_ylabel(f"max relative deviation\n(zeros drawn at {ZERO_FLOOR:g})")
    axes[1].legend(fontsize=6)
    axes[1].set_title("(b) exact for eps = 0, approximate for eps > 0")
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim1_scale_invariance")


def claim_stats_backprop(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Claim 2 from `frame` (step, stats_backprop, b_norm, b_drift, loss): |b| and the loss
    against training steps, with and without backprop through the batch statistics."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for backprop, rows in frame.groupby("stats_backprop"):
        style = STATS_BACKPROP_STYLE[bool(backprop)]
        axes[0].plot(rows.step, rows.b_norm, **style)
        axes[1].plot(rows.step, rows.loss, **style)
    axes[0].set_ylabel("|b|")
    axes[0].set_title("(a) the bias before the mean subtraction")
    axes[1].set_ylabel("loss")
    axes[1].set_title("(b) the loss (the two curves coincide)")
    loss = frame.loss
    pad = max(loss.abs().max() * 0.05, 1e-12)
    axes[1].set_ylim(loss.min() - pad, loss.max() + pad)
    for ax in axes:
        ax.set_xlabel("training steps")
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim2_stats_backprop")


def claim_bias_redundancy(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Claim 3 from `frame` (trial, bias_grad_norm, weight_grad_norm, out_dev): per trial, the
    gradient norms reaching W and b, and the output change on removing b, on a log axis."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    series = {
        "|dL/dW|": (frame.weight_grad_norm, "tab:blue", "o"),
        "|dL/db|": (frame.bias_grad_norm, "tab:red", "s"),
        "output change on removing b\n(max relative)": (frame.out_dev, "tab:gray", "^"),
    }
    for label, (values, color, marker) in series.items():
        ax.plot(frame.trial, values.clip(lower=ZERO_FLOOR), marker, color=color, label=label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (random W, b, gamma, beta; one MNIST batch of 60)")
    ax.set_ylabel("norm (float64)")
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Linear(784 -> 100) + bias, then BN in training mode")
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim3_bias_redundancy")


def claim_bn_position(curves: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Claim 4 from `curves` (variant, seed, step, test_acc): test accuracy against steps for
    each variant, mean over seeds with a min-max band; (a) the whole run, (b) its second half;
    a short protocol's `note` above them.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    accuracy = curves.dropna(subset=["test_acc"])
    second_half = accuracy[accuracy.step >= accuracy.step.max() / 2]
    for ax, rows_to_draw in ((axes[0], accuracy), (axes[1], second_half)):
        for variant, style in BN_POSITION_STYLE.items():
            rows = rows_to_draw[rows_to_draw.variant == variant]
            if rows.empty:
                continue
            per_step = rows.groupby("step").test_acc
            mean, low, high = per_step.mean(), per_step.min(), per_step.max()
            label = f"{style['label']} ({rows.seed.nunique()} seeds)"
            ax.plot(mean.index, mean.values, **{**style, "label": label})
            ax.fill_between(mean.index, low.values, high.values, color=style["color"], alpha=0.2)
        ax.set_xlabel("training steps")
        ax.set_ylabel("test accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].legend(loc=legend_place(note, "lower right"), fontsize=8)
    axes[0].set_title("(a) Figure 1 net: where BN goes")
    axes[1].set_title("(b) second half, zoomed")
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim4_bn_position")


def folding_agreement_panel(ax: plt.Axes, agreement: pd.DataFrame) -> None:
    """Claim 5(b): the largest |logit difference| between the folded and the unfolded net, per
    seed and dtype, from `agreement` (seed, dtype, max_abs_diff), against each dtype's bound."""
    seeds = sorted(agreement.seed.unique())
    dtypes = list(agreement.dtype.unique())
    width = 0.8 / len(dtypes)
    for i, dtype in enumerate(dtypes):
        rows = agreement[agreement.dtype == dtype].set_index("seed").reindex(seeds)
        positions = [j + (i - (len(dtypes) - 1) / 2) * width for j in range(len(seeds))]
        values = rows.max_abs_diff.clip(lower=ZERO_FLOOR)
        ax.bar(positions, values, width, label=dtype, color=f"C{i + 2}")
    ax.set_xticks(range(len(seeds)), [str(seed) for seed in seeds])
    ax.axhline(1e-5, color="k", linestyle="--", linewidth=1, label="1e-5 (float32)")
    ax.axhline(1e-10, color="k", linestyle=":", linewidth=1, label="1e-10 (float64)")
    ax.set_yscale("log")
    ax.set_ylim(top=1e-1)  # room for the legend above the float32 bars
    ax.set_xlabel("seed")
    ax.set_ylabel("max |logit difference|, folded vs not")
    ax.legend(fontsize=7, ncols=2, loc="upper right")
    ax.set_title("(b) same function")


def claim_folding(agreement: pd.DataFrame, timing: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Claim 5: (a) inference time per repeat, unfolded and folded, from `timing` (repeat,
    model, seconds); (b) the largest |logit difference| per seed and dtype from `agreement`
    (seed, dtype, max_abs_diff)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    colors = {"unfolded": "tab:blue", "folded": "tab:red"}
    for i, (model, rows) in enumerate(timing.groupby("model", sort=False)):
        ms = rows.seconds * 1e3
        axes[0].plot(rows.repeat, ms, ".", color=colors.get(model), label=model)
        axes[0].axhline(ms.median(), color=colors.get(model), linewidth=1)
        axes[0].annotate(
            f"median {ms.median():.2f} ms",
            (1.0, ms.median()),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 4 - 12 * i),
            textcoords="offset points",
            ha="right",
            fontsize=7,
        )
    axes[0].set_xlabel("repeat")
    axes[0].set_ylabel("one forward pass, 10k test images (ms)")
    axes[0].legend()
    axes[0].set_title("(a) inference time")

    folding_agreement_panel(axes[1], agreement)
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim5_folding")


def claim_population_statistics(frame: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Claim 6 from `frame` (seed, statistics, n_batches, test_acc): test accuracy with
    population statistics over N training batches against N, and with the moving averages;
    a short protocol's `note` above them."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (seed, rows) in enumerate(frame.groupby("seed")):
        color = colors[i % len(colors)]
        population = rows[rows.statistics == "population"].sort_values("n_batches")
        moving = rows[rows.statistics == "moving"].test_acc
        label = f"seed {seed}: population (Algorithm 2)"
        ax.plot(population.n_batches, population.test_acc, "o-", color=color, label=label)
        if not moving.empty:
            label = f"seed {seed}: moving averages"
            ax.axhline(moving.iloc[0], color=color, linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training mini-batches of 60 averaged (N)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7)
    ax.set_title("Inference statistics of the trained BN net")
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "claim6_population_statistics")


# ---------------------------------------------------------------- Figure 1's sensitivity map


@dataclass(frozen=True)
class HeatmapPanel:
    """One quantity of the sensitivity map: a title, a value and a text per cell (in the order
    of the cells' rows), and its scale: `difference` (diverging around 0) or `ratio`
    (logarithmic, diverging around 1). Cells without a finite value (or a ratio's positive one)
    are drawn grey with their text only."""

    title: str
    values: pd.Series
    texts: Sequence[str]
    scale: str


def sensitivity_heatmaps(
    cells: pd.DataFrame,
    optimizers: Mapping[str, str],
    panels: Sequence[HeatmapPanel],
    out_dir: Path,
    caption: str = "",
    note: str = "",
) -> list[Path]:
    """The BN advantage over (learning rate, init std), from `cells` (optimizer, lr, init_std:
    one row per cell) and `panels`: one row of heatmaps per optimizer of `optimizers` (config
    name -> name shown), one column per panel; red where BN is ahead, blue where it is behind;
    `caption` below them, a short protocol's `note` above."""
    lrs, stds = sorted(set(cells.lr)), sorted(set(cells.init_std))
    fig, axes = plt.subplots(
        len(optimizers),
        len(panels),
        figsize=(3.6 * len(panels), 2.6 * len(optimizers) + 0.6),
        squeeze=False,
    )
    for column, panel in enumerate(panels):
        values = pd.Series(panel.values.to_numpy(dtype=float), index=cells.index)
        finite = values[np.isfinite(values)]
        if panel.scale == "ratio":
            finite = finite[finite > 0]
            extent = float(np.abs(np.log10(finite)).max()) if len(finite) else 1.0
            extent = max(extent, 0.1)
            norm = LogNorm(vmin=10**-extent, vmax=10**extent)
        else:
            extent = float(finite.abs().max()) if len(finite) else 1.0
            norm = Normalize(vmin=-max(extent, 1e-9), vmax=max(extent, 1e-9))
        for row, (optimizer, name) in enumerate(optimizers.items()):
            ax = axes[row][column]
            grid = np.full((len(stds), len(lrs)), np.nan)
            texts = {}
            for index in cells.index[cells.optimizer == optimizer]:
                i, j = stds.index(cells.at[index, "init_std"]), lrs.index(cells.at[index, "lr"])
                value = values[index]
                if np.isfinite(value) and (panel.scale != "ratio" or value > 0):
                    grid[i, j] = value
                texts[i, j] = panel.texts[cells.index.get_loc(index)]
            cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower")
            for (i, j), text in texts.items():
                dark = np.isfinite(grid[i, j]) and abs(float(norm(grid[i, j])) - 0.5) > 0.3
                color = "white" if dark else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=color)
            ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
            ax.set_yticks(range(len(stds)), [f"{std:g}" for std in stds])
            ax.set_xlabel("learning rate")
            ax.set_ylabel(f"{name}\ninit std")
            if row == 0:
                ax.set_title(panel.title, fontsize=8)
            colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
            if panel.scale == "ratio":
                base = 10.0 if extent > 1 else 2.0
                top = int(extent / np.log10(base))
                colorbar.set_ticks([base**k for k in range(-top, top + 1)])
            colorbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            colorbar.ax.yaxis.set_minor_formatter(NullFormatter())
            colorbar.ax.tick_params(labelsize=7)
    if caption:
        fig.text(0.5, 0, caption, ha="center", va="top", fontsize=8)
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "sensitivity")
