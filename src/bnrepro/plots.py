"""The paper's figures, drawn from logged curves (never from anything else)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

VARIANT_STYLE = {
    "plain": {"label": "Without BN", "color": "tab:blue", "linestyle": "--"},
    "bn": {"label": "With BN", "color": "tab:red", "linestyle": "-"},
}
PERCENTILE_COLUMNS = ("p15", "p50", "p85")


def _save(fig: plt.Figure, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".png", ".pdf"):
        path = out_dir / f"{stem}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp{suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def figure1(curves: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Figure 1 of the paper from `curves` (variant, seed, step, test_acc, p15, p50, p85).

    (a) test accuracy against steps, mean over seeds with a min-max band, both nets;
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
    axes[0].set_ylim(0.7, 1.0)
    axes[0].set_xlabel("training steps")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(loc="lower right")
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
    fig.tight_layout()
    return _save(fig, out_dir, "figure1")
