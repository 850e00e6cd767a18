"""Packed Inception members (bnrepro.train_packed): each member trains as the single run of its
recipe and seed, a diverging member is retired while the others go on, a pack resumes as it
would have run, and what a pack cannot do is refused.

What must be equal exactly is: each member's batches, distortions and dropout masks, its
learning rates, and its optimizer's update given its gradients. What may differ is rounding:
a member's forward pass goes through grouped convolutions, which sum in another order than the
single run's convolutions (logits about 1e-7 apart relative, gradients under 1e-4), and
training amplifies the difference. On plain Inception at the tiny size below the mean losses
of members and single runs differ by at most 1.4e-5 over 30 steps; with BN the same rounding
grows to 2e-4 within 12 steps at the base rate and to 1e-3 within 4 steps at BN-x5's
(measured), so the end-to-end curves are compared on plain Inception, and the BN
architectures (BN-x5's, BN-x5-Sigmoid's) are compared network against network in float64, where
that rounding is 1e-16 and each member's own BN statistics can be checked to 1e-10.
"""

import json
import os
import signal
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_proxy
from omegaconf import DictConfig
from torch import nn

from bnrepro import inception_data, inception_recipe, packed_optim, train_packed
from bnrepro import train_inception as ti
from bnrepro.errors import ConfigError
from bnrepro.lifecycle import Interrupted
from bnrepro.models.inception import Inception, load_member, member_state
from bnrepro.replicas import Replicas
from bnrepro.train import packs, train

LOSS_TOLERANCE = 1e-4
"""Largest |member loss - single-run loss| accepted at a logged step (module docstring)."""
ACCURACY_TOLERANCE = 1 / 200
"""One held-out image of the 200 the tiny runs evaluate on."""


def tiny(experiment: str, *overrides: str) -> DictConfig:
    """`experiment` at the toy size, 12 steps, evaluated and logged every 4."""
    return tiny_proxy(experiment, "steps=12", "eval_every=4", "log_every=4", *overrides)


def metrics(run) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv")


def assert_follows(member: pd.DataFrame, single: pd.DataFrame) -> None:
    member, single = member.reset_index(drop=True), single.reset_index(drop=True)
    assert member.step.tolist() == single.step.tolist()
    assert member.lr.tolist() == single.lr.tolist()
    np.testing.assert_allclose(member.train_loss, single.train_loss, atol=LOSS_TOLERANCE)
    gap = (member.test_acc - single.test_acc).abs().max()
    assert gap <= ACCURACY_TOLERANCE + 1e-12, gap


def test_each_member_trains_as_its_single_run(fashion_root, tmp_path) -> None:
    """Two seeds with and without dropout, end to end: member 1 (seed 1, dropout on) against
    its single run, 8 steps."""
    pack = tiny("inception", "seeds=[0,1]", "grid.dropout_off=[false,true]", "steps=8")
    info = train(pack, tmp_path / "pack")
    assert info["status"] == "completed" and len(info["members"]) == 4
    packed = metrics(tmp_path / "pack")
    assert packed.member.nunique() == 4
    train(tiny("inception", "seeds=[1]", "steps=8"), tmp_path / "single")
    rows = packed[(packed.seed == 1) & ~packed.dropout_off]
    assert_follows(rows, metrics(tmp_path / "single"))


GRID = {
    "lr_multiplier": [1, 2],
    "l2_divisor": [1, 5],
    "decay_speedup": [1, 6],
    "dropout_off": [False, True],
    "thorough_shuffle": [False, True],
    "reduced_distortion": [False, True],
}
"""Every switch a pack may vary: 64 members of one seed."""


def grid_overrides() -> list[str]:
    return [f"grid.{k}=[{','.join(str(v).lower() for v in vs)}]" for k, vs in GRID.items()]


def test_each_member_reads_its_single_runs_batches_noise_and_rates(fashion_root) -> None:
    """For every switch a pack may vary: member k's images, labels and dropout mask at steps
    across two noise blocks, and its learning rates, equal those of its single run exactly."""
    cfg = train_packed.validate_packed(tiny("inception", "seeds=[7]", *grid_overrides()))
    members = train_packed.grid_members(cfg)
    settings = [train_packed.member_settings(cfg, m) for m in members]
    data = inception_data.load_proxy(cfg, torch.device("cpu"))
    features = inception_recipe.build_model(cfg, settings[0]).fc.in_features
    step_inputs, make_batch, _ = train_packed.packed_pipeline(
        data, cfg, members, settings, features, torch.contiguous_format
    )
    schedule = packed_optim.MemberSchedule(settings, cfg.optim.decay_rate, torch.device("cpu"))
    replicas = Replicas(0, 1, torch.device("cpu"))
    checked = [0, 21, 42, 63]  # all off, a mix, a mix, all on
    singles = {k: ti.pipeline(data, cfg, settings[k], replicas, 0, features) for k in checked}
    for step in (0, 99, 100, 1874, 1875):
        x, labels, keep = make_batch(*step_inputs(step))
        for k in checked:
            single_inputs, single_batch, _ = singles[k]
            sx, sy, skeep = single_batch(*single_inputs(step))
            assert torch.equal(x[:, k : k + 1], sx), (step, k)
            assert torch.equal(labels[k], sy), (step, k)
            member_keep = keep[:, k * features : (k + 1) * features]
            assert torch.equal(
                member_keep, skeep if skeep is not None else torch.ones_like(member_keep)
            )
            s = settings[k]
            assert (
                schedule(step)[k].item()
                == torch.tensor(
                    inception_recipe.learning_rate(step, s.lr, cfg.optim.decay_rate, s.decay_steps)
                ).item()
            )


def test_member_sgd_takes_each_members_torch_sgd_step() -> None:
    """Two members with their own rate and L2, three steps on the same gradients: each
    member's weights equal those of torch.optim.SGD (the single run's fused optimizer) to the
    last bits: the fused kernel may round `momentum * buf + grad` once (a fused multiply-add)
    where MemberSGD rounds the product and the sum apart: a difference of about one unit in
    the last place of an update (the updates here are under 0.3: 3e-8) or of a weight (2.4e-7
    relative)."""
    cfg = tiny("bn_x5")
    settings = inception_recipe.recipe_settings(cfg)
    rates, decays = [0.05, 0.3], [4e-5, 2e-4]
    singles = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        singles.append(inception_recipe.build_model(cfg, settings))
    packed = inception_recipe.build_model(cfg, settings, members=2)
    for k, single in enumerate(singles):
        load_member(packed, k, single.state_dict())
    lr = torch.tensor(rates)
    optimizer = packed_optim.MemberSGD(packed, lr, decays, cfg.optim.momentum, False)
    torch_optimizers = [
        inception_recipe.make_optimizer(s, cfg, replace(settings, weight_decay=d), torch.tensor(r))
        for s, r, d in zip(singles, rates, decays, strict=True)
    ]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        optimizer.zero_grad()
        for k, (single, single_optimizer) in enumerate(zip(singles, torch_optimizers, strict=True)):
            for p, q in zip(single.parameters(), packed.parameters(), strict=True):
                p.grad = 0.1 * torch.randn(p.shape, generator=generator)
                q.grad.view(2, *p.shape)[k].copy_(p.grad)
            single_optimizer.step()
        optimizer.step()
    for k, single in enumerate(singles):
        state = member_state(packed, k)
        for name, p in single.named_parameters():
            torch.testing.assert_close(state[name], p.detach(), rtol=2.4e-7, atol=3e-8)


@pytest.mark.integration
def test_every_recipe_switch_in_a_pack_follows_its_single_run(fashion_root, tmp_path) -> None:
    """The switches a pack may vary, on plain Inception at the base rate and twice it, each
    checked member against its single run: 64 members, four single runs."""
    train(tiny("inception", "seeds=[3]", *grid_overrides()), tmp_path / "pack")
    packed = metrics(tmp_path / "pack")
    assert packed.member.nunique() == 64
    for member in (0, 21, 42, 63):
        recipe = train_packed.grid_members(tiny("inception", *grid_overrides()))[member]
        recipe = {k: v for k, v in recipe.items() if k in GRID}
        single = tiny("inception", "seeds=[3]", *(f"recipe.{k}={v}" for k, v in recipe.items()))
        train(single, tmp_path / f"single{member}")
        assert_follows(packed[packed.member == member], metrics(tmp_path / f"single{member}"))


def test_a_diverging_member_is_recorded_and_the_others_go_on(fashion_root, tmp_path) -> None:
    """Inception at 10^5 times its rate overflows within a few steps; its neighbour in the pack
    trains on as its single run does."""
    info = train(tiny("inception", "grid.lr_multiplier=[1,100000]"), tmp_path / "pack")
    assert info["status"] == "diverged"
    outcome = {m["lr_multiplier"]: m for m in info["members"]}
    assert outcome[100000]["status"] == "diverged" and outcome[100000]["diverged_at_step"] > 0
    assert outcome[1]["status"] == "completed" and outcome[1]["final_step"] == 12
    packed = metrics(tmp_path / "pack")
    diverged = packed[packed.lr_multiplier == 100000]
    assert diverged.step.max() == outcome[100000]["diverged_at_step"]
    train(tiny("inception"), tmp_path / "single")
    assert_follows(packed[packed.lr_multiplier == 1], metrics(tmp_path / "single"))


@pytest.mark.integration
def test_a_resumed_pack_writes_what_an_uninterrupted_one_writes(
    fashion_root, tmp_path, monkeypatch
) -> None:
    overrides = ("seeds=[0,1]", "steps=8", "checkpoint_every=3", "grid.lr_multiplier=[1,5]")
    train(tiny("bn_x5", *overrides), tmp_path / "straight")
    distort, calls = train_packed.distort, []

    def crash_at_step_5(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("simulated crash")
        return distort(*args)

    monkeypatch.setattr(train_packed, "distort", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny("bn_x5", *overrides), tmp_path / "split")
    assert json.loads((tmp_path / "split" / "run.json").read_text())["status"] == "failed"
    monkeypatch.setattr(train_packed, "distort", distort)
    info = train(tiny("bn_x5", *overrides, "resume=true"), tmp_path / "split")
    assert info["resumed_from_step"] == 3 and info["status"] == "completed"
    straight = (tmp_path / "straight" / "metrics.csv").read_text()
    assert (tmp_path / "split" / "metrics.csv").read_text() == straight


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("grid.lr_multiplier=[5,5]",), "grid.lr_multiplier"),
        (("grid.decay_speedup=[0,6]",), "grid.decay_speedup"),
        (("seeds=[0,1]", "late_probe.every=10"), "late_probe.every"),
        (("seeds=[0,1]", "diagnostics.every=10"), "diagnostics.every"),
    ],
)
def test_what_a_pack_cannot_do_is_refused(overrides, key, tmp_path) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train(tiny("bn_x5", *overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_members_are_the_grid_for_every_seed_seeds_innermost() -> None:
    cfg = tiny("bn_x5", "seeds=[0,1]", "grid.lr_multiplier=[1,30]")
    assert packs(cfg) and not packs(tiny("bn_x5"))
    assert train_packed.grid_members(cfg) == [
        {"member": 0, "seed": 0, "lr_multiplier": 1.0},
        {"member": 1, "seed": 1, "lr_multiplier": 1.0},
        {"member": 2, "seed": 0, "lr_multiplier": 30.0},
        {"member": 3, "seed": 1, "lr_multiplier": 30.0},
    ]
    assert packs(tiny("bn_x5", "grid.lr_multiplier=[5]"))


def test_the_packed_key_decides_where_it_is_set(fashion_root, tmp_path) -> None:
    """`packed=true` packs one seed (a pack of one member); `packed=false` trains one run, so
    several seeds are refused before anything is written."""
    assert packs(tiny("bn_x5", "packed=true"))
    assert not packs(tiny("bn_x5", "seeds=[0,1]", "packed=false"))
    info = train(tiny("bn_x5", "packed=true", "steps=4"), tmp_path / "one")
    assert info["status"] == "completed" and len(info["members"]) == 1
    assert metrics(tmp_path / "one").member.unique().tolist() == [0]
    with pytest.raises(ConfigError, match="packed=false"):
        train(tiny("bn_x5", "seeds=[0,1]", "packed=false"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_graphed_pack_trains_as_the_eager_pack_does(fashion_root, tmp_path) -> None:
    """240 steps of a pack with dropout and two rates: the captured packed step follows the
    eager one within the larger of 1e-4 relative and 4x the gap between two eager runs."""
    overrides = (
        "device=cuda",
        "steps=240",
        "eval_every=80",
        "log_every=10",
        "seeds=[0,1]",
        "grid.lr_multiplier=[1,5]",
    )
    runs = {}
    for name, graph in (("eager", False), ("eager_again", False), ("graphed", True)):
        info = train(tiny("inception", *overrides, f"cuda_graph={graph}"), tmp_path / name)
        assert info["cuda_graph"] == graph and info["status"] == "completed"
        runs[name] = metrics(tmp_path / name).dropna(subset=["train_loss"])
    eager, graphed = runs["eager"].train_loss, runs["graphed"].train_loss
    noise = (eager - runs["eager_again"].train_loss).abs().div(eager.abs()).max()
    np.testing.assert_allclose(graphed, eager, rtol=max(1e-4, 4 * noise))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_packed_bn_members_train_as_their_single_networks_in_float64(activation) -> None:
    """BN-x5's and BN-x5-Sigmoid's architectures (BN, no LRN, no dropout), three members against
    three single networks, in float64, where the grouped convolutions' other summation order
    costs about 1e-16 instead of float32's 1e-7: the same outputs in training mode, so each
    member's BN normalizes by its own batch statistics alone; the same running statistics and
    parameters after three SGD steps; the same outputs in evaluation mode, from those running
    statistics."""
    torch.manual_seed(0)
    shape = {"num_classes": 10, "norm": "batch", "activation": activation, "width": 1 / 16,
             "stem": "small", "in_channels": 1}  # fmt: skip
    singles = [Inception(**shape).double() for _ in range(3)]
    pack = Inception(**shape, members=3).double()
    for k, single in enumerate(singles):
        load_member(pack, k, single.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in singles]
    packed_optimizer = torch.optim.SGD(pack.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        images = [torch.randn(8, 1, 16, 16, generator=generator, dtype=torch.float64)] * 3
        images = [x * (k + 1) + k for k, x in enumerate(images)]  # batch statistics differ
        labels = torch.randint(0, 10, (3, 8), generator=generator)
        packed_logits = pack(torch.cat(images, dim=1))
        loss = sum(nn.functional.cross_entropy(packed_logits[:, k], labels[k]) for k in range(3))
        packed_optimizer.zero_grad()
        loss.backward()
        packed_optimizer.step()
        for k, single in enumerate(singles):
            logits = single(images[k])
            torch.testing.assert_close(packed_logits[:, k], logits, rtol=1e-10, atol=1e-12)
            optimizers[k].zero_grad()
            nn.functional.cross_entropy(logits, labels[k]).backward()
            optimizers[k].step()
    pack.eval()
    test = torch.randn(8, 1, 16, 16, generator=generator, dtype=torch.float64)
    packed_logits = pack(torch.cat([test] * 3, dim=1))
    for k, single in enumerate(singles):
        state = member_state(pack, k)
        for name, value in single.state_dict().items():
            torch.testing.assert_close(state[name], value, rtol=1e-10, atol=1e-12, msg=name)
        single.eval()
        torch.testing.assert_close(packed_logits[:, k], single(test), rtol=1e-10, atol=1e-12)


def test_a_signal_during_a_packs_set_up_stops_it_before_the_next_member(
    fashion_root, tmp_path, monkeypatch
) -> None:
    """SIGTERM while the members' networks are built (400 of them take a minute) stops the
    pack before the next member is built, not once all are: no run.json, nothing trained."""
    built = []

    def load(model, k, state) -> None:
        built.append(k)
        if k == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        load_member(model, k, state)

    monkeypatch.setattr(train_packed, "load_member", load)
    pack = tiny("inception", "seeds=[0,1,2,3]", "grid.lr_multiplier=[1,2,5,10]")
    with pytest.raises(Interrupted, match=r"SIGTERM stopped the run in .* during its set-up; "):
        train_packed.train(pack, tmp_path / "pack")
    assert built == [0]
    assert not (tmp_path / "pack" / "run.json").exists()
