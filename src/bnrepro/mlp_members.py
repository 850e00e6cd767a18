"""The MLP's members: the nets of Section 4.1 a run trains side by side, one per seed (or per
grid point and seed), held in one vectorized model (bnrepro.models.mlp.MLP).

Which members a config trains (`grid_members`), the model that holds them (`build_model`, its
BN layers bnrepro.nn.create_norm's), whether they fit in memory (`check_memory`), and each
one's test accuracy (`test_accuracy`). A library module: the trainer (bnrepro.train_mlp) and
the claims that rebuild and evaluate its nets (bnrepro.claim_measures, experiments/claims.py)
share it.
"""

import itertools
import math
from typing import Any

import torch
from omegaconf import DictConfig

from bnrepro.errors import ConfigError
from bnrepro.memory import available_memory
from bnrepro.mlp_data import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE
from bnrepro.models.mlp import MLP
from bnrepro.nn import create_norm

# Test images per evaluation forward pass (`test_accuracy`), by device type.
EVAL_CHUNK = {"cpu": 500, "cuda": 5000}


def grid_members(cfg: DictConfig) -> list[dict[str, Any]] | None:
    """The members of a grid run, in order: every (lr, init_std) for every seed, seeds
    innermost; None without a grid (the members are the seeds, at optim.lr and model.init_std)."""
    if cfg.grid.lr is None and cfg.grid.init_std is None:
        return None
    rates = list(cfg.grid.lr) if cfg.grid.lr is not None else [cfg.optim.lr]
    stds = list(cfg.grid.init_std) if cfg.grid.init_std is not None else [cfg.model.init_std]
    combinations = itertools.product(rates, stds, cfg.seeds)
    return [
        {"member": i, "seed": seed, "lr": lr, "init_std": std}
        for i, (lr, std, seed) in enumerate(combinations)
    ]


def parameter_count(cfg: DictConfig) -> int:
    """The parameters and buffers of one member: weights, the classifier's bias, the hidden
    layers' biases (without BN, or with BN after the nonlinearity) and, with BN, each hidden
    unit's gamma, beta, running mean and running variance (noisy BN: and its noise)."""
    m, sizes = cfg.model, list(cfg.model.sizes)
    hidden = sum(sizes[1:-1])
    weights = sum(a * b for a, b in itertools.pairwise(sizes))
    biases = sizes[-1] + (hidden if not m.batch_norm or m.bn_position == "after" else 0)
    norms = (4 + 2 * (m.norm == "noisy")) * hidden if m.batch_norm else 0
    return weights + biases + norms


def estimated_bytes(cfg: DictConfig, members: int, device: torch.device) -> int:
    """About the memory a run of `members` members takes at its peak, on `device`.

    Per member, in float32: its parameters with their gradients and (with momentum) the
    optimizer's buffer, plus the larger of a training step (its batch's gathered input, and
    the activations twice, for the backward pass) and an inference pass over the probe set or
    a chunk of the test set. A pass holds about (the sum of the layer widths + the widest
    hidden layer, three times with BN) floats per example. Plus the data on the device.
    Measured (the growth of peak resident memory per member added, between runs of 200 to 800
    members on a CPU): 2.6 MB a member for the default plain net (this estimates 2.44 MB),
    4.0 MB for BN with momentum (3.65 MB).
    """
    sizes, m = list(cfg.model.sizes), cfg.model
    widest = max(sizes[1:-1]) * (3 if m.batch_norm else 1)
    per_example = sum(sizes[1:]) + widest
    step = cfg.batch_size * (1.25 * sizes[0] + 2 * per_example)
    rows = max(cfg.probe.size, EVAL_CHUNK[device.type])
    copies = 3 if cfg.optim.momentum > 0 else 2
    per_member = copies * parameter_count(cfg) + max(step, rows * per_example)
    data = MNIST_TRAIN_SIZE * sizes[0] + 4 * MNIST_TEST_SIZE * sizes[0]
    return int(4 * members * per_member + data)


def check_memory(cfg: DictConfig, device: torch.device) -> None:
    """Refuses, before anything is loaded or written, a run whose members cannot fit: one
    whose `estimated_bytes` exceed the `available_memory` of its device. The estimate leaves
    out what is small (the framework, the loggers), so a run it lets through may still come
    close to the limit, but one it refuses would run out of memory."""
    factors = [(f"grid.{k}", len(cfg.grid[k])) for k in ("lr", "init_std") if cfg.grid[k]]
    factors.append(("seeds", len(cfg.seeds)))
    members = math.prod(n for _, n in factors)
    needed, available = estimated_bytes(cfg, members, device), available_memory(device)
    if needed <= available:
        return
    product = " x ".join(f"{key} ({n})" for key, n in factors)
    raise ConfigError(
        f"Invalid config: {product} = {members:,} members of {parameter_count(cfg):,} "
        f"parameters each need about {needed / 1e9:.1f} GB (weights, gradients, optimizer "
        f"state and activations), more than the {available / 1e9:.1f} GB of memory available "
        f"on {device}. Fix: train fewer members per run (split the grid over several runs, "
        "e.g. half of grid.lr in each, or use fewer seeds), or use a device with more memory."
    )


def build_model(
    cfg: DictConfig, device: torch.device, members: list[dict[str, Any]] | None = None
) -> MLP:
    """The vectorized net: one member per seed, or per grid member (`grid_members`). Its BN
    layers are `bnrepro.nn.create_norm`'s. `cfg` may be typed or as Hydra composes it, which
    names `model.noise` only for noisy BN."""
    m = cfg.model
    norm = None
    if m.batch_norm:
        norm = create_norm(
            m.norm,
            1,
            m.bn_eps,
            m.bn_momentum,
            noise=m.get("noise"),
            stats_backprop=m.bn_stats_backprop,
        )
    seeds = [member["seed"] for member in members] if members else list(cfg.seeds)
    stds = [member["init_std"] for member in members] if members else m.init_std
    model = MLP(len(seeds), m.sizes, m.activation, norm, m.bn_position)
    model.init_gaussian(stds, seeds)
    return model.to(device)


@torch.no_grad()
def test_accuracy(
    model: MLP, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None
) -> list[float]:
    """Accuracy of each member on (x, y), BN using its inference statistics.

    On a CPU in chunks of 500 images, whose activations for every member (48 members: 10 MB a
    layer) stay in the processor's cache: a 48-member evaluation is about 2.8x faster than in
    chunks of 5,000 (96 MB a layer), a single member's no slower. On a GPU, chunks of 5,000."""
    chunk = chunk or EVAL_CHUNK[x.device.type]
    model.eval()
    correct = sum(
        (model(x[i : i + chunk]).argmax(-1) == y[i : i + chunk]).sum(-1)
        for i in range(0, len(x), chunk)
    )
    model.train()
    return (correct.double() / len(x)).tolist()
