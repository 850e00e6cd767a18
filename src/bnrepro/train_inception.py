"""The Inception family trainer (Section 4.2, Figures 2 and 3).

`python -m bnrepro.train experiment=bn_x5` comes here: bnrepro.train hands every config with
`model.name=inception`, one seed and no `grid` to `train`. Reads top to bottom: check the
config and work out what its recipe (the seven changes of Section 4.2.1) makes of the base
values, load the data (a proxy dataset whole on the device, or ImageNet through a DataLoader),
build the network, then train with momentum SGD and exponential learning-rate decay,
evaluating on held-out data every `eval_every` steps. A run trains one seed; `-m
seeds=[0],[1]` sweeps seeds, and several seeds or a `grid` in one run train packed
(bnrepro.train_packed).

On a proxy the training step reads only device tensors (the batch's indices and the step's
random numbers, `StepNoise`), so on one GPU it is replayed as one CUDA graph (bnrepro.graphs)
that computes what the eager step computes.

Under `torchrun --nproc-per-node=N -m bnrepro.train ...` it trains with DistributedDataParallel:
each replica draws its own `batch_size` examples per step, BN normalizes with each replica's own
batch unless `model.sync_bn=true`, and rank 0 alone evaluates, logs and checkpoints.

`model.norm=noisy` (experiment=bn_baseline_noisy) is Santurkar et al.'s noisy BN: BN, then a
per-channel scale and shift redrawn before every step from (seed, step) alone (`BNNoiseDraws`).
Two measurements watch a run on its logged steps: `late_probe` (the percentiles of one late ReLU's
input, Figure 1(b, c) on the proxy) and `diagnostics` (bnrepro.ics: internal covariate shift
and the loss landscape along the gradient).

The run directory (claim, resume, checkpoints, statuses) is bnrepro.lifecycle's; metrics.csv
has `step,seed,train_loss,lr,test_acc`, then the probe's and the diagnostics' columns when they
are on (`metric_columns`), and run.json records the recipe's effective values. A non-finite
loss or parameter ends the run with status `diverged` and a normal exit, so a sweep goes on.
"""

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from bnrepro import ics
from bnrepro import nn as paper_nn
from bnrepro.config import (
    InceptionConfig,
    InceptionImageNetConfig,
    check,
    select_device,
    typed,
    validate_run,
)
from bnrepro.data import DATASET_NAMES, load_dataset
from bnrepro.errors import ConfigError, ResumeError
from bnrepro.graphs import cuda_graphed
from bnrepro.lifecycle import Run
from bnrepro.models.inception import (
    ACTIVATIONS,
    INCEPTION_BLOCKS,
    STEMS,
    Inception,
    count_parameters,
)

METRIC_COLUMNS = ("step", "seed", "train_loss", "lr", "test_acc")
SHUFFLES = ("fixed_shards", "within_shard", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_COLUMNS = ("p15", "p50", "p85")
PERCENTILES = (0.15, 0.50, 0.85)
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
parameters that run before it (those `bnrepro.ics` moves) are exactly the layers below it."""
DIAGNOSTIC_COLUMNS = (
    *(f"ics_l2_{label}" for label in ICS_LAYERS),
    *(f"ics_cos_{label}" for label in ICS_LAYERS),
    "loss_range",
    "grad_change",
    "beta",
)
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
)


def validate(cfg: DictConfig) -> DictConfig:
    """The typed config, its values checked: anything that would fail late or silently train
    something else is a ConfigError naming the value and the fix."""
    check(
        cfg.data.name in (*DATASET_NAMES, "imagenet") and "shuffle" in cfg.data,
        "data",
        cfg.data.name,
        "The Inception trainer uses data=fashion_mnist, data=mnist_proxy or data=imagenet "
        "(the MLP's data=mnist lacks the image pipeline's settings).",
    )
    imagenet = cfg.data.name == "imagenet"
    schema = InceptionImageNetConfig if imagenet else InceptionConfig
    cfg = typed(cfg, schema, "Inception")
    validate_run(cfg)
    check(cfg.log_every >= 1, "log_every", cfg.log_every, "Use a positive step count.")
    o, r, m, d = cfg.optim, cfg.recipe, cfg.model, cfg.data
    check(o.lr > 0, "optim.lr", o.lr, "Use a positive learning rate, e.g. optim.lr=0.01.")
    check(o.decay_steps > 0, "optim.decay_steps", o.decay_steps, "Use a positive step count.")
    check(0 < o.decay_rate <= 1, "optim.decay_rate", o.decay_rate, "Use 0 < decay_rate <= 1.")
    check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "Use 0 <= momentum < 1.")
    check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "Use weight_decay >= 0.")
    for key in ("lr_multiplier", "l2_divisor", "decay_speedup"):
        check(r[key] > 0, f"recipe.{key}", r[key], "Use a positive factor (1 leaves the base).")
    check(
        m.activation in ACTIVATIONS,
        "model.activation",
        m.activation,
        f"Use one of {sorted(ACTIVATIONS)}.",
    )
    check(m.stem in STEMS, "model.stem", m.stem, f"Use one of {list(STEMS)}.")
    check(m.width > 0, "model.width", m.width, "Use a positive width multiplier, e.g. 0.25.")
    check(0 <= m.dropout < 1, "model.dropout", m.dropout, "Use 0 <= dropout < 1.")
    check(
        m.norm in ("torch", "paper", "noisy"),
        "model.norm",
        m.norm,
        "Use torch, paper, or noisy (experiment=bn_baseline_noisy).",
    )
    check(
        (m.norm == "noisy") == (m.noise is not None),
        "model.noise" if m.noise is not None else "model.norm",
        OmegaConf.to_container(m.noise) if m.noise is not None else m.norm,
        "Noisy BN needs its noise and the noise needs noisy BN: use experiment=bn_baseline_noisy.",
    )
    if m.noise is not None:
        check(
            0 < m.noise.scale_min <= m.noise.scale_max,
            "model.noise.scale_min",
            m.noise.scale_min,
            "Use 0 < model.noise.scale_min <= model.noise.scale_max, e.g. 0.75 and 1.25.",
        )
        check(
            m.noise.shift >= 0, "model.noise.shift", m.noise.shift, "Use a shift >= 0, e.g. 0.25."
        )
        check(
            m.batch_norm,
            "model.batch_norm",
            m.batch_norm,
            "Noisy BN is BN with noise after it: use experiment=bn_baseline_noisy.",
        )
    check(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "Use a small positive eps, e.g. 1e-5.")
    check(0 <= m.bn_momentum <= 1, "model.bn_momentum", m.bn_momentum, "Use a rate in [0, 1].")
    check(
        not m.sync_bn or (m.batch_norm and m.norm == "torch"),
        "model.sync_bn",
        True,
        "SyncBatchNorm needs model.batch_norm=true and model.norm=torch.",
    )
    p, g = cfg.late_probe, cfg.diagnostics
    check(p.every >= 0, "late_probe.every", p.every, "Use 0 (no probe) or a step count, e.g. 50.")
    check(p.size >= 2, "late_probe.size", p.size, "Use at least 2 held-out images, e.g. 256.")
    channels = INCEPTION_BLOCKS[PROBED_MODULE].scaled(m.width).n1x1
    check(
        0 <= p.unit < channels,
        "late_probe.unit",
        p.unit,
        f"Pick a channel in 0..{channels - 1} (module {PROBED_MODULE}'s 1x1 branch at width "
        f"{m.width}).",
    )
    check(g.every >= 0, "diagnostics.every", g.every, "Use 0 (off) or a step count, e.g. 500.")
    check(
        len(g.multipliers) > 0 and min(g.multipliers) > 0,
        "diagnostics.multipliers",
        list(g.multipliers),
        "Give positive step sizes in multiples of the learning rate, e.g. [0.5,1.0,2.0].",
    )
    for key in ("shuffle", "shuffle_thorough"):
        check(d[key] in SHUFFLES, f"data.{key}", d[key], f"Use one of {list(SHUFFLES)}.")
    check(d.shards >= 1, "data.shards", d.shards, "Use at least one shard.")
    for key in ("distortion", "distortion_reduced"):
        check(0 <= d[key] < 1, f"data.{key}", d[key], "Use a strength in [0, 1).")
    check(
        d.eval_size is None or d.eval_size >= 1,
        "data.eval_size",
        d.eval_size,
        "Use a positive count, or null for the whole set.",
    )
    if not imagenet:
        check(d.resize in ("pad", "bilinear"), "data.resize", d.resize, "Use pad or bilinear.")
        check(
            d.resize != "pad" or d.size >= 28,
            "data.size",
            d.size,
            "Padding needs size >= 28; add data.resize=bilinear.",
        )
        check(
            d.crop_padding >= 0,
            "data.crop_padding",
            d.crop_padding,
            "Use 0 (no random crop) or a pixel count.",
        )
    return cfg


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Settings:
    """The values a run trains with: the base config changed by its recipe (Section 4.2.1)."""

    lr: float
    weight_decay: float
    decay_steps: float
    dropout: float
    lrn: bool
    shuffle: str
    distortion: float


def recipe_settings(cfg: DictConfig, recipe: Any = None) -> Settings:
    """`cfg`'s values changed by its recipe, or by `recipe` (a mapping of recipe.* keys)."""
    r = cfg.recipe if recipe is None else recipe
    return Settings(
        lr=cfg.optim.lr * r["lr_multiplier"],
        weight_decay=cfg.optim.weight_decay / r["l2_divisor"],
        decay_steps=cfg.optim.decay_steps / r["decay_speedup"],
        dropout=0.0 if r["dropout_off"] else float(cfg.model.dropout),
        lrn=bool(cfg.model.lrn) and not r["lrn_off"],
        shuffle=cfg.data.shuffle_thorough if r["thorough_shuffle"] else cfg.data.shuffle,
        distortion=cfg.data.distortion_reduced if r["reduced_distortion"] else cfg.data.distortion,
    )


def learning_rate(step: int, lr: float, decay_rate: float, decay_steps: float) -> float:
    """Exponential decay, continuous in the step: lr * decay_rate ** (step / decay_steps)."""
    return lr * decay_rate ** (step / decay_steps)


def build_model(cfg: DictConfig, settings: Settings, members: int = 1) -> Inception:
    m = cfg.model
    norm_layer = None
    if m.batch_norm and m.norm == "paper":

        def norm_layer(channels: int) -> nn.Module:
            return paper_nn.BatchNorm(channels, eps=m.bn_eps, momentum=m.bn_momentum)

    elif m.batch_norm and m.norm == "noisy":
        n = m.noise

        def norm_layer(channels: int) -> nn.Module:
            return paper_nn.NoisyBatchNorm(
                channels, n.scale_min, n.scale_max, n.shift, eps=m.bn_eps, momentum=m.bn_momentum
            )

    elif m.batch_norm:

        def norm_layer(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels, eps=m.bn_eps, momentum=m.bn_momentum)

    return Inception(
        num_classes=cfg.data.num_classes,
        norm="batch" if m.batch_norm else "none",
        activation=m.activation,
        dropout=settings.dropout,
        lrn=settings.lrn,
        width=m.width,
        stem=m.stem,
        in_channels=cfg.data.channels,
        norm_layer=norm_layer,
        members=members,
    )


def make_optimizer(
    model: nn.Module, cfg: DictConfig, settings: Settings, lr: torch.Tensor
) -> torch.optim.SGD:
    """Momentum SGD with L2 on the convolution and classifier weights only.

    Biases and BN's gamma and beta get no weight decay (the paper regularizes "weights"; the
    usual practice, torchvision's `norm_weight_decay=0` included). The learning rate is the
    0-dim tensor `lr` on the model's device, which the trainer fills every step: the fused
    update reads it there, so a CUDA graph of the step follows the schedule.
    """
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": weights, "weight_decay": settings.weight_decay},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov,
        fused=True,
    )


# --------------------------------------------------------------------------- data order


def _generator(*seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` whose seed is derived from the integers `seed` (numpy's
    SeedSequence)."""
    state = np.random.SeedSequence(list(seed)).generate_state(2, dtype=np.uint64)
    return torch.Generator(device).manual_seed(int(state[0] >> np.uint64(1)))


class BatchOrder:
    """Which training examples make up each mini-batch (Section 4.2.1, change 6).

    The training set is stored once in a fixed random order (`storage_seed`, the same for
    every run) and split into `shards` contiguous shards. Every epoch:

    - fixed_shards: the shards come in a new random order, the examples inside each shard in
      their stored order, so the same examples always share a mini-batch;
    - within_shard: as fixed_shards, and the examples inside each shard are shuffled as well;
    - full: a fresh permutation of the whole set.

    The order of epoch e depends on (seed, e) alone, so a resumed run draws the same batches
    without saving any generator state. Under DDP each step takes `batch_size * world_size`
    consecutive examples and replica r the r-th slice of them. The order is drawn on the CPU
    once an epoch and kept on `device`, where the batches are sliced from it.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: str,
        shards: int,
        seed: int,
        storage_seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ):
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle={shuffle!r} is not known; use one of {list(SHUFFLES)}.")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.device = rank, world_size, device
        self.steps_per_epoch = n // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"The training set holds {n} examples, fewer than one step's "
                f"{batch_size * world_size}. Use a smaller batch_size."
            )
        stored = torch.randperm(n, generator=torch.Generator().manual_seed(storage_seed))
        self.shards = list(stored.tensor_split(min(shards, n)))
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The indices of every example, in the order epoch `epoch` visits them."""
        generator = _generator(self.seed, epoch)
        if self.shuffle == "full":
            return torch.randperm(self.n, generator=generator)
        parts = []
        for shard in torch.randperm(len(self.shards), generator=generator).tolist():
            indices = self.shards[shard]
            if self.shuffle == "within_shard":
                indices = indices[torch.randperm(len(indices), generator=generator)]
            parts.append(indices)
        return torch.cat(parts)

    def batch(self, step: int) -> torch.Tensor:
        """This replica's example indices for training step `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self.epoch_order(epoch).to(self.device)
        start = (position * self.world_size + self.rank) * self.batch_size
        return self._order[start : start + self.batch_size]


class StepBatches(torch.utils.data.Sampler):
    """`BatchOrder` as a DataLoader batch sampler: the batches of steps [start, stop)."""

    def __init__(self, order: BatchOrder, start: int, stop: int):
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.order.batch(step).tolist()

    def __len__(self) -> int:
        return self.stop - self.start


# --------------------------------------------------------------------------- proxy data


def to_size(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """uint8 images (N, C, H, W) brought to size x size: zero-padded, or resampled bilinearly."""
    if mode == "pad":
        before = (size - images.shape[-1]) // 2
        after = size - images.shape[-1] - before
        return F.pad(images, (before, after, before, after))
    chunks = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
        for chunk in images.split(10_000)
    ]
    return torch.cat(chunks).round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class ProxyData:
    """A whole proxy dataset on the device: uint8 images (N, C, size, size), int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float  # of the training pixels in [0, 1], for input normalization
    std: float


def load_proxy(cfg: DictConfig, device: torch.device) -> ProxyData:
    d = cfg.data
    splits = {}
    for split in ("train", "test"):
        images, labels = load_dataset(d.name, d.root, split)
        splits[split] = (to_size(images.unsqueeze(1), d.size, d.resize), labels)
    x_train, y_train = splits["train"]
    x_test, y_test = splits["test"]
    if d.eval_size is not None:
        x_test, y_test = x_test[: d.eval_size], y_test[: d.eval_size]
    pixels = x_train.float().div_(255)
    return ProxyData(
        x_train=x_train.to(device),
        y_train=y_train.to(device),
        x_test=x_test.to(device),
        y_test=y_test.to(device),
        mean=pixels.mean().item(),
        std=pixels.std().item(),
    )


DISTORTION_NOISE = 5
"""Uniform numbers per image that `distort` reads: crop row and column, flip, brightness,
contrast."""


class StepNoise:
    """The uniform random numbers of each training step, (batch_size, width) on the device.

    Crops, flips, photometric distortion and dropout read their randomness from here instead
    of drawing it inside the step, so an eager step and a CUDA-graph replay of it see the
    same numbers. Step s's numbers depend on (seed, rank, s) alone, so a resumed run draws what
    an uninterrupted one would, with no generator state to save. They are drawn `block`
    steps at a time, one kernel per block.
    """

    def __init__(
        self,
        seed: int,
        rank: int,
        batch_size: int,
        width: int,
        device: torch.device,
        block: int = 100,
    ):
        self.seed, self.rank, self.batch_size, self.width = seed, rank, batch_size, width
        self.device, self.block = device, block
        self._index, self._values = -1, torch.empty(0)

    def __call__(self, step: int) -> torch.Tensor:
        index, position = divmod(step, self.block)
        if index != self._index:
            self._index, self._values = index, self.block_values(index)
        return self._values[position]

    def block_values(self, index: int) -> torch.Tensor:
        """The numbers of steps [index * block, (index + 1) * block): (block, batch, width)."""
        generator = _generator(self.seed, self.rank, index, device=self.device)
        shape = (self.block, self.batch_size, self.width)
        return torch.rand(shape, generator=generator, device=self.device)


def distort(
    images: torch.Tensor,
    noise: torch.Tensor,
    crop_padding: int,
    flip: bool,
    distortion: float | torch.Tensor,
) -> torch.Tensor:
    """A training batch of uint8 images -> float in [0, 1], distorted on its device.

    Random crop (zero-pad by `crop_padding`, cut the original size back out at a random
    offset), random horizontal flip, then the photometric distortion: brightness and
    contrast each scaled by a factor drawn per image from [1 - distortion, 1 + distortion].
    `noise` holds DISTORTION_NOISE uniform numbers in [0, 1) per image, in that order.
    `distortion` is one strength for the batch, or one per image, shape (N, 1).
    """
    x = images.float().div_(255)
    batch, _, size, _ = x.shape
    device = x.device
    if crop_padding:
        padded = F.pad(x, (crop_padding,) * 4)
        span = 2 * crop_padding + 1
        offsets = (noise[:, :2].T * span).long().clamp_(max=span - 1).unsqueeze(-1)
        rows = (offsets[0] + torch.arange(size, device=device))[:, :, None]
        cols = (offsets[1] + torch.arange(size, device=device))[:, None, :]
        # Indexing (batch, rows, cols) around the channel slice gives (N, H, W, C).
        x = padded[torch.arange(batch, device=device)[:, None, None], :, rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        flipped = (noise[:, 2] < 0.5).view(batch, 1, 1, 1)
        x = torch.where(flipped, x.flip(-1), x)
    if isinstance(distortion, torch.Tensor) or distortion:
        factors = 1 + distortion * (2 * noise[:, 3:5] - 1)
        brightness, contrast = factors.T.reshape(2, batch, 1, 1, 1)
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp_(0, 1)
    return x


BN_NOISE_KEY = (0, 1)
"""Appended to (seed, step) to seed noisy BN's generator of a step: no other stream's key,
(seed, epoch) or (seed, rank, block), equals it (SeedSequence reads trailing zeros as absent,
hence the final 1)."""


class BNNoiseDraws:
    """Noisy BN's noise for each training step (bnrepro.nn.NoisyBatchNorm), a function of
    (seed, step) alone, so a resumed run draws what an uninterrupted one draws with no
    generator state to save, and every replica of a DDP run draws the same.

    `resample(step)` draws every noisy layer's scale and shift from one CPU generator seeded by
    (seed, step, *BN_NOISE_KEY), layer after layer in the model's order, through each layer's
    own `resample`; a packed model (bnrepro.train_packed) passes one seed per member, and each
    member's channels draw from its own generator, in the order its single run draws them.
    The draws are made into CPU copies of the layers, moved to the device in one transfer,
    then copied into the layers' buffers in place, where a CUDA graph of the step reads them.
    On a GPU the transfer is from pinned memory and does not wait for the device, so the draws
    of step s overlap the device's work on step s - 1.
    """

    def __init__(self, model: nn.Module, seeds: list[int]):
        self.layers = [m for m in model.modules() if isinstance(m, paper_nn.NoisyBatchNorm)]
        self.host = [
            paper_nn.NoisyBatchNorm(m.num_features, m.scale_min, m.scale_max, m.shift)
            for m in self.layers
        ]
        self.buffers = [t for m in self.layers for t in (m.noise_scale, m.noise_shift)]
        self.seeds = seeds

    def __bool__(self) -> bool:
        return bool(self.layers)

    @torch.no_grad()
    def resample(self, step: int) -> None:
        generators = [_generator(seed, step, *BN_NOISE_KEY) for seed in self.seeds]
        for host in self.host:
            host.resample(generators)
        values = [t for host in self.host for t in (host.noise_scale, host.noise_shift)]
        drawn = torch.cat(values)
        if self.buffers[0].is_cuda:
            drawn = drawn.pin_memory().to(self.buffers[0].device, non_blocking=True)
        for buffer, value in zip(self.buffers, drawn.split([len(v) for v in values]), strict=True):
            buffer.copy_(value)


# --------------------------------------------------------------------------- watching a run


def metric_columns(cfg: DictConfig) -> tuple[str, ...]:
    """metrics.csv's columns: the probe's and the diagnostics' only when they are on, so a
    run without them writes what it always wrote."""
    return (
        *METRIC_COLUMNS,
        *(PROBE_COLUMNS if cfg.late_probe.every else ()),
        *(DIAGNOSTIC_COLUMNS if cfg.diagnostics.every else ()),
    )


def probe_images(eval_batches: "EvalBatches", size: int) -> torch.Tensor:
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
    """The PERCENTILES of the input to one late ReLU: channel `unit` of the last module's 1x1
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
    q = torch.tensor(PERCENTILES, device=captured[0].device)
    return torch.quantile(captured[0], q).tolist()


def make_diagnostics(
    model: Inception, images: torch.Tensor, multipliers: list[float], autocast: Callable
) -> Callable[[tuple[torch.Tensor, ...], float], dict[str, float]]:
    """Santurkar et al.'s measurements (bnrepro.ics, one member) at the current weights on a
    step's batch (what `make_batch` made of its inputs), at learning rate `lr`: the ICS of each
    of ICS_LAYERS and the landscape along the gradient, as DIAGNOSTIC_COLUMNS. Weights,
    buffers and the optimizer are left as they were."""
    model.eval()  # the order only: no dropout draw, no statistics
    order = ics.forward_order(model, lambda: model(images[:2]))
    model.train()
    weights = [f"{module}.weight" for module in ICS_LAYERS.values()]

    def loss_of(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, keep = batch
        with autocast():
            return F.cross_entropy(net(x, keep), y).float().reshape(1)

    def measure(batch: tuple[torch.Tensor, ...], lr: float) -> dict[str, float]:
        loss = ics.functional_loss(model, loss_of, batch)
        params = ics.current_params(model)
        shifts = ics.internal_covariate_shift(loss, params, order, weights, lr)
        shape = ics.landscape(loss, params, lr, multipliers=multipliers)
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


# --------------------------------------------------------------------------- ImageNet data


def imagenet_datasets(cfg: DictConfig, settings: Settings) -> tuple[Any, Any]:
    """Training and validation ImageFolders with the paper's protocol.

    Training: random-resized crops (GoogLeNet's scale and aspect augmentation), flips and
    photometric distortion (ColorJitter of brightness, contrast, saturation); evaluation:
    a single center crop after resizing the short side (Section 4.2: single-crop accuracy).
    """
    from torchvision import datasets, transforms

    d = cfg.data
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    distortion = settings.distortion
    train_transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(d.crop),
            *([transforms.RandomHorizontalFlip()] if d.flip else []),
            transforms.ColorJitter(
                brightness=distortion, contrast=distortion, saturation=distortion
            ),
            transforms.ToTensor(),
            normalize,
        ]
    )
    eval_transform = transforms.Compose(
        [
            transforms.Resize(d.resize),
            transforms.CenterCrop(d.crop),
            transforms.ToTensor(),
            normalize,
        ]
    )
    root = Path(d.root)
    folders = {split: root / d[f"{split}_dir"] for split in ("train", "val")}
    for split, folder in folders.items():
        if not folder.is_dir():
            raise ConfigError(
                f"data.root={d.root!r} has no {split} folder {folder}. Fix: point data.root at "
                f"a directory holding {d.train_dir}/ and {d.val_dir}/ in ImageFolder layout "
                "(one sub-folder of images per class)."
            )
    train_set = datasets.ImageFolder(str(folders["train"]), train_transform)
    val_set = datasets.ImageFolder(str(folders["val"]), eval_transform)
    if train_set.classes != val_set.classes or len(train_set.classes) != d.num_classes:
        raise ConfigError(
            f"{root} has {len(train_set.classes)} training and {len(val_set.classes)} validation "
            f"classes (they must be the same folders); data.num_classes={d.num_classes}. Fix: "
            "make both folders hold the same classes, and set data.num_classes to their count."
        )
    if d.eval_size is not None:
        val_set = torch.utils.data.Subset(val_set, range(min(d.eval_size, len(val_set))))
    return train_set, val_set


# --------------------------------------------------------------------------- training


@dataclass
class Replicas:
    """This process's place among the DDP replicas (rank 0 of 1 without torchrun), and the
    collectives the trainer needs, which do nothing on a single replica."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def join(cls, cfg: DictConfig) -> "Replicas":
        """Joins the torchrun process group when there is one."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = select_device(cfg.device)
        if world_size == 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        shared = [value]
        if self.world_size > 1:
            dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        gathered = [value] * self.world_size
        if self.world_size > 1:
            dist.all_gather_object(gathered, value)
        return gathered

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank."""
        tensor = torch.tensor(float(flag), device=self.device)
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def loss_check(self, mean_loss: torch.Tensor, finite: torch.Tensor) -> tuple[float, bool]:
        """The mean loss over replicas, and whether loss and parameters are finite on all."""
        if self.world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= self.world_size
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return mean_loss.item(), bool(finite.item())

    def run_options(self, stop_every: int) -> dict[str, Any]:
        """What bnrepro.lifecycle.Run needs to follow rank 0 and stop on every rank together."""
        if self.world_size == 1:
            return {}
        return {
            "main_process": self.main,
            "broadcast": self.broadcast,
            "sync_stop": self.any,
            "stop_every": stop_every,
        }


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


StepInputs = Callable[[int], tuple[torch.Tensor, ...]]
MakeBatch = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
EvalBatches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]

PROXY_EVAL_BATCH = {"cpu": 500, "cuda": 10_000}
"""Held-out images per forward pass when evaluating on a proxy. On a GPU the whole set in one
pass (inference keeps no activations; the pass is bound by kernel launches, not arithmetic); on
the CPU 500, which runs faster per image than both 100 and 2,500 (cache)."""


def proxy_pipeline(
    data: ProxyData,
    cfg: DictConfig,
    settings: Settings,
    order: BatchOrder,
    noise: StepNoise,
    memory_format: torch.memory_format,
) -> tuple[StepInputs, MakeBatch, EvalBatches]:
    """A proxy's training step reads two device tensors: the batch's example indices and
    the step's uniform numbers (`StepNoise`). `make_batch` turns them into the normalized,
    distorted images, their labels and the dropout mask, on the device and inside the step
    (a CUDA graph captures it). The held-out set is normalized once and kept on the device."""
    crop_padding, flip = cfg.data.crop_padding, cfg.data.flip
    distortion, dropout = settings.distortion, settings.dropout

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return ((x - data.mean) / data.std).contiguous(memory_format=memory_format)

    def step_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return order.batch(step), noise(step)

    def make_batch(index: torch.Tensor, uniform: torch.Tensor):
        images = data.x_train.index_select(0, index)
        x = distort(images, uniform[:, :DISTORTION_NOISE], crop_padding, flip, distortion)
        keep = None
        if dropout:
            keep = (uniform[:, DISTORTION_NOISE:] >= dropout).float().div_(1 - dropout)
        return normalize(x), data.y_train.index_select(0, index), keep

    x_test = normalize(data.x_test.float().div_(255))
    chunk = PROXY_EVAL_BATCH.get(x_test.device.type, PROXY_EVAL_BATCH["cpu"])

    def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(x_test), chunk):
            yield x_test[i : i + chunk], data.y_test[i : i + chunk]

    return step_inputs, make_batch, eval_batches


def imagenet_pipeline(
    train_set: Any,
    val_set: Any,
    cfg: DictConfig,
    order: BatchOrder,
    start_step: int,
    device: torch.device,
    memory_format: torch.memory_format,
) -> tuple[StepInputs, MakeBatch, EvalBatches]:
    """ImageNet through DataLoaders with worker processes: the batches of steps
    start_step.. in `order`, and the validation set. Dropout draws its own mask."""
    options = {
        "num_workers": cfg.data.workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": cfg.data.workers > 0,
    }
    sampler = StepBatches(order, start_step, cfg.steps)
    train_batches = iter(torch.utils.data.DataLoader(train_set, batch_sampler=sampler, **options))
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=cfg.data.eval_batch_size, **options
    )

    def step_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(train_batches)
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        return x, y.to(device, non_blocking=True)

    def make_batch(x: torch.Tensor, y: torch.Tensor):
        return x, y, None

    def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in val_loader:
            yield x.to(device, memory_format=memory_format), y.to(device)

    return step_inputs, make_batch, eval_batches


def amp_autocast(cfg: DictConfig, device: torch.device) -> Callable:
    """bf16 autocast when `amp` is set, else nothing. No weight-cast cache: graphs need none."""

    def autocast() -> contextlib.AbstractContextManager:
        if not cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)

    return autocast


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
    grid = [key for key, values in cfg.grid.items() if values is not None]
    check(
        len(cfg.seeds) == 1 and not grid,
        f"grid.{grid[0]}" if grid else "seeds",
        OmegaConf.to_container(cfg.grid[grid[0]]) if grid else list(cfg.seeds),
        "This trainer trains one run; `python -m bnrepro.train` trains several seeds or a grid "
        "as the packed members of one model (bnrepro.train_packed).",
    )
    settings = recipe_settings(cfg)
    replicas = Replicas.join(cfg)
    device, seed = replicas.device, int(cfg.seeds[0])
    if cfg.model.sync_bn and device.type != "cuda":
        raise ConfigError("model.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU kernels).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(replicas.broadcast(str(run_dir)))  # Hydra's may differ by a second per rank
    data = load_data(cfg, settings, device)
    options = replicas.run_options(stop_every=cfg.log_every)
    with Run(run_dir, cfg, metric_columns(cfg), RESUME_KEYS, **options) as run:
        if run.complete:
            return run.info
        state = run.checkpoint["trainer"] if run.checkpoint else None
        if state and state["world_size"] != replicas.world_size:
            raise ResumeError(
                f"Cannot resume {run_dir}: its checkpoint was made by {state['world_size']} "
                f"replicas (now {replicas.world_size}). Nothing was changed. Fix: resume with "
                f"--nproc-per-node={state['world_size']}, or train in a new directory."
            )
        model, optimizer, lr = build_training(cfg, settings, replicas, state)
        step_inputs, make_batch, eval_batches = pipeline(
            data, cfg, settings, replicas, run.start_step, model.fc.in_features
        )
        autocast = amp_autocast(cfg, device)
        bn_noise = BNNoiseDraws(model, [seed])
        probe_every, diagnostics_every = cfg.late_probe.every, cfg.diagnostics.every
        probe_unit = cfg.late_probe.unit
        if probe_every or diagnostics_every:
            images = probe_images(eval_batches, cfg.late_probe.size)
        if diagnostics_every:
            multipliers = list(cfg.diagnostics.multipliers)
            measure = make_diagnostics(model, images, multipliers, autocast)
        diagnosed: dict[str, float] = {}
        train_model = model
        if replicas.world_size > 1:
            train_model = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )
        train_step = make_train_step(train_model, optimizer, make_batch, autocast)
        use_graph = cfg.cuda_graph and device.type == "cuda" and replicas.world_size == 1
        use_graph = use_graph and cfg.data.name != "imagenet"
        if use_graph:
            train_step = cuda_graphed(model, optimizer, train_step, step_inputs(run.start_step))
        loss_sum, loss_count = torch.zeros((), device=device), 0
        if state:
            loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]

        def trainer_state() -> dict[str, Any]:
            """Weights, optimizer, the pending loss sum, and every replica's torch generators."""
            cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            rng = {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda_rng}
            gathered = replicas.gather(rng)
            return {
                "world_size": replicas.world_size,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **{key: [g[key] for g in gathered] for key in rng},
                "loss_sum": loss_sum.cpu(),
                "loss_count": loss_count,
            }

        decay_rate = cfg.optim.decay_rate

        def lr_at(step: int) -> float:
            return learning_rate(step, settings.lr, decay_rate, settings.decay_steps)

        def log(step: int) -> None:
            """The mean loss since the last log (non-finite if any step's was, or if any
            parameter is), held-out accuracy, the probe's percentiles and the diagnostics
            when due; rank 0 evaluates and logs."""
            mean_loss = loss_sum / max(loss_count, 1)
            mean, finite = replicas.loss_check(mean_loss, all_finite(model, mean_loss).float())
            if not finite:
                run.mark_diverged(seed, step)
            accuracy = None
            if replicas.main and run.due(step, cfg.eval_every) and seed not in run.diverged_at:
                accuracy = evaluate(model, eval_batches(), autocast)
                progress.set_postfix(test_acc=f"{accuracy:.4f}")
            row = {
                "step": step,
                "seed": seed,
                "train_loss": mean if loss_count else None,
                "lr": lr_at(step),
                "test_acc": accuracy,
            }
            if replicas.main and probe_every and run.due(step, probe_every):
                percentiles = late_input_percentiles(model, images, probe_unit)
                row.update(zip(PROBE_COLUMNS, percentiles, strict=True))
            run.log([row | diagnosed])

        run.start(
            trainer_state,
            device,
            world_size=replicas.world_size,
            settings=asdict(settings),
            parameters=count_parameters(model),
            cuda_graph=use_graph,
        )
        progress = tqdm(
            total=cfg.steps,
            initial=run.start_step,
            unit="step",
            disable=not (replicas.main and sys.stderr.isatty()),
        )
        cadences = [c for c in (cfg.log_every, cfg.eval_every, probe_every, diagnostics_every) if c]
        with progress:
            if run.start_step == 0:
                log(0)
            for step in run.steps():
                lr.fill_(lr_at(step - 1))
                inputs = step_inputs(step - 1)
                if bn_noise:
                    bn_noise.resample(step - 1)
                # Measured on this step's batch and noise, at the weights before its update.
                if replicas.main and diagnostics_every and step % diagnostics_every == 0:
                    diagnosed = measure(make_batch(*inputs), lr_at(step - 1))
                loss_sum += train_step(*inputs)
                loss_count += 1
                progress.update(1)
                if run.due(step, *cadences):
                    log(step)
                    loss_sum, loss_count, diagnosed = torch.zeros((), device=device), 0, {}
        info = run.finish(model.state_dict())
    if replicas.world_size > 1:
        dist.destroy_process_group()
    return info
