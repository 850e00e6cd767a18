"""What the Inception proxy's `draw` writes: accuracy, percentiles, ICS and smoothness figures,
claims.csv and README.md, with the parts it shares with the MNIST study's report."""

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from bnrepro import drift as percentile_drift
from bnrepro.atomic import atomic_write_text
from bnrepro.experiments.ics import report
from bnrepro.experiments.ics.proxy_analysis import Claim, claims, conclusion
from bnrepro.experiments.ics.proxy_protocol import FULL_PRESET, FULL_STEPS, VARIANTS, load
from bnrepro.inception_probes import ICS_LAYERS
from bnrepro.markdown import history_lines
from bnrepro.plots import legend_place, mark_short_protocol, save_figure, short_protocol_note
from bnrepro.verdicts import runs_commit

STYLE = {
    "inception": {"label": "Inception (no BN)", "color": "tab:blue", "linestyle": "--"},
    "bn_baseline": {"label": "BN-Baseline", "color": "tab:red", "linestyle": "-"},
    "bn_baseline_noisy": {"label": "noisy BN-Baseline", "color": "tab:green", "linestyle": "-."},
}


# ---------------------------------------------------------------- figures


def accuracy_figure(curves: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Held-out accuracy against steps, on the limits the data takes; a short protocol's
    `note` above."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for variant in VARIANTS:
        report.band(ax, curves, "test_acc", variant, styles=STYLE)
    ax.set_xlabel("training steps")
    ax.set_ylabel("held-out accuracy")
    ax.legend(loc=legend_place(note, "lower right"))
    ax.set_title("Fashion-MNIST proxy (median over seeds, band: min to max)", fontsize=9)
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "accuracy")


def ics_figure(diagnostics: pd.DataFrame, out_dir: Path, note: str = "") -> list[Path]:
    """Per measured layer: ||G - G'|| / ||G|| (top) and cos(G, G') (bottom); a short
    protocol's `note` above."""
    fig, axes = plt.subplots(2, len(ICS_LAYERS), figsize=(3.2 * len(ICS_LAYERS), 5.6))
    for column, label in enumerate(ICS_LAYERS):
        for variant in VARIANTS:
            report.band(axes[0, column], diagnostics, f"ics_l2_{label}", variant, False, STYLE)
            report.band(axes[1, column], diagnostics, f"ics_cos_{label}", variant, False, STYLE)
        axes[0, column].set_yscale("log")
        axes[0, column].set_title(f"layer {label}")
        axes[1, column].set_xlabel("training steps")
    axes[0, 0].set_ylabel("ICS: ||G - G'|| / ||G||")
    axes[1, 0].set_ylabel("ICS: cos(G, G')")
    axes[0, 0].legend(fontsize=7)
    mark_short_protocol(fig, note)
    fig.tight_layout()
    return save_figure(fig, out_dir, "ics")


# ---------------------------------------------------------------- README and drawing


def protocol_lines(summary: pd.DataFrame, provenance: dict) -> list[str]:
    config = provenance.get("config", {}).get("bn_baseline_noisy", {})
    model, data = config.get("model", {}), config.get("data", {})
    noise, probe = model.get("noise") or {}, config.get("late_probe", {})
    diagnostics = config.get("diagnostics", {})
    seeds = ", ".join(str(s) for s in sorted(set(summary.seed)))
    return [
        f"- protocol: preset `{provenance.get('preset') or 'not recorded'}`, "
        f"{int(summary.steps.max()):,} steps of {config.get('batch_size', '?')} per run, seeds "
        f"{seeds}; width {model.get('width', '?')}, {data.get('size', '?')}x"
        f"{data.get('size', '?')} Fashion-MNIST, BN-Baseline's recipe (experiments/figure2.py's "
        "presets)",
        f"- noisy BN: every step, each channel's BN output is scaled by "
        f"U({noise.get('scale_min', '?')}, {noise.get('scale_max', '?')}) and shifted by "
        f"U(-{noise.get('shift', '?')}, {noise.get('shift', '?')}) "
        "(`configs/experiment/bn_baseline_noisy.yaml`, which says how it was chosen)",
        f"- probe: every {probe.get('every', '?')} steps, channel {probe.get('unit', '?')} of "
        "module 5b's 1x1 branch, the input to its ReLU (the BN or noisy-BN output; without BN "
        f"the convolution's), over the first {probe.get('size', '?')} held-out images and every "
        "pixel, the network in training mode",
        f"- {percentile_drift.DEFINITION.replace('the sigmoid input', 'the probed input')}",
        f"- diagnostics: every {diagnostics.get('every', '?')} steps, on that step's batch "
        "before its update: the ICS of layers " + ", ".join(ICS_LAYERS) + " (Definition 2.1: "
        "the gradient of the loss w.r.t. the layer's weights before and after every layer below "
        "took the batch's plain SGD step at the step's learning rate; relative l2 distance and "
        "cosine) and the landscape along the gradient at w - m lr g for m in "
        f"{diagnostics.get('multipliers', '?')}; the claims take medians over logged steps (and "
        "layers, for ICS); figures show the median over seeds with a band from min to max",
        f"- command: `{provenance.get('command') or 'not recorded'}`; machine, commit, date "
        "and wall times: `provenance.json`",
    ]


def readme(
    found: list[Claim],
    summary: pd.DataFrame,
    provenance: dict,
    rows: list[dict],
    history: list[str],
) -> str:
    """README.md: what the data supports (the `found` claims, claims.csv's `rows`) and the
    figures, the final accuracies, how the numbers were made and the `history` of its result
    (results/ics/proxy/HISTORY.md's)."""
    lines = [
        "# Internal covariate shift put to the test (Inception proxy)",
        "",
        "Regenerated by `python experiments/ics_proxy.py run` (training) or `draw` (drawing",
        "only) from the CSV files in this folder; do not edit by hand. Santurkar, Tsipras, Ilyas",
        "and Madry's diagnostics (*How Does Batch Normalization Help Optimization?*, NeurIPS",
        "2018) on the Fashion-MNIST proxy of Inception, BN-Baseline and BN-Baseline with noisy BN.",
        "",
        "## What the data supports",
        "",
        *conclusion(found),
        "",
        *report.claims_and_figures(found, rows),
        "",
        *(line.format(driver="ics_proxy") for line in report.THRESHOLD_FILES),
        "",
        "## Final held-out accuracy",
        "",
        *report.accuracy_table(summary, VARIANTS, STYLE),
        "",
        "## How these numbers were made",
        "",
        *protocol_lines(summary, provenance),
    ]
    if history:
        lines += ["", *history]
    return "\n".join([*lines, ""])


def draw(out_dir: Path) -> None:
    """Figures, claims.csv and README.md from the files in `out_dir`, once known whole."""
    curves, diagnostics, summary, provenance = load(out_dir)
    matplotlib.use("Agg")  # figures are written to files, never shown
    note = short_protocol_note(int(summary.steps.max()), FULL_STEPS, f"the {FULL_PRESET} preset's")
    paths = [
        *accuracy_figure(curves, out_dir, note),
        *report.percentiles_figure(curves, out_dir, STYLE, "a ReLU of module 5b", note),
        *ics_figure(diagnostics, out_dir, note),
        *report.smoothness_figure(diagnostics, out_dir, STYLE, legend_size=7, note=note),
        *report.train_loss_figure(curves, out_dir, STYLE, "mean over each logging interval", note),
    ]
    found = claims(curves, diagnostics)
    rows = [claim.row(runs_commit(provenance)) for claim in found]
    atomic_write_text(out_dir / "claims.csv", pd.DataFrame(rows).to_csv(index=False))
    readme_text = readme(found, summary, provenance, rows, history_lines(out_dir))
    atomic_write_text(out_dir / "README.md", readme_text)
    for path in [*paths, out_dir / "claims.csv", out_dir / "README.md"]:
        print(f"wrote {path}")
