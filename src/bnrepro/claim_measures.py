"""Six claims of the Batch Normalization paper (arXiv:1502.03167), each as a measurement.

Pure functions: each takes the sizes (or the trained model and data) it should measure and
returns numbers or a DataFrame, so the tests run them small and `experiments/claims.py` runs
them at full size and logs what they return.

1. `scale_invariance`: BN((aW)u) = BN(Wu), d/du unchanged, d/d(aW) = (1/a) d/dW.
2. `stats_backprop_toy`: without backprop through the batch mean a bias grows without bound.
3. `bias_redundancy`: a bias before BN gets no gradient and does not change the output.
4. (trained through the harness by experiments/claims.py: BN before vs after the sigmoid.)
5. `fold_mlp`, `fold_agreement`, `time_inference`, `median_interval`: inference BN folded into
   the linear layers, and whether that makes inference faster.
6. `training_batches`, `population_statistics_accuracy`: Algorithm 2 vs moving averages.
"""

import copy
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from bnrepro.mlp_data import EpochSampler, to_input
from bnrepro.mlp_members import test_accuracy
from bnrepro.models.mlp import MLP
from bnrepro.nn import BatchNorm, bn_affine, estimate_population_statistics, fold_into_affine


def max_relative_deviation(x: Tensor, reference: Tensor) -> float:
    """max |x - reference| / max |reference|."""
    return ((x - reference).abs().max() / reference.abs().max()).item()


# ---------------------------------------------------------------- 1. scale invariance


def scale_invariance(
    scales: Sequence[float],
    batch: int = 32,
    d_in: int = 20,
    d_out: int = 10,
    eps: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """BN((aW)u) and its gradients against BN(Wu), for each a in `scales`, in float64.

    W, u, gamma, beta and an upstream gradient g are random; the loss is sum(g * BN(Wu)).
    The identities are exact only for eps = 0: with eps > 0 the normalization divides by
    sqrt(a^2 Var + eps) instead of a sqrt(Var + eps), so they hold only approximately, worst
    for small a.

    One row per a: out_dev, du_dev, dw_dev are the max relative deviations of BN((aW)u) from
    BN(Wu), of d/du from its value at a = 1, and of d/d(aW) from (1/a) d/dW; dw_norm is the
    norm of d/d(aW) and dw_norm_at_1 that of d/dW.
    """
    gen = torch.Generator().manual_seed(seed)
    bn = BatchNorm(d_out, eps=eps).double()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(d_out, generator=gen, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(d_out, generator=gen, dtype=torch.float64))
    weight = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    u = torch.randn(batch, d_in, generator=gen, dtype=torch.float64)
    upstream = torch.randn(batch, d_out, generator=gen, dtype=torch.float64)

    def forward_backward(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = w.clone().requires_grad_()
        x = u.clone().requires_grad_()
        y = bn(x @ w.T)
        (upstream * y).sum().backward()
        return y.detach(), x.grad, w.grad

    y1, du1, dw1 = forward_backward(weight)
    rows = []
    for a in scales:
        y, du, dw = forward_backward(a * weight)
        rows.append(
            {
                "a": a,
                "eps": eps,
                "out_dev": max_relative_deviation(y, y1),
                "du_dev": max_relative_deviation(du, du1),
                "dw_dev": max_relative_deviation(dw, dw1 / a),
                "dw_norm": dw.norm().item(),
                "dw_norm_at_1": dw1.norm().item(),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- 2. backprop through statistics


def stats_backprop_toy(
    stats_backprop: bool,
    steps: int = 1000,
    lr: float = 0.1,
    n: int = 256,
    d: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """The paper's argument (Section 2) for backpropagating through the batch statistics, run.

    A layer x = u + b whose only parameter is the bias b, normalized over the whole (fixed)
    training set by `BatchNorm(affine=False)`, and a squared error to a fixed target with
    nonzero mean. Mean subtraction cancels b exactly, so the loss cannot depend on b. With
    the statistics treated as constants the gradient step on b ignores that cancellation:
    it is the same nonzero step every time, so b moves linearly in the number of steps
    while the loss stays where it was. Backpropagating through the mean gives b a zero
    gradient, and b stays put. Float64, so that a large b does not round u away.

    One row per step (0 = before training): step, stats_backprop, b_norm, b_drift (|b - b_0|),
    loss.
    """
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    target = torch.randn(n, d, generator=gen, dtype=torch.float64) + 1.0
    b = torch.randn(d, generator=gen, dtype=torch.float64).requires_grad_()
    b_start = b.detach().clone()
    norm = BatchNorm(d, affine=False, stats_backprop=stats_backprop).double()
    optimizer = torch.optim.SGD([b], lr=lr)

    rows = []
    for step in range(steps + 1):
        loss = ((norm(u + b) - target) ** 2).mean()
        rows.append(
            {
                "step": step,
                "stats_backprop": stats_backprop,
                "b_norm": b.detach().norm().item(),
                "b_drift": (b.detach() - b_start).norm().item(),
                "loss": loss.item(),
            }
        )
        if step == steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- 3. bias before BN


def bias_redundancy(
    batches: Sequence[Tensor], out_features: int = 100, seed: int = 0
) -> pd.DataFrame:
    """A linear layer Wu + b with a random bias, then training-mode BN, once per input batch.

    For each batch (a fresh random W, b, gamma, beta and upstream gradient each time, in
    float64) it measures the norm of the gradient reaching b against that reaching W, and
    how much the BN output changes when b is set to zero. Mean subtraction removes b, so
    both should be zero up to rounding. (In inference mode b is not removed by the fixed
    population mean; folding b into beta - gamma * b / sigma is what makes it redundant.)

    One row per batch: trial, bias_norm, bias_grad_norm, weight_grad_norm, out_dev (max
    relative change of the output on removing b).
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for trial, u in enumerate(batches):
        u = u.double().reshape(len(u), -1)
        d_in = u.shape[1]
        weight = torch.randn(out_features, d_in, generator=gen, dtype=torch.float64) / d_in**0.5
        bias = torch.randn(out_features, generator=gen, dtype=torch.float64)
        upstream = torch.randn(len(u), out_features, generator=gen, dtype=torch.float64)
        bn = BatchNorm(out_features).double()
        with torch.no_grad():
            bn.weight.copy_(torch.rand(out_features, generator=gen, dtype=torch.float64) + 0.5)
            bn.bias.copy_(torch.randn(out_features, generator=gen, dtype=torch.float64))
        weight.requires_grad_()
        bias.requires_grad_()
        y = bn(u @ weight.T + bias)
        (upstream * torch.sigmoid(y)).sum().backward()
        with torch.no_grad():
            y_without_bias = bn(u @ weight.T)
        rows.append(
            {
                "trial": trial,
                "bias_norm": bias.detach().norm().item(),
                "bias_grad_norm": bias.grad.norm().item(),
                "weight_grad_norm": weight.grad.norm().item(),
                "out_dev": max_relative_deviation(y_without_bias, y.detach()),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- 5. folding inference BN


@torch.no_grad()
def fold_mlp(model: MLP) -> MLP:
    """A copy of `model` with every inference BN folded into an `EnsembleLinear`.

    BN before the nonlinearity, g(BN(Wu)), folds into W as `fold_into_affine` does for
    nn.Linear: an EnsembleLinear weight is (members, in, out) while fold_into_affine wants
    output channels first, and the BN channels are member-major (channel = member * out + f),
    so the weight is viewed as (members * out, in). BN after the nonlinearity, W' BN(g(.)),
    folds into the next layer instead: W' (s z + t) + c = (diag(s) W') z + (t W' + c).
    The copy computes what `model` computes in eval mode, with the norms replaced by
    nn.Identity; `model` is left as it was.
    """
    folded = copy.deepcopy(model).eval()
    layers = [*folded.hidden, folded.classifier]
    for i, norm in enumerate(folded.norms):
        if isinstance(norm, nn.Identity):
            continue
        bn = norm.norm
        if folded.norm_after:
            layer = layers[i + 1]
            members, n_in, _ = layer.weight.shape
            scale, shift = bn_affine(bn)
            bias = shift.reshape(members, 1, n_in) @ layer.weight
            if layer.bias is not None:
                bias = bias + layer.bias
            weight = scale.reshape(members, n_in, 1) * layer.weight
        else:
            layer = layers[i]
            members, n_in, n_out = layer.weight.shape
            weight = layer.weight.transpose(1, 2).reshape(members * n_out, n_in)
            bias = None if layer.bias is None else layer.bias.reshape(-1)
            weight, bias = fold_into_affine(weight, bias, bn)
            weight = weight.reshape(members, n_out, n_in).transpose(1, 2)
            bias = bias.reshape(members, 1, n_out)
        layer.weight = nn.Parameter(weight.contiguous().to(layer.weight.dtype))
        layer.bias = nn.Parameter(bias.contiguous().to(layer.weight.dtype))
        folded.norms[i] = nn.Identity()
    return folded


@torch.no_grad()
def fold_agreement(model: MLP, folded: MLP, x: Tensor, seeds: Sequence[int]) -> pd.DataFrame:
    """Per member: the largest |logit difference| between `model` (eval mode) and `folded`,
    relative to the largest |logit|, and the fraction of inputs whose predictions agree."""
    was_training = model.training
    model.eval()
    logits, folded_logits = model(x), folded(x)
    model.train(was_training)
    diff = (logits - folded_logits).abs().flatten(1).max(1).values
    scale = logits.abs().flatten(1).max(1).values
    agree = (logits.argmax(-1) == folded_logits.argmax(-1)).double().mean(1)
    return pd.DataFrame(
        {
            "seed": list(seeds),
            "max_abs_diff": diff.tolist(),
            "max_rel_diff": (diff / scale).tolist(),
            "prediction_agreement": agree.tolist(),
        }
    )


@torch.no_grad()
def time_inference(models: dict[str, nn.Module], x: Tensor, repeats: int) -> pd.DataFrame:
    """Wall time of one forward pass over `x` for each model, in eval mode.

    The models take turns within each repeat, so a slow spell of a shared machine hits them
    alike; one untimed warm-up pass each comes first. One row per (repeat, model): seconds.
    """
    for model in models.values():
        model.eval()
        model(x)
    rows = []
    for repeat in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(x)
            rows.append({"repeat": repeat, "model": name, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """The median of `values` and a distribution-free interval for it, (median, low, high).

    The interval runs from the j-th smallest to the j-th largest value, with the largest j for
    which it covers the true median with probability >= `level`: the number of values below
    the median is Binomial(n, 1/2), so the coverage is 1 - 2 P(B <= j - 1). It assumes only that
    the values are independent draws from one distribution, and needs no random numbers, so
    the same values always give the same interval. At 95% it needs at least 6 values.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    j, below = 0, 0.0  # below = P(B <= j - 1)
    while 2 * (below + math.comb(n, j) / 2**n) <= 1 - level:
        below += math.comb(n, j) / 2**n
        j += 1
    if j == 0:
        raise ValueError(
            f"{n} values are too few for a {level:.0%} interval for their median: even the "
            "range from the smallest to the largest covers it less often. Measure more."
        )
    return float(np.median(x)), float(x[j - 1]), float(x[n - j])


# ---------------------------------------------------------------- 6. population statistics


def training_batches(
    x_train: Tensor, seeds: Sequence[int], batch_size: int, n_batches: int, input_mode: str
) -> Iterator[Tensor]:
    """`n_batches` training mini-batches drawn as the harness draws them: every member has its
    own shuffled order (seeded by its seed), each batch is (members, batch_size, features)."""
    members = len(seeds)
    sampler = EpochSampler(list(seeds), len(x_train), batch_size, x_train.device)
    for step in range(n_batches):
        index = sampler.batch(step).reshape(-1)
        yield to_input(x_train.index_select(0, index), input_mode).view(members, batch_size, -1)


def population_statistics_accuracy(
    model: MLP,
    x_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    seeds: Sequence[int],
    n_batches: Sequence[int],
    batch_size: int = 60,
    input_mode: str = "grey",
) -> pd.DataFrame:
    """Test accuracy with the moving averages against Algorithm 2's population statistics.

    `x_train` holds uint8 training images (N, features), `x_test` network inputs. For each N
    in `n_batches` a copy of `model` gets population statistics estimated over its first N
    training mini-batches (`training_batches`). One row per (seed, statistics, n_batches):
    statistics is 'moving' (n_batches 0) or 'population'; test_acc.
    """
    rows = [
        {"seed": seed, "statistics": "moving", "n_batches": 0, "test_acc": acc}
        for seed, acc in zip(seeds, test_accuracy(model, x_test, y_test), strict=True)
    ]
    for n in n_batches:
        estimated = copy.deepcopy(model)
        batches = training_batches(x_train, seeds, batch_size, n, input_mode)
        estimate_population_statistics(estimated, batches)
        accuracy = test_accuracy(estimated, x_test, y_test)
        rows += [
            {"seed": seed, "statistics": "population", "n_batches": n, "test_acc": acc}
            for seed, acc in zip(seeds, accuracy, strict=True)
        ]
    return pd.DataFrame(rows)
