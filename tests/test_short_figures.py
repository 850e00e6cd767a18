"""The figures of a short protocol (`--quick`, `make reproduce-* QUICK=1`, results/reference/)
say so above their panels and show every curve their legends list; the full protocol keeps the
paper's axes; the training-loss figures draw the logged means and bands. Every figure is read
back from its matplotlib Figure, not from pixels."""

import contextlib
import shutil
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from bnrepro import plots
from bnrepro.experiments import driver

matplotlib.use("Agg")


def toy_curves(steps: int, plain_end: float, bn_end: float, every: int = 100) -> pd.DataFrame:
    """Figure 1's curves.csv for two seeds: accuracy rising linearly from 0.1 to `*_end`,
    seed 1 two points above seed 0, percentiles and a training loss falling from 2.3."""
    rows = []
    for variant, end in (("plain", plain_end), ("bn", bn_end)):
        for seed in (0, 1):
            for step in range(0, steps + 1, every):
                accuracy = 0.1 + (end - 0.1) * step / steps + 0.02 * seed
                loss = 2.3 * np.exp(-3 * step / steps) + 0.1 * seed
                rows.append((variant, seed, step, loss, accuracy, -1.0, 0.0, 1.0))
    columns = ["variant", "seed", "step", "train_loss", "test_acc", "p15", "p50", "p85"]
    return pd.DataFrame(rows, columns=columns)


def assert_listed_curves_inside(fig: matplotlib.figure.Figure) -> None:
    """Every line a legend lists, and every band, lies within its axes' y limits."""
    for ax in fig.axes:
        low, high = sorted(ax.get_ylim())
        for line in ax.lines:
            if line.get_label().startswith("_"):
                continue
            y = np.asarray(line.get_ydata(), dtype=float)
            y = y[np.isfinite(y)]
            assert ((low <= y) & (y <= high)).all(), f"{line.get_label()} leaves {low}..{high}"
        for band in ax.collections:
            for path in band.get_paths():
                y = path.vertices[:, 1]
                assert ((low - 1e-9 <= y) & (y <= high + 1e-9)).all()


def test_a_short_figure1_shows_every_curve_and_says_so() -> None:
    """The issue's case: 1,000 steps, the plain net at 0.48, below Figure 1(a)'s 0.7."""
    note = plots.short_protocol_note(1000, 50_000, "the paper's")
    assert note == "short protocol: 1,000 steps, not the paper's 50,000"
    fig = plots.figure1_figure(toy_curves(1000, 0.48, 0.91), note)
    assert fig.get_suptitle() == note
    accuracy = fig.axes[0]
    assert [line.get_label() for line in accuracy.get_legend().get_lines()] == [
        "Without BN (2 seeds)",
        "With BN (2 seeds)",
    ]
    assert accuracy.get_ylim()[0] < 0.1, "the plain net's whole curve, from step 0"
    assert_listed_curves_inside(fig)


def test_the_full_protocol_keeps_the_papers_range_and_no_note() -> None:
    assert plots.short_protocol_note(50_000, 50_000, "the paper's") == ""
    fig = plots.figure1_figure(toy_curves(50_000, 0.97, 0.98, every=5000))
    assert fig.axes[0].get_ylim() == (0.7, 1.0)
    assert fig.get_suptitle() == ""


def test_a_full_run_ending_below_the_papers_range_gets_the_datas_limits() -> None:
    """A net that ends below 0.7 after the full 50,000 steps (another experiment's plain net)
    is drawn whole, as the legend lists it."""
    fig = plots.figure1_figure(toy_curves(50_000, 0.55, 0.98, every=5000))
    assert fig.axes[0].get_ylim()[0] < 0.55
    assert fig.get_suptitle() == ""
    assert_listed_curves_inside(fig)


def test_the_train_loss_figure_draws_the_mean_and_band_of_the_csv() -> None:
    curves = toy_curves(1000, 0.48, 0.91)
    curves.loc[(curves.variant == "bn") & (curves.step == 1000), "train_loss"] = np.inf
    curves.loc[curves.step == 0, "train_loss"] = np.nan  # no step trained yet
    fig = plots.train_loss_figure(curves, plots.VARIANT_STYLE, "loss", "short protocol: x")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and fig.get_suptitle() == "short protocol: x"
    assert [line.get_label() for line in ax.lines] == ["Without BN (2 seeds)", "With BN (2 seeds)"]
    for variant, line, band in zip(("plain", "bn"), ax.lines, ax.collections, strict=True):
        rows = curves[(curves.variant == variant) & np.isfinite(curves.train_loss)]
        per_step = rows.groupby("step").train_loss
        np.testing.assert_array_equal(line.get_xdata(), per_step.mean().index)
        np.testing.assert_allclose(line.get_ydata(), per_step.mean().values)
        vertices = band.get_paths()[0].vertices
        for step, low, high in per_step.agg(["min", "max"]).itertuples():
            drawn = vertices[vertices[:, 0] == step, 1]
            assert drawn.min() == pytest.approx(low) and drawn.max() == pytest.approx(high)
    assert 1000 not in ax.lines[1].get_xdata(), "a non-finite loss is left out"
    assert 0 not in ax.lines[0].get_xdata(), "a step without a loss is left out"
    assert_listed_curves_inside(fig)


def drawn_figures(name: str, out: Path, monkeypatch) -> dict[str, matplotlib.figure.Figure]:
    """Every figure driver `name`'s draw makes from `out`, by the file stem it is saved as
    (plots.save_figure, which every figure goes through); no figure is rendered or written."""
    figures = {}

    @contextlib.contextmanager
    def no_file(path, mode):
        yield path

    def record(fig, path, **_):
        figures[Path(path).stem] = fig

    monkeypatch.setattr(plots, "atomic_open", no_file)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    driver(name).draw(out)
    return figures


CLAIMS_SAME_IN_EVERY_PROTOCOL = {
    "claim1_scale_invariance",
    "claim2_stats_backprop",
    "claim3_bias_redundancy",
}
# driver -> its folder under results/reference/ and the figures its draw makes there (together
# about 12 s of CPU time, nothing rendered).
REFERENCE = {
    "figure1": ("figure1", {"figure1"}),
    "ics": ("ics", {"accuracy", "percentiles", "ics", "smoothness", "train_loss"}),
    "figure2": ("figure2", {"figure2", "figure2_train_loss", "ladder"}),
    "claims": (
        "claims",
        {
            *CLAIMS_SAME_IN_EVERY_PROTOCOL,
            "claim4_bn_position",
            "claim4_train_loss",
            "claim5_folding",
            "claim6_population_statistics",
        },
    ),
    "ics_proxy": ("ics/proxy", {"accuracy", "percentiles", "ics", "smoothness", "train_loss"}),
    "sensitivity": ("sensitivity", {"sensitivity"}),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_the_reference_figures_say_they_are_short_and_show_every_curve(
    name, tmp_path, monkeypatch
) -> None:
    """results/reference/ holds `--quick` runs: each figure drawn from them carries the note
    (under the ladder's own title), but claims 1 to 3, which measure the same in every
    protocol; and every curve a legend lists lies inside its axes."""
    folder, stems = REFERENCE[name]
    out = tmp_path / folder
    shutil.copytree(REPO / "results" / "reference" / folder, out)
    figures = drawn_figures(name, out, monkeypatch)
    assert set(figures) == stems
    for stem, fig in figures.items():
        said = any(line.startswith("short protocol: ") for line in fig.get_suptitle().splitlines())
        assert said != (stem in CLAIMS_SAME_IN_EVERY_PROTOCOL), stem
        assert_listed_curves_inside(fig)


def test_the_committed_full_figure1_has_no_note_and_the_papers_axis(tmp_path, monkeypatch):
    out = tmp_path / "figure1"
    shutil.copytree(REPO / "results" / "figure1", out)
    fig = drawn_figures("figure1", out, monkeypatch)["figure1"]
    assert fig.get_suptitle() == "" and fig.axes[0].get_ylim() == (0.7, 1.0)
