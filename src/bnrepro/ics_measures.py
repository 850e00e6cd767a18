"""Santurkar et al.'s diagnostics of internal covariate shift and loss smoothness.

Santurkar, Tsipras, Ilyas and Madry (NeurIPS 2018, "How Does Batch Normalization Help
Optimization?", arXiv:1805.11604) put the paper's explanation of BN to the test with two
measurements, both taken here at the current weights on one batch:

- `internal_covariate_shift` (their Definition 2.1): for each layer k, G is the gradient of the
  loss with respect to W_k, and G' the same gradient after every layer below k has taken the
  batch's SGD step (-lr times its gradient). ICS is ||G - G'|| / ||G|| (we divide by ||G||, so
  that nets whose gradients differ in size compare) and cos(G, G').
- `landscape` (their Section 3.1, Figure 4): from the weights w, along the gradient g, at
  w - eta g for eta = multiplier x lr: the range (max - min) of the loss over those points,
  the gradient predictiveness max ||g - g(w - eta g)||, and the effective beta-smoothness
  max ||g - g(w - eta g)|| / ||eta g||.

Both work on any model through `torch.func.functional_call`: the weights are never written,
the model's buffers (BN running statistics, noise) are cloned for every forward, so nothing of
the model or its optimizer changes. A model that holds several independent members in one
module (bnrepro.models.mlp: every parameter member-major, `p.reshape(members, -1)` is one row
per member) gets every number per member; an ordinary model is `members=1`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]
LossFn = Callable[[Params], Tensor]
"""Loss of each member, shape (members,), for the parameters given (a full set)."""


class _Bound(nn.Module):
    """`loss_of(model, inputs)` as a module, so that functional_call can swap `model`'s state."""

    def __init__(self, model: nn.Module, loss_of: Callable[[nn.Module, Any], Tensor]):
        super().__init__()
        self.model, self.loss_of = model, loss_of

    def forward(self, inputs: Any) -> Tensor:
        return self.loss_of(self.model, inputs)


def functional_loss(
    model: nn.Module, loss_of: Callable[[nn.Module, Any], Tensor], inputs: Any
) -> LossFn:
    """A LossFn: `loss_of(model, inputs)` (each member's loss) with the given parameters in
    place of the model's and its buffers replaced by copies, so a training-mode forward leaves
    BN's running statistics (and any other buffer) as they were. The model's train/eval mode is
    used as it is."""
    bound = _Bound(model, loss_of)
    buffers = {f"model.{name}": b for name, b in model.named_buffers()}

    def loss(params: Params) -> Tensor:
        state = {f"model.{name}": p for name, p in params.items()}
        state.update({name: b.clone() for name, b in buffers.items()})
        return functional_call(bound, state, (inputs,), strict=True, tie_weights=False).reshape(-1)

    return loss


def current_params(model: nn.Module) -> Params:
    """The model's trainable parameters, detached (the diagnostics never write them)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def forward_order(model: nn.Module, run_forward: Callable[[], Any]) -> list[str]:
    """Names of the model's parameters in the order their modules first run in
    `run_forward()` (parameters of one module together, in registration order). The forward
    runs without gradients and the model's buffers are put back afterwards."""
    order: list[str] = []
    names = {id(m): name for name, m in model.named_modules()}

    def record(module: nn.Module, _args: tuple) -> None:
        prefix = names[id(module)]
        for name, _ in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            if full not in order:
                order.append(full)

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()]
    saved = [b.clone() for b in model.buffers()]
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)
    return order


def below(order: Sequence[str], weight: str) -> list[str]:
    """The parameters that run before `weight`'s module (its own bias excluded)."""
    module = weight.rpartition(".")[0]
    first = next(i for i, name in enumerate(order) if name.rpartition(".")[0] == module)
    return list(order[:first])


def _rows(t: Tensor, members: int) -> Tensor:
    return t.reshape(members, -1)


def member_dot(a: Sequence[Tensor], b: Sequence[Tensor], members: int) -> Tensor:
    """sum over tensors of each member's inner product, shape (members,)."""
    return sum((_rows(x, members) * _rows(y, members)).sum(1) for x, y in zip(a, b, strict=True))


def member_norm(a: Sequence[Tensor], members: int) -> Tensor:
    return member_dot(a, a, members).sqrt()


def _lr_rows(lr: float | Tensor, members: int, like: Tensor) -> Tensor:
    """The learning rate as a (members, 1) column (one per member, or one for all)."""
    lr = torch.as_tensor(lr, dtype=like.dtype, device=like.device)
    return lr.reshape(-1, 1).expand(members, 1)


def gradients(loss: LossFn, params: Params, names: Sequence[str]) -> tuple[Tensor, list[Tensor]]:
    """(each member's loss, the gradients of the members' summed loss w.r.t. `names`).
    Members are independent, so the sum gives every member its own gradient."""
    leaves = {name: p.detach().requires_grad_(name in names) for name, p in params.items()}
    with torch.enable_grad():
        losses = loss(leaves)
        grads = torch.autograd.grad(losses.sum(), [leaves[name] for name in names])
    return losses.detach(), [g.detach() for g in grads]


def sgd_step(params: Params, grads: dict[str, Tensor], lr: float | Tensor, members: int) -> Params:
    """`params` with every parameter of `grads` moved by -lr x its gradient (per-member lr)."""
    moved = dict(params)
    for name, grad in grads.items():
        p = params[name]
        step = _lr_rows(lr, members, p) * _rows(grad, members)
        moved[name] = p - step.reshape(p.shape)
    return moved


@dataclass
class LayerShift:
    """ICS of one layer, per member: ||G - G'|| / ||G|| and cos(G, G')."""

    l2: Tensor
    cosine: Tensor


def internal_covariate_shift(
    loss: LossFn,
    params: Params,
    order: Sequence[str],
    weights: Sequence[str],
    lr: float | Tensor,
    members: int = 1,
) -> dict[str, LayerShift]:
    """ICS of each layer named in `weights` (their Definition 2.1), per member.

    `order` is every parameter in forward order (`forward_order`); the layers below a weight
    are the parameters before its module. One backward pass gives G for every layer; each
    layer with parameters below it takes one more, with those parameters moved by -lr x their
    gradient. A layer with nothing below it has G' = G: ICS 0, cosine 1.
    """
    _, grads = gradients(loss, params, list(order))
    grad_of = dict(zip(order, grads, strict=True))
    shifts = {}
    for weight in weights:
        g = grad_of[weight]
        lower = below(order, weight)
        if lower:
            moved = sgd_step(params, {name: grad_of[name] for name in lower}, lr, members)
            (g_after,) = gradients(loss, moved, [weight])[1]
        else:
            g_after = g
        norm, norm_after = member_norm([g], members), member_norm([g_after], members)
        shifts[weight] = LayerShift(
            l2=member_norm([g - g_after], members) / norm,
            cosine=member_dot([g], [g_after], members) / (norm * norm_after),
        )
    return shifts


@dataclass
class Landscape:
    """Along the gradient, per member: loss range, gradient predictiveness, effective beta."""

    loss_range: Tensor
    grad_change: Tensor
    beta: Tensor


def landscape(
    loss: LossFn,
    params: Params,
    lr: float | Tensor,
    multipliers: Sequence[float],
    members: int = 1,
) -> Landscape:
    """Santurkar et al.'s Figure 4 measurements at `params`, along the loss's gradient with
    respect to every parameter, at w - m lr g for each multiplier m (see the module docstring)."""
    names = list(params)
    _, g = gradients(loss, params, names)
    grad = dict(zip(names, g, strict=True))
    g_norm = member_norm(g, members)
    losses, changes, betas = [], [], []
    for multiplier in multipliers:
        eta = _lr_rows(lr, members, g[0]).reshape(-1) * multiplier
        there = sgd_step(params, grad, eta, members)
        loss_there, g_there = gradients(loss, there, names)
        change = member_norm([a - b for a, b in zip(g, g_there, strict=True)], members)
        losses.append(loss_there)
        changes.append(change)
        betas.append(change / (eta * g_norm))
    losses_t = torch.stack(losses)
    return Landscape(
        loss_range=losses_t.max(0).values - losses_t.min(0).values,
        grad_change=torch.stack(changes).max(0).values,
        beta=torch.stack(betas).max(0).values,
    )
