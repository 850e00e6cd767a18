"""The Inception recipe: what a config makes of a run (Section 4.2.1).

The seven changes of Section 4.2.1 turn the base values into the `Settings` a run trains with;
from them come the learning rate at each step (`learning_rate`), the network (`build_model`),
its optimizer (`make_optimizer`) and the step's precision (`amp_autocast`). A module of its
own because both Inception trainers build from it, the single run (bnrepro.train_inception)
and the packed members (bnrepro.train_packed), each member as its single run would.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from bnrepro.models.inception import Inception
from bnrepro.nn import create_norm


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
    """The network of `cfg` with the recipe's dropout and LRN; `members` > 1 packs that many
    (bnrepro.train_packed). Its BN layers are `bnrepro.nn.create_norm`'s. `cfg` may be typed
    or as Hydra composes it, which names `model.noise` only for noisy BN."""
    m = cfg.model
    norm_layer = None
    if m.batch_norm:
        norm_layer = create_norm(m.norm, 2, m.bn_eps, m.bn_momentum, noise=m.get("noise"))
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


def amp_autocast(cfg: DictConfig, device: torch.device) -> Callable:
    """bf16 autocast when `amp` is set, else nothing. No weight-cast cache: graphs need none."""

    def autocast() -> contextlib.AbstractContextManager:
        if not cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)

    return autocast
