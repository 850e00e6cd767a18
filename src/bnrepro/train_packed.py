"""Packed Inception members: many runs of one architecture trained as one model.

`python -m bnrepro.train experiment=bn_x5 seeds=[0,1,2] grid.lr_multiplier=[1,2,5,10,30]`
comes here (bnrepro.train sends every Inception config with several seeds or a `grid` list):
its 15 members are the runs `experiment=bn_x5 seeds=[s] recipe.lr_multiplier=m`, trained
side by side in one process, one step and, on a GPU, one CUDA graph.

Why: on one GPU the proxy's step is bound by the count of its small kernels, not by their
arithmetic; runs in parallel processes only queue their kernels behind each other. A packed
model (`Inception(members=E)`: grouped convolutions, BN over every member's channels) launches
the kernels of one run, each E times larger.

Each member is the single run of its recipe and seed (bnrepro.train_inception), computed
another way:
- its weights start as that run's: the single network built under the member's seed, then
  copied into the member's rows of the packed one (`load_member`);
- it draws that run's batches (`BatchOrder` of its seed and shuffle) and random numbers
  (`StepNoise` of its seed: crops, flips, distortion, dropout; noisy BN's from its seed too);
- its optimizer is that run's momentum SGD, with its own learning rate, schedule and L2
  (`MemberSGD`);
- its loss is its own batch's mean; the sum over members gives each member its own gradient.
What differs is float rounding: a grouped convolution sums in another order than a single
one, so a member's curve follows its single run's to a tolerance (tests/test_train_packed.py,
on the CPU), not bit for bit.

A member whose loss or weights stop being finite is recorded as diverged at that log step
(run.json's members, metrics.csv's last row for it) and retired: its weights, momentum and
learning rate are zeroed, so it computes zeros, and it is no longer logged; the others go on.
Probes, diagnostics, DDP and ImageNet train one run per process (bnrepro.train_inception).
"""

import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm

from bnrepro.config import check, select_device
from bnrepro.errors import ConfigError
from bnrepro.graphs import cuda_graphed
from bnrepro.lifecycle import Run
from bnrepro.models.inception import Inception, count_parameters, load_member
from bnrepro.train_inception import (
    DISTORTION_NOISE,
    PROXY_EVAL_BATCH,
    BatchOrder,
    BNNoiseDraws,
    EvalBatches,
    MakeBatch,
    ProxyData,
    Settings,
    StepInputs,
    StepNoise,
    amp_autocast,
    build_model,
    distort,
    learning_rate,
    load_proxy,
    recipe_settings,
    validate,
)
from bnrepro.train_mlp import available_memory

GRID_KEYS = (
    "lr_multiplier",
    "l2_divisor",
    "decay_speedup",
    "dropout_off",
    "thorough_shuffle",
    "reduced_distortion",
)
POSITIVE_KEYS = ("lr_multiplier", "l2_divisor", "decay_speedup")
RESUME_KEYS = ("data", "model", "optim", "recipe", "grid", "seeds", "batch_size", "eval_every")
SCHEDULE_BLOCK = 1000
"""Steps of learning rates computed at a time (`MemberSchedule`)."""


def is_packed(cfg: DictConfig) -> bool:
    """Whether an Inception config trains packed members: several seeds, or a grid list."""
    grid = cfg.get("grid") or {}
    seeds = cfg.get("seeds")
    several = isinstance(seeds, ListConfig | list) and len(seeds) > 1
    return several or any(grid.get(key) is not None for key in GRID_KEYS)


def grid_members(cfg: DictConfig) -> list[dict[str, Any]]:
    """Every combination of the grid's values, for every seed (seeds innermost): one dict per
    member with its index, its seed and its grid values."""
    given = {key: list(cfg.grid[key]) for key in GRID_KEYS if cfg.grid[key] is not None}
    members: list[dict[str, Any]] = []
    for values in itertools.product(*given.values()):
        for seed in cfg.seeds:
            members.append(
                {"member": len(members), "seed": int(seed), **dict(zip(given, values, strict=True))}
            )
    return members


def validate_packed(cfg: DictConfig) -> DictConfig:
    """bnrepro.train_inception's checks, then what a pack needs."""
    cfg = validate(cfg)
    for key in GRID_KEYS:
        values = None if cfg.grid[key] is None else list(cfg.grid[key])
        example = "[1,5,30]" if key in POSITIVE_KEYS else "[false,true]"
        check(
            values != [],
            f"grid.{key}",
            values,
            f"An empty grid list trains nothing: give a list of one or more values, e.g. "
            f"grid.{key}={example}, or null.",
        )
        check(
            values is None or len(set(values)) == len(values),
            f"grid.{key}",
            values,
            f"Give distinct values (a repeated one trains the same member twice), e.g. "
            f"grid.{key}={example}, or null.",
        )
        if key in POSITIVE_KEYS and values is not None:
            check(min(values) > 0, f"grid.{key}", values, "Give positive factors, e.g. [1,5,30].")
    one_run = "Packed members train on a proxy in one process;"
    check(
        cfg.data.name != "imagenet",
        "data",
        cfg.data.name,
        f"{one_run} train ImageNet one seed per run (seeds=[0], no grid).",
    )
    for key in ("late_probe.every", "diagnostics.every"):
        value = OmegaConf.select(cfg, key)
        check(
            value == 0,
            key,
            value,
            f"{one_run} the probe and the diagnostics watch one run: use seeds=[0] and no grid.",
        )
    check(not cfg.model.sync_bn, "model.sync_bn", True, f"{one_run} SyncBatchNorm is for DDP.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    check(world == 1, "WORLD_SIZE", world, f"{one_run} start it without torchrun.")
    return cfg


def activation_floats(model: Inception, cfg: DictConfig) -> int:
    """The floats one example's forward pass through `model` leaves for the backward pass:
    the outputs of its layers (convolutions, normalizations, nonlinearities, pools), counted
    on one blank image of the proxy's size."""
    counts: list[int] = []
    for module in model.modules():
        if not any(module.children()):
            module.register_forward_hook(lambda _m, _inputs, out: counts.append(out.numel()))
    size = cfg.data.size
    with torch.inference_mode():
        model.eval()(torch.zeros(1, cfg.data.channels, size, size))
    return sum(counts)


def estimated_bytes(cfg: DictConfig, members: int, model: Inception) -> int:
    """About the memory a pack of `members` members takes at its peak, `model` being one
    member's network.

    Per member, in float32: its parameters and buffers three times (weights, gradients and
    the momentum buffer), and the activations of its batch, `activation_floats` per example.
    What this leaves out is small beside them (each member's batch order, about 1 MB, and
    step noise; the data set; the framework), so the estimate errs low. Measured (the growth
    of peak resident memory per member added, 2 to 64 members on a CPU): 24 MB a member for
    BN-x5 at width 1/16 and 16x16 inputs (this estimates 21 MB), 125 MB for Inception at width
    1/8 and 32x32 inputs (124 MB).
    """
    weights = sum(t.numel() for t in model.state_dict().values())
    return 4 * members * (3 * weights + cfg.batch_size * activation_floats(model, cfg))


def check_memory(cfg: DictConfig, members: int, settings: Settings, device: torch.device) -> None:
    """Refuses, before any member is built or anything is loaded or written, a pack whose
    `estimated_bytes` exceed the `available_memory` of its device, as bnrepro.train_mlp does
    for the MLP's grid. One member's network is built to count its parameters and activations,
    the random number generator's state kept."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, settings)
    needed, available = estimated_bytes(cfg, members, model), available_memory(device)
    if needed <= available:
        return
    factors = [(f"grid.{k}", len(cfg.grid[k])) for k in GRID_KEYS if cfg.grid[k] is not None]
    product = " x ".join(f"{key} ({n})" for key, n in [*factors, ("seeds", len(cfg.seeds))])
    raise ConfigError(
        f"Invalid config: {product} = {members:,} members of {count_parameters(model):,} "
        f"parameters each need about {needed / 1e9:.1f} GB (weights, gradients, momentum and "
        f"the activations of a batch of {cfg.batch_size}), more than the {available / 1e9:.1f} "
        f"GB of memory available on {device}. Fix: train fewer members per run (split the grid "
        "or the seeds over several runs, e.g. half of the seeds in each), or use a device with "
        "more memory."
    )


def member_settings(cfg: DictConfig, member: dict[str, Any]) -> Settings:
    """What the member's single run trains with: the recipe with the member's grid values."""
    recipe = OmegaConf.to_container(cfg.recipe) | {k: member[k] for k in GRID_KEYS if k in member}
    return recipe_settings(cfg, recipe)


class MemberSGD(torch.optim.Optimizer):
    """Momentum SGD with a learning rate and an L2 coefficient per member of a packed model.

    The update is torch.optim.SGD's (g += wd * w for weights, not biases or BN's gamma and
    beta; buf = momentum * buf + g; w -= lr * buf, or Nesterov's), each element reading the
    rate and L2 of the member whose row it is in. To take the step in a handful of kernels
    whatever the number of layers, the model's parameters are made views into one flat
    buffer, and their gradients views into another, which backward accumulates into in place;
    the flat buffer is this optimizer's one parameter, so its state_dict is the usual one.
    `lr` is a (members,) tensor on the model's device that the trainer fills every step.
    """

    def __init__(
        self,
        model: Inception,
        lr: torch.Tensor,
        weight_decay: list[float],
        momentum: float,
        nesterov: bool,
    ):
        params = list(model.parameters())
        members, device = model.members, params[0].device
        total = sum(p.numel() for p in params)
        flat = torch.zeros(total, device=device)
        self.grad = torch.zeros(total, device=device)
        member_of, decays, offset = [], [], 0
        rows = torch.arange(members, device=device, dtype=torch.int32)
        decay = torch.tensor(weight_decay, device=device)
        for p in params:
            n = p.numel()
            view = flat[offset : offset + n].as_strided(p.shape, p.stride())
            view.copy_(p.detach())
            p.data = view
            p.grad = self.grad[offset : offset + n].as_strided(p.shape, p.stride())
            member_of.append(rows.repeat_interleave(n // members))
            decays.append(
                (decay if p.ndim > 1 else torch.zeros_like(decay)).repeat_interleave(n // members)
            )
            offset += n
        super().__init__([flat], {"lr": lr, "momentum": momentum, "nesterov": nesterov})
        self.member_of = torch.cat(member_of)
        self.decay = torch.cat(decays)

    @property
    def flat(self) -> torch.Tensor:
        return self.param_groups[0]["params"][0]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zeroes the flat gradient; the parameters' gradients stay views into it."""
        self.grad.zero_()

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:
        group, flat = self.param_groups[0], self.flat
        state = self.state[flat]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(flat)
        buf = state["momentum_buffer"]
        grad = torch.addcmul(self.grad, self.decay, flat)
        buf.mul_(group["momentum"]).add_(grad)
        direction = grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
        flat.addcmul_(group["lr"].index_select(0, self.member_of), direction, value=-1)

    @torch.no_grad()
    def finite_members(self) -> torch.Tensor:
        """(members,) bool: whether each member's weights are all finite."""
        bad = (~torch.isfinite(self.flat)).float()
        members = len(self.param_groups[0]["lr"])
        counts = torch.zeros(members, device=bad.device).index_add_(0, self.member_of, bad)
        return counts == 0

    @torch.no_grad()
    def retire(self, member: int) -> None:
        """Zeroes a member's weights, momentum and L2 (its rate is the trainer's to zero)."""
        rows = self.member_of == member
        self.flat.masked_fill_(rows, 0.0)
        self.decay.masked_fill_(rows, 0.0)
        if "momentum_buffer" in self.state[self.flat]:
            self.state[self.flat]["momentum_buffer"].masked_fill_(rows, 0.0)


class MemberSchedule:
    """Each member's learning rate at each step, (members,) on the device: the single run's
    `learning_rate` computed in double on the CPU, as that run computes it, `SCHEDULE_BLOCK`
    steps at a time and moved to the device at once; a retired member's rate is 0."""

    def __init__(self, settings: list[Settings], decay_rate: float, device: torch.device):
        self.settings, self.decay_rate, self.device = settings, decay_rate, device
        self.retired: set[int] = set()
        self._block, self._rates = -1, torch.empty(0)

    def rate(self, member: int, step: int) -> float:
        if member in self.retired:
            return 0.0
        s = self.settings[member]
        return learning_rate(step, s.lr, self.decay_rate, s.decay_steps)

    def __call__(self, step: int) -> torch.Tensor:
        block, position = divmod(step, SCHEDULE_BLOCK)
        if block != self._block:
            steps = range(block * SCHEDULE_BLOCK, (block + 1) * SCHEDULE_BLOCK)
            table = [[self.rate(k, t) for k in range(len(self.settings))] for t in steps]
            self._block, self._rates = block, torch.tensor(table).to(self.device)
        return self._rates[position]

    def retire(self, member: int) -> None:
        self.retired.add(member)
        self._block = -1


def packed_pipeline(
    data: ProxyData,
    cfg: DictConfig,
    members: list[dict[str, Any]],
    settings: list[Settings],
    features: int,
    memory_format: torch.memory_format,
) -> tuple[StepInputs, MakeBatch, EvalBatches]:
    """The packed step's inputs (every member's batch indices and uniform numbers, stacked
    member after member), what the step makes of them, and the held-out batches.

    `make_batch` returns the images (N, members * C, H, W) member-major, the labels
    (members, N) and the dropout mask (N, members * features), or None when no member drops."""
    device, batch = data.x_train.device, cfg.batch_size
    orders = [
        BatchOrder(
            len(data.x_train),
            batch,
            s.shuffle,
            cfg.data.shards,
            m["seed"],
            cfg.data.storage_seed,
            device=device,
        )
        for m, s in zip(members, settings, strict=True)
    ]
    dropouts = [s.dropout for s in settings]
    widths = [DISTORTION_NOISE + (features if p else 0) for p in dropouts]
    noises = [
        StepNoise(m["seed"], 0, batch, w, device) for m, w in zip(members, widths, strict=True)
    ]
    width = max(widths)
    blocks: dict[str, Any] = {"index": -1, "values": None}

    def noise(step: int) -> torch.Tensor:
        index, position = divmod(step, noises[0].block)
        if index != blocks["index"]:
            values = [F.pad(n.block_values(index), (0, width - n.width)) for n in noises]
            blocks["index"], blocks["values"] = index, torch.cat(values, dim=1)
        return blocks["values"][position]

    def step_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([order.batch(step) for order in orders]), noise(step)

    strengths = {s.distortion for s in settings}
    distortion: float | torch.Tensor = next(iter(strengths))
    if len(strengths) > 1:
        per_member = torch.tensor([s.distortion for s in settings], device=device)
        distortion = per_member.repeat_interleave(batch).unsqueeze(1)
    keep_below = torch.tensor(dropouts, device=device).view(1, -1, 1)
    # 1 - p in double, then to float32: the divisor the single run's `div_(1 - dropout)` uses.
    keep_scale = torch.tensor([1 - p for p in dropouts], device=device).view(1, -1, 1)
    count, crop_padding, flip = len(members), cfg.data.crop_padding, cfg.data.flip

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x - data.mean) / data.std

    def make_batch(index: torch.Tensor, uniform: torch.Tensor):
        images = data.x_train.index_select(0, index)
        x = normalize(
            distort(images, uniform[:, :DISTORTION_NOISE], crop_padding, flip, distortion)
        )
        x = x.view(count, batch, *x.shape[1:]).transpose(0, 1).reshape(batch, -1, *x.shape[2:])
        labels = data.y_train.index_select(0, index).view(count, batch)
        keep = None
        if any(dropouts):
            u = uniform[:, DISTORTION_NOISE : DISTORTION_NOISE + features]
            u = u.reshape(count, batch, features).transpose(0, 1)
            keep = (u >= keep_below).float().div_(keep_scale).reshape(batch, -1)
        return x.contiguous(memory_format=memory_format), labels, keep

    x_test = normalize(data.x_test.float().div_(255))
    chunk = max(1, PROXY_EVAL_BATCH.get(device.type, PROXY_EVAL_BATCH["cpu"]) // count)

    def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x_test), chunk):
            x = x_test[i : i + chunk].repeat(1, count, 1, 1)
            yield x.contiguous(memory_format=memory_format), data.y_test[i : i + chunk]

    return step_inputs, make_batch, eval_batches


def member_losses(model: Inception, x: torch.Tensor, labels: torch.Tensor, keep) -> torch.Tensor:
    """Each member's mean cross-entropy on its own batch, shape (members,)."""
    count, batch = labels.shape
    logits = model(x, keep).reshape(batch * count, -1)
    losses = F.cross_entropy(logits, labels.T.reshape(-1), reduction="none")
    return losses.view(batch, count).mean(0)


def build_packed_training(
    cfg: DictConfig,
    members: list[dict[str, Any]],
    settings: list[Settings],
    device: torch.device,
    check_stop: Callable[[], None] = lambda: None,
) -> tuple[Inception, MemberSGD, torch.Tensor, MemberSchedule]:
    """The packed model on `device`, each member starting as its single run's network (built
    under the member's seed, `load_member`), its MemberSGD, the (members,) learning-rate tensor
    that optimizer reads, and the schedule that fills it. `check_stop` (a run's: `Run.check_stop`)
    is called before each member's network is built (a few hundred take a minute), to stop
    on a signal."""
    count = len(members)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg, replace(settings[0], dropout=0.0), members=count)
    for k, (member, member_setting) in enumerate(zip(members, settings, strict=True)):
        check_stop()
        torch.manual_seed(member["seed"])
        load_member(model, k, build_model(cfg, member_setting).state_dict())
    model = model.to(device).to(memory_format=memory_format)
    schedule = MemberSchedule(settings, cfg.optim.decay_rate, device)
    lr = torch.zeros(count, device=device)
    decay = [s.weight_decay for s in settings]
    optimizer = MemberSGD(model, lr, decay, cfg.optim.momentum, cfg.optim.nesterov)
    return model, optimizer, lr, schedule


def make_packed_step(
    model: Inception, optimizer: MemberSGD, make_batch: Callable[..., tuple], autocast: Callable
) -> Callable[..., torch.Tensor]:
    """One step of every member on the step's inputs (`packed_pipeline`'s `step_inputs`):
    each member's loss on its own batch, backward through their sum, MemberSGD's update;
    returns the members' losses, (members,) float32."""

    def train_step(index: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        x, labels, keep = make_batch(index, uniform)
        with autocast():
            losses = member_losses(model, x, labels, keep)
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        return losses.detach().float()

    return train_step


@torch.inference_mode()
def evaluate_members(model: Inception, batches: Iterator, autocast: Callable) -> list[float]:
    """Each member's accuracy on the held-out set, BN using its inference statistics."""
    model.eval()
    correct, total = torch.zeros(model.members, dtype=torch.long), 0
    for x, y in batches:
        with autocast():
            logits = model(x).reshape(len(y), model.members, -1)
        correct = correct.to(y.device) + (logits.argmax(-1) == y[:, None]).sum(0)
        total += len(y)
    model.train()
    return (correct.double() / total).tolist()


@torch.no_grad()
def retire_member(model: Inception, optimizer: MemberSGD, member: int) -> None:
    """Stops a diverged member computing anything but zeros: weights and momentum zeroed,
    running statistics reset (its rate is zeroed by the schedule)."""
    optimizer.retire(member)
    for name, buffer in model.named_buffers():
        if buffer.dim() == 0 or not buffer.is_floating_point():
            continue
        rows = buffer.view(model.members, -1)[member]
        rows.fill_(1.0 if name.endswith("running_var") else 0.0)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains every member of `cfg` (`grid_members`) for cfg.steps steps, logging into
    `run_dir`; returns run info. Resume, checkpoints and statuses are bnrepro.lifecycle's, as
    for a single run; on a GPU with `cuda_graph=true` the whole packed step is one CUDA graph."""
    cfg = validate_packed(cfg)
    device = select_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    members = grid_members(cfg)
    count = len(members)
    check_memory(cfg, count, member_settings(cfg, members[0]), device)
    settings = [member_settings(cfg, m) for m in members]
    data = load_proxy(cfg, device)
    grid_keys = [key for key in GRID_KEYS if cfg.grid[key] is not None]
    columns = ("step", "member", "seed", *grid_keys, "train_loss", "lr", "test_acc")
    with Run(run_dir, cfg, columns, RESUME_KEYS, members=members) as run:
        if run.complete:
            return run.info
        state = run.checkpoint["trainer"] if run.checkpoint else None
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model, optimizer, lr, schedule = build_packed_training(
            cfg, members, settings, device, run.check_stop
        )
        loss_sum, loss_count = torch.zeros(count, device=device), 0
        if state:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            optimizer.param_groups[0]["lr"] = lr  # loading replaced the tensor with its copy
            loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        for member in run.diverged_at:
            retire_member(model, optimizer, member)
            schedule.retire(member)
        step_inputs, make_batch, eval_batches = packed_pipeline(
            data, cfg, members, settings, model.fc.in_features, memory_format
        )
        autocast = amp_autocast(cfg, device)
        bn_noise = BNNoiseDraws(model, [m["seed"] for m in members])

        train_step = make_packed_step(model, optimizer, make_batch, autocast)
        use_graph = cfg.cuda_graph and device.type == "cuda"
        if use_graph:
            train_step = cuda_graphed(model, optimizer, train_step, step_inputs(run.start_step))

        def trainer_state() -> dict[str, Any]:
            return {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "loss_sum": loss_sum.cpu(),
                "loss_count": loss_count,
            }

        def log(step: int) -> None:
            """Each live member's mean loss since the last log and, when due, its held-out
            accuracy; a member whose loss or weights are not finite is logged once more, as
            diverged, and retired."""
            mean_loss = (loss_sum / max(loss_count, 1)).tolist()
            finite = optimizer.finite_members().tolist()
            live = [k for k in range(count) if k not in run.diverged_at]
            newly = [k for k in live if not (finite[k] and math.isfinite(mean_loss[k]))]
            for k in newly:
                run.mark_diverged(k, step)
            accuracy = [None] * count
            if run.due(step, cfg.eval_every) and len(newly) < len(live):
                accuracy = evaluate_members(model, eval_batches(), autocast)
            rows = []
            for k in live:
                member = members[k]
                rows.append(
                    {
                        "step": step,
                        **member,
                        "train_loss": mean_loss[k] if loss_count else None,
                        "lr": schedule.rate(k, step),
                        "test_acc": None if k in newly else accuracy[k],
                    }
                )
            run.log(rows)
            for k in newly:
                retire_member(model, optimizer, k)
                schedule.retire(k)

        run.check_stop()
        run.start(
            trainer_state,
            device,
            settings=[asdict(s) for s in settings],
            parameters=count_parameters(model) // count,
            members_packed=count,
            cuda_graph=use_graph,
        )
        progress = tqdm(
            total=cfg.steps, initial=run.start_step, unit="step", disable=not sys.stderr.isatty()
        )
        cadences = [c for c in (cfg.log_every, cfg.eval_every) if c]
        with progress:
            if run.start_step == 0:
                log(0)
            for step in run.steps():
                lr.copy_(schedule(step - 1))
                inputs = step_inputs(step - 1)
                if bn_noise:
                    bn_noise.resample(step - 1)
                loss_sum += train_step(*inputs)
                loss_count += 1
                progress.update(1)
                if run.due(step, *cadences):
                    log(step)
                    loss_sum, loss_count = torch.zeros(count, device=device), 0
        return run.finish(model.state_dict())
