"""The MNIST MLP trainer (Section 4.1, Figure 1): `python -m bnrepro.train [model=mlp_bn] ...`.

Reads top to bottom: check the config, put the whole dataset on the device (bnrepro.mlp_data),
build one vectorized model holding a member per seed (bnrepro.mlp_members), then train for
`steps` mini-batches drawn by index (`Training`), logging test accuracy and the percentiles of
one sigmoid's input along the way. The run directory (claim, resume, checkpoints, statuses) is
bnrepro.lifecycle's; the files a run writes are listed in docs/running.md.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bnrepro import ics_measures
from bnrepro import nn as paper_nn
from bnrepro.config import MLPConfig, check, select_device, typed, validate_batch_norm, validate_run
from bnrepro.drift import QUANTILES
from bnrepro.errors import ConfigError
from bnrepro.graphs import cuda_graphed
from bnrepro.lifecycle import Run
from bnrepro.mlp_data import MNIST_TRAIN_SIZE, EpochSampler, batch_of, load_mnist_on
from bnrepro.mlp_members import build_model, check_memory, grid_members, test_accuracy
from bnrepro.models.mlp import ACTIVATIONS, MLP
from bnrepro.progress import Progress
from bnrepro.replicas import world_size

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("step", "seed", "train_loss", "test_acc", "p15", "p50", "p85")
# With a member grid (grid.lr / grid.init_std): which member a row is, and its settings.
GRID_COLUMNS = ("step", "member", "seed", "lr", "init_std", *METRIC_COLUMNS[2:])
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


def check_one_process() -> None:
    """Refuses a start as several processes (torchrun, or srun with several tasks): the MLP
    has no data-parallel mode, and its replicas would only fight over one run directory."""
    processes = world_size()
    if processes > 1:
        raise ConfigError(
            f"The MLP trainer runs as one process, and this one was started as one of "
            f"{processes} (WORLD_SIZE={processes}, from torchrun or from srun's "
            "SLURM_STEP_NUM_TASKS). Nothing was run or written. Fix: start it as one process, "
            "`python -m bnrepro.train model=mlp_bn ...` (its seeds already train together as "
            "one vectorized model, `seeds=[0,1,2]`); to train several configurations at once, "
            "sweep them with -m: hydra/launcher=joblib runs the jobs in parallel processes, "
            "hydra/launcher=slurm submits one SLURM job each."
        )


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
    o = cfg.optim
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
    check_model(cfg.model)
    check_grid(cfg)
    check_watching(cfg)
    return cfg


def check_model(m: DictConfig) -> None:
    """The net's values, BN's options included."""
    sizes = list(m.sizes)
    check(
        len(sizes) >= 3 and sizes[0] == 784 and sizes[-1] == 10 and min(sizes) >= 1,
        "model.sizes",
        sizes,
        "MNIST needs 784 inputs, 10 outputs and at least one hidden "
        "layer, e.g. model.sizes=[784,100,100,100,10].",
    )
    check(m.init_std > 0, "model.init_std", m.init_std, "Use a positive std, e.g. 0.1.")
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
    validate_batch_norm(m, noisy_bn="model=mlp_noisy")
    check(
        m.bn_stats_backprop or m.norm == "paper",
        "model.bn_stats_backprop",
        False,
        "Treating the batch statistics as constants needs the paper's transform: add "
        "model.norm=paper.",
    )


def check_grid(cfg: DictConfig) -> None:
    """The member grid's lists (`grid_members`)."""
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
        cfg.grid.lr is None or cfg.optim.weight_decay == 0,
        "optim.weight_decay",
        cfg.optim.weight_decay,
        "A member's rate scales its loss, which would not scale weight decay: use "
        "optim.weight_decay=0 with grid.lr.",
    )


def check_watching(cfg: DictConfig) -> None:
    """The probe's and the diagnostics' values."""
    sizes = list(cfg.model.sizes)
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


def noise_seed(seed: int) -> int:
    """A seed for noisy BN's noise of `seed`: the seed's third SeedSequence child, independent
    of its weights and its data order."""
    return int(np.random.SeedSequence(seed).spawn(3)[2].generate_state(1, np.uint64)[0] >> 1)


def diagnostic_columns(cfg: DictConfig) -> tuple[str, ...]:
    """metrics.csv's columns for bnrepro.ics_measures's measurements (none when diagnostics are
    off): ICS of every layer with a layer below it (k = 2 .. the output layer), then the
    landscape."""
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
def sigmoid_input_percentiles(model: MLP, x_probe: torch.Tensor, unit: int) -> list[list[float]]:
    """15/50/85th percentiles per member of the probed unit's input, training-mode network.

    In training mode BN normalizes with the probe set's own statistics, as the paper's
    Figure 1(c) shows the training network; the running statistics are left untouched.
    """
    with preserved_buffers(model):
        _, pre = model.hidden_forward(x_probe)
    q = torch.tensor(QUANTILES, device=pre.device)
    return torch.quantile(pre[:, :, unit], q, dim=1).T.tolist()


def member_losses(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Each member's mean cross-entropy on its own mini-batch, shape (members,)."""
    x, labels = batch
    losses = F.cross_entropy(model(x).flatten(0, 1), labels, reduction="none")
    return losses.view(x.shape[0], -1).mean(1)


def make_diagnostics(
    model: MLP, x_probe: torch.Tensor, lr: torch.Tensor, multipliers: list[float]
) -> Callable[[tuple[torch.Tensor, torch.Tensor]], list[dict[str, float]]]:
    """Santurkar et al.'s measurements (bnrepro.ics_measures) at the current weights on a batch, one
    dict of diagnostic_columns per member. The step they take is plain SGD at each member's
    learning rate `lr` (members,); weights, buffers and the optimizer are left as they were."""
    weights = [f"hidden.{i}.weight" for i in range(len(model.hidden))] + ["classifier.weight"]
    order = ics_measures.forward_order(model, lambda: model(x_probe[:2]))

    def measure(batch: tuple[torch.Tensor, torch.Tensor]) -> list[dict[str, float]]:
        loss = ics_measures.functional_loss(model, member_losses, batch)
        params = ics_measures.current_params(model)
        shifts = ics_measures.internal_covariate_shift(
            loss, params, order, weights, lr, model.members
        )
        shape = ics_measures.landscape(loss, params, lr, multipliers, model.members)
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
    cfg: DictConfig,
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


class Training:
    """A run's training from its start step: the model of every member, its optimizer, data
    order and noisy-BN noise, restored from the run's checkpoint; the diagnostics; the members'
    losses at the last step; and the loop (`train_steps`)."""

    def __init__(
        self,
        cfg: DictConfig,
        device: torch.device,
        run: Run,
        members: list[dict[str, Any]] | None,
        data: tuple[torch.Tensor, ...],
    ):
        self.cfg, self.device, self.run, self.members = cfg, device, run, members
        self.seeds = [member["seed"] for member in members] if members else list(cfg.seeds)
        self.x_train, self.y_train, self.x_test, self.y_test = data
        self.x_probe = self.x_test[: cfg.probe.size]
        self.model = build_model(cfg, device, members)
        # Noisy BN: each member draws its layers' noise from its own generator, once per step.
        modules = self.model.modules()
        self.noisy_layers = [m for m in modules if isinstance(m, paper_nn.NoisyBatchNorm)]
        self.noise = [torch.Generator().manual_seed(noise_seed(seed)) for seed in self.seeds]
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
        self.sampler = EpochSampler(self.seeds, len(self.x_train), cfg.batch_size, device)
        self.loss: torch.Tensor | None = None
        if run.checkpoint:
            self.restore(run.checkpoint["trainer"])
        self.diagnostics_every = cfg.diagnostics.every
        if self.diagnostics_every:
            rates = [m["lr"] for m in members] if members else [cfg.optim.lr] * len(self.seeds)
            self.measure = make_diagnostics(
                self.model,
                self.x_probe,
                torch.tensor(rates, device=device),
                list(cfg.diagnostics.multipliers),
            )
        self.diagnosed: list[dict[str, float]] | None = None
        self.train_step, self.use_graph = self.compiled_step()

    def restore(self, state: dict[str, Any]) -> None:
        """Weights, optimizer, data order and generators from the checkpoint's `state`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        if self.noisy_layers:
            for generator, generator_state in zip(self.noise, state["noise"], strict=True):
                generator.set_state(generator_state)

    def compiled_step(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
        """The training step, each member at its own rate with a grid over lr, and whether it
        is replayed as one CUDA graph (on a GPU with `cuda_graph=true`, when capture works)."""
        cfg, device, model, optimizer = self.cfg, self.device, self.model, self.optimizer
        lr_scale = None
        if cfg.grid.lr is not None:
            rates = [member["lr"] / cfg.optim.lr for member in self.members]
            lr_scale = torch.tensor(rates, dtype=torch.float32, device=device)
        train_step = make_train_step(model, optimizer, self.x_train, self.y_train, cfg, lr_scale)
        use_graph = device.type == "cuda" and cfg.cuda_graph
        if use_graph:
            shape = (len(self.seeds), cfg.batch_size)
            example_index = torch.zeros(*shape, dtype=torch.long, device=device)
            try:
                train_step = cuda_graphed(model, optimizer, train_step, (example_index,))
            except RuntimeError as error:  # the model and optimizer are back as they were
                use_graph = False
                log.warning(
                    f"bnrepro: CUDA graph capture failed ({error}); training eagerly. Set "
                    "cuda_graph=false to skip the attempt."
                )
        return train_step, use_graph

    def trainer_state(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.noisy_layers:
            state["noise"] = [generator.get_state() for generator in self.noise]
        return state

    def log(self, step: int) -> None:
        """Percentiles of the probed unit, and test accuracy when due, one row per seed."""
        cfg, run, members, model = self.cfg, self.run, self.members, self.model
        percentiles = sigmoid_input_percentiles(model, self.x_probe, cfg.probe.unit)
        accuracy = (
            test_accuracy(model, self.x_test, self.y_test)
            if run.due(step, cfg.eval_every)
            else None
        )
        losses = self.loss.tolist() if self.loss is not None else [None] * len(self.seeds)
        diagnosed = self.diagnosed
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
                for member, seed in enumerate(self.seeds)
            ]
        )
        if accuracy:
            self.progress.set_postfix(test_acc=f"{sum(accuracy) / len(accuracy):.4f}")

    def train_steps(self) -> None:
        """Steps the run from its start step to `steps`: each step's batches and noisy-BN
        noise, the diagnostics when due, the update; a log when the probe or accuracy is due."""
        cfg, run = self.cfg, self.run
        self.progress = Progress(cfg.steps, run.start_step)
        probe_every, eval_every = cfg.probe.every, cfg.eval_every
        with self.progress:
            if run.start_step == 0:
                self.log(0)
            for step in run.steps():
                index = self.sampler.batch(step - 1)
                for layer in self.noisy_layers:
                    layer.resample(self.noise)
                # Measured on this step's batch and noise, at the weights before its update.
                due = self.diagnostics_every and step % self.diagnostics_every == 0
                batch = batch_of(index, self.x_train, self.y_train, cfg.data.input) if due else None
                self.diagnosed = self.measure(batch) if due else None
                self.loss = self.train_step(index)
                self.progress.update(1)
                if due or run.due(step, probe_every, eval_every):
                    self.log(step)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains every seed of `cfg` for cfg.steps steps, logging into `run_dir`; returns run info.

    With `resume=true` and a checkpoint in `run_dir`, training continues from it and ends
    with the same files as an uninterrupted run, byte for byte; a run with nothing left to
    train is left as it is, and its run.json returned.
    """
    check_one_process()
    cfg = validate(cfg)
    device = select_device(cfg.device)
    check_memory(cfg, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    members = grid_members(cfg)
    # Data: the whole set lives on the device as uint8; batches are drawn by index.
    data = load_mnist_on(device, cfg.data.root, cfg.data.input)
    columns = (*(METRIC_COLUMNS if members is None else GRID_COLUMNS), *diagnostic_columns(cfg))
    with Run(run_dir, cfg, columns, RESUME_KEYS, members=members) as run:
        if run.complete:
            return run.info
        training = Training(cfg, device, run, members, data)
        run.start(training.trainer_state, device, cuda_graph=training.use_graph)
        training.train_steps()
        return run.finish(training.model.state_dict())
