"""The MNIST MLP: shapes, BN placement, and independence of vectorized members."""

import torch
from torch import nn

from bnrepro.models.mlp import MLP, EnsembleLinear, EnsembleNorm

SIZES = [784, 100, 100, 100, 10]


def make(members: int, bn: bool, seeds=None) -> MLP:
    model = MLP(members, SIZES, "sigmoid", (lambda c: nn.BatchNorm1d(c)) if bn else None)
    model.init_gaussian(0.1, seeds or list(range(members)))
    return model


def test_shapes_and_parameter_count() -> None:
    model = make(3, bn=False)
    assert model(torch.rand(60, 784)).shape == (3, 60, 10)
    assert model(torch.rand(3, 60, 784)).shape == (3, 60, 10)
    per_member = 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == 3 * per_member


def test_bn_sits_on_wu_before_the_sigmoid_and_hidden_biases_are_dropped() -> None:
    model = make(1, bn=True)
    assert all(layer.bias is None for layer in model.hidden)
    assert model.classifier.bias is not None
    assert all(isinstance(n, EnsembleNorm) for n in model.norms)
    x = torch.rand(60, 784, generator=torch.Generator().manual_seed(0))
    _, pre = model.hidden_forward(x)
    # The sigmoid's input is BN(Wu) = (Wu - mean) / sqrt(var + eps) over the batch, per unit
    # (gamma = 1, beta = 0 at initialization), with u the previous layer's sigmoid output.
    h = torch.sigmoid(model.norms[0](model.hidden[0](x)))
    h = torch.sigmoid(model.norms[1](model.hidden[1](h)))
    wu = h @ model.hidden[2].weight
    mean, var = wu.mean(1, keepdim=True), wu.var(1, unbiased=False, keepdim=True)
    assert torch.allclose(pre, (wu - mean) / torch.sqrt(var + 1e-5), atol=1e-5)


def test_plain_hidden_layers_have_biases_and_no_norm() -> None:
    model = make(1, bn=False)
    assert all(layer.bias is not None for layer in model.hidden)
    assert all(isinstance(n, nn.Identity) for n in model.norms)


def test_init_is_gaussian_with_configured_std_and_depends_only_on_seed() -> None:
    alone = make(1, bn=True, seeds=[7])
    together = make(3, bn=True, seeds=[1, 7, 9])
    assert torch.equal(alone.hidden[0].weight[0], together.hidden[0].weight[1])
    assert not torch.equal(together.hidden[0].weight[0], together.hidden[0].weight[1])
    w = together.hidden[0].weight
    assert abs(w.std().item() - 0.1) < 0.002 and abs(w.mean().item()) < 0.002


def test_members_have_their_own_bn_statistics() -> None:
    torch.manual_seed(0)
    together = make(2, bn=True, seeds=[1, 2])
    alone = make(1, bn=True, seeds=[2])
    x = torch.rand(2, 60, 784)
    x[0] *= 5  # member 0 sees very different data: it must not change member 1's statistics
    out_together = together(x)
    out_alone = alone(x[1:])
    assert torch.allclose(out_together[1], out_alone[0], atol=1e-5)
    assert torch.allclose(
        together.norms[0].norm.running_mean[100:], alone.norms[0].norm.running_mean
    )


def test_ensemble_linear_matches_per_member_matmul() -> None:
    for bias in (True, False):
        layer = EnsembleLinear(4, 5, 3, bias=bias)
        nn.init.normal_(layer.weight)
        offset = nn.init.normal_(layer.bias) if bias else torch.zeros(4, 1, 3)
        x = torch.randn(4, 7, 5)  # a batch per member
        expected = torch.stack([x[i] @ layer.weight[i] + offset[i] for i in range(4)])
        assert torch.allclose(layer(x), expected, atol=1e-6)
        shared = torch.randn(7, 5)  # one batch for every member
        expected = torch.stack([shared @ layer.weight[i] + offset[i] for i in range(4)])
        assert torch.allclose(layer(shared), expected, atol=1e-6)


def test_ensemble_linear_gradients_are_each_members_own() -> None:
    """The batched product's backward gives each member the gradient of its own map."""
    layer = EnsembleLinear(3, 5, 4, bias=True)
    nn.init.normal_(layer.weight)
    x = torch.randn(3, 6, 5)
    target = torch.randn(3, 6, 4)
    ((layer(x) - target) ** 2).sum().backward()
    for i in range(3):
        w = layer.weight[i].detach().requires_grad_()
        b = layer.bias[i].detach().requires_grad_()
        ((x[i] @ w + b - target[i]) ** 2).sum().backward()
        assert torch.allclose(layer.weight.grad[i], w.grad, atol=1e-5)
        assert torch.allclose(layer.bias.grad[i], b.grad, atol=1e-5)
