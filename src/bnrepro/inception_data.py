"""The Inception data pipeline: which examples each step trains on, and every random number
of the step (Section 4.2.1's shuffling and distortion, dropout's mask, noisy BN's noise).

Each stream is a function of the run's seed and the step alone (`BatchOrder`, `StepNoise`,
`BNNoiseDraws`), so a resumed run draws what an uninterrupted one draws with no generator state
to save, and a packed member (bnrepro.train_packed) draws what its single run
(bnrepro.train_inception) draws: both trainers build their batches from here. A proxy dataset
lives whole on the device and its batches are made inside the training step (`proxy_pipeline`),
where a CUDA graph captures them; ImageNet comes through DataLoaders (`imagenet_pipeline`).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bnrepro import nn as paper_nn
from bnrepro.data import load_dataset
from bnrepro.errors import ConfigError
from bnrepro.inception_recipe import Settings

SHUFFLES = ("fixed_shards", "within_shard", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


# --------------------------------------------------------------------------- the step's inputs


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

    def make_batch(
        index: torch.Tensor, uniform: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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

    def make_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        return x, y, None

    def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in val_loader:
            yield x.to(device, memory_format=memory_format), y.to(device)

    return step_inputs, make_batch, eval_batches
