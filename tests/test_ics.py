"""Santurkar et al.'s diagnostics (bnrepro.ics_measures) and noisy BN (bnrepro.nn.NoisyBatchNorm)
against cases with a known answer."""

import copy
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO
from torch import nn

from bnrepro import ics_measures, verdicts
from bnrepro.driver import UsageError
from bnrepro.errors import ConfigError
from bnrepro.experiments import ics as ics_driver
from bnrepro.experiments.ics import analysis as ics_analysis
from bnrepro.experiments.ics import protocol as ics_protocol
from bnrepro.experiments.ics import report as ics_report
from bnrepro.models.mlp import MLP
from bnrepro.nn import NoisyBatchNorm
from bnrepro.train import train
from bnrepro.train_mlp import METRIC_COLUMNS, diagnostic_columns

MULTIPLIERS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0)

# --------------------------------------------------------------------------- noisy BN


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_noisy_bn_output_has_the_drawn_mean_and_scale_per_channel():
    torch.manual_seed(0)
    bn = NoisyBatchNorm(6, scale_min=0.5, scale_max=3.0, shift=2.0, eps=1e-9)
    bn.resample(generators(1))
    x = torch.randn(4096, 6) * 5 + 3
    y = bn(x)
    torch.testing.assert_close(y.mean(0), bn.noise_shift, atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0, correction=0), bn.noise_scale, atol=1e-4, rtol=1e-4)
    assert bn.noise_scale.min() >= 0.5 and bn.noise_scale.max() <= 3.0
    assert bn.noise_shift.abs().max() <= 2.0
    assert (bn.noise_shift != 0).all() and (bn.noise_scale != 1).all()


def test_noisy_bn_draws_follow_their_distribution():
    bn = NoisyBatchNorm(20_000, scale_min=0.5, scale_max=2.5, shift=1.0)
    bn.resample(generators(3))
    # U(a, b): mean (a + b) / 2, std (b - a) / sqrt(12); 20,000 draws: the means within 0.02
    assert bn.noise_scale.mean().item() == pytest.approx(1.5, abs=0.02)
    assert bn.noise_scale.std().item() == pytest.approx(2.0 / math.sqrt(12), abs=0.02)
    assert bn.noise_shift.mean().item() == pytest.approx(0.0, abs=0.02)
    assert bn.noise_shift.std().item() == pytest.approx(2.0 / math.sqrt(12), abs=0.02)


def test_noisy_bn_noise_changes_only_on_resample_and_each_group_has_its_own_stream():
    bn = NoisyBatchNorm(6, scale_min=0.5, scale_max=2.0, shift=1.0)
    gens = generators(0, 1)
    bn.resample(gens)
    x = torch.randn(32, 6)
    assert torch.equal(bn(x), bn(x))  # held fixed between resamples
    first = bn.noise_scale.clone()
    bn.resample(gens)
    assert not torch.equal(first, bn.noise_scale)  # a new step, new noise
    # group 1 (channels 3..5) drew from its own generator: the same as alone with seed 1
    alone = NoisyBatchNorm(3, scale_min=0.5, scale_max=2.0, shift=1.0)
    solo = generators(1)
    alone.resample(solo)
    alone.resample(solo)
    torch.testing.assert_close(bn.noise_scale[3:], alone.noise_scale, rtol=0, atol=0)
    torch.testing.assert_close(bn.noise_shift[3:], alone.noise_shift, rtol=0, atol=0)
    with pytest.raises(ValueError, match="equal groups"):
        bn.resample(generators(0, 1, 2, 3))


@pytest.mark.parametrize("shape", [(16, 4), (8, 4, 5, 3)])
def test_noisy_bn_is_bn_in_eval_and_keeps_bn_running_statistics(shape):
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4) if len(shape) == 4 else nn.BatchNorm1d(4)
    noisy = NoisyBatchNorm(4, scale_min=0.2, scale_max=4.0, shift=3.0)
    with torch.no_grad():
        for bn in (reference, noisy):
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
            bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.3]))
    noisy.resample(generators(5))
    for _ in range(3):
        x = torch.randn(shape) * 2 + 1
        y_ref, y_noisy = reference(x), noisy(x)
        assert not torch.allclose(y_ref, y_noisy)  # training: the noise is there
        channel = [1, -1] + [1] * (len(shape) - 2)
        expected = y_ref * noisy.noise_scale.reshape(channel) + noisy.noise_shift.reshape(channel)
        torch.testing.assert_close(y_noisy, expected)
    torch.testing.assert_close(noisy.running_mean, reference.running_mean)
    torch.testing.assert_close(noisy.running_var, reference.running_var)
    reference.eval(), noisy.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(noisy(x), reference(x), rtol=0, atol=0)


def test_noisy_bn_rejects_bad_parameters():
    with pytest.raises(ValueError, match="scale_min"):
        NoisyBatchNorm(3, scale_min=2.0, scale_max=1.0, shift=0.0)
    with pytest.raises(ValueError, match="shift"):
        NoisyBatchNorm(3, scale_min=1.0, scale_max=1.0, shift=-1.0)


# --------------------------------------------------------------------------- landscape


class Quadratic(nn.Module):
    """loss = 0.5 w^T A w per member, w of shape (members, d)."""

    def __init__(self, a: torch.Tensor, w: torch.Tensor):
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(w.clone())

    def forward(self, _inputs) -> torch.Tensor:
        return 0.5 * torch.einsum("md,de,me->m", self.w, self.a, self.w)


def quadratic_loss(model: nn.Module, inputs) -> torch.Tensor:
    return model(inputs)


def test_beta_smoothness_of_a_quadratic_is_its_top_hessian_eigenvalue():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    eigenvalues = torch.tensor([4.0, 2.5, 1.0, 0.5, 0.1], dtype=torch.float64)
    a = q @ torch.diag(eigenvalues) @ q.T
    # member 0 starts on the top eigenvector: beta is exactly lambda_max; member 1 anywhere:
    # the ratio ||A g|| / ||g|| lies between the smallest and the largest eigenvalue
    w = torch.stack([3.0 * q[:, 0], torch.randn(5, dtype=torch.float64)])
    model = Quadratic(a, w)
    loss = ics_measures.functional_loss(model, quadratic_loss, None)
    lr = torch.tensor([0.1, 0.05], dtype=torch.float64)
    result = ics_measures.landscape(
        loss, ics_measures.current_params(model), lr, MULTIPLIERS, members=2
    )
    assert result.beta[0].item() == pytest.approx(4.0, rel=1e-12)
    assert 0.1 <= result.beta[1].item() <= 4.0 + 1e-12
    g = w[1] @ a
    assert result.beta[1].item() == pytest.approx(((g @ a).norm() / g.norm()).item(), rel=1e-12)
    # gradient predictiveness: the largest step's change, eta_max ||A g||
    eta = lr * max(MULTIPLIERS)
    assert result.grad_change[0].item() == pytest.approx(eta[0].item() * 4.0 * 4.0 * 3.0, rel=1e-12)
    # loss range on member 0: L(eta) = 0.5 lambda (1 - eta lambda)^2 |w|^2 over the points
    values = [0.5 * 4.0 * (1 - m * 0.1 * 4.0) ** 2 * 9.0 for m in MULTIPLIERS]
    assert result.loss_range[0].item() == pytest.approx(max(values) - min(values), rel=1e-12)


# --------------------------------------------------------------------------- ICS


class ScalarChain(nn.Module):
    """Two scalar layers: loss = 0.5 (w2 * w1 * x - y)^2."""

    def __init__(self, w1: float, w2: float):
        super().__init__()
        self.first = nn.Linear(1, 1, bias=False)
        self.second = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.first.weight.fill_(w1)
            self.second.weight.fill_(w2)

    def forward(self, x):
        return self.second(self.first(x))


def chain_loss(model, batch):
    x, y = batch
    return (0.5 * (model(x) - y) ** 2).sum().reshape(1)


def test_ics_of_a_two_layer_chain_matches_the_hand_computed_gradients():
    w1, w2, x, y, lr = 0.8, -1.5, 2.0, 1.0, 0.1
    model = ScalarChain(w1, w2).double()
    batch = (torch.tensor([[x]], dtype=torch.float64), torch.tensor([[y]], dtype=torch.float64))
    loss = ics_measures.functional_loss(model, chain_loss, batch)
    order = ics_measures.forward_order(model, lambda: model(batch[0]))
    assert order == ["first.weight", "second.weight"]
    shifts = ics_measures.internal_covariate_shift(
        loss, ics_measures.current_params(model), order, order, lr=lr, members=1
    )
    residual = w2 * w1 * x - y
    g2 = residual * w1 * x
    w1_after = w1 - lr * residual * w2 * x
    g2_after = (w2 * w1_after * x - y) * w1_after * x
    assert shifts["second.weight"].l2.item() == pytest.approx(abs(g2 - g2_after) / abs(g2))
    assert shifts["second.weight"].cosine.item() == pytest.approx(math.copysign(1, g2 * g2_after))
    # the first layer has nothing below it
    assert shifts["first.weight"].l2.item() == 0.0
    assert shifts["first.weight"].cosine.item() == pytest.approx(1.0)


def test_ics_of_a_single_layer_net_is_zero():
    torch.manual_seed(0)
    model = nn.Linear(10, 3)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    loss = ics_measures.functional_loss(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (x, y))
    order = ics_measures.forward_order(model, lambda: model(x))
    shifts = ics_measures.internal_covariate_shift(
        loss, ics_measures.current_params(model), order, ["weight"], lr=0.5
    )
    assert shifts["weight"].l2.item() == 0.0
    assert shifts["weight"].cosine.item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- the MLP, members


def mlp(norm, members=2, seeds=(0, 1)) -> MLP:
    model = MLP(members, [20, 8, 8, 3], "sigmoid", norm)
    model.init_gaussian(0.5, list(seeds))
    return model


def noisy(channels: int) -> NoisyBatchNorm:
    return NoisyBatchNorm(channels, scale_min=0.5, scale_max=2.0, shift=1.0)


def mlp_loss(model, batch):
    x, y = batch
    logits = model(x)
    return (
        F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        .view(len(x), -1)
        .mean(1)
    )


def weight_names(model: MLP) -> list[str]:
    return [f"hidden.{i}.weight" for i in range(len(model.hidden))] + ["classifier.weight"]


def measure(model, batch, lr):
    loss = ics_measures.functional_loss(model, mlp_loss, batch)
    params = ics_measures.current_params(model)
    order = ics_measures.forward_order(model, lambda: model(batch[0]))
    shifts = ics_measures.internal_covariate_shift(loss, params, order, weight_names(model), lr, 2)
    return shifts, ics_measures.landscape(loss, params, lr, MULTIPLIERS, 2)


@pytest.mark.parametrize("norm", [None, nn.BatchNorm1d, noisy])
def test_diagnostics_leave_weights_buffers_gradients_and_optimizer_unchanged(norm):
    torch.manual_seed(0)
    model = mlp(norm)
    if norm is noisy:
        for module in model.modules():
            if isinstance(module, NoisyBatchNorm):
                module.resample(generators(0, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(2, 16, 20), torch.randint(0, 3, (2, 16))
    mlp_loss(model, (x, y)).sum().backward()
    optimizer.step()  # momentum buffers and .grad exist
    state = copy.deepcopy(model.state_dict())
    grads = [p.grad.clone() for p in model.parameters()]
    momentum = copy.deepcopy(optimizer.state_dict())
    shifts, result = measure(model, (x, y), torch.tensor([0.1, 0.3]))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    after = optimizer.state_dict()["state"]
    for key, value in momentum["state"].items():
        assert torch.equal(after[key]["momentum_buffer"], value["momentum_buffer"])
    assert model.training
    for shift in shifts.values():
        assert shift.l2.shape == (2,) and torch.isfinite(shift.l2).all()
    assert (shifts["hidden.0.weight"].l2 == 0).all()  # nothing below the first layer
    assert (shifts["classifier.weight"].l2 > 0).all()
    for value in (result.loss_range, result.grad_change, result.beta):
        assert value.shape == (2,) and (value > 0).all()


@pytest.mark.parametrize("norm", [None, nn.BatchNorm1d, noisy])
def test_each_members_diagnostics_equal_its_own_single_member_net(norm):
    """Member 1 of a two-member net measures what the net of its seed alone measures."""
    torch.manual_seed(0)
    pair, solo = mlp(norm), mlp(norm, members=1, seeds=(1,))
    if norm is noisy:
        for module in pair.modules():
            if isinstance(module, NoisyBatchNorm):
                module.resample(generators(0, 1))
        for module in solo.modules():
            if isinstance(module, NoisyBatchNorm):
                module.resample(generators(1))
    x, y = torch.randn(2, 16, 20), torch.randint(0, 3, (2, 16))
    lr = torch.tensor([0.1, 0.3])
    shifts, result = measure(pair, (x, y), lr)
    loss = ics_measures.functional_loss(solo, mlp_loss, (x[1:], y[1:]))
    order = ics_measures.forward_order(solo, lambda: solo(x[1:]))
    params = ics_measures.current_params(solo)
    solo_shifts = ics_measures.internal_covariate_shift(
        loss, params, order, weight_names(solo), 0.3, 1
    )
    solo_result = ics_measures.landscape(loss, params, 0.3, MULTIPLIERS, 1)
    for name, shift in shifts.items():
        torch.testing.assert_close(shift.l2[1:], solo_shifts[name].l2, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(shift.cosine[1:], solo_shifts[name].cosine)
    for field in ("loss_range", "grad_change", "beta"):
        torch.testing.assert_close(
            getattr(result, field)[1:], getattr(solo_result, field), rtol=1e-4, atol=1e-6
        )


# --------------------------------------------------------------------------- the trainer


def diagnosed_run(small_cfg, tmp_path, *overrides: str) -> pd.DataFrame:
    train(small_cfg(*overrides), tmp_path)
    return pd.read_csv(tmp_path / "metrics.csv")


@pytest.mark.parametrize("model", ["mlp", "mlp_noisy"])
def test_trainer_logs_diagnostics_without_changing_the_training(small_cfg, tmp_path, model):
    """diagnostics.every=100 adds the columns, filled at its steps only, and every other
    column is the run without diagnostics, byte for byte."""
    with_them = diagnosed_run(
        small_cfg, tmp_path / "on", f"model={model}", "seeds=[0,1]", "diagnostics.every=100"
    )
    without = diagnosed_run(small_cfg, tmp_path / "off", f"model={model}", "seeds=[0,1]")
    cfg = small_cfg(f"model={model}", "diagnostics.every=100")
    columns = diagnostic_columns(cfg)
    assert columns == (
        "ics_l2_2", "ics_l2_3", "ics_l2_4", "ics_cos_2", "ics_cos_3", "ics_cos_4",
        "loss_range", "grad_change", "beta",
    )  # fmt: skip
    assert list(with_them.columns) == [*METRIC_COLUMNS, *columns]
    assert list(without.columns) == list(METRIC_COLUMNS)
    pd.testing.assert_frame_equal(with_them[list(METRIC_COLUMNS)], without, check_exact=True)
    filled = with_them.dropna(subset=list(columns), how="all")
    assert filled[list(columns)].notna().all().all()
    assert sorted(set(filled.step)) == [100, 200, 300]
    assert (filled[[c for c in columns if c.startswith("ics_l2")]] > 0).all().all()
    assert (filled[[c for c in columns if c.startswith("ics_cos")]].abs() <= 1 + 1e-6).all().all()
    assert (filled[["loss_range", "grad_change", "beta"]] > 0).all().all()


def test_noisy_member_equals_its_single_seed_run_and_is_less_stable_than_bn(small_cfg, tmp_path):
    """Each member draws its own noise: member 8 of three is the run of seed 8 alone. Its
    probed sigmoid input moves further between probes than the BN net's."""
    together = diagnosed_run(small_cfg, tmp_path / "together", "model=mlp_noisy", "seeds=[5,8,13]")
    alone = diagnosed_run(small_cfg, tmp_path / "alone", "model=mlp_noisy", "seeds=[8]")
    member = together[together.seed == 8].reset_index(drop=True)
    pd.testing.assert_frame_equal(member, alone, check_exact=False, atol=1e-5, rtol=0)
    bn = diagnosed_run(small_cfg, tmp_path / "bn", "model=mlp_bn", "seeds=[8]")

    def drift(metrics: pd.DataFrame) -> float:
        return metrics[["p15", "p50", "p85"]].diff().abs().mean().mean()

    assert drift(alone) > 3 * drift(bn)


def test_noisy_run_with_diagnostics_resumes_to_the_same_bytes(small_cfg, tmp_path):
    overrides = ("model=mlp_noisy", "seeds=[0,1]", "diagnostics.every=100")
    train(small_cfg(*overrides, "steps=200"), tmp_path / "resumed")
    train(small_cfg(*overrides, "steps=300", "resume=true"), tmp_path / "resumed")
    train(small_cfg(*overrides, "steps=300"), tmp_path / "straight")
    resumed = (tmp_path / "resumed" / "metrics.csv").read_bytes()
    assert resumed == (tmp_path / "straight" / "metrics.csv").read_bytes()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("diagnostics.every=-1", "diagnostics.every"),
        ("diagnostics.multipliers=[]", "diagnostics.multipliers"),
        ("model.norm=noisy", "model.norm"),
        ("model.noise.shift=-1", "model.noise.shift"),
    ],
)
def test_bad_diagnostics_and_noise_values_are_named(small_cfg, tmp_path, override, named):
    model = "model=mlp_noisy" if override.startswith("model.noise") else "model=mlp_bn"
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        train(small_cfg(model, override), tmp_path)


@pytest.mark.cuda
def test_cuda_graphed_noisy_run_with_diagnostics_follows_the_eager_run(small_cfg, tmp_path):
    """The noise is copied into the graph's buffers between replays; the diagnostics run
    eagerly beside the graph."""
    overrides = ("model=mlp_noisy", "seeds=[0,1]", "device=cuda", "diagnostics.every=100")
    runs = {}
    for graph in (False, True):
        info = train(small_cfg(*overrides, f"cuda_graph={graph}"), tmp_path / str(graph))
        assert info["cuda_graph"] == graph and info["status"] == "completed"
        runs[graph] = pd.read_csv(tmp_path / str(graph) / "metrics.csv")
    pd.testing.assert_frame_equal(runs[True], runs[False], check_exact=False, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------- the driver


def run_driver(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "experiments/ics.py", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def ics_csvs(tmp_path_factory, mnist_root):
    """Short real runs of the three nets with diagnostics, collected and drawn."""
    from conftest import compose_train
    from omegaconf import open_dict

    runs = tmp_path_factory.mktemp("runs")
    for variant, model in ics_protocol.MODELS.items():
        cfg = compose_train(
            ["experiment=figure1", f"model={model}", "seeds=[0,1]", "steps=200", "eval_every=100",
             "probe.every=50", "probe.size=200", "diagnostics.every=50", "device=cpu",
             f"data.root={mnist_root}", "logger.wandb.mode=disabled"]
        )  # fmt: skip
        with open_dict(cfg):
            cfg.pop("hydra", None)
        train(cfg, runs / variant)
    out = tmp_path_factory.mktemp("ics")
    ics_protocol.collect(
        ics_driver.DRIVER.invocation(["collect", "--runs", str(runs), "--out", str(out)])
    )
    ics_report.draw(out)
    return out


@pytest.mark.integration
def test_collect_and_draw_write_every_file_with_its_columns(ics_csvs):
    diagnostics = pd.read_csv(ics_csvs / "diagnostics.csv")
    assert list(diagnostics.columns[:3]) == ["variant", "seed", "step"]
    assert sorted(set(diagnostics.step)) == [50, 100, 150, 200]
    assert set(diagnostics.variant) == {"plain", "bn", "noisy"}
    assert diagnostics.notna().all().all()
    claims = pd.read_csv(ics_csvs / "claims.csv")
    assert list(claims.columns) == ["claim", "measured", "threshold", "verdict", "threshold_fixed"]
    assert len(claims) == 7 and set(claims.verdict) <= {"pass", "fail", "inconclusive"}
    assert claims.claim.str.contains("test accuracy at step 200").any()
    for stem in ("accuracy", "percentiles", "ics", "smoothness", "train_loss"):
        assert (ics_csvs / f"{stem}.png").stat().st_size > 10_000
        assert (ics_csvs / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    readme = (ics_csvs / "README.md").read_text()
    assert "## What the data supports" in readme and "On this net " in readme
    assert "`thresholds/ics/<key>.yaml`" in readme
    assert "## History of this result" not in readme, "the history is the committed protocol's"
    assert "- command: `python experiments/ics.py collect`" in readme
    assert str(ics_csvs) not in readme
    assert "scaled by U(0.5, 2) and shifted by U(-1, 1)" in readme


@pytest.mark.integration
def test_draw_from_the_csv_files_alone_is_byte_identical(ics_csvs, tmp_path):
    for name in ("curves.csv", "diagnostics.csv", "summary.csv", "provenance.json"):
        shutil.copy(ics_csvs / name, tmp_path / name)
    result = run_driver("draw", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("claims.csv", "README.md", "ics.pdf", "smoothness.pdf"):
        assert (tmp_path / name).read_bytes() == (ics_csvs / name).read_bytes(), name


@pytest.mark.integration
def test_draw_refuses_a_truncated_diagnostics_csv_and_writes_nothing(ics_csvs, tmp_path):
    for name in ("curves.csv", "diagnostics.csv", "summary.csv", "provenance.json"):
        shutil.copy(ics_csvs / name, tmp_path / name)
    with open(tmp_path / "diagnostics.csv", "r+b") as f:
        f.truncate(f.seek(0, 2) - 3)
    result = run_driver("draw", "--out", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "diagnostics.csv ends in the middle of a line" in result.stderr
    assert "Fix: " in result.stderr and not (tmp_path / "claims.csv").exists()


@pytest.mark.integration
def test_collect_refuses_runs_without_diagnostics(small_cfg, tmp_path):
    for variant, model in ics_protocol.MODELS.items():
        train(small_cfg(f"model={model}", "steps=20", "eval_every=10"), tmp_path / variant)
    result = run_driver("collect", "--runs", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "logged no diagnostics" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("values", "verdict"),
    [((0.5, 0.7, 0.9), "pass"), ((1.2, 1.0), "fail"), ((0.8, 1.3), "inconclusive")],
)
def test_a_claim_passes_when_every_seed_meets_it_and_is_inconclusive_when_seeds_disagree(
    values, verdict
):
    """Claim (c)'s beta is judged against thresholds/ics/beta.yaml (< 1), seed by
    seed, and against an earlier threshold when asked (the row of a changed threshold)."""
    claim = ics_analysis.Claim.of("beta", pd.Series(values))
    stated = yaml.safe_load((REPO / "thresholds/ics/beta.yaml").read_text())
    assert (
        (claim.threshold.relation, claim.threshold.value)
        == ("<", 1.0)
        == tuple(stated[k] for k in ("relation", "value"))
    )
    assert claim.text == stated["claim"]
    assert claim.verdict() == verdict
    assert claim.row(None)["threshold"] == "< 1"
    assert claim.row(None)["threshold_fixed"] == "not recorded (provenance.json names no commit)"
    looser = verdicts.Threshold("ics", "beta", "beta", "<", 2.0)
    assert claim.verdict(looser) == "pass"


def claim_set(ics_ratio: float, smooth_ratios: tuple[float, ...]) -> list:
    """Claims of 3 seeds: (a) passing (the input without BN drifting 2.5 times as far as
    with BN), the ICS ratio `ics_ratio`, and each landscape measure
    with its seeds' ratios from `smooth_ratios` (one value for all three seeds, or three)."""
    per_seed = {"accuracy": (-0.001,), "drift_bn": (5.0,), "drift_plain": (2.0,),
                "ics": (ics_ratio,)}  # fmt: skip
    per_seed |= dict(zip(("loss_range", "grad_change", "beta"), smooth_ratios, strict=True))
    return [
        ics_analysis.Claim.of(key, pd.Series(list(values) * (3 // len(values))), step=5000)
        for key, values in per_seed.items()
    ]


# What the last line says of the premise of the ICS hypothesis, when the drift says BN steadies
# the input and the gradient-based measure says it does not (CONTRADICTS) or does (SUPPORTS).
PREMISE = (
    "the gradient-based ICS measure {} the premise of the paper's ICS hypothesis (that BN "
    "reduces internal covariate shift) and the percentile drift supports it; the data "
)
CONTRADICTS, SUPPORTS = PREMISE.format("contradicts"), PREMISE.format("supports")


@pytest.mark.parametrize(
    ("ics_ratio", "smooth", "supported", "landscape"),
    [
        (2.0, ((0.5,),) * 3,
         f"{CONTRADICTS}supports the smoothness explanation in all three of its measures",
         "each measure is consistent across seeds, and the measures agree with each other"),
        (0.5, ((0.5,), (2.0,), (2.0,)),
         f"{SUPPORTS}supports the smoothness explanation in one of its three measures only (the "
         "loss range)",
         "each measure is consistent across seeds, and the measures disagree with each other"),
        (2.0, ((2.0,),) * 3,
         f"{CONTRADICTS}supports the smoothness explanation in none of its three measures",
         "each measure is consistent across seeds, and the measures agree with each other"),
        (2.0, ((0.5,), (0.5,), (0.5, 2.0, 0.5)),
         f"{CONTRADICTS}supports the smoothness explanation in two of its three measures only "
         "(the loss range and gradient predictiveness)",
         "only the loss range and gradient predictiveness are consistent across seeds, and the "
         "measures disagree with each other"),
    ],
    ids=["smoothness", "ics, loss range", "neither", "one measure splits the seeds"],
)  # fmt: skip
def test_the_conclusion_names_what_the_verdicts_support(ics_ratio, smooth, supported, landscape):
    lines = ics_analysis.conclusion(claim_set(ics_ratio, smooth))
    assert lines[0].startswith("Over 3 seeds")
    assert lines[1].startswith("Of the landscape measures, the loss range is ")
    assert lines[1].endswith(f": {landscape}.")
    assert lines[-1] == f"On this net {supported}."


def test_each_measure_of_ics_is_named_with_what_it_says_and_its_numbers():
    """The gradient-based ICS and the percentile drift can disagree (results/ics/ and its
    proxy: BN / no BN ICS above 1, no BN / BN drift above 1), so the first line says what
    each says, seed by seed, with its range; the drift ratio is no BN over BN, from claim (a)'s
    two drift rows."""
    found = claim_set(2.0, ((0.5,),) * 3)
    (drift_bn,) = [c for c in found if c.key == "drift_bn"]
    found[found.index(drift_bn)] = ics_analysis.Claim.of("drift_bn", pd.Series([5.0, 3.0, 1.0]))
    first = ics_analysis.conclusion(found)[0]
    assert first == (
        "Over 3 seeds, by Santurkar et al.'s gradient-based ICS measure BN did not reduce ICS "
        "in any seed (BN / no BN 2 to 2); by the percentile drift of the sigmoid input, the "
        "input without BN drifted more than with BN in some seeds only (no BN / BN 0.5 to 2.5)."
    )
    assert "the percentile drift does not decide it" in ics_analysis.conclusion(found)[-1]


@pytest.mark.parametrize(
    ("accuracy", "margin"), [((-0.0095, -0.0091, -0.0059), "0.0005"), ((0.01, 0.02, 0.0), "0.01")]
)
def test_noisy_bn_names_how_close_its_worst_seed_came_to_the_threshold(accuracy, margin):
    """results/ics/'s worst seed is 0.0005 (5 of 10,000 test images) inside claim (a)'s
    threshold of -0.01: the line says so, and says the seeds do not show that stable inputs
    play no part, rather than that they were not what made BN train fast."""
    found = claim_set(2.0, ((0.5,),) * 3)
    found[0] = ics_analysis.Claim.of("accuracy", pd.Series(accuracy), step=5000)
    noisy = ics_analysis.conclusion(found)[2]
    assert f"the worst {margin} inside its threshold ({min(accuracy):.4g} against >= -0.01)" in (
        noisy
    )
    assert noisy.endswith("this does not show that stable inputs play no part in it.")
    assert "were not what made BN train fast" not in noisy


def test_percentile_drift_is_bnrepro_drift_per_net_and_seed():
    """ics judges stability by bnrepro.drift: the mean of each percentile's range after the
    first 2% of the run, not the step-to-step jitter between probes."""
    steps = np.arange(0, 1001, 10)
    jitter = np.where(steps % 20 == 0, 0.5, -0.5)  # large moves between probes, no wander
    wander = steps / 1000.0  # a steady walk, small steps between probes
    curves = pd.concat(
        pd.DataFrame({"variant": variant, "seed": 0, "step": steps,
                      "p15": values - 1, "p50": values, "p85": values + 1})
        for variant, values in (("jitter", jitter), ("wander", wander))
    )  # fmt: skip
    found = ics_analysis.drift(curves)
    assert found[("jitter", 0)] == pytest.approx(1.0)
    assert found[("wander", 0)] == pytest.approx(1.0 - 0.02)
    consecutive = curves.groupby("variant").p50.apply(lambda p: p.diff().abs().mean())
    assert consecutive["jitter"] > 40 * consecutive["wander"], "the old measure ranks them apart"


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "seeds", "steps", "every", "out"),
    [
        ([], (0, 1, 2), None, 500, REPO / "results" / "ics"),
        (["--quick"], (0, 1), 600, 100, REPO / "runs" / "ics-quick"),
        (["--quick", "--every", "50", "--out", "/elsewhere"], (0, 1), 600, 50, Path("/elsewhere")),
    ],
    ids=["committed protocol", "quick", "quick, diagnostics every 50, elsewhere"],
)
def test_run_takes_the_protocol_it_is_asked_for(args, seeds, steps, every, out):
    """`run` alone is results/ics/'s protocol (Figure 1's steps, diagnostics every 500);
    `--quick` is 2 seeds x 600 steps with diagnostics every 100, into runs/ics-quick/."""
    invocation = ics_driver.DRIVER.invocation(["run", *args])
    assert (invocation.seeds, invocation.steps, invocation.every) == (seeds, steps, every)
    assert invocation.jobs == 2 and invocation.out == out


@pytest.mark.parametrize(
    ("option", "value", "counted"),
    [
        ("--steps", "0", "training steps"),
        ("--steps", "-5", "training steps"),
        ("--every", "0", "steps between diagnostics"),
        ("--jobs", "0", "processes at a time"),
        ("--jobs", "-1", "processes at a time"),
    ],
)
def test_a_count_below_1_is_refused_before_anything_starts(option, value, counted):
    """`--steps 0` used to train Figure 1's 50,000 steps, and `--jobs 0` ended in a traceback
    from the launcher."""
    message = f"{option} {value} is not a number of {counted}: it takes a whole number above 0"
    with pytest.raises(UsageError, match=re.escape(message)):
        ics_driver.DRIVER.invocation(["run", option, value])


def test_a_refused_option_exits_2_and_creates_nothing(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver("run", "--every", "0", "--out", str(out), "--runs", str(runs))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("bnrepro: --every 0 is not a number of steps between")
    assert "Nothing was run or written." in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_sweep_whose_jobs_fail_names_them_and_exits_1(tmp_path, mnist_root):
    """Every job starts and fails on its config (a negative learning rate): the sweep is
    reported job by job, with status 1 and no traceback, and nothing is collected."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    result = run_driver(
        "run", "--seeds", "0", "--steps", "20", "--every", "10", "--device", "cpu",
        "--out", str(out), "--runs", str(runs), f"data.root={mnist_root}", "optim.lr=-1",
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = result.stderr.strip().splitlines()[-1]
    assert report.startswith(f"bnrepro: 3 job(s) of the sweep in {runs} failed: ")
    for variant in ics_protocol.VARIANTS:
        assert f"{variant}: failed - Invalid config" in report
    assert "Nothing was collected." in report and not out.exists()
