"""Figures 2 and 3: the table, the checked relations and the drawing, from CSV files alone."""

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("figure2_driver", REPO / "experiments/figure2.py")
figure2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figure2)

# Synthetic runs: (accuracy reached at the end, steps to get there, diverged at step).
RUNS = {
    "inception": (0.80, 1000, None),
    "bn_baseline": (0.82, 500, None),
    "bn_x5": (0.84, 100, None),
    "bn_x30": (0.86, 150, None),
    "bn_x5_sigmoid": (0.78, 300, None),
    "inception_x5": (0.30, 100, 60),
    "inception_sigmoid": (0.10, 1, None),
}


def synthetic(seeds=(0, 1)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curves rising linearly from 0.1 to their final accuracy, then flat, every 10 steps."""
    curves, summary = [], []
    steps = np.arange(0, 1001, 10)
    for variant, (final, rise, diverged) in RUNS.items():
        for seed in seeds:
            accuracy = 0.1 + (final - 0.1) * np.minimum(steps / rise, 1.0)
            last = diverged if diverged is not None else steps[-1]
            kept = steps <= last
            curves.append(
                pd.DataFrame(
                    {
                        "variant": variant,
                        "seed": seed,
                        "step": steps[kept],
                        "train_loss": 1.0,
                        "lr": 0.01,
                        "test_acc": accuracy[kept],
                    }
                )
            )
            summary.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "status": "diverged" if diverged else "completed",
                    "diverged_at_step": diverged,
                    "steps": last,
                    "wall_s": 10.0,
                }
            )
    return pd.concat(curves), pd.DataFrame(summary)


def test_table_measures_steps_to_inceptions_maximum_and_speedups() -> None:
    curves, summary = synthetic()
    table = figure2.table(curves, summary, num_classes=10).set_index("variant")
    assert table.target_acc.iloc[0] == pytest.approx(0.80)
    assert table.steps_to_target["inception"] == 1000
    # BN-x5 rises to 0.84 in 100 steps: 0.80 is first reached at step 100 * 0.70 / 0.74.
    assert table.steps_to_target["bn_x5"] == 100
    assert table.speedup["bn_x5"] == pytest.approx(10.0)
    assert table.speedup["bn_baseline"] == pytest.approx(1000 / 490)
    assert np.isnan(table.steps_to_target["bn_x5_sigmoid"])
    assert table.status["inception_x5"] == "diverged"
    assert table.diverged_at_step["inception_x5"] == 60
    assert table.max_acc["bn_x30"] == pytest.approx(0.86)
    assert table.paper_speedup["bn_x5"] == pytest.approx(31.0 / 2.1)
    verdicts = {claim: holds for claim, _, holds in figure2.verdicts(table.reset_index())}
    assert all(verdicts.values()), verdicts


def test_draw_works_from_the_csv_files_alone(tmp_path) -> None:
    curves, summary = synthetic()
    curves.to_csv(tmp_path / "curves.csv", index=False)
    summary.to_csv(tmp_path / "summary.csv", index=False)
    result = subprocess.run(
        [sys.executable, "experiments/figure2.py", "draw", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "figure2.png").stat().st_size > 10_000
    assert (tmp_path / "figure2.pdf").read_bytes().startswith(b"%PDF")
    readme = (tmp_path / "README.md").read_text()
    assert "| BN-x5 | 100 | 0.8400 | 10.0x | 2.1M | 73.0% | 14.8x |" in readme
    assert "diverged at step 60" in readme
    assert len(pd.read_csv(tmp_path / "table.csv")) == len(RUNS)


def test_committed_results_redraw(tmp_path) -> None:
    """`make figures` on a fresh clone: the committed CSVs alone redraw Figures 2 and 3."""
    committed = REPO / "results" / "figure2"
    if not (committed / "curves.csv").exists():
        pytest.skip("results/figure2 has not been generated in this checkout")
    for name in ("curves.csv", "summary.csv", "provenance.json"):
        shutil.copy(committed / name, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "experiments/figure2.py", "draw", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "README.md").read_text() == (committed / "README.md").read_text()
    assert (tmp_path / "table.csv").read_text() == (committed / "table.csv").read_text()
