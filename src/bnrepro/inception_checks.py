"""The Inception run's config, checked: `validate` turns Hydra's composed config into the typed
InceptionConfig (or InceptionImageNetConfig) and checks its values, so that anything that would
fail late or silently train something else is a ConfigError naming the value and the fix.

A module of its own because both Inception trainers start with it (bnrepro.train_inception,
and bnrepro.train_packed, which adds what a pack needs), and because it reads the bounds of
every part of the run: the recipe's, the network's (BN's options through the check the MLP
shares, bnrepro.config.validate_batch_norm), the probes' and the data pipeline's.
"""

from omegaconf import DictConfig

from bnrepro.config import (
    InceptionConfig,
    InceptionImageNetConfig,
    check,
    typed,
    validate_batch_norm,
    validate_run,
)
from bnrepro.data import DATASET_NAMES
from bnrepro.inception_data import SHUFFLES
from bnrepro.inception_probes import PROBED_MODULE
from bnrepro.models.inception import ACTIVATIONS, INCEPTION_BLOCKS, STEMS


def validate(cfg: DictConfig) -> DictConfig:
    """The typed config, its values checked (see the module docstring)."""
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
    check_schedule(cfg)
    check_model(cfg.model)
    check_watching(cfg)
    check_data(cfg.data, imagenet)
    return cfg


def check_schedule(cfg: DictConfig) -> None:
    """The optimizer's values and the recipe's factors."""
    o, r = cfg.optim, cfg.recipe
    check(o.lr > 0, "optim.lr", o.lr, "Use a positive learning rate, e.g. optim.lr=0.01.")
    check(o.decay_steps > 0, "optim.decay_steps", o.decay_steps, "Use a positive step count.")
    check(0 < o.decay_rate <= 1, "optim.decay_rate", o.decay_rate, "Use 0 < decay_rate <= 1.")
    check(0 <= o.momentum < 1, "optim.momentum", o.momentum, "Use 0 <= momentum < 1.")
    check(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "Use weight_decay >= 0.")
    for key in ("lr_multiplier", "l2_divisor", "decay_speedup"):
        check(r[key] > 0, f"recipe.{key}", r[key], "Use a positive factor (1 leaves the base).")


def check_model(m: DictConfig) -> None:
    """The network's values, BN's options included."""
    check(
        m.activation in ACTIVATIONS,
        "model.activation",
        m.activation,
        f"Use one of {sorted(ACTIVATIONS)}.",
    )
    check(m.stem in STEMS, "model.stem", m.stem, f"Use one of {list(STEMS)}.")
    check(m.width > 0, "model.width", m.width, "Use a positive width multiplier, e.g. 0.25.")
    check(0 <= m.dropout < 1, "model.dropout", m.dropout, "Use 0 <= dropout < 1.")
    validate_batch_norm(m, noisy_bn="experiment=bn_baseline_noisy")
    check(
        not m.sync_bn or (m.batch_norm and m.norm == "torch"),
        "model.sync_bn",
        True,
        "SyncBatchNorm needs model.batch_norm=true and model.norm=torch.",
    )


def check_watching(cfg: DictConfig) -> None:
    """The late probe's and the diagnostics' values (bnrepro.inception_probes)."""
    p, g = cfg.late_probe, cfg.diagnostics
    check(p.every >= 0, "late_probe.every", p.every, "Use 0 (no probe) or a step count, e.g. 50.")
    check(p.size >= 2, "late_probe.size", p.size, "Use at least 2 held-out images, e.g. 256.")
    channels = INCEPTION_BLOCKS[PROBED_MODULE].scaled(cfg.model.width).n1x1
    check(
        0 <= p.unit < channels,
        "late_probe.unit",
        p.unit,
        f"Pick a channel in 0..{channels - 1} (module {PROBED_MODULE}'s 1x1 branch at width "
        f"{cfg.model.width}).",
    )
    check(g.every >= 0, "diagnostics.every", g.every, "Use 0 (off) or a step count, e.g. 500.")
    check(
        len(g.multipliers) > 0 and min(g.multipliers) > 0,
        "diagnostics.multipliers",
        list(g.multipliers),
        "Give positive step sizes in multiples of the learning rate, e.g. [0.5,1.0,2.0].",
    )


def check_data(d: DictConfig, imagenet: bool) -> None:
    """The data pipeline's values (bnrepro.inception_data)."""
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
