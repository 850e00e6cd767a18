import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from bnrepro.nn import (
    BATCHNORM_TYPES,
    BatchNorm,
    NoisyBatchNorm,
    bn_affine,
    create_norm,
    estimate_population_statistics,
    fold_batchnorm,
)


def randomize_bn(bn: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give a BN layer random gamma, beta and running statistics."""
    with torch.no_grad():
        c = bn.num_features
        dtype = bn.running_mean.dtype
        bn.weight.copy_(torch.rand(c, generator=gen, dtype=dtype) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen, dtype=dtype))
        bn.running_mean.copy_(torch.randn(c, generator=gen, dtype=dtype))
        bn.running_var.copy_(torch.rand(c, generator=gen, dtype=dtype) + 0.5)
    return bn


# ---------------------------------------------------------------- equivalence with PyTorch


@pytest.mark.parametrize(
    "shape",
    [(8, 5), (2, 3), (6, 4, 7), (4, 3, 5, 5), (3, 2, 4, 7), (2, 6, 1, 3)],
)
def test_matches_torch_batchnorm(shape):
    gen = torch.Generator().manual_seed(0)
    c = shape[1]
    torch_cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    ref = torch_cls(c, momentum=0.3).double()
    ours = BatchNorm(c, momentum=0.3).double()
    with torch.no_grad():
        ref.weight.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
        ref.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    ours.load_state_dict(ref.state_dict())  # strict: same parameter and buffer names

    for _ in range(4):
        x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64) + 1
        upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
        x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_ours = ref(x_ref), ours(x_ours)
        (y_ref * upstream).sum().backward()
        (y_ours * upstream).sum().backward()
        torch.testing.assert_close(y_ours, y_ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-6, rtol=0)
        ref.zero_grad()
        ours.zero_grad()

    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=0)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 4

    ref.eval()
    ours.eval()
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-6, rtol=0)

    fresh = torch_cls(c).double()
    fresh.load_state_dict(ours.state_dict())  # and back again
    fresh.eval()
    torch.testing.assert_close(fresh(x), ref(x), atol=1e-6, rtol=0)


def test_momentum_zero_leaves_running_stats_unchanged():
    gen = torch.Generator().manual_seed(1)
    bn = randomize_bn(BatchNorm(4, momentum=0.0), gen)
    before = copy.deepcopy(bn.state_dict())
    bn(torch.randn(16, 4, generator=gen))
    assert torch.equal(bn.running_mean, before["running_mean"])
    assert torch.equal(bn.running_var, before["running_var"])


def test_eval_uses_running_statistics():
    gen = torch.Generator().manual_seed(2)
    bn = randomize_bn(BatchNorm(3), gen).double().eval()
    x = torch.randn(5, 3, 2, 2, generator=gen, dtype=torch.float64)
    per_channel = [1, 3, 1, 1]
    expected = (x - bn.running_mean.view(per_channel)) / torch.sqrt(
        bn.running_var.view(per_channel) + bn.eps
    ) * bn.weight.view(per_channel) + bn.bias.view(per_channel)
    torch.testing.assert_close(bn(x), expected)
    scale, shift = bn_affine(bn)
    torch.testing.assert_close(bn(x), x * scale.view(per_channel) + shift.view(per_channel))


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2, 3)])
def test_gradcheck_training_mode(shape):
    gen = torch.Generator().manual_seed(3)
    bn = BatchNorm(shape[1]).double()
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(shape[1], generator=gen, dtype=torch.float64, requires_grad=True)

    def f(x, weight, bias):
        return torch.func.functional_call(bn, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, weight, bias))


# ------------------------------------------------------------ backprop through the statistics


def test_stats_backprop_false_treats_statistics_as_constants():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    upstream = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    full = BatchNorm(4).double()
    randomize_bn(full, gen)
    frozen = BatchNorm(4, stats_backprop=False).double()
    frozen.load_state_dict(full.state_dict())

    x_full, x_frozen = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_full, y_frozen = full(x_full), frozen(x_frozen)
    (y_full * upstream).sum().backward()
    (y_frozen * upstream).sum().backward()

    torch.testing.assert_close(y_frozen, y_full)  # same forward pass
    assert (x_full.grad - x_frozen.grad).abs().max() > 1e-2
    # The full gradient is orthogonal to a per-channel shift of the batch; the frozen one is not.
    torch.testing.assert_close(x_full.grad.sum(0), torch.zeros(4, dtype=torch.float64))
    assert x_frozen.grad.sum(0).abs().max() > 1e-2

    c1, c2 = x.mean(0), x.var(0, unbiased=False)
    x_const = x.clone().requires_grad_()
    y_const = full.weight.detach() * (x_const - c1) / torch.sqrt(c2 + full.eps) + full.bias.detach()
    (y_const * upstream).sum().backward()
    torch.testing.assert_close(x_frozen.grad, x_const.grad)
    torch.testing.assert_close(
        x_frozen.grad, upstream * full.weight.detach() / torch.sqrt(c2 + full.eps)
    )
    # gamma and beta gradients do not involve the statistics' dependence on x
    torch.testing.assert_close(frozen.weight.grad, full.weight.grad)
    torch.testing.assert_close(frozen.bias.grad, full.bias.grad)


def test_bias_before_bn_is_redundant():
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 4), BatchNorm(4)).double()
    u = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    upstream = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = model(u)
    (y * upstream).sum().backward()
    assert model[0].bias.grad.abs().max() < 1e-10
    assert model[0].weight.grad.abs().max() > 1e-3

    with torch.no_grad():
        model[0].bias.zero_()
    torch.testing.assert_close(model(u), y.detach(), atol=1e-12, rtol=0)


def test_without_stats_backprop_bias_grows_while_loss_stays_constant():
    """Section 2's argument: a gradient step on b is undone by the normalization."""
    gen = torch.Generator().manual_seed(6)
    model = nn.Sequential(nn.Linear(5, 4), BatchNorm(4, stats_backprop=False)).double()
    u = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    target = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    opt = torch.optim.SGD([model[0].bias], lr=0.5)
    bias_start = model[0].bias.detach().clone()
    losses, drift = [], []
    for _ in range(5):
        opt.zero_grad()
        loss = ((model(u) - target) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        drift.append((model[0].bias.detach() - bias_start).norm().item())
    assert max(losses) - min(losses) < 1e-9
    # every step moves b by the same nonzero amount, in the same direction
    torch.testing.assert_close(torch.tensor(drift), drift[0] * torch.arange(1.0, 6.0))
    assert drift[0] > 1e-2


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 8),
    d_in=st.integers(1, 5),
    d_out=st.integers(1, 5),
    a=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_scale_invariance(m, d_in, d_out, a, seed):
    """BN((aW)u) = BN(Wu) (exact for eps = 0); d/du unchanged; d/d(aW) = (1/a) d/dW."""
    gen = torch.Generator().manual_seed(seed)
    bn = BatchNorm(d_out, eps=0.0).double()
    randomize_bn(bn, gen)
    weight = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    u = torch.randn(m, d_in, generator=gen, dtype=torch.float64)
    upstream = torch.randn(m, d_out, generator=gen, dtype=torch.float64)

    def run(w):
        w = w.clone().requires_grad_()
        x = u.clone().requires_grad_()
        y = bn(x @ w.T)
        (y * upstream).sum().backward()
        return y.detach(), x.grad, w.grad

    y1, du1, dw1 = run(weight)
    y2, du2, dw2 = run(a * weight)
    torch.testing.assert_close(y2, y1, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(du2, du1, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(dw2, dw1 / a, rtol=1e-7, atol=1e-9)


def test_single_value_per_channel_raises_in_training():
    bn = BatchNorm(3)
    with pytest.raises(ValueError, match=r"\(1, 3\).*m = 1.*batch size of at least 2"):
        bn(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"\(1, 3, 1, 1\)"):
        bn(torch.randn(1, 3, 1, 1))
    bn.eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)
    assert bn.num_batches_tracked.item() == 0


def test_wrong_number_of_channels_raises():
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3\)"):
        BatchNorm(3)(torch.randn(4, 5))


# ------------------------------------------------------- Algorithm 2: population statistics


def make_batches(k, m, d, gen):
    return [
        (torch.randn(m, d, generator=gen) * 2 + 1, torch.randint(0, 3, (m,), generator=gen))
        for _ in range(k)
    ]


@pytest.mark.parametrize("bn_cls", [BatchNorm, nn.BatchNorm1d])
@pytest.mark.parametrize("start_training", [False, True])
def test_estimate_population_statistics(bn_cls, start_training):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(0)
    k, m = 5, 8
    model = nn.Sequential(nn.Linear(6, 4), bn_cls(4), nn.ReLU(), nn.Linear(4, 3), bn_cls(3))
    for layer in (model[1], model[4]):
        randomize_bn(layer, gen)
    model.train(start_training)
    batches = make_batches(k, m, 6, gen)

    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        inputs_1 = [reference[0](x) for x, _ in batches]
        inputs_2 = [reference[:4](x) for x, _ in batches]
    params_before = copy.deepcopy(dict(model.named_parameters()))
    tracked_before = [model[1].num_batches_tracked.item(), model[4].num_batches_tracked.item()]

    estimate_population_statistics(model, batches)

    for layer, inputs in [(model[1], inputs_1), (model[4], inputs_2)]:
        mean = torch.stack([h.mean(0) for h in inputs]).mean(0)
        var = m / (m - 1) * torch.stack([h.var(0, unbiased=False) for h in inputs]).mean(0)
        torch.testing.assert_close(layer.running_mean, mean)
        torch.testing.assert_close(layer.running_var, var)
    assert all(mod.training == start_training for mod in model.modules())
    for name, p in model.named_parameters():
        assert torch.equal(p, params_before[name])
    assert [model[1].num_batches_tracked.item(), model[4].num_batches_tracked.item()] == (
        tracked_before
    )


@pytest.mark.parametrize("bn_cls", [BatchNorm, nn.BatchNorm2d])
def test_estimate_population_statistics_conv_with_custom_forward(bn_cls):
    gen = torch.Generator().manual_seed(8)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), bn_cls(3)).eval()
    batches = [{"image": torch.randn(4, 2, 6, 5, generator=gen)} for _ in range(3)]

    estimate_population_statistics(model, batches, forward=lambda net, b: net(b["image"]))

    with torch.no_grad():
        feats = [model[0](b["image"]) for b in batches]
    m = 4 * 4 * 3  # N * H' * W'
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = m / (m - 1) * torch.stack([f.var((0, 2, 3), unbiased=False) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert not model.training and not model[1].training


def test_estimate_population_statistics_requires_batches():
    with pytest.raises(ValueError, match="at least one batch"):
        estimate_population_statistics(nn.Sequential(nn.Linear(2, 2), BatchNorm(2)), [])


# ----------------------------------------------------------------------------------- folding


def count_bn(model):
    return sum(isinstance(m, BATCHNORM_TYPES) for m in model.modules())


def test_fold_batchnorm_mlp():
    gen = torch.Generator().manual_seed(9)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(6, 8, bias=False),
        BatchNorm(8),
        nn.Sigmoid(),
        nn.Linear(8, 8, bias=False),
        nn.BatchNorm1d(8),
        nn.Sigmoid(),
        nn.Linear(8, 3),
    )
    randomize_bn(model[1], gen)
    randomize_bn(model[4], gen)
    model.eval()
    x = torch.randn(16, 6, generator=gen)

    folded = fold_batchnorm(model)

    assert count_bn(folded) == 0
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert folded[0].bias is not None and folded[3].bias is not None
    assert count_bn(model) == 2 and model[0].bias is None  # original untouched
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=0)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, bias=False),
            BatchNorm(4),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3, padding=1),
            nn.BatchNorm2d(5),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * 5 * 4, 6), BatchNorm(6))

    def forward(self, x):
        return self.head(self.features(x))


def test_fold_batchnorm_cnn():
    gen = torch.Generator().manual_seed(10)
    torch.manual_seed(2)
    model = SmallCNN()
    for m in model.modules():
        if isinstance(m, BATCHNORM_TYPES):
            randomize_bn(m, gen)
    model.eval()
    x = torch.randn(8, 3, 7, 6, generator=gen)

    folded = fold_batchnorm(model)

    assert count_bn(folded) == 0
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=0)


def test_fold_batchnorm_leaves_bn_not_after_linear():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), BatchNorm(4))
    folded = fold_batchnorm(model)
    assert isinstance(folded[2], BatchNorm)
    assert torch.equal(folded[0].weight, model[0].weight)


# ---------------------------------------------------------------- the norm-layer factory


def test_create_norm_builds_the_named_layer_with_its_options():
    noise = type("Noise", (), {"scale_min": 0.5, "scale_max": 2.0, "shift": 1.0})
    torch1d = create_norm("torch", 1, eps=1e-3, momentum=0.2)(7)
    torch2d = create_norm("torch", 2, eps=1e-3, momentum=0.2)(7)
    paper = create_norm("paper", 2, eps=1e-3, momentum=0.2, stats_backprop=False)(7)
    noisy = create_norm("noisy", 1, eps=1e-3, momentum=0.2, noise=noise)(7)
    assert type(torch1d) is nn.BatchNorm1d and type(torch2d) is nn.BatchNorm2d
    assert isinstance(paper, BatchNorm) and not paper.stats_backprop
    assert isinstance(noisy, NoisyBatchNorm)
    assert (noisy.scale_min, noisy.scale_max, noisy.shift) == (0.5, 2.0, 1.0)
    for layer in (torch1d, torch2d, paper, noisy):
        assert (layer.num_features, layer.eps, layer.momentum) == (7, 1e-3, 0.2)


@pytest.mark.parametrize(
    ("norm", "options"),
    [
        ("group", {}),
        ("torch", {"stats_backprop": False}),
        ("noisy", {}),
        ("paper", {"noise": object()}),
    ],
)
def test_create_norm_refuses_what_no_layer_is(norm, options):
    with pytest.raises(ValueError, match="norm"):
        create_norm(norm, 2, eps=1e-5, momentum=0.1, **options)
