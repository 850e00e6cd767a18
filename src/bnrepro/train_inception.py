"""The Inception family trainer (Section 4.2, Figures 2 and 3): one run, one seed.

`python -m bnrepro.train experiment=bn_x5` comes here: bnrepro.train hands every config with
`model.name=inception` that does not train packed members (`packed`: bnrepro.train_packed) to
`train`. Reads top to bottom: check the config (bnrepro.inception_checks) and work out what
its recipe (the seven changes of Section 4.2.1, bnrepro.inception_recipe) makes of the base
values, load the data (a proxy dataset whole on the device, or ImageNet through a DataLoader:
bnrepro.inception_data), build the network, then train with momentum SGD and exponential
learning-rate decay (`Training`), evaluating on held-out data every `eval_every` steps. A run
trains one seed; `-m seeds=[0],[1]` sweeps seeds, and several seeds or a `grid` in one run
train packed (bnrepro.train_packed).

On a proxy the training step reads only device tensors (the batch's indices and the step's
random numbers, `StepNoise`), so on one GPU it is replayed as one CUDA graph (bnrepro.graphs)
that computes what the eager step computes.

Under `torchrun --nproc-per-node=N -m bnrepro.train ...` it trains with DistributedDataParallel
(bnrepro.replicas): each replica draws its own `batch_size` examples per step, BN normalizes
with each replica's own batch unless `model.sync_bn=true`, and rank 0 alone evaluates, logs and
checkpoints.

`model.norm=noisy` (experiment=bn_baseline_noisy) is Santurkar et al.'s noisy BN: BN, then a
per-channel scale and shift redrawn before every step from (seed, step) alone (`BNNoiseDraws`).
Two measurements watch a run on its logged steps (bnrepro.inception_probes): `late_probe` (the
percentiles of one late ReLU's input, Figure 1(b, c) on the proxy) and `diagnostics`
(bnrepro.ics_measures: internal covariate shift and the loss landscape along the gradient).

The run directory (claim, resume, checkpoints, statuses) is bnrepro.lifecycle's; metrics.csv
has `step,seed,train_loss,lr,test_acc`, then the probe's and the diagnostics' columns when they
are on (`metric_columns`), and run.json records the recipe's effective values. A non-finite
loss or parameter ends the run with status `diverged` and a normal exit, so a sweep goes on.
"""

from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bnrepro.config import check
from bnrepro.errors import ConfigError, ResumeError
from bnrepro.graphs import cuda_graphed
from bnrepro.inception_checks import validate
from bnrepro.inception_data import (
    DISTORTION_NOISE,
    BatchOrder,
    BNNoiseDraws,
    EvalBatches,
    MakeBatch,
    StepInputs,
    StepNoise,
    imagenet_datasets,
    imagenet_pipeline,
    load_proxy,
    proxy_pipeline,
)
from bnrepro.inception_probes import (
    DIAGNOSTIC_COLUMNS,
    PROBE_COLUMNS,
    late_input_percentiles,
    make_diagnostics,
    probe_images,
)
from bnrepro.inception_recipe import (
    Settings,
    amp_autocast,
    build_model,
    learning_rate,
    make_optimizer,
    recipe_settings,
)
from bnrepro.lifecycle import Run
from bnrepro.models.inception import count_parameters
from bnrepro.progress import Progress
from bnrepro.replicas import Replicas

METRIC_COLUMNS = ("step", "seed", "train_loss", "lr", "test_acc")
# What a checkpoint must agree on with the config that resumes it.
RESUME_KEYS = (
    "data",
    "model",
    "optim",
    "recipe",
    "seeds",
    "batch_size",
    "eval_every",
    "log_every",
    "late_probe",
    "diagnostics",
    "packed",
)


def metric_columns(cfg: DictConfig) -> tuple[str, ...]:
    """metrics.csv's columns: the probe's and the diagnostics' only when they are on, so a
    run without them writes what it always wrote."""
    return (
        *METRIC_COLUMNS,
        *(PROBE_COLUMNS if cfg.late_probe.every else ()),
        *(DIAGNOSTIC_COLUMNS if cfg.diagnostics.every else ()),
    )


def all_finite(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor: the loss and every parameter are finite."""
    checks = [torch.isfinite(loss).all(), *(torch.isfinite(p).all() for p in model.parameters())]
    return torch.stack(checks).all()


@torch.inference_mode()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], autocast: Callable
) -> float:
    """Accuracy over `batches`, BN using its inference statistics."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=next(model.parameters()).device)
    total = 0
    for x, y in batches:
        with autocast():
            correct += (model(x).argmax(1) == y).sum()
        total += len(y)
    model.train()
    return correct.item() / total


def build_training(
    cfg: DictConfig, settings: Settings, replicas: Replicas, state: dict[str, Any] | None
) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """The model, its optimizer and the learning-rate tensor the optimizer reads, restored
    from `state` when resuming.

    DDP starts every replica from rank 0's weights (seeded by the run's seed); each replica's
    torch generators (ImageNet's dropout) are seeded apart.
    """
    seed, rank, device = int(cfg.seeds[0]), replicas.rank, replicas.device
    torch.manual_seed(seed)
    model = build_model(cfg, settings)
    if replicas.world_size > 1 and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format)
    lr = torch.tensor(settings.lr, device=device)
    optimizer = make_optimizer(model, cfg, settings, lr)
    torch.manual_seed(seed + 1_000_003 * rank)
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # loading replaced the tensor with its saved copy
            group["lr"] = lr
        torch.set_rng_state(state["torch_rng"][rank])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"][rank], device)
    return model, optimizer, lr


def load_data(cfg: DictConfig, settings: Settings, device: torch.device) -> Any:
    """A proxy dataset whole on the device, or ImageNet's (train, val) folders."""
    if cfg.data.name == "imagenet":
        return imagenet_datasets(cfg, settings)
    return load_proxy(cfg, device)


def pipeline(
    data: Any,
    cfg: DictConfig,
    settings: Settings,
    replicas: Replicas,
    start_step: int,
    features: int,
) -> tuple[StepInputs, MakeBatch, EvalBatches]:
    """The training step's inputs at each step (in the order of Section 4.2.1's shuffling),
    what the step makes of them, and the held-out batches. `features` is the width of the
    classifier's input, which dropout masks."""
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    imagenet = cfg.data.name == "imagenet"
    n_train = len(data[0]) if imagenet else len(data.x_train)
    seed, device = int(cfg.seeds[0]), replicas.device
    order = BatchOrder(
        n_train,
        cfg.batch_size,
        settings.shuffle,
        cfg.data.shards,
        seed,
        cfg.data.storage_seed,
        replicas.rank,
        replicas.world_size,
        device="cpu" if imagenet else device,
    )
    if imagenet:
        train_set, val_set = data
        return imagenet_pipeline(train_set, val_set, cfg, order, start_step, device, memory_format)
    width = DISTORTION_NOISE + (features if settings.dropout else 0)
    noise = StepNoise(seed, replicas.rank, cfg.batch_size, width, device)
    return proxy_pipeline(data, cfg, settings, order, noise, memory_format)


def make_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, make_batch: MakeBatch, autocast: Callable
) -> Callable[..., torch.Tensor]:
    """One SGD step on the step's inputs; returns the mini-batch's mean loss (float32)."""

    def train_step(*inputs: torch.Tensor) -> torch.Tensor:
        x, y, keep = make_batch(*inputs)
        with autocast():
            loss = F.cross_entropy(model(x, keep), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach().float()

    return train_step


def check_one_run(cfg: DictConfig) -> None:
    """Refuses several seeds or a grid, which train as packed members."""
    grid = [key for key, values in cfg.grid.items() if values is not None]
    check(
        len(cfg.seeds) == 1 and not grid,
        f"grid.{grid[0]}" if grid else "seeds",
        OmegaConf.to_container(cfg.grid[grid[0]]) if grid else list(cfg.seeds),
        "This trainer trains one run; several seeds or a grid train as the packed members of "
        "one model (bnrepro.train_packed), which `python -m bnrepro.train` picks unless "
        "packed=false.",
    )


def resumed_state(run: Run, replicas: Replicas) -> dict[str, Any] | None:
    """The trainer's state in the run's checkpoint (None: a fresh start), made by as many
    replicas as there are now."""
    state = run.checkpoint["trainer"] if run.checkpoint else None
    if state and state["world_size"] != replicas.world_size:
        raise ResumeError(
            f"Cannot resume {run.dir}: its checkpoint was made by {state['world_size']} "
            f"replicas (now {replicas.world_size}). Nothing was changed. Fix: resume with "
            f"--nproc-per-node={state['world_size']}, or train in a new directory."
        )
    return state


class Training:
    """A run's training from its start step: the model, its optimizer and its step, restored
    from the run's checkpoint; the probe and the diagnostics that watch them; the loss summed
    since the last log; and the loop (`train_steps`)."""

    def __init__(
        self, cfg: DictConfig, settings: Settings, replicas: Replicas, run: Run, data: Any
    ):
        self.cfg, self.settings, self.replicas, self.run = cfg, settings, replicas, run
        self.device, self.seed = replicas.device, int(cfg.seeds[0])
        state = resumed_state(run, replicas)
        self.model, self.optimizer, self.lr = build_training(cfg, settings, replicas, state)
        self.step_inputs, self.make_batch, self.eval_batches = pipeline(
            data, cfg, settings, replicas, run.start_step, self.model.fc.in_features
        )
        self.autocast = amp_autocast(cfg, self.device)
        self.bn_noise = BNNoiseDraws(self.model, [self.seed])
        self.probe_every, self.diagnostics_every = cfg.late_probe.every, cfg.diagnostics.every
        if self.probe_every or self.diagnostics_every:
            self.images = probe_images(self.eval_batches, cfg.late_probe.size)
        if self.diagnostics_every:
            multipliers = list(cfg.diagnostics.multipliers)
            self.measure = make_diagnostics(self.model, self.images, multipliers, self.autocast)
        self.diagnosed: dict[str, float] = {}
        self.train_step, self.use_graph = self.compiled_step()
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        if state:
            self.loss_sum, self.loss_count = state["loss_sum"].to(self.device), state["loss_count"]

    def compiled_step(self) -> tuple[Callable[..., torch.Tensor], bool]:
        """The training step (through DDP on several replicas) and whether it is replayed as
        one CUDA graph: on one GPU, with a proxy dataset and `cuda_graph=true`."""
        model, replicas, device = self.model, self.replicas, self.device
        train_model = model
        if replicas.world_size > 1:
            train_model = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )
        train_step = make_train_step(train_model, self.optimizer, self.make_batch, self.autocast)
        use_graph = self.cfg.cuda_graph and device.type == "cuda" and replicas.world_size == 1
        use_graph = use_graph and self.cfg.data.name != "imagenet"
        if use_graph:
            start_inputs = self.step_inputs(self.run.start_step)
            train_step = cuda_graphed(model, self.optimizer, train_step, start_inputs)
        return train_step, use_graph

    def trainer_state(self) -> dict[str, Any]:
        """Weights, optimizer, the pending loss sum, and every replica's torch generators."""
        device = self.device
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        rng = {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng}
        gathered = self.replicas.gather(rng)
        return {
            "world_size": self.replicas.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **{key: [g[key] for g in gathered] for key in rng},
            "loss_sum": self.loss_sum.cpu(),
            "loss_count": self.loss_count,
        }

    def lr_at(self, step: int) -> float:
        s = self.settings
        return learning_rate(step, s.lr, self.cfg.optim.decay_rate, s.decay_steps)

    def log(self, step: int) -> None:
        """The mean loss since the last log (non-finite if any step's was, or if any
        parameter is), held-out accuracy, the probe's percentiles and the diagnostics
        when due; rank 0 evaluates and logs."""
        run, replicas, seed, model = self.run, self.replicas, self.seed, self.model
        mean_loss = self.loss_sum / max(self.loss_count, 1)
        mean, finite = replicas.loss_check(mean_loss, all_finite(model, mean_loss).float())
        if not finite:
            run.mark_diverged(seed, step)
        accuracy = None
        if replicas.main and run.due(step, self.cfg.eval_every) and seed not in run.diverged_at:
            accuracy = evaluate(model, self.eval_batches(), self.autocast)
            self.progress.set_postfix(test_acc=f"{accuracy:.4f}")
        row = {
            "step": step,
            "seed": seed,
            "train_loss": mean if self.loss_count else None,
            "lr": self.lr_at(step),
            "test_acc": accuracy,
        }
        if replicas.main and self.probe_every and run.due(step, self.probe_every):
            percentiles = late_input_percentiles(model, self.images, self.cfg.late_probe.unit)
            row.update(zip(PROBE_COLUMNS, percentiles, strict=True))
        run.log([row | self.diagnosed])

    def train_steps(self) -> None:
        """Steps the run from its start step to `steps`: each step's learning rate, inputs and
        noisy-BN noise, the diagnostics when due, the update; a log when any cadence is due."""
        cfg, run, replicas = self.cfg, self.run, self.replicas
        self.progress = Progress(cfg.steps, run.start_step, show=replicas.main)
        every = (cfg.log_every, cfg.eval_every, self.probe_every, self.diagnostics_every)
        cadences = [c for c in every if c]
        with self.progress:
            if run.start_step == 0:
                self.log(0)
            for step in run.steps():
                self.lr.fill_(self.lr_at(step - 1))
                inputs = self.step_inputs(step - 1)
                if self.bn_noise:
                    self.bn_noise.resample(step - 1)
                # Measured on this step's batch and noise, at the weights before its update.
                diagnose = self.diagnostics_every and step % self.diagnostics_every == 0
                if replicas.main and diagnose:
                    self.diagnosed = self.measure(self.make_batch(*inputs), self.lr_at(step - 1))
                self.loss_sum += self.train_step(*inputs)
                self.loss_count += 1
                self.progress.update(1)
                if run.due(step, *cadences):
                    self.log(step)
                    self.loss_sum = torch.zeros((), device=self.device)
                    self.loss_count, self.diagnosed = 0, {}


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains the one seed of `cfg` for cfg.steps steps, logging into `run_dir`; returns run info.

    With `resume=true` and a checkpoint in `run_dir`, training continues from it; on the proxy
    datasets it ends with the same files as an uninterrupted run, byte for byte. A run with
    nothing left to train is left as it is, and its run.json returned.

    On one GPU with a proxy dataset (and `cuda_graph=true`, the default) the whole step, from
    the batch's indices to the optimizer's update, is replayed as one CUDA graph
    (bnrepro.graphs); it computes what the eager step computes on the same inputs.
    """
    cfg = validate(cfg)
    check_one_run(cfg)
    settings = recipe_settings(cfg)
    replicas = Replicas.join(cfg)
    if cfg.model.sync_bn and replicas.device.type != "cuda":
        raise ConfigError("model.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU kernels).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(replicas.broadcast(str(run_dir)))  # Hydra's may differ by a second per rank
    data = load_data(cfg, settings, replicas.device)
    options = replicas.run_options(stop_every=cfg.log_every)
    with Run(run_dir, cfg, metric_columns(cfg), RESUME_KEYS, **options) as run:
        if run.complete:
            return run.info
        training = Training(cfg, settings, replicas, run, data)
        run.start(
            training.trainer_state,
            replicas.device,
            world_size=replicas.world_size,
            settings=asdict(settings),
            parameters=count_parameters(training.model),
            cuda_graph=training.use_graph,
        )
        training.train_steps()
        info = run.finish(training.model.state_dict())
    if replicas.world_size > 1:
        dist.destroy_process_group()
    return info
