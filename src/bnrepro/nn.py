"""Batch Normalization as written in Ioffe & Szegedy (2015).

- `BatchNorm`: Algorithm 1, a drop-in for `torch.nn.BatchNorm1d` / `BatchNorm2d` written with
  plain tensor ops, so autograd backpropagates through the batch mean and variance.
- `estimate_population_statistics`: Algorithm 2, population statistics averaged over
  training mini-batches (instead of PyTorch's moving averages).
- `bn_affine`, `fold_into_affine`, `fold_batchnorm`: inference BN as one affine map, folded
  into the preceding linear / convolution layer.
- `NoisyBatchNorm`: Santurkar et al.'s BN with noise injected after it.
- `create_norm`: the one norm-layer factory both nets are built with, from the BN options of
  their model config (`model.norm`, `model.bn_eps`, ...).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor


class BatchNorm(nn.Module):
    """Batch Normalizing Transform (Algorithm 1).

    Accepts inputs of shape (N, C) like `nn.BatchNorm1d`, or (N, C, *spatial) like
    `nn.BatchNorm2d`: one (gamma, beta) per channel, with statistics taken over the batch and
    all positions, so the effective mini-batch size is m = N * H * W.

    Parameter and buffer names and the moving-average update match PyTorch, so state_dicts are
    interchangeable. With `stats_backprop=False` the batch mean and variance are treated as
    constants in the backward pass; the paper's Section 2 explains why that is harmful.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        stats_backprop: bool = True,
    ):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.stats_backprop = stats_backprop
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm({self.num_features}) expects input of shape (N, {self.num_features}) "
                f"or (N, {self.num_features}, ...), got {tuple(x.shape)}"
            )
        dims = [0, *range(2, x.dim())]  # every dim except the channel dim
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast per-channel vectors against x

        if self.training:
            m = x.numel() // self.num_features
            if m == 1:
                raise ValueError(
                    f"BatchNorm in training mode needs more than one value per channel to "
                    f"compute batch statistics, got input of shape {tuple(x.shape)} (m = 1). "
                    f"Use a batch size of at least 2, or call .eval() to normalize with the "
                    f"running statistics."
                )
            mean = x.mean(dim=dims, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)  # biased: divide by m
            with torch.no_grad():
                unbiased_var = var.reshape(-1) * (m / (m - 1))
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.reshape(-1))
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased_var)
                self.num_batches_tracked += 1
            if not self.stats_backprop:
                mean, var = mean.detach(), var.detach()
        else:
            mean = self.running_mean.reshape(shape)
            var = self.running_var.reshape(shape)

        y = (x - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            y = self.weight.reshape(shape) * y + self.bias.reshape(shape)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, stats_backprop={self.stats_backprop}"
        )


BATCHNORM_TYPES = (BatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FOLDABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _has_running_stats(module: nn.Module) -> bool:
    return isinstance(module, BATCHNORM_TYPES) and module.running_mean is not None


def _default_forward(model: nn.Module, batch: Tensor | tuple | list) -> Any:
    if isinstance(batch, tuple | list):
        batch = batch[0]
    return model(batch)


@torch.no_grad()
def estimate_population_statistics(
    model: nn.Module,
    batches: Iterable[Tensor | tuple],
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> None:
    """Replace every BN layer's running statistics by population statistics (Algorithm 2).

    Runs `model` in training mode over `batches` (training mini-batches, each a tensor or an
    `(inputs, targets, ...)` tuple; pass `forward(model, batch)` for anything else). For every
    BN layer (ours, or PyTorch's BatchNorm1d/2d/3d with running stats) it records the batch
    statistics of the layer's input, then sets

        running_mean = E_B[mu_B],    running_var = E_B[m / (m - 1) * var_B],

    where var_B is the biased per-batch variance. For equal batch sizes the latter is the
    paper's m/(m-1) * E_B[var_B]. All layers are estimated in one pass: in training mode each
    layer's input depends on the batch statistics of the layers below, not their running ones.

    Parameters, `num_batches_tracked` and every module's train/eval flag are left as they were.
    Layers that no batch reaches keep their running statistics.
    """
    forward = forward or _default_forward
    layers = [m for m in model.modules() if _has_running_stats(m)]
    sums: dict[nn.Module, list] = {}  # layer -> [sum of means, sum of unbiased vars, count]

    def record(layer: nn.Module, args: tuple) -> None:
        x = args[0]
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        var = x.var(dim=dims, correction=1)  # = m/(m-1) * biased var
        if layer in sums:
            acc = sums[layer]
            acc[0] += mean
            acc[1] += var
            acc[2] += 1
        else:
            sums[layer] = [mean, var, 1]

    was_training = {m: m.training for m in model.modules()}
    batches_tracked = {layer: layer.num_batches_tracked.clone() for layer in layers}
    hooks = [layer.register_forward_pre_hook(record) for layer in layers]
    n_batches = 0
    try:
        model.train()
        for batch in batches:
            forward(model, batch)
            n_batches += 1
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in was_training.items():
            module.training = training
        for layer, tracked in batches_tracked.items():
            layer.num_batches_tracked.copy_(tracked)
    if n_batches == 0:
        raise ValueError("estimate_population_statistics needs at least one batch")

    for layer, (mean_sum, var_sum, count) in sums.items():
        layer.running_mean.copy_(mean_sum / count)
        layer.running_var.copy_(var_sum / count)


def bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Inference BN as y = scale * x + shift, with one (scale, shift) per channel.

    scale = gamma / sqrt(Var[x] + eps),  shift = beta - scale * E[x].
    """
    if not _has_running_stats(bn):
        raise ValueError(f"{type(bn).__name__} has no running statistics to build an affine map")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = bn.bias + shift
    return scale, shift


def fold_into_affine(weight: Tensor, bias: Tensor | None, bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Fold inference BN into the layer x -> weight @ x + bias that precedes it.

    `weight`'s dim 0 indexes output channels, as for nn.Linear (out, in) and nn.Conv2d
    (out, in, kh, kw). Returns the folded (weight, bias).
    """
    scale, shift = bn_affine(bn)
    if weight.shape[0] != scale.numel():
        raise ValueError(
            f"weight has {weight.shape[0]} output channels but the BN layer has {scale.numel()}"
        )
    new_weight = weight * scale.reshape(-1, *[1] * (weight.dim() - 1))
    new_bias = shift if bias is None else scale * bias + shift
    return new_weight, new_bias


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a deep copy of `model` with BN folded into the preceding linear / conv layers.

    Every BN layer with running statistics that directly follows an nn.Linear or nn.Conv{1,2,3}d
    inside an nn.Sequential (at any depth) is folded into that layer, which gains a bias if it
    had none, and is replaced by nn.Identity. The folded model computes what the original
    computes in eval mode; the original model is not modified.
    """
    model = copy.deepcopy(model)
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            layer, bn = seq[i - 1], seq[i]
            if not (isinstance(layer, FOLDABLE_TYPES) and _has_running_stats(bn)):
                continue
            weight, bias = fold_into_affine(layer.weight, layer.bias, bn)
            layer.weight = nn.Parameter(weight.to(layer.weight.dtype))
            layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
            seq[i] = nn.Identity()
    return model


class NoisyBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BN followed by a random per-channel scale and shift that change every training step.

    The "noisy BatchNorm" of Santurkar, Tsipras, Ilyas and Madry (2018, Section 2.1), which
    injects covariate shift on purpose after BN: in training mode each channel's output is

        y = scale * BN(x) + shift,   scale ~ U(scale_min, scale_max),   shift ~ U(-shift, shift),

    so every unit's input has a non-zero mean and a non-unit variance that differ from one step
    to the next. In eval mode it is plain BN with the running statistics (no noise).

    The noise lives in the buffers `noise_scale` and `noise_shift` and changes only when
    `resample` is called, once per training step by the trainer: every forward in between
    (the step itself, a probe, a diagnostic's repeated forwards) sees the same noise. Draws
    come from the given CPU generators and are copied into the buffers in place, so a captured
    CUDA graph reads the new values. With several generators the channels are split into as
    many equal contiguous groups, one generator each: in `bnrepro.models.mlp.EnsembleNorm`,
    whose channels are members * features member-major, each member draws its own noise.

    Accepts (N, C) and (N, C, *spatial) inputs, like bnrepro.nn.BatchNorm.
    """

    def __init__(
        self,
        num_features: int,
        scale_min: float,
        scale_max: float,
        shift: float,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        if not 0 < scale_min <= scale_max or shift < 0:
            raise ValueError(
                f"NoisyBatchNorm needs 0 < scale_min <= scale_max and shift >= 0, got "
                f"scale_min={scale_min}, scale_max={scale_max}, shift={shift}."
            )
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.scale_min, self.scale_max, self.shift = scale_min, scale_max, shift
        self.register_buffer("noise_scale", torch.ones(num_features))
        self.register_buffer("noise_shift", torch.zeros(num_features))

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(
                f"NoisyBatchNorm({self.num_features}) expects input of shape (N, C) or "
                f"(N, C, ...), got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def resample(self, generators: list[torch.Generator]) -> None:
        """Draws a new scale and shift for every channel, group g from generators[g]."""
        groups = len(generators)
        if groups == 0 or self.num_features % groups:
            raise ValueError(
                f"NoisyBatchNorm({self.num_features}) cannot split its channels into "
                f"{groups} equal groups; pass one generator per member."
            )
        size = self.num_features // groups
        scales, shifts = [], []
        for generator in generators:
            scales.append(
                torch.empty(size).uniform_(self.scale_min, self.scale_max, generator=generator)
            )
            shifts.append(torch.empty(size).uniform_(-self.shift, self.shift, generator=generator))
        self.noise_scale.copy_(torch.cat(scales))
        self.noise_shift.copy_(torch.cat(shifts))

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if not self.training:
            return y
        shape = [1, -1] + [1] * (x.dim() - 2)
        return y * self.noise_scale.reshape(shape) + self.noise_shift.reshape(shape)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, scale~U({self.scale_min}, {self.scale_max}), "
            f"shift~U(-{self.shift}, {self.shift})"
        )


NORMS = ("torch", "paper", "noisy")
"""The BN implementations `model.norm` names: PyTorch's nn.BatchNorm1d / nn.BatchNorm2d, this
module's BatchNorm (Algorithm 1), or NoisyBatchNorm (BN, then noise)."""
TORCH_BATCHNORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def create_norm(
    norm: str,
    dims: int,
    eps: float,
    momentum: float,
    noise: Any = None,
    stats_backprop: bool = True,
) -> Callable[[int], nn.Module]:
    """The BN layer `norm` (one of NORMS) names, as a function of its channel count, for inputs
    of `dims` dimensions past the channel's: 1 for (N, C) (the MLP), 2 for (N, C, H, W)
    (Inception); only PyTorch's class depends on it.

    `noise` is noisy BN's (scale_min, scale_max and shift, as a model config's `model.noise`
    holds them); `stats_backprop=False` (the paper's transform only) treats the batch statistics
    as constants in the backward pass.
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not known; use one of {list(NORMS)}.")
    if not stats_backprop and norm != "paper":
        raise ValueError("stats_backprop=False needs the paper's transform: norm='paper'.")
    if (norm == "noisy") != (noise is not None):
        raise ValueError("Noisy BN needs its noise, and the noise needs norm='noisy'.")
    if norm == "paper":
        return functools.partial(
            BatchNorm, eps=eps, momentum=momentum, stats_backprop=stats_backprop
        )
    if norm == "noisy":
        return functools.partial(
            NoisyBatchNorm,
            scale_min=noise.scale_min,
            scale_max=noise.scale_max,
            shift=noise.shift,
            eps=eps,
            momentum=momentum,
        )
    return functools.partial(TORCH_BATCHNORMS[dims], eps=eps, momentum=momentum)
