"""Training harness for the Inception family (Section 4.2, Figures 2 and 3).

`python -m bnrepro.train experiment=bn_x5` comes here: bnrepro.train's entry point hands every
config with `model.name=inception` to `train`. Reads top to bottom: check the config and work
out what its recipe (the seven changes of Section 4.2.1) makes of the base values, load the data
(a proxy dataset whole on the device, or ImageNet through a DataLoader), build the network, then
train with momentum SGD and exponential learning-rate decay, evaluating on held-out data every
`eval_every` steps. A run trains one seed; `-m seeds=[0],[1]` sweeps seeds.

Under `torchrun --nproc-per-node=N -m bnrepro.train ...` it trains with DistributedDataParallel:
each replica draws its own `batch_size` examples per step, BN normalizes with each replica's own
batch unless `model.sync_bn=true`, and rank 0 alone evaluates, logs and checkpoints.

A run directory receives `config.yaml`, `metrics.csv` (`step,seed,train_loss,lr,test_acc`),
`run.json` (status completed, diverged or failed; the recipe's effective values; per-seed
results) and `model.pt`, as bnrepro.train's do. A non-finite loss or parameter ends the run with
status `diverged` and a normal exit, so a sweep goes on.
"""

import contextlib
import os
import sys
import time
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

from bnrepro import nn as paper_nn
from bnrepro.checkpoint import load_checkpoint, save_checkpoint
from bnrepro.data import DATASET_NAMES, load_dataset
from bnrepro.errors import ConfigError, ResumeError
from bnrepro.loggers import RunLogger
from bnrepro.models.inception import ACTIVATIONS, STEMS, Inception, count_parameters
from bnrepro.runinfo import atomic_write_text, git_state, hardware, write_json
from bnrepro.train import drop_rows_after, flatten, select_device

METRIC_COLUMNS = ("step", "seed", "train_loss", "lr", "test_acc")
SHUFFLES = ("fixed_shards", "within_shard", "full")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What a checkpoint must agree on with the config that resumes it.
RESULT_KEYS = ("data", "model", "optim", "recipe", "seeds", "batch_size", "eval_every", "log_every")
INTEGER_KEYS = (
    "steps", "batch_size", "eval_every", "log_every", "checkpoint_every", "data.shards",
    "data.storage_seed",
)  # fmt: skip
NUMBER_KEYS = (
    "optim.lr", "optim.momentum", "optim.weight_decay", "optim.decay_rate", "optim.decay_steps",
    "recipe.lr_multiplier", "recipe.l2_divisor", "recipe.decay_speedup", "model.width",
    "model.dropout", "model.bn_eps", "model.bn_momentum", "data.distortion",
    "data.distortion_reduced",
)  # fmt: skip
BOOLEAN_KEYS = (
    "recipe.dropout_off", "recipe.lrn_off", "recipe.thorough_shuffle", "recipe.reduced_distortion",
    "model.batch_norm", "model.lrn", "model.sync_bn", "amp", "channels_last", "cuda_graph",
)  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Rejects values that would fail late or silently train something else."""

    def fail(key: str, value: Any, fix: str) -> None:
        raise ConfigError(f"Invalid config: {key}={value!r}. {fix}")

    if cfg.model.name != "inception":
        fail("model.name", cfg.model.name, "This harness trains model=inception(_proxy).")
    if "recipe" not in cfg or "log_every" not in cfg:
        raise ConfigError(
            "The Inception harness needs a recipe: add experiment=inception (or bn_baseline, "
            "bn_x5, bn_x30, bn_x5_sigmoid, inception_x5, inception_sigmoid)."
        )
    if cfg.data.name not in (*DATASET_NAMES, "imagenet") or "shuffle" not in cfg.data:
        fail(
            "data",
            cfg.data.name,
            "Use data=fashion_mnist, data=mnist_proxy or data=imagenet (the MLP's data=mnist "
            "lacks the Inception pipeline's settings).",
        )
    if "decay_steps" not in cfg.optim:
        fail("optim", cfg.optim.name, "Use optim=momentum_proxy (proxies) or momentum (ImageNet).")
    for keys, kinds, example in (
        (INTEGER_KEYS, int, "a whole number"),
        (NUMBER_KEYS, int | float, "a number"),
        (BOOLEAN_KEYS, bool, "true or false"),
    ):
        for key in keys:
            value = OmegaConf.select(cfg, key)
            if not isinstance(value, kinds) or (kinds is not bool and isinstance(value, bool)):
                fail(key, value, f"{key} must be {example}.")
    if not OmegaConf.is_list(cfg.seeds) or not all(isinstance(s, int) for s in cfg.seeds):
        fail("seeds", cfg.seeds, "Give a list of one whole number, e.g. seeds=[0].")
    if len(cfg.seeds) != 1:
        fail("seeds", list(cfg.seeds), "Train one seed per run; sweep with -m seeds=[0],[1],[2].")
    if cfg.steps < 1:
        fail("steps", cfg.steps, "Use a positive number of training steps.")
    if cfg.batch_size < 1 or (cfg.model.batch_norm and cfg.batch_size < 2):
        fail("batch_size", cfg.batch_size, "Use batch_size >= 2 (BN needs two examples per batch).")
    for key in ("eval_every", "log_every"):
        if cfg[key] < 1:
            fail(key, cfg[key], f"Use a positive step count for {key}.")
    if cfg.checkpoint_every < 0:
        fail("checkpoint_every", cfg.checkpoint_every, "Use 0 (only at the end) or a step count.")

    o, r, m, d = cfg.optim, cfg.recipe, cfg.model, cfg.data
    if o.lr <= 0 or o.decay_steps <= 0 or not 0 < o.decay_rate <= 1:
        fail("optim", dict(o), "Use lr > 0, decay_steps > 0 and 0 < decay_rate <= 1.")
    if not 0 <= o.momentum < 1 or o.weight_decay < 0:
        fail("optim", dict(o), "Use 0 <= momentum < 1 and weight_decay >= 0.")
    for key in ("lr_multiplier", "l2_divisor", "decay_speedup"):
        if r[key] <= 0:
            fail(f"recipe.{key}", r[key], "Use a positive factor (1 leaves the base value).")
    if m.activation not in ACTIVATIONS:
        fail("model.activation", m.activation, f"Use one of {sorted(ACTIVATIONS)}.")
    if m.stem not in STEMS:
        fail("model.stem", m.stem, f"Use one of {list(STEMS)}.")
    if m.width <= 0 or not 0 <= m.dropout < 1:
        fail("model", {"width": m.width, "dropout": m.dropout}, "Use width > 0, 0 <= dropout < 1.")
    if m.norm not in ("torch", "paper"):
        fail("model.norm", m.norm, "Use model.norm=torch or model.norm=paper.")
    if m.sync_bn and not (m.batch_norm and m.norm == "torch"):
        fail(
            "model.sync_bn", True, "SyncBatchNorm needs model.batch_norm=true and model.norm=torch."
        )

    for key in ("shuffle", "shuffle_thorough"):
        if d[key] not in SHUFFLES:
            fail(f"data.{key}", d[key], f"Use one of {list(SHUFFLES)}.")
    if d.shards < 1:
        fail("data.shards", d.shards, "Use at least one shard.")
    for key in ("distortion", "distortion_reduced"):
        if not 0 <= d[key] < 1:
            fail(f"data.{key}", d[key], "Use a strength in [0, 1).")
    if d.eval_size is not None and d.eval_size < 1:
        fail("data.eval_size", d.eval_size, "Use a positive count, or null for the whole set.")
    if d.name == "imagenet":
        if OmegaConf.is_missing(d, "root"):
            raise ConfigError("data=imagenet needs data.root=<dir holding train/ and val/>.")
    else:
        if d.resize not in ("pad", "bilinear"):
            fail("data.resize", d.resize, "Use data.resize=pad or data.resize=bilinear.")
        if d.resize == "pad" and d.size < 28:
            fail("data.size", d.size, "Padding needs size >= 28; add data.resize=bilinear.")
        if d.crop_padding < 0:
            fail("data.crop_padding", d.crop_padding, "Use 0 (no random crop) or a pixel count.")


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


def recipe_settings(cfg: DictConfig) -> Settings:
    r = cfg.recipe
    return Settings(
        lr=cfg.optim.lr * r.lr_multiplier,
        weight_decay=cfg.optim.weight_decay / r.l2_divisor,
        decay_steps=cfg.optim.decay_steps / r.decay_speedup,
        dropout=0.0 if r.dropout_off else float(cfg.model.dropout),
        lrn=bool(cfg.model.lrn) and not r.lrn_off,
        shuffle=cfg.data.shuffle_thorough if r.thorough_shuffle else cfg.data.shuffle,
        distortion=cfg.data.distortion_reduced if r.reduced_distortion else cfg.data.distortion,
    )


def learning_rate(step: int, lr: float, decay_rate: float, decay_steps: float) -> float:
    """Exponential decay, continuous in the step: lr * decay_rate ** (step / decay_steps)."""
    return lr * decay_rate ** (step / decay_steps)


def build_model(cfg: DictConfig, settings: Settings) -> Inception:
    m = cfg.model
    norm_layer = None
    if m.batch_norm and m.norm == "paper":

        def norm_layer(channels: int) -> nn.Module:
            return paper_nn.BatchNorm(channels, eps=m.bn_eps, momentum=m.bn_momentum)

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
    )


def make_optimizer(model: nn.Module, cfg: DictConfig, settings: Settings) -> torch.optim.SGD:
    """Momentum SGD with L2 on the convolution and classifier weights only.

    Biases and BN's gamma and beta get no weight decay (the paper regularizes "weights"; the
    usual practice, torchvision's `norm_weight_decay=0` included).
    """
    weights = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": weights, "weight_decay": settings.weight_decay},
            {"params": others, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov,
    )


# --------------------------------------------------------------------------- data order


def _generator(*seed: int) -> torch.Generator:
    """A CPU generator whose seed is derived from the integers `seed` (numpy's SeedSequence)."""
    state = np.random.SeedSequence(list(seed)).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


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
    consecutive examples and replica r the r-th slice of them.
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
    ):
        if shuffle not in SHUFFLES:
            raise ValueError(f"shuffle={shuffle!r} is not known; use one of {list(SHUFFLES)}.")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
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
            self._epoch, self._order = epoch, self.epoch_order(epoch)
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
        images, labels = load_dataset(d.name, d.root, split, download=d.download)
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


def distort(
    images: torch.Tensor,
    crop_padding: int,
    flip: bool,
    distortion: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A training batch of uint8 images -> float in [0, 1], distorted on its device.

    Random crop (zero-pad by `crop_padding`, cut the original size back out at a random
    offset), random horizontal flip, then the photometric distortion: brightness and
    contrast each scaled by a factor drawn per image from [1 - distortion, 1 + distortion].
    """
    x = images.float().div_(255)
    batch, _, size, _ = x.shape
    device = x.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    if crop_padding:
        padded = F.pad(x, (crop_padding,) * 4)
        offsets = torch.randint(
            0, 2 * crop_padding + 1, (2, batch, 1), generator=generator, device=device
        )
        rows = (offsets[0] + torch.arange(size, device=device))[:, :, None]
        cols = (offsets[1] + torch.arange(size, device=device))[:, None, :]
        # Indexing (batch, rows, cols) around the channel slice gives (N, H, W, C).
        x = padded[torch.arange(batch, device=device)[:, None, None], :, rows, cols]
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        flipped = uniform(batch, 1, 1, 1) < 0.5
        x = torch.where(flipped, x.flip(-1), x)
    if distortion:
        brightness, contrast = 1 + distortion * (2 * uniform(2, batch, 1, 1, 1) - 1)
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean).clamp_(0, 1)
    return x


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


def init_distributed(cfg: DictConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device), joining the torchrun process group when there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, select_device(cfg.device)
    local_rank = int(os.environ["LOCAL_RANK"])
    device = select_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def resume_state(cfg: DictConfig, path: Path, world_size: int) -> dict[str, Any] | None:
    """The run's checkpoint when `resume` is set and one exists, checked against `cfg`."""
    if not cfg.resume or not path.exists():
        return None
    state = load_checkpoint(path)
    saved = flatten({key: state["config"].get(key) for key in RESULT_KEYS})
    container = OmegaConf.to_container(cfg, resolve=True)
    now = flatten({key: container[key] for key in RESULT_KEYS})
    changed = [
        f"{k}={saved.get(k)!r} (now {now.get(k)!r})"
        for k in sorted(saved | now)
        if saved.get(k) != now.get(k)
    ]
    if state["world_size"] != world_size:
        changed.append(f"world size {state['world_size']} (now {world_size})")
    if changed:
        raise ResumeError(
            f"Cannot resume {path.parent}: its checkpoint was made with {'; '.join(changed)}. "
            "Fix: resume with the run's original overrides (see its config.yaml), or drop resume "
            "and train in a new directory. Only steps, logging and device may change on resume."
        )
    if state["step"] > cfg.steps:
        raise ResumeError(
            f"Cannot resume {path.parent} with steps={cfg.steps}: it is already at step "
            f"{state['step']}. Fix: pass steps >= {state['step']}."
        )
    return state


def all_finite(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """A 0-dim bool tensor: the loss and every parameter are finite."""
    checks = [torch.isfinite(loss).all(), *(torch.isfinite(p).all() for p in model.parameters())]
    return torch.stack(checks).all()


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], autocast: Callable
) -> float:
    """Accuracy over `batches`, BN using its inference statistics."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        with autocast():
            correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    model.train()
    return correct / total


def graphed(model: nn.Module, example: torch.Tensor, autocast: Callable) -> nn.Module:
    """The model with its training forward and backward replayed as CUDA graphs.

    PyTorch's partial-network capture (`torch.cuda.make_graphed_callables`): the optimizer step
    stays eager, so the learning rate may change every step. The capture's warm-up passes
    would move the BN running statistics; they are put back. (They draw dropout masks, so a
    graphed run's random numbers differ from an eager run's.)
    """
    saved = [b.detach().clone() for b in model.buffers()]
    with autocast():
        model = torch.cuda.make_graphed_callables(model, (example,))
    with torch.no_grad():
        for buffer, value in zip(model.buffers(), saved, strict=True):
            buffer.copy_(value)
    return model


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains the one seed of `cfg` for cfg.steps steps, logging into `run_dir`; returns run info.

    With `resume=true` and a checkpoint in `run_dir`, training continues from it; on the proxy
    datasets it ends with the same metrics as an uninterrupted run.
    """
    started = time.time()
    validate(cfg)
    settings = recipe_settings(cfg)
    rank, world_size, device = init_distributed(cfg)
    if cfg.model.sync_bn and device.type != "cuda":
        raise ConfigError("model.sync_bn=true needs CUDA GPUs (SyncBatchNorm has no CPU kernels).")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed = int(cfg.seeds[0])
    main_process = rank == 0
    used = (run_dir / "metrics.csv").exists()
    if world_size > 1:  # every rank uses rank 0's run directory (Hydra's may differ by a second)
        shared = [str(run_dir), used]
        dist.broadcast_object_list(shared, src=0)
        run_dir, used = Path(shared[0]), shared[1]
    state = resume_state(cfg, run_dir / "checkpoint.pt", world_size)
    if used and state is None:
        if not cfg.resume:
            raise ResumeError(
                f"{run_dir} already holds a run (its metrics.csv). Nothing was changed. Fix: "
                "continue it with resume=true, or train in a new directory (another "
                "hydra.run.dir)."
            )
        if main_process:  # stopped before its first checkpoint: start over
            drop_rows_after(run_dir / "metrics.csv", -1)
    info: dict[str, Any] = {
        "name": cfg.name,
        "variant": cfg.model.variant,
        "status": "running",
        "git": git_state(),
        "hardware": hardware(device),
        "world_size": world_size,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "resumed_from_step": state["step"] if state else None,
        "settings": asdict(settings),
    }
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(run_dir / "run.json", info)

    # Model and optimizer. DDP starts every replica from rank 0's weights; dropout and the
    # distortions draw different numbers on each replica.
    torch.manual_seed(seed)
    model = build_model(cfg, settings)
    if world_size > 1 and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    info["parameters"] = count_parameters(model)
    optimizer = make_optimizer(model, cfg, settings)
    distortion_rng = torch.Generator(device).manual_seed(seed + 1_000_003 * rank)
    torch.manual_seed(seed + 1_000_003 * rank)
    start_step, wall_before = 0, 0.0
    loss_sum, loss_count = torch.zeros((), device=device), 0
    diverged_at, last_eval = None, {}
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        distortion_rng.set_state(state["distortion_rng"][rank])
        torch.set_rng_state(state["torch_rng"][rank])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"][rank], device)
        start_step, wall_before = state["step"], state["wall_s"]
        loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        last_eval = state["last_eval"]
        if main_process:
            drop_rows_after(run_dir / "metrics.csv", start_step)

    def autocast() -> contextlib.AbstractContextManager:
        """bf16 autocast when `amp` is set. No weight-cast cache: CUDA graphs need none."""
        if not cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)

    # Data: a proxy lives whole on the device and is batched by index; ImageNet streams.
    if cfg.data.name == "imagenet":
        train_set, val_set = imagenet_datasets(cfg, settings)
        n_train = len(train_set)
    else:
        data = load_proxy(cfg, device)
        n_train = len(data.x_train)
    order = BatchOrder(
        n_train,
        cfg.batch_size,
        settings.shuffle,
        cfg.data.shards,
        seed,
        cfg.data.storage_seed,
        rank,
        world_size,
    )
    if cfg.data.name == "imagenet":
        loader_options = {
            "num_workers": cfg.data.workers,
            "pin_memory": device.type == "cuda",
            "persistent_workers": cfg.data.workers > 0,
        }
        train_batches = iter(
            torch.utils.data.DataLoader(
                train_set, batch_sampler=StepBatches(order, start_step, cfg.steps), **loader_options
            )
        )
        val_loader = torch.utils.data.DataLoader(
            val_set, batch_size=cfg.data.eval_batch_size, **loader_options
        )

        def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = next(train_batches)
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            return x, y.to(device, non_blocking=True)

        def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in val_loader:
                yield x.to(device, memory_format=memory_format), y.to(device)

    else:

        def normalize(x: torch.Tensor) -> torch.Tensor:
            x = (x - data.mean) / data.std
            return x.contiguous(memory_format=memory_format)

        def next_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = order.batch(step).to(device)
            x = distort(
                data.x_train[index],
                cfg.data.crop_padding,
                cfg.data.flip,
                settings.distortion,
                distortion_rng,
            )
            return normalize(x), data.y_train[index]

        def eval_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(0, len(data.x_test), 1000):
                x = data.x_test[i : i + 1000].float().div_(255)
                yield normalize(x), data.y_test[i : i + 1000]

    eval_model = model
    use_graph = cfg.cuda_graph and device.type == "cuda" and world_size == 1
    info["cuda_graph"] = bool(use_graph and cfg.data.name != "imagenet")
    if info["cuda_graph"]:
        example = torch.zeros_like(data.x_train[: cfg.batch_size], dtype=torch.float)
        model = graphed(model, example.contiguous(memory_format=memory_format), autocast)
    if world_size > 1:
        model = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    logger = None
    if main_process:
        logger = RunLogger(
            run_dir,
            cfg,
            METRIC_COLUMNS,
            wandb_id=state["logger"]["wandb_id"] if state else None,
            purge_step=start_step + 1 if state else (0 if cfg.resume else None),
        )

    def train_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach().float()

    def checkpoint(step: int) -> None:
        """Rank 0 writes the checkpoint, with every replica's random number generator states."""
        rng = {
            "distortion_rng": distortion_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        gathered = [rng] * world_size
        if world_size > 1:
            dist.all_gather_object(gathered, rng)
        if not main_process:
            return
        save_checkpoint(
            run_dir / "checkpoint.pt",
            {
                "step": step,
                "world_size": world_size,
                "config": OmegaConf.to_container(cfg, resolve=True),
                "model": eval_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                **{key: [g[key] for g in gathered] for key in rng},
                "loss_sum": loss_sum.cpu(),
                "loss_count": loss_count,
                "wall_s": wall_before + time.time() - started,
                "last_eval": last_eval,
                "logger": logger.state_dict(),
            },
        )

    status, step = "failed", start_step
    progress = tqdm(
        total=cfg.steps,
        initial=start_step,
        unit="step",
        disable=not (main_process and sys.stderr.isatty()),
    )
    try:
        for step in range(start_step, cfg.steps + 1):
            is_eval = step % cfg.eval_every == 0 or step == cfg.steps
            is_log = is_eval or step % cfg.log_every == 0
            if is_log and not (state and step == start_step):
                # The mean loss since the last log; a single non-finite step makes it non-finite.
                mean_loss = loss_sum / max(loss_count, 1)
                finite = all_finite(eval_model, mean_loss).float()
                if world_size > 1:
                    dist.all_reduce(mean_loss)
                    mean_loss /= world_size
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
                if not finite.item():
                    diverged_at = step
                accuracy = None
                if main_process and is_eval and diverged_at is None:
                    accuracy = evaluate(eval_model, eval_batches(), autocast)
                    last_eval = {"step": step, "test_acc": accuracy}
                    progress.set_postfix(test_acc=f"{accuracy:.4f}")
                if main_process:
                    row = {
                        "step": step,
                        "seed": seed,
                        "train_loss": mean_loss.item() if loss_count else None,
                        "lr": learning_rate(
                            step, settings.lr, cfg.optim.decay_rate, settings.decay_steps
                        ),
                        "test_acc": accuracy,
                    }
                    logger.log([row])
                loss_sum, loss_count = torch.zeros((), device=device), 0
                if diverged_at is not None:
                    break
            if step == cfg.steps:
                break
            if cfg.checkpoint_every and step > start_step and step % cfg.checkpoint_every == 0:
                checkpoint(step)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(
                    step, settings.lr, cfg.optim.decay_rate, settings.decay_steps
                )
            loss_sum = loss_sum + train_step(*next_batch(step))
            loss_count += 1
            progress.update(1)
        status = "diverged" if diverged_at is not None else "completed"
        checkpoint(step)
    finally:
        progress.close()
        wall_s = wall_before + time.time() - started
        info.update(
            status=status,
            steps=step,
            wall_s=round(wall_s, 3),
            steps_per_s=round(step / wall_s, 2),
            diverged_at_step=diverged_at,
            seeds=[
                {
                    "seed": seed,
                    "status": status,
                    "diverged_at_step": diverged_at,
                    "final_step": last_eval.get("step"),
                    "final_test_acc": last_eval.get("test_acc"),
                }
            ],
        )
        if main_process:
            if logger is not None:
                logger.close(status)
            model_file = run_dir / "model.pt"
            torch.save(eval_model.state_dict(), model_file.with_name(".model.pt.tmp"))
            model_file.with_name(".model.pt.tmp").replace(model_file)
            write_json(run_dir / "run.json", info)
        if world_size > 1:
            dist.destroy_process_group()
    return info
