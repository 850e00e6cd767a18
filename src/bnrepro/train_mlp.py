"""The MNIST MLP trainer (Section 4.1, Figure 1): `python -m bnrepro.train [model=mlp_bn] ...`.

Reads top to bottom: check the config, put the whole dataset on the device, build one
vectorized model holding a member per seed, then train for `steps` mini-batches drawn by
index, logging test accuracy and the percentiles of one sigmoid's input along the way. The run
directory (claim, resume, checkpoints, statuses) is bnrepro.lifecycle's; the files a run
writes are listed in docs/running.md.
"""

import contextlib
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from bnrepro import ics
from bnrepro import nn as paper_nn
from bnrepro.config import MLPConfig, check, select_device, typed, validate_run
from bnrepro.data import load_mnist
from bnrepro.errors import ConfigError
from bnrepro.graphs import cuda_graphed
from bnrepro.lifecycle import Run
from bnrepro.models.mlp import ACTIVATIONS, MLP

METRIC_COLUMNS = ("step", "seed", "train_loss", "test_acc", "p15", "p50", "p85")
# With a member grid (grid.lr / grid.init_std): which member a row is, and its settings.
GRID_COLUMNS = ("step", "member", "seed", "lr", "init_std", *METRIC_COLUMNS[2:])
PERCENTILES = (0.15, 0.50, 0.85)
# What a checkpoint must agree on with the config that resumes it.
RESUME_KEYS = (
    "data.name",
    "data.input",
    "model",
    "optim",
    "seeds",
    "batch_size",
    "eval_every",
    "probe",
    "grid",
    "diagnostics",
)
MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000
# Test images per evaluation forward pass (`test_accuracy`), by device type.
EVAL_CHUNK = {"cpu": 500, "cuda": 5000}


def validate(cfg: DictConfig) -> DictConfig:
    """The typed config, its values checked: anything that would fail late or silently train
    something else is a ConfigError naming the value and the fix."""
    check(
        cfg.data.name == "mnist" and "input" in cfg.data,
        "data.name",
        cfg.data.name,
        "The MLP trains on MNIST (data=mnist); the proxies are for experiment=inception.",
    )
    cfg = typed(cfg, MLPConfig, "MLP")
    validate_run(cfg)
    m, o = cfg.model, cfg.optim
    check(
        cfg.data.input in ("grey", "binary"),
        "data.input",
        cfg.data.input,
        "Use data.input=grey or data.input=binary.",
    )
    check(
        cfg.batch_size <= MNIST_TRAIN_SIZE,
        "batch_size",
        cfg.batch_size,
        f"A step draws its batch from the {MNIST_TRAIN_SIZE:,} training images.",
    )
    check(o.lr > 0, "optim.lr", o.lr, "Use a positive learning rate, e.g. optim.lr=0.1.")
    for key in ("momentum", "weight_decay"):
        check(o[key] >= 0, f"optim.{key}", o[key], f"Use optim.{key} >= 0 (0 turns it off).")
    check(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "Use a small positive eps, e.g. 1e-5.")
    check(
        0 <= m.bn_momentum <= 1,
        "model.bn_momentum",
        m.bn_momentum,
        "Use a rate in [0, 1], e.g. 0.1.",
    )
    sizes = list(m.sizes)
    check(
        len(sizes) >= 3 and sizes[0] == 784 and sizes[-1] == 10 and min(sizes) >= 1,
        "model.sizes",
        sizes,
        "MNIST needs 784 inputs, 10 outputs and at least one hidden "
        "layer, e.g. model.sizes=[784,100,100,100,10].",
    )
    check(m.init_std > 0, "model.init_std", m.init_std, "Use a positive std, e.g. 0.1.")
    for key in ("lr", "init_std"):
        values = None if cfg.grid[key] is None else list(cfg.grid[key])
        check(
            values != [],
            f"grid.{key}",
            values,
            f"An empty grid list trains nothing: give a list of one or more values, e.g. "
            f"grid.{key}=[0.01,0.1,1.0], or null.",
        )
        check(
            values is None or min(values) > 0,
            f"grid.{key}",
            values,
            f"Give a list of positive values, e.g. grid.{key}=[0.01,0.1,1.0], or null.",
        )
        check(
            values is None or len(set(values)) == len(values),
            f"grid.{key}",
            values,
            f"Give distinct values (a repeated one trains the same member twice), e.g. "
            f"grid.{key}=[0.01,0.1,1.0].",
        )
    check(
        cfg.grid.lr is None or o.weight_decay == 0,
        "optim.weight_decay",
        o.weight_decay,
        "A member's rate scales its loss, which would not scale weight decay: use "
        "optim.weight_decay=0 with grid.lr.",
    )
    check(
        m.activation in ACTIVATIONS,
        "model.activation",
        m.activation,
        f"Use one of {sorted(ACTIVATIONS)}.",
    )
    check(
        m.bn_position in ("before", "after"),
        "model.bn_position",
        m.bn_position,
        "Use before (the paper's) or after.",
    )
    check(
        m.norm in ("torch", "paper", "noisy"),
        "model.norm",
        m.norm,
        "Use torch, paper, or noisy (model=mlp_noisy).",
    )
    check(
        (m.norm == "noisy") == (m.noise is not None),
        "model.noise" if m.noise is not None else "model.norm",
        OmegaConf.to_container(m.noise) if m.noise is not None else m.norm,
        "Noisy BN needs its noise and the noise needs noisy BN: use model=mlp_noisy.",
    )
    if m.noise is not None:
        noise = m.noise
        check(
            0 < noise.scale_min <= noise.scale_max,
            "model.noise.scale_min",
            noise.scale_min,
            "Use 0 < model.noise.scale_min <= model.noise.scale_max, e.g. 0.5 and 2.0.",
        )
        check(noise.shift >= 0, "model.noise.shift", noise.shift, "Use a shift >= 0, e.g. 1.0.")
        check(
            m.batch_norm and m.bn_stats_backprop,
            "model.batch_norm",
            m.batch_norm,
            "Noisy BN is BN with noise after it: use model=mlp_noisy.",
        )
    check(
        m.bn_stats_backprop or m.norm == "paper",
        "model.bn_stats_backprop",
        False,
        "Treating the batch statistics as constants needs the paper's transform: add "
        "model.norm=paper.",
    )
    for key in ("every", "size"):
        check(cfg.probe[key] >= 1, f"probe.{key}", cfg.probe[key], "Use a positive value.")
    check(
        cfg.probe.size <= 10_000,
        "probe.size",
        cfg.probe.size,
        "The probe set is drawn from the 10,000 test images.",
    )
    check(
        0 <= cfg.probe.unit < sizes[-2],
        "probe.unit",
        cfg.probe.unit,
        f"Pick a unit in 0..{sizes[-2] - 1}.",
    )
    d = cfg.diagnostics
    check(
        d.every >= 0,
        "diagnostics.every",
        d.every,
        "Use 0 (no diagnostics) or a step count, e.g. 500.",
    )
    check(
        len(d.multipliers) > 0 and min(d.multipliers) > 0,
        "diagnostics.multipliers",
        list(d.multipliers),
        "Give positive step sizes in multiples of the learning rate, e.g. [0.5,1.0,2.0].",
    )
    return cfg


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


def available_memory(device: torch.device) -> int:
    """Bytes this process can still take on `device`: the GPU's free memory, or on the CPU the
    kernel's MemAvailable (free memory and the page cache it can reclaim), or where there is
    no /proc/meminfo, the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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
    """The vectorized net: one member per seed, or per grid member (`grid_members`)."""
    m = cfg.model

    def make_norm(channels: int) -> nn.Module:
        if m.norm == "paper":
            return paper_nn.BatchNorm(
                channels, eps=m.bn_eps, momentum=m.bn_momentum, stats_backprop=m.bn_stats_backprop
            )
        if m.norm == "noisy":
            n = m.noise
            return paper_nn.NoisyBatchNorm(
                channels, n.scale_min, n.scale_max, n.shift, eps=m.bn_eps, momentum=m.bn_momentum
            )
        return nn.BatchNorm1d(channels, eps=m.bn_eps, momentum=m.bn_momentum)

    norm = make_norm if m.batch_norm else None
    seeds = [member["seed"] for member in members] if members else list(cfg.seeds)
    stds = [member["init_std"] for member in members] if members else m.init_std
    model = MLP(len(seeds), m.sizes, m.activation, norm, m.bn_position)
    model.init_gaussian(stds, seeds)
    return model.to(device)


def to_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 pixels -> float network input: grey levels in [0, 1], or binarized at 128."""
    if mode == "binary":
        return (images >= 128).float()
    return images.float().div_(255)


def data_seed(seed: int) -> int:
    """A seed for the data order of `seed`, independent of the weight-initialization stream."""
    return int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1, np.uint64)[0] >> 1)


def noise_seed(seed: int) -> int:
    """A seed for noisy BN's noise of `seed`: the seed's third SeedSequence child, independent
    of its weights and its data order."""
    return int(np.random.SeedSequence(seed).spawn(3)[2].generate_state(1, np.uint64)[0] >> 1)


def diagnostic_columns(cfg: DictConfig) -> tuple[str, ...]:
    """metrics.csv's columns for bnrepro.ics's measurements (none when diagnostics are off):
    ICS of every layer with a layer below it (k = 2 .. the output layer), then the landscape."""
    if cfg.diagnostics.every == 0:
        return ()
    layers = range(2, len(cfg.model.sizes))
    return (
        *(f"ics_l2_{k}" for k in layers),
        *(f"ics_cos_{k}" for k in layers),
        "loss_range",
        "grad_change",
        "beta",
    )


class EpochSampler:
    """Mini-batch indices, one row per seed: each epoch a fresh permutation of the training set.

    Each seed has its own generator, so a member's data order does not depend on the others;
    it is seeded from the seed's second SeedSequence child, so data order and initial weights
    (drawn from a generator seeded with the seed itself) are independent streams.
    Its state (generators and current permutations) goes into checkpoints.
    """

    def __init__(self, seeds: list[int], n: int, batch_size: int, device: torch.device):
        if batch_size > n:
            raise ConfigError(
                f"Invalid config: batch_size={batch_size}. A step draws its batch from the {n} "
                "training examples: use a smaller batch_size."
            )
        self.generators = [torch.Generator().manual_seed(data_seed(seed)) for seed in seeds]
        self.n, self.batch_size, self.device = n, batch_size, device
        self.steps_per_epoch = n // batch_size
        self.order: torch.Tensor | None = None

    def batch(self, step: int) -> torch.Tensor:
        """Indices (members, batch_size) of the mini-batches of training step `step`."""
        position = step % self.steps_per_epoch
        if position == 0 or self.order is None:
            self.order = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.order = self.order.to(self.device)
        start = position * self.batch_size
        return self.order[:, start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generators": [g.get_state() for g in self.generators],
            "order": None if self.order is None else self.order.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, g_state in zip(self.generators, state["generators"], strict=True):
            g.set_state(g_state)
        self.order = None if state["order"] is None else state["order"].to(self.device)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module) -> Iterator[None]:
    """Restores every buffer (BN running statistics) after a training-mode probe forward."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved, strict=True):
                b.copy_(s)


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


@torch.no_grad()
def sigmoid_input_percentiles(model: MLP, x_probe: torch.Tensor, unit: int) -> list[list[float]]:
    """15/50/85th percentiles per member of the probed unit's input, training-mode network.

    In training mode BN normalizes with the probe set's own statistics, as the paper's
    Figure 1(c) shows the training network; the running statistics are left untouched.
    """
    with preserved_buffers(model):
        _, pre = model.hidden_forward(x_probe)
    q = torch.tensor(PERCENTILES, device=pre.device)
    return torch.quantile(pre[:, :, unit], q, dim=1).T.tolist()


def batch_of(
    index: torch.Tensor, x_train: torch.Tensor, y_train: torch.Tensor, input_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input (members, batch, 784) and labels (members * batch,) of `index`."""
    flat = index.reshape(-1)
    x = to_input(x_train.index_select(0, flat), input_mode).view(*index.shape, x_train.shape[1])
    return x, y_train.index_select(0, flat)


def member_losses(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each member's mean cross-entropy on its own mini-batch, shape (members,)."""
    x, labels = batch
    losses = F.cross_entropy(model(x).flatten(0, 1), labels, reduction="none")
    return losses.view(x.shape[0], -1).mean(1)


def make_diagnostics(
    model: MLP, x_probe: torch.Tensor, lr: torch.Tensor, multipliers: list[float]
) -> Callable[[tuple[torch.Tensor, torch.Tensor]], list[dict[str, float]]]:
    """Santurkar et al.'s measurements (bnrepro.ics) at the current weights on a batch, one
    dict of diagnostic_columns per member. The step they take is plain SGD at each member's
    learning rate `lr` (members,); weights, buffers and the optimizer are left as they were."""
    weights = [f"hidden.{i}.weight" for i in range(len(model.hidden))] + ["classifier.weight"]
    order = ics.forward_order(model, lambda: model(x_probe[:2]))

    def measure(batch: tuple[torch.Tensor, torch.Tensor]) -> list[dict[str, float]]:
        loss = ics.functional_loss(model, member_losses, batch)
        params = ics.current_params(model)
        shifts = ics.internal_covariate_shift(loss, params, order, weights, lr, model.members)
        shape = ics.landscape(loss, params, lr, multipliers, model.members)
        columns = {}
        for k, weight in enumerate(weights[1:], start=2):
            columns[f"ics_l2_{k}"] = shifts[weight].l2.tolist()
        for k, weight in enumerate(weights[1:], start=2):
            columns[f"ics_cos_{k}"] = shifts[weight].cosine.tolist()
        columns["loss_range"] = shape.loss_range.tolist()
        columns["grad_change"] = shape.grad_change.tolist()
        columns["beta"] = shape.beta.tolist()
        return [{name: values[i] for name, values in columns.items()} for i in range(model.members)]

    return measure


def make_train_step(
    model: MLP,
    optimizer: torch.optim.Optimizer,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    cfg,
    lr_scale: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One SGD step on the mini-batches picked by `index` (members, batch); returns each
    member's mean loss. The loss summed over members gives each member its own gradient.

    `lr_scale` (members,) multiplies each member's loss before the sum: its gradient, and so
    its update and momentum, scale by the same factor, which is a per-member learning rate
    (optim.lr * lr_scale) without a per-member optimizer; a factor of 1 changes nothing.
    """
    input_mode = cfg.data.input

    def train_step(index: torch.Tensor) -> torch.Tensor:
        member_loss = member_losses(model, batch_of(index, x_train, y_train, input_mode))
        optimizer.zero_grad(set_to_none=True)
        (member_loss if lr_scale is None else member_loss * lr_scale).sum().backward()
        optimizer.step()
        return member_loss.detach()

    return train_step


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains every seed of `cfg` for cfg.steps steps, logging into `run_dir`; returns run info.

    With `resume=true` and a checkpoint in `run_dir`, training continues from it and ends
    with the same files as an uninterrupted run, byte for byte; a run with nothing left to
    train is left as it is, and its run.json returned.
    """
    cfg = validate(cfg)
    device = select_device(cfg.device)
    check_memory(cfg, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    members = grid_members(cfg)
    seeds = [member["seed"] for member in members] if members else list(cfg.seeds)
    # Data: the whole set lives on the device as uint8; batches are drawn by index.
    train_images, train_labels = load_mnist(cfg.data.root, "train")
    test_images, test_labels = load_mnist(cfg.data.root, "test")
    x_train = train_images.flatten(1).to(device)
    y_train = train_labels.to(device)
    x_test = to_input(test_images.flatten(1).to(device), cfg.data.input)
    y_test = test_labels.to(device)
    x_probe = x_test[: cfg.probe.size]

    columns = (*(METRIC_COLUMNS if members is None else GRID_COLUMNS), *diagnostic_columns(cfg))
    with Run(run_dir, cfg, columns, RESUME_KEYS, members=members) as run:
        if run.complete:
            return run.info
        model = build_model(cfg, device, members)
        # Noisy BN: each member draws its layers' noise from its own generator, once per step.
        noisy_layers = [m for m in model.modules() if isinstance(m, paper_nn.NoisyBatchNorm)]
        noise = [torch.Generator().manual_seed(noise_seed(seed)) for seed in seeds]
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        sampler = EpochSampler(seeds, len(x_train), cfg.batch_size, device)
        loss = None
        if run.checkpoint:
            state = run.checkpoint["trainer"]
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            sampler.load_state_dict(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
            if noisy_layers:
                for generator, generator_state in zip(noise, state["noise"], strict=True):
                    generator.set_state(generator_state)
        lr_scale = None
        if cfg.grid.lr is not None:
            rates = [member["lr"] / cfg.optim.lr for member in members]
            lr_scale = torch.tensor(rates, dtype=torch.float32, device=device)
        train_step = make_train_step(model, optimizer, x_train, y_train, cfg, lr_scale)
        diagnostics_every = cfg.diagnostics.every
        if diagnostics_every:
            rates = [member["lr"] for member in members] if members else [cfg.optim.lr] * len(seeds)
            measure = make_diagnostics(
                model,
                x_probe,
                torch.tensor(rates, device=device),
                list(cfg.diagnostics.multipliers),
            )
        diagnosed: list[dict[str, float]] | None = None
        use_graph = device.type == "cuda" and cfg.cuda_graph
        if use_graph:
            example_index = torch.zeros(len(seeds), cfg.batch_size, dtype=torch.long, device=device)
            try:
                train_step = cuda_graphed(model, optimizer, train_step, (example_index,))
            except RuntimeError as error:  # the model and optimizer are back as they were
                use_graph = False
                print(
                    f"bnrepro: CUDA graph capture failed ({error}); training eagerly. Set "
                    "cuda_graph=false to skip the attempt.",
                    file=sys.stderr,
                )

        def trainer_state() -> dict[str, Any]:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            if noisy_layers:
                state["noise"] = [generator.get_state() for generator in noise]
            return state

        def log(step: int) -> None:
            """Percentiles of the probed unit, and test accuracy when due, one row per seed."""
            percentiles = sigmoid_input_percentiles(model, x_probe, cfg.probe.unit)
            accuracy = (
                test_accuracy(model, x_test, y_test) if run.due(step, cfg.eval_every) else None
            )
            losses = loss.tolist() if loss is not None else [None] * len(seeds)
            run.log(
                [
                    {
                        "step": step,
                        **(members[member] if members else {"seed": seed}),
                        "train_loss": losses[member],
                        "test_acc": accuracy[member] if accuracy else None,
                        "p15": percentiles[member][0],
                        "p50": percentiles[member][1],
                        "p85": percentiles[member][2],
                        **(diagnosed[member] if diagnosed else {}),
                    }
                    for member, seed in enumerate(seeds)
                ]
            )
            if accuracy:
                progress.set_postfix(test_acc=f"{sum(accuracy) / len(accuracy):.4f}")

        run.start(trainer_state, device, cuda_graph=use_graph)
        progress = tqdm(
            total=cfg.steps, initial=run.start_step, unit="step", disable=not sys.stderr.isatty()
        )
        probe_every, eval_every = cfg.probe.every, cfg.eval_every
        with progress:
            if run.start_step == 0:
                log(0)
            for step in run.steps():
                index = sampler.batch(step - 1)
                for layer in noisy_layers:
                    layer.resample(noise)
                # Measured on this step's batch and noise, at the weights before its update.
                due = diagnostics_every and step % diagnostics_every == 0
                diagnosed = (
                    measure(batch_of(index, x_train, y_train, cfg.data.input)) if due else None
                )
                loss = train_step(index)
                progress.update(1)
                if due or run.due(step, probe_every, eval_every):
                    log(step)
        return run.finish(model.state_dict())
