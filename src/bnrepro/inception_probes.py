"""What watches an Inception run on its logged steps: the late probe and the diagnostics.

- `late_input_percentiles`: the percentiles of one late ReLU's input (Figure 1(b, c) on the
  proxy), metrics.csv's PROBE_COLUMNS when `late_probe.every` is set;
- `make_diagnostics`: Santurkar et al.'s internal covariate shift of ICS_LAYERS and the loss
  landscape along the gradient (bnrepro.ics_measures), its DIAGNOSTIC_COLUMNS when
  `diagnostics.every` is set.
A module of its own because the columns are read as well as written: the ics_proxy driver
draws DIAGNOSTIC_COLUMNS by ICS_LAYERS, and the config check bounds the probed channel by
PROBED_MODULE's width.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bnrepro import ics_measures
from bnrepro.drift import QUANTILES
from bnrepro.inception_data import EvalBatches
from bnrepro.models.inception import Inception

PROBE_COLUMNS = ("p15", "p50", "p85")
PROBED_MODULE = "5b"
"""The probe watches channel `late_probe.unit` of this module's 1x1 branch: the last module's."""
ICS_LAYERS = {
    "conv2": "stem.conv2.0",
    "3a": "blocks.inception3a.branch1x1.0",
    "4a": "blocks.inception4a.branch1x1.0",
    "5b": "blocks.inception5b.branch1x1.0",
    "fc": "fc",
}
"""The layers whose internal covariate shift the diagnostics measure (column label -> module),
from the stem to the classifier. Each is the first layer of its module to run, so the
parameters that run before it (those `bnrepro.ics_measures` moves) are exactly the layers
below it."""
DIAGNOSTIC_COLUMNS = (
    *(f"ics_l2_{label}" for label in ICS_LAYERS),
    *(f"ics_cos_{label}" for label in ICS_LAYERS),
    "loss_range",
    "grad_change",
    "beta",
)


def probe_images(eval_batches: EvalBatches, size: int) -> torch.Tensor:
    """The first `size` held-out images, as the network sees them."""
    images, count = [], 0
    for x, _ in eval_batches():
        images.append(x)
        count += len(x)
        if count >= size:
            break
    return torch.cat(images)[:size]


@torch.no_grad()
def late_input_percentiles(model: Inception, images: torch.Tensor, unit: int) -> list[float]:
    """The QUANTILES of the input to one late ReLU: channel `unit` of the last module's 1x1
    branch, over `images` and every pixel, the network in training mode (BN normalizes with the
    probe's own statistics and noisy BN applies the current step's noise, as Figure 1(c) shows
    the training network). BN's running statistics are left as they were; dropout and the
    classifier are not run."""
    block = getattr(model.blocks, f"inception{PROBED_MODULE}").branch1x1
    captured = []

    def capture(_module: nn.Module, inputs: tuple[torch.Tensor]) -> None:
        captured.append(inputs[0][:, unit].float().flatten().clone())  # before the in-place ReLU

    saved = [b.clone() for b in model.buffers()]
    hook = block[-1].register_forward_pre_hook(capture)
    try:
        model.blocks(model.stem(images))
    finally:
        hook.remove()
        for b, s in zip(model.buffers(), saved, strict=True):
            b.copy_(s)
    q = torch.tensor(QUANTILES, device=captured[0].device)
    return torch.quantile(captured[0], q).tolist()


def make_diagnostics(
    model: Inception, images: torch.Tensor, multipliers: list[float], autocast: Callable
) -> Callable[[tuple[torch.Tensor, ...], float], dict[str, float]]:
    """Santurkar et al.'s measurements (bnrepro.ics_measures, one member) at the current weights
    on a step's batch (what `make_batch` made of its inputs), at learning rate `lr`: the ICS of
    each of ICS_LAYERS and the landscape along the gradient, as DIAGNOSTIC_COLUMNS. Weights,
    buffers and the optimizer are left as they were."""
    model.eval()  # the order only: no dropout draw, no statistics
    order = ics_measures.forward_order(model, lambda: model(images[:2]))
    model.train()
    weights = [f"{module}.weight" for module in ICS_LAYERS.values()]

    def loss_of(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, keep = batch
        with autocast():
            return F.cross_entropy(net(x, keep), y).float().reshape(1)

    def measure(batch: tuple[torch.Tensor, ...], lr: float) -> dict[str, float]:
        loss = ics_measures.functional_loss(model, loss_of, batch)
        params = ics_measures.current_params(model)
        shifts = ics_measures.internal_covariate_shift(loss, params, order, weights, lr)
        shape = ics_measures.landscape(loss, params, lr, multipliers=multipliers)
        columns = {}
        for label, weight in zip(ICS_LAYERS, weights, strict=True):
            columns[f"ics_l2_{label}"] = shifts[weight].l2.item()
        for label, weight in zip(ICS_LAYERS, weights, strict=True):
            columns[f"ics_cos_{label}"] = shifts[weight].cosine.item()
        columns["loss_range"] = shape.loss_range.item()
        columns["grad_change"] = shape.grad_change.item()
        columns["beta"] = shape.beta.item()
        return columns

    return measure
