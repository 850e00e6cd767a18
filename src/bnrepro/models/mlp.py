"""The MNIST network of the paper's Section 4.1, vectorized over independent members.

One `MLP` holds `members` independent networks (one per seed) and trains them in one
step: every weight has a leading member dimension and every batch norm keeps its own
statistics per member. A single-seed run is simply `members=1`, so a member of a
larger ensemble follows the same arithmetic as the run with its seed alone.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
}


class EnsembleLinear(nn.Module):
    """`members` independent linear maps: (E, B, in) or shared (B, in) -> (E, B, out).

    A batch per member is one batched product with the bias added in it (`baddbmm`): one
    operator forward and one autograd node backward instead of matmul's broadcasting views
    and a separate addition, which on a CPU is a measurable part of a small network's step.
    """

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and self.bias is not None:
            return torch.baddbmm(self.bias, x, self.weight)
        if x.dim() == 3:
            return torch.bmm(x, self.weight)
        y = torch.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias


class EnsembleNorm(nn.Module):
    """Applies a (N, C) normalization layer to each member's features over its own batch.

    The member and feature dimensions are flattened into channels, so a standard
    BatchNorm1d of `members * features` channels computes exactly per-member statistics.
    """

    def __init__(self, members: int, features: int, norm: NormFactory):
        super().__init__()
        self.norm = norm(members * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members, batch, features = x.shape
        y = self.norm(x.transpose(0, 1).reshape(batch, members * features))
        return y.reshape(batch, members, features).transpose(0, 1)


class MLP(nn.Module):
    """Fully connected net: hidden layers z = g(BN(Wu)) (or g(Wu + b) without BN), then linear.

    With the norm before the nonlinearity (the paper's placement) the hidden layers have no
    bias: BN's beta takes its role. `norm_position="after"` is the ablation z = BN(g(Wu + b)).
    """

    def __init__(
        self,
        members: int,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        norm: NormFactory | None = None,
        norm_position: str = "before",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={activation!r} is not known; use one of {sorted(ACTIVATIONS)}."
            )
        if norm_position not in ("before", "after"):
            raise ValueError(
                f"model.bn_position={norm_position!r} is not known; use 'before' or 'after'."
            )
        self.members = members
        self.activation = ACTIVATIONS[activation]
        self.norm_after = norm_position == "after"
        hidden_bias = norm is None or self.norm_after
        pairs = list(zip(sizes[:-1], sizes[1:], strict=False))
        self.hidden = nn.ModuleList(
            EnsembleLinear(members, n_in, n_out, bias=hidden_bias) for n_in, n_out in pairs[:-1]
        )
        self.norms = nn.ModuleList(
            EnsembleNorm(members, n_out, norm) if norm is not None else nn.Identity()
            for _, n_out in pairs[:-1]
        )
        self.classifier = EnsembleLinear(members, *pairs[-1], bias=True)

    @torch.no_grad()
    def init_gaussian(self, std: float | Sequence[float], seeds: Sequence[int]) -> None:
        """Draws every member's weights from N(0, std^2) with that member's own seed.

        `std` is one value for all members or one per member. Weights are drawn on the CPU,
        layer by layer, from one generator per member seeded with its seed, so a member's
        initial weights depend only on its seed and std (not on `members` or the device).
        Biases start at zero; norm layers keep their own initialization (gamma=1, beta=0).
        """
        stds = [std] * len(seeds) if isinstance(std, int | float) else list(std)
        if len(seeds) != self.members or len(stds) != self.members:
            raise ValueError(
                f"{len(seeds)} seeds and {len(stds)} stds given for {self.members} members."
            )
        layers = [*self.hidden, self.classifier]
        for member, (seed, member_std) in enumerate(zip(seeds, stds, strict=True)):
            generator = torch.Generator().manual_seed(seed)
            for layer in layers:
                w = torch.randn(layer.weight.shape[1:], generator=generator) * member_std
                layer.weight[member].copy_(w)
                if layer.bias is not None:
                    layer.bias[member].zero_()

    def hidden_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (last hidden activation, input to the last hidden nonlinearity)."""
        pre = x
        for linear, norm in zip(self.hidden, self.norms, strict=True):
            if self.norm_after:
                pre = linear(x)
                x = norm(self.activation(pre))
            else:
                pre = norm(linear(x))
                x = self.activation(pre)
        return x, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden_forward(x)[0])
