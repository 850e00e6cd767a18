"""Noisy BN, the late-layer probe and Santurkar et al.'s diagnostics in the Inception trainer,
and experiments/ics_proxy.py on real tiny runs."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONFIG_DIR, REPO, tiny_proxy
from omegaconf import DictConfig

from bnrepro import inception_checks, inception_data, inception_probes, inception_recipe
from bnrepro import nn as paper_nn
from bnrepro import train_inception as ti
from bnrepro.driver import UsageError
from bnrepro.errors import BnreproError, ConfigError
from bnrepro.experiments.ics import proxy as ics_proxy
from bnrepro.experiments.ics import proxy_protocol, proxy_report

MEASURED = ("late_probe.every=2", "diagnostics.every=2", "diagnostics.multipliers=[0.5,2.0]")


def tiny(experiment: str, *overrides: str) -> DictConfig:
    """`experiment` at the toy size: 4 steps, one thread, a probe of 64 images."""
    return tiny_proxy(
        experiment, "steps=4", "eval_every=2", "log_every=2", "threads=1", "late_probe.size=64",
        *overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sweep(fashion_root, tmp_path_factory):
    """The driver's three recipes, seed 0, probed and diagnosed every 2 steps, laid out as its
    multirun lays them out."""
    root = tmp_path_factory.mktemp("ics_proxy_sweep")
    for variant in proxy_protocol.VARIANTS:
        info = ti.train(tiny(variant, *MEASURED), root / f"{variant}_seed0")
        assert info["status"] == "completed"
    return root


def test_noisy_bn_trains_and_logs_the_probe_and_the_diagnostics(sweep) -> None:
    metrics = pd.read_csv(sweep / "bn_baseline_noisy_seed0" / "metrics.csv")
    assert list(metrics.columns) == [
        *ti.METRIC_COLUMNS, *inception_probes.PROBE_COLUMNS, *inception_probes.DIAGNOSTIC_COLUMNS,
    ]  # fmt: skip
    assert list(metrics.step) == [0, 2, 4]
    probe = metrics[list(inception_probes.PROBE_COLUMNS)].to_numpy()
    assert np.isfinite(probe).all() and (np.diff(probe, axis=1) >= 0).all()
    # Step 0 is diagnosed by no step; every later row is, with cosines in [-1, 1].
    diagnosed = metrics.loc[1:, list(inception_probes.DIAGNOSTIC_COLUMNS)]
    assert metrics.loc[0, list(inception_probes.DIAGNOSTIC_COLUMNS)].isna().all()
    assert np.isfinite(diagnosed.to_numpy()).all()
    cosines = diagnosed.filter(like="ics_cos_").to_numpy()
    assert (np.abs(cosines) <= 1 + 1e-6).all()
    assert (diagnosed.filter(like="ics_l2_").to_numpy() >= 0).all()
    assert metrics.train_loss.dropna().map(np.isfinite).all()
    # Evaluation is plain BN: the noise is in training mode only, and it moved the probe.
    bn = pd.read_csv(sweep / "bn_baseline_seed0" / "metrics.csv")
    assert metrics.loc[0, "p50"] == bn.loc[0, "p50"]  # no step yet, no noise yet
    assert metrics.loc[1, "p50"] != bn.loc[1, "p50"]
    weights = torch.load(sweep / "bn_baseline_noisy_seed0" / "model.pt", weights_only=True)
    scales = [v for k, v in weights.items() if k.endswith("noise_scale")]
    assert scales and all(((s >= 0.75) & (s <= 1.25)).all() for s in scales)
    assert not all(torch.equal(s, torch.ones_like(s)) for s in scales)


def test_a_run_without_measurements_writes_what_it_always_wrote(sweep, tmp_path) -> None:
    """Off by default: no extra column. On, the diagnostics change nothing the run logs."""
    ti.train(tiny("bn_baseline_noisy", "late_probe.every=2"), tmp_path / "probed")
    probed = pd.read_csv(tmp_path / "probed" / "metrics.csv")
    assert list(probed.columns) == [*ti.METRIC_COLUMNS, *inception_probes.PROBE_COLUMNS]
    diagnosed = pd.read_csv(sweep / "bn_baseline_noisy_seed0" / "metrics.csv")
    pd.testing.assert_frame_equal(probed, diagnosed[probed.columns])
    cfg = tiny("bn_baseline")
    assert ti.metric_columns(cfg) == ti.METRIC_COLUMNS


def test_noise_depends_on_seed_and_step_only_and_lands_in_place() -> None:
    cfg = tiny("bn_baseline_noisy")
    settings = inception_recipe.recipe_settings(cfg)

    def drawn(seed: int, step: int, model=None) -> list[torch.Tensor]:
        model = model or inception_recipe.build_model(cfg, settings)
        inception_data.BNNoiseDraws(model, [seed]).resample(step)
        return [b.clone() for name, b in model.named_buffers() if "noise" in name]

    model = inception_recipe.build_model(cfg, settings)
    layers = [m for m in model.modules() if isinstance(m, paper_nn.NoisyBatchNorm)]
    assert len(layers) > 50  # every BN of the net is noisy
    addresses = [m.noise_scale.data_ptr() for m in layers]
    first = drawn(0, 7, model)
    assert [m.noise_scale.data_ptr() for m in layers] == addresses
    assert all(torch.equal(a, b) for a, b in zip(first, drawn(0, 7), strict=True))
    assert not torch.equal(torch.cat(first), torch.cat(drawn(0, 8)))
    assert not torch.equal(torch.cat(first), torch.cat(drawn(1, 7)))
    scales, shifts = torch.cat(first[0::2]), torch.cat(first[1::2])
    assert scales.min() >= 0.75 and scales.max() <= 1.25 and shifts.abs().max() <= 0.25
    assert scales.std() > 0.1 and shifts.std() > 0.1
    assert not inception_data.BNNoiseDraws(
        inception_recipe.build_model(tiny("bn_baseline"), settings), [0]
    )


def test_resume_draws_the_same_noise(fashion_root, tmp_path, monkeypatch) -> None:
    """The probe reads every step's noise: a run that crashes after its checkpoint at step 3
    and resumes logs the uninterrupted run's bytes."""
    overrides = (
        "steps=6",
        "checkpoint_every=3",
        "log_every=1",
        "eval_every=3",
        "late_probe.every=1",
    )
    ti.train(tiny("bn_baseline_noisy", *overrides), tmp_path / "straight")
    distort, calls = inception_data.distort, []

    def crash_at_step_5(*args):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("simulated crash")
        return distort(*args)

    monkeypatch.setattr(inception_data, "distort", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ti.train(tiny("bn_baseline_noisy", *overrides), tmp_path / "split")
    monkeypatch.setattr(inception_data, "distort", distort)
    info = ti.train(tiny("bn_baseline_noisy", *overrides, "resume=true"), tmp_path / "split")
    assert info["resumed_from_step"] == 3 and info["status"] == "completed"
    straight = (tmp_path / "straight" / "metrics.csv").read_bytes()
    assert (tmp_path / "split" / "metrics.csv").read_bytes() == straight
    p50 = pd.read_csv(tmp_path / "straight" / "metrics.csv").p50
    assert p50.diff().abs()[1:].min() > 0  # new noise every step


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (("model.norm=noisy",), "model.norm='noisy'"),
        (("experiment=bn_baseline_noisy", "model.norm=torch"), "model.noise"),
        (("experiment=bn_baseline_noisy", "model.batch_norm=false"), "model.batch_norm"),
        (("experiment=bn_baseline_noisy", "model.noise.scale_min=3"), "scale_min"),
        (("late_probe.unit=22",), r"late_probe.unit=22\. Pick a channel in 0\.\.21"),
        (("diagnostics.multipliers=[0.0]",), "diagnostics.multipliers"),
    ],
)
def test_bad_values_are_refused(overrides, match) -> None:
    experiment = "bn_baseline"
    rest = [o for o in overrides if not o.startswith("experiment=")]
    experiment = next((o[11:] for o in overrides if o.startswith("experiment=")), experiment)
    with pytest.raises(ConfigError, match=match):
        inception_checks.validate(tiny(experiment, *rest))


def collect(runs, out) -> None:
    """`python experiments/ics_proxy.py collect --quick --runs <runs> --out <out>`, in process."""
    argv = ["collect", "--quick", "--runs", str(runs), "--out", str(out)]
    proxy_protocol.collect(ics_proxy.DRIVER.invocation(argv))


@pytest.mark.integration
def test_the_driver_collects_and_draws_the_runs(sweep, tmp_path) -> None:
    collect(sweep, tmp_path)
    proxy_report.draw(tmp_path)
    for stem in ("accuracy", "percentiles", "ics", "smoothness", "train_loss"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert list(claims.columns) == ["claim", "measured", "threshold", "verdict", "threshold_fixed"]
    assert len(claims) == len(list((REPO / "thresholds" / "ics_proxy").glob("*.yaml")))
    assert set(claims.verdict) <= {"pass", "fail", "inconclusive"}
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert set(curves.variant) == set(proxy_protocol.VARIANTS) and curves.p50.notna().all()
    diagnostics = pd.read_csv(tmp_path / "diagnostics.csv")
    assert list(diagnostics.step.unique()) == [2, 4]
    readme = (tmp_path / "README.md").read_text()
    assert "## What the data supports" in readme and "U(0.75, 1.25)" in readme
    assert "wall" not in (tmp_path / "summary.csv").read_text()


@pytest.mark.integration
def test_the_driver_refuses_runs_that_were_not_diagnosed(sweep, tmp_path) -> None:
    shutil.copytree(sweep, tmp_path / "runs")
    path = tmp_path / "runs" / "bn_baseline_noisy_seed0" / "metrics.csv"
    metrics = pd.read_csv(path)
    metrics[list(inception_probes.DIAGNOSTIC_COLUMNS)] = np.nan
    path.write_text(metrics.to_csv(index=False))
    with pytest.raises(BnreproError, match="diagnostics.every > 0"):
        collect(tmp_path / "runs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_presets_are_the_config_groups_with_the_measurements(monkeypatch, two_gpus) -> None:
    """The sizes come from configs/preset/ (as for figure2); the driver adds its seeds, its
    runs at a time and the measurements' cadences, and `--device` goes to every run."""
    files = {p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml")}
    # figure2's packed protocol and its campaign are figure2's alone
    assert set(proxy_protocol.PRESETS) == files - {"gpu_plateau", "cpu_plateau"}
    with pytest.raises(UsageError, match="invalid choice: 'gpu_plateau'"):
        ics_proxy.DRIVER.invocation(["run", "--preset", "gpu_plateau"])
    calls = []
    monkeypatch.setattr(proxy_protocol.driver, "multirun", lambda *call: calls.append(call))
    proxy_protocol.run(
        ics_proxy.DRIVER.invocation(["run", "--preset", "gpu", "--device", "cuda:1"])
    )
    [(overrides, _, _, jobs)] = calls
    assert {"preset=gpu", "seeds=[0],[1],[2]", "device=cuda:1"} <= set(overrides)
    assert "++late_probe.every=50" in overrides and "diagnostics.every=500" in overrides
    assert jobs == 1


@pytest.mark.integration
def test_run_quick_end_to_end(fashion_root, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "experiments/ics_proxy.py", "run", "--quick", "--out",
         str(tmp_path / "out"), "--runs", str(tmp_path / "runs")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "s wall" in result.stdout
    claims = pd.read_csv(tmp_path / "out" / "claims.csv")
    assert len(claims) == len(list((REPO / "thresholds" / "ics_proxy").glob("*.yaml")))
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["preset"] == "quick" and len(provenance["wall_s"]) == 3


@pytest.mark.cuda
def test_cuda_graph_replays_read_each_steps_noise(fashion_root, tmp_path) -> None:
    """Noisy BN under a CUDA graph: the noise copied into the buffers before each replay is the
    noise the replay uses, so the graphed run follows the eager one (as the plain recipes do,
    tests/test_inception_train.py) and its probe moves every step."""
    overrides = ("device=cuda", "steps=120", "eval_every=40", "log_every=10", "late_probe.every=10")
    runs = {}
    for name, graph in (("eager", False), ("eager_again", False), ("graphed", True)):
        cfg = tiny("bn_baseline_noisy", *overrides, f"cuda_graph={graph}")
        info = ti.train(cfg, tmp_path / name)
        assert info["cuda_graph"] == graph and info["status"] == "completed"
        runs[name] = pd.read_csv(tmp_path / name / "metrics.csv")
    eager, graphed = runs["eager"].train_loss[1:], runs["graphed"].train_loss[1:]
    noise = (eager - runs["eager_again"].train_loss[1:]).abs().div(eager.abs()).max()
    np.testing.assert_allclose(graphed, eager, rtol=max(1e-4, 4 * noise))
    assert runs["graphed"].p50.diff().abs()[1:].min() > 0
