"""Packed Inception members: many runs of one architecture trained as one model.

`python -m bnrepro.train experiment=bn_x5 seeds=[0,1,2] grid.lr_multiplier=[1,2,5,10,30]`
comes here (bnrepro.train sends every Inception config with `packed=true`, or with several
seeds or a `grid` list and `packed=null`, the default):
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
  (bnrepro.packed_optim);
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from bnrepro.config import check, select_device
from bnrepro.errors import ConfigError
from bnrepro.graphs import cuda_graphed
from bnrepro.inception_checks import validate
from bnrepro.inception_data import (
    DISTORTION_NOISE,
    PROXY_EVAL_BATCH,
    BatchOrder,
    BNNoiseDraws,
    EvalBatches,
    MakeBatch,
    ProxyData,
    StepInputs,
    StepNoise,
    distort,
    load_proxy,
)
from bnrepro.inception_recipe import (
    Settings,
    amp_autocast,
    build_model,
    recipe_settings,
)
from bnrepro.lifecycle import Run
from bnrepro.memory import available_memory
from bnrepro.models.inception import Inception, count_parameters, load_member
from bnrepro.packed_optim import MemberSchedule, MemberSGD
from bnrepro.progress import Progress
from bnrepro.replicas import world_size

GRID_KEYS = (
    "lr_multiplier",
    "l2_divisor",
    "decay_speedup",
    "dropout_off",
    "thorough_shuffle",
    "reduced_distortion",
)
POSITIVE_KEYS = ("lr_multiplier", "l2_divisor", "decay_speedup")
RESUME_KEYS = (
    "data",
    "model",
    "optim",
    "recipe",
    "grid",
    "seeds",
    "batch_size",
    "eval_every",
    "packed",
)


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
    """bnrepro.inception_checks's checks, then what a pack needs."""
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
    world = world_size()
    check(world == 1, "WORLD_SIZE", world, f"{one_run} start it without torchrun or srun.")
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
    `estimated_bytes` exceed the `available_memory` of its device, as bnrepro.mlp_members does
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


def packed_step_inputs(
    data: ProxyData,
    cfg: DictConfig,
    members: list[dict[str, Any]],
    settings: list[Settings],
    features: int,
) -> StepInputs:
    """What the packed step reads at each step: every member's batch indices (its single run's
    `BatchOrder`) and uniform numbers (its single run's `StepNoise`, padded to the widest
    member's), stacked member after member."""
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
    widths = [DISTORTION_NOISE + (features if s.dropout else 0) for s in settings]
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

    return step_inputs


def packed_pipeline(
    data: ProxyData,
    cfg: DictConfig,
    members: list[dict[str, Any]],
    settings: list[Settings],
    features: int,
    memory_format: torch.memory_format,
) -> tuple[StepInputs, MakeBatch, EvalBatches]:
    """The packed step's inputs (`packed_step_inputs`), what the step makes of them, and the
    held-out batches.

    `make_batch` returns the images (N, members * C, H, W) member-major, the labels
    (members, N) and the dropout mask (N, members * features), or None when no member drops."""
    device, batch = data.x_train.device, cfg.batch_size
    step_inputs = packed_step_inputs(data, cfg, members, settings, features)
    dropouts = [s.dropout for s in settings]
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

    def make_batch(
        index: torch.Tensor, uniform: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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


def member_losses(
    model: Inception, x: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None
) -> torch.Tensor:
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


class PackedTraining:
    """A pack's training from its start step: the packed model, its MemberSGD and learning-rate
    schedule, restored from the run's checkpoint (its diverged members retired again); the
    step; the members' losses summed since the last log; and the loop (`train_steps`)."""

    def __init__(
        self,
        cfg: DictConfig,
        members: list[dict[str, Any]],
        settings: list[Settings],
        device: torch.device,
        run: Run,
        data: ProxyData,
    ):
        self.cfg, self.members, self.device, self.run = cfg, members, device, run
        self.count = count = len(members)
        state = run.checkpoint["trainer"] if run.checkpoint else None
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model, self.optimizer, self.lr, self.schedule = build_packed_training(
            cfg, members, settings, device, run.check_stop
        )
        self.loss_sum, self.loss_count = torch.zeros(count, device=device), 0
        if state:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.optimizer.param_groups[0]["lr"] = self.lr  # loading replaced it with its copy
            self.loss_sum, self.loss_count = state["loss_sum"].to(device), state["loss_count"]
        for member in run.diverged_at:
            self.retire(member)
        self.step_inputs, make_batch, self.eval_batches = packed_pipeline(
            data, cfg, members, settings, self.model.fc.in_features, memory_format
        )
        self.autocast = amp_autocast(cfg, device)
        self.bn_noise = BNNoiseDraws(self.model, [m["seed"] for m in members])
        self.train_step = make_packed_step(self.model, self.optimizer, make_batch, self.autocast)
        self.use_graph = cfg.cuda_graph and device.type == "cuda"
        if self.use_graph:
            self.train_step = cuda_graphed(
                self.model, self.optimizer, self.train_step, self.step_inputs(run.start_step)
            )

    def retire(self, member: int) -> None:
        retire_member(self.model, self.optimizer, member)
        self.schedule.retire(member)

    def trainer_state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss_sum": self.loss_sum.cpu(),
            "loss_count": self.loss_count,
        }

    def log(self, step: int) -> None:
        """Each live member's mean loss since the last log and, when due, its held-out
        accuracy; a member whose loss or weights are not finite is logged once more, as
        diverged, and retired."""
        run, count = self.run, self.count
        mean_loss = (self.loss_sum / max(self.loss_count, 1)).tolist()
        finite = self.optimizer.finite_members().tolist()
        live = [k for k in range(count) if k not in run.diverged_at]
        newly = [k for k in live if not (finite[k] and math.isfinite(mean_loss[k]))]
        for k in newly:
            run.mark_diverged(k, step)
        accuracy = [None] * count
        if run.due(step, self.cfg.eval_every) and len(newly) < len(live):
            accuracy = evaluate_members(self.model, self.eval_batches(), self.autocast)
        rows = []
        for k in live:
            member = self.members[k]
            rows.append(
                {
                    "step": step,
                    **member,
                    "train_loss": mean_loss[k] if self.loss_count else None,
                    "lr": self.schedule.rate(k, step),
                    "test_acc": None if k in newly else accuracy[k],
                }
            )
        run.log(rows)
        for k in newly:
            self.retire(k)

    def train_steps(self) -> None:
        """Steps every member from the run's start step to `steps`: the members' learning
        rates, inputs and noisy-BN noise, the update; a log when it is due."""
        cfg, run = self.cfg, self.run
        progress = Progress(cfg.steps, run.start_step)
        cadences = [c for c in (cfg.log_every, cfg.eval_every) if c]
        with progress:
            if run.start_step == 0:
                self.log(0)
            for step in run.steps():
                self.lr.copy_(self.schedule(step - 1))
                inputs = self.step_inputs(step - 1)
                if self.bn_noise:
                    self.bn_noise.resample(step - 1)
                self.loss_sum += self.train_step(*inputs)
                self.loss_count += 1
                progress.update(1)
                if run.due(step, *cadences):
                    self.log(step)
                    self.loss_sum, self.loss_count = torch.zeros(self.count, device=self.device), 0


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
        training = PackedTraining(cfg, members, settings, device, run, data)
        run.check_stop()
        run.start(
            training.trainer_state,
            device,
            settings=[asdict(s) for s in settings],
            parameters=count_parameters(training.model) // count,
            members_packed=count,
            cuda_graph=training.use_graph,
        )
        training.train_steps()
        return run.finish(training.model.state_dict())
