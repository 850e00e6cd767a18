"""Figure 1 end to end: short runs of both nets -> curves/summary CSVs -> figure and README."""

import importlib.util
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from bnrepro.train import train


def load_driver():
    spec = importlib.util.spec_from_file_location("figure1_driver", REPO / "experiments/figure1.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figure1_csvs(tmp_path_factory, mnist_root):
    """curves.csv and summary.csv collected from short real runs of both nets."""
    from conftest import compose_train
    from omegaconf import open_dict

    runs = tmp_path_factory.mktemp("runs")
    out = tmp_path_factory.mktemp("figure1")
    for model, variant in (("mlp", "plain"), ("mlp_bn", "bn")):
        cfg = compose_train(
            ["experiment=figure1", f"model={model}", "seeds=[0,1]", "steps=200", "eval_every=100",
             "probe.every=50", "probe.size=200", "device=cpu", f"data.root={mnist_root}",
             "logger.wandb.mode=disabled"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg, runs / variant)
    load_driver().collect(runs, out, "test")
    return out


def test_collect_writes_the_documented_columns(figure1_csvs) -> None:
    curves = pd.read_csv(figure1_csvs / "curves.csv")
    summary = pd.read_csv(figure1_csvs / "summary.csv")
    assert list(curves.columns) == ["variant", "seed", "step", "test_acc", "p15", "p50", "p85"]
    assert list(summary.columns)[:5] == ["variant", "seed", "final_test_acc", "steps", "wall_s"]
    assert set(curves.variant) == set(summary.variant) == {"plain", "bn"}
    assert len(summary) == 4 and (summary.steps == 200).all()
    bn_final = summary[summary.variant == "bn"].final_test_acc
    plain_final = summary[summary.variant == "plain"].final_test_acc
    assert bn_final.min() > plain_final.max(), "after 200 steps BN is far ahead of the plain net"


def test_draw_works_from_the_csv_files_alone(figure1_csvs, tmp_path) -> None:
    for name in ("curves.csv", "summary.csv"):
        shutil.copy(figure1_csvs / name, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "experiments/figure1.py", "draw", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "figure1.png").stat().st_size > 10_000
    assert (tmp_path / "figure1.pdf").read_bytes().startswith(b"%PDF")
    readme = (tmp_path / "README.md").read_text()
    assert "| without BN |" in readme and "| with BN |" in readme and "≈ 0.98" in readme


def test_committed_results_redraw(tmp_path) -> None:
    """`make figures` on a fresh clone: the committed CSVs alone redraw Figure 1."""
    committed = REPO / "results" / "figure1"
    if not (committed / "curves.csv").exists():
        pytest.skip("results/figure1 has not been generated in this checkout")
    for name in ("curves.csv", "summary.csv", "provenance.json"):
        shutil.copy(committed / name, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "experiments/figure1.py", "draw", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "README.md").read_text() == (committed / "README.md").read_text()
