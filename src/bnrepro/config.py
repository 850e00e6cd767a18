"""Typed configs: the schema of each trainer, and the one function that applies it.

The YAML files under configs/ hold the values; the dataclasses here hold the types. Every key
is `MISSING` in its schema, so a value lives in exactly one place (its YAML file) and a key no
YAML file sets is reported as missing instead of taking a hidden default.

`typed(cfg, schema)` turns Hydra's composed config into the trainer's typed config:
- a key of the schema with a value of the wrong type is a ConfigError naming the key, the
  value and what it must be; booleans must be written true or false (OmegaConf alone would
  read `resume=no` as false);
- a key that is not in the schema is an error when it holds a value, and dropped when it is
  `???`: train.yaml declares the keys of every trainer as `???` so that a sweep over
  experiments may override them (Hydra checks the overrides of a sweep against the base
  config, before any experiment is applied), and each trainer keeps only its own.
Range checks and rules across keys live in each net's `validate` (bnrepro.train_mlp,
bnrepro.inception_checks); those of the keys both share are here: `validate_run` for every
run's, `validate_batch_norm` for BN's options (`BatchNormOptions`).
"""

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bnrepro.config_origin import origin
from bnrepro.errors import ConfigError
from bnrepro.nn import NORMS


@dataclass
class WandbConfig:
    mode: str = MISSING
    project: str = MISSING


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: bool = MISSING


@dataclass
class PathsConfig:
    """The folders of configs/paths/default.yaml (bnrepro.paths says where they default to)."""

    root: str = MISSING
    data: str = MISSING
    runs: str = MISSING


@dataclass
class RunConfig:
    """What every run has: its name, seeds, length, cadence, device, folders and logging."""

    name: str = MISSING
    seeds: list[int] = MISSING
    steps: int = MISSING
    batch_size: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    resume: bool = MISSING
    device: str = MISSING
    threads: int | None = MISSING
    cuda_graph: bool = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# --------------------------------------------------------------------------- BN's options


@dataclass
class BNNoise:
    """Noisy BN's draws each step (bnrepro.nn.NoisyBatchNorm): a scale from
    U(scale_min, scale_max) and a shift from U(-shift, shift) per unit."""

    scale_min: float = MISSING
    scale_max: float = MISSING
    shift: float = MISSING


@dataclass
class BatchNormOptions:
    """BN's options, the same keys in both nets' model configs (configs/model/): whether the
    net has BN, which implementation (bnrepro.nn.create_norm builds it), its eps and the rate
    of its moving averages, and noisy BN's noise. `validate_batch_norm` checks them."""

    batch_norm: bool = MISSING
    norm: str = MISSING
    bn_eps: float = MISSING
    bn_momentum: float = MISSING
    # Noisy BN's noise (model.norm=noisy: model=mlp_noisy, experiment=bn_baseline_noisy); null
    # for the other nets, whose YAML files do not name it.
    noise: BNNoise | None = None


# --------------------------------------------------------------------------- the MNIST MLP


@dataclass
class MNISTData:
    name: str = MISSING
    root: str = MISSING
    input: str = MISSING


@dataclass
class MLPModel(BatchNormOptions):
    name: str = MISSING
    variant: str = MISSING
    sizes: list[int] = MISSING
    activation: str = MISSING
    bn_position: str = MISSING
    bn_stats_backprop: bool = MISSING
    init_std: float = MISSING


@dataclass
class SGDOptim:
    name: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING


@dataclass
class Probe:
    every: int = MISSING
    size: int = MISSING
    unit: int = MISSING


@dataclass
class MemberGrid:
    lr: list[float] | None = MISSING
    init_std: list[float] | None = MISSING


@dataclass
class Diagnostics:
    """Santurkar et al.'s ICS and landscape measurements (bnrepro.ics_measures) during training."""

    every: int = MISSING
    multipliers: list[float] = MISSING


@dataclass
class MLPConfig(RunConfig):
    """bnrepro.train_mlp: the paper's MNIST net (Section 4.1, Figure 1)."""

    data: MNISTData = field(default_factory=MNISTData)
    model: MLPModel = field(default_factory=MLPModel)
    optim: SGDOptim = field(default_factory=SGDOptim)
    probe: Probe = field(default_factory=Probe)
    grid: MemberGrid = field(default_factory=MemberGrid)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)


# --------------------------------------------------------------------------- Inception


@dataclass
class ImageData:
    """What the proxy and ImageNet pipelines share."""

    name: str = MISSING
    root: str = MISSING
    num_classes: int = MISSING
    channels: int = MISSING
    flip: bool = MISSING
    distortion: float = MISSING
    distortion_reduced: float = MISSING
    shuffle: str = MISSING
    shuffle_thorough: str = MISSING
    shards: int = MISSING
    storage_seed: int = MISSING
    eval_size: int | None = MISSING


@dataclass
class ProxyData(ImageData):
    size: int = MISSING
    resize: str = MISSING
    crop_padding: int = MISSING


@dataclass
class ImageNetData(ImageData):
    train_dir: str = MISSING
    val_dir: str = MISSING
    crop: int = MISSING
    resize: int = MISSING
    eval_batch_size: int = MISSING
    workers: int = MISSING


@dataclass
class InceptionModel(BatchNormOptions):
    name: str = MISSING
    variant: str = MISSING
    sync_bn: bool = MISSING
    activation: str = MISSING
    dropout: float = MISSING
    lrn: bool = MISSING
    width: float = MISSING
    stem: str = MISSING


@dataclass
class MomentumOptim:
    name: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    weight_decay: float = MISSING
    decay_rate: float = MISSING
    decay_steps: float = MISSING


@dataclass
class Recipe:
    """The seven changes of Section 4.2.1, one switch each."""

    lr_multiplier: float = MISSING
    dropout_off: bool = MISSING
    l2_divisor: float = MISSING
    decay_speedup: float = MISSING
    lrn_off: bool = MISSING
    thorough_shuffle: bool = MISSING
    reduced_distortion: bool = MISSING


@dataclass
class RecipeGrid:
    """Packed members (bnrepro.train_packed): the recipe values to combine, null for the
    recipe's own. LRN is left out: with or without it the network has other modules."""

    lr_multiplier: list[float] | None = None
    l2_divisor: list[float] | None = None
    decay_speedup: list[float] | None = None
    dropout_off: list[bool] | None = None
    thorough_shuffle: list[bool] | None = None
    reduced_distortion: list[bool] | None = None


@dataclass
class InceptionConfig(RunConfig):
    """bnrepro.train_inception on a proxy dataset (Section 4.2, Figures 2 and 3)."""

    data: ProxyData = field(default_factory=ProxyData)
    model: InceptionModel = field(default_factory=InceptionModel)
    optim: MomentumOptim = field(default_factory=MomentumOptim)
    log_every: int = MISSING
    amp: bool = MISSING
    channels_last: bool = MISSING
    recipe: Recipe = field(default_factory=Recipe)
    grid: RecipeGrid = field(default_factory=RecipeGrid)
    # Which trainer: true packs the members into one model (bnrepro.train_packed), false trains
    # one run (bnrepro.train_inception), null packs exactly when there are several members.
    packed: bool | None = MISSING
    late_probe: Probe = field(default_factory=Probe)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)


@dataclass
class InceptionImageNetConfig(InceptionConfig):
    """bnrepro.train_inception on ImageNet."""

    data: ImageNetData = field(default_factory=ImageNetData)


# --------------------------------------------------------------------------- applying a schema

_KINDS = {
    int: ("a whole number", "100"),
    float: ("a number", "0.1"),
    bool: ("true or false", "true"),
    str: ("a string", "name"),
}


def _field_type(schema: type, key: str) -> Any:
    """The annotated type of the dotted `key` in the dataclass `schema`, or None."""
    node: Any = schema
    for part in key.split("."):
        optional = [a for a in typing.get_args(node) if a is not type(None)]
        if type(None) in typing.get_args(node) and len(optional) == 1:
            node = optional[0]  # a nullable section, e.g. model.noise
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
    return node


_LIST_KINDS = {
    int: ("a list of whole numbers", "[0,1,2]"),
    float: ("a list of numbers", "[0.01,0.1,1.0]"),
    bool: ("a list of true and false", "[false,true]"),
}


def _unwrap(kind: Any) -> tuple[Any, bool]:
    """(the type, whether null is allowed) of an annotation `X` or `X | None`."""
    args = typing.get_args(kind)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def _describe(kind: Any, key: str) -> str:
    """'<key> must be <what>, e.g. <key>=<example>.' for the annotated type `kind`: a scalar,
    a list of whole numbers or numbers, or a section (a dataclass), each maybe nullable."""
    kind, nullable = _unwrap(kind)
    if dataclasses.is_dataclass(kind):
        first = dataclasses.fields(kind)[0].name
        names = ", ".join(f.name for f in dataclasses.fields(kind))
        return (
            f"{key} is a group of settings ({names}), not one value: set them one by one. "
            f"{_describe(_field_type(kind, first), f'{key}.{first}')}"
        )
    if typing.get_origin(kind) is list:
        what, example = _LIST_KINDS[typing.get_args(kind)[0]]
    else:
        what, example = _KINDS[kind]
    return f"{key} must be {what}{' or null' if nullable else ''}, e.g. {key}={example}."


def _fits(kind: Any, value: Any) -> bool:
    """Whether `value` has the shape of `kind` where OmegaConf's merge would let it through
    or fail without naming the key: a section given one value, a list holding lists or
    booleans, a boolean for a number."""
    kind = _unwrap(kind)[0]
    if value is None or value == "???":
        return True
    if dataclasses.is_dataclass(kind):
        return isinstance(value, dict)
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        return not isinstance(value, list) or all(
            not isinstance(v, list | dict) and isinstance(v, bool) == (item is bool) for v in value
        )
    if kind in (int, float, bool):
        return isinstance(value, bool) == (kind is bool)
    return True


def _leaves(tree: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


def _drop(tree: dict, key: str) -> None:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node[part]
    del node[last]
    if parents and not node:
        _drop(tree, ".".join(parents))


def _not_a_setting(key: str, value: Any, trainer: str, model: str) -> str:
    """The error for a `key` the trainer has no place for, naming what on the command line
    brought it where that was not the key itself (bnrepro.config_origin)."""
    said = f"Invalid config: {key}={value!r} is not a setting of the {trainer} trainer"
    where = origin(key)
    if where is None:
        return (
            f"{said} (model.name={model}). Fix: drop {key}, or pick the model and experiment "
            "it belongs to."
        )
    drop = f"drop {where.typed}, or " if where.typed else ""
    return (
        f"{said} (model.name={model}): {where}. Fix: {drop}pick a model and experiment that "
        "go together."
    )


def typed(cfg: DictConfig, schema: type, trainer: str) -> DictConfig:
    """`cfg` as a config of the dataclass `schema` (see the module docstring); read-only."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(f"Invalid config: {error}. Fix the value named above.") from error
    raw.pop("hydra", None)
    # A key of another trainer that holds a value is named before one that holds null (another
    # trainer's defaults, such as its grid's), which tells the user less.
    foreign = [(k, v) for k, v in _leaves(raw) if _field_type(schema, k) is None and v != "???"]
    if foreign:
        key, value = next(((k, v) for k, v in foreign if v is not None), foreign[0])
        raise ConfigError(_not_a_setting(key, value, trainer, cfg.model.name))
    for key, value in list(_leaves(raw)):
        kind = _field_type(schema, key)
        if kind is None:  # ??? (a key another trainer declares): dropped
            _drop(raw, key)
            continue
        if not _fits(kind, value):
            raise ConfigError(f"Invalid config: {key}={value!r}. {_describe(kind, key)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), raw)
    except OmegaConfBaseException as error:
        key = (getattr(error, "full_key", None) or "?").split("[")[0]  # a list: name all of it
        value = OmegaConf.select(cfg, key, default=None) if key != "?" else None
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        kind = _field_type(schema, key)
        fix = _describe(kind, key) if kind is not None else str(error).splitlines()[0]
        raise ConfigError(f"Invalid config: {key}={value!r}. {fix}") from error
    for key, value in _leaves(OmegaConf.to_container(merged)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"Invalid config: {key}={value!r}. {key} must be a finite number, e.g. {key}=0.1."
            )
        if isinstance(value, list) and not all(math.isfinite(v) for v in value):
            raise ConfigError(
                f"Invalid config: {key}={value!r}. Each value of {key} must be a finite "
                f"number, e.g. {key}={_LIST_KINDS[float][1]}."
            )
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        where = origin(missing[0])
        raise ConfigError(
            f"Invalid config: {', '.join(missing)} has no value for the {trainer} trainer"
            f"{f' ({where})' if where else ''}. Fix: set it on the command line (e.g. "
            f"{missing[0]}=...), or use an experiment that sets it."
        )
    OmegaConf.set_readonly(merged, True)
    return merged


# --------------------------------------------------------------------------- shared checks


def check(condition: bool, key: str, value: Any, fix: str) -> None:
    """Raises the one-paragraph ConfigError `Invalid config: <key>=<value>. <fix>`, naming
    after the value the choice that brought it where the command did not type the key itself
    (`device='cuda' (it comes with preset=gpu, which this command sets)`)."""
    if not condition:
        where = origin(key)
        raise ConfigError(f"Invalid config: {key}={value!r}{f' ({where})' if where else ''}. {fix}")


WANDB_MODES = ("offline", "online", "disabled")
MAX_SEED = 2**32 - 1


def validate_run(cfg: DictConfig) -> None:
    """The range checks of the keys every trainer has (RunConfig)."""
    seeds = list(cfg.seeds)
    check(
        bool(seeds) and len(set(seeds)) == len(seeds),
        "seeds",
        seeds,
        "Give distinct seeds as a list, e.g. seeds=[0,1,2].",
    )
    check(
        all(0 <= s <= MAX_SEED for s in seeds),
        "seeds",
        seeds,
        f"Seeds are whole numbers from 0 to {MAX_SEED}.",
    )
    check(cfg.steps >= 1, "steps", cfg.steps, "Use a positive number of steps, e.g. steps=50000.")
    check(
        cfg.batch_size >= (2 if cfg.model.batch_norm else 1),
        "batch_size",
        cfg.batch_size,
        "Use batch_size >= 2 (BN needs two examples per batch).",
    )
    check(cfg.eval_every >= 1, "eval_every", cfg.eval_every, "Use a positive step count.")
    check(
        cfg.checkpoint_every >= 0,
        "checkpoint_every",
        cfg.checkpoint_every,
        "Use 0 (only at the start and the end) or a step count.",
    )
    check(
        cfg.threads is None or cfg.threads >= 1,
        "threads",
        cfg.threads,
        "Use a positive thread count, or threads=null for torch's default.",
    )
    check(
        cfg.logger.wandb.mode in WANDB_MODES,
        "logger.wandb.mode",
        cfg.logger.wandb.mode,
        f"Use one of {list(WANDB_MODES)} (or set WANDB_MODE).",
    )
    root = Path(cfg.data.root)
    check(
        not root.exists() or root.is_dir(),
        "data.root",
        cfg.data.root,
        "It is a file, not a directory: point data.root (or BNREPRO_DATA) at the data folder.",
    )


def validate_batch_norm(m: DictConfig, noisy_bn: str) -> None:
    """The range checks and rules of BN's options (BatchNormOptions) in the model config `m`,
    the same for both nets; `noisy_bn` is the override that gives the net noisy BN, named in
    the fixes (model=mlp_noisy, experiment=bn_baseline_noisy)."""
    check(m.norm in NORMS, "model.norm", m.norm, f"Use torch, paper, or noisy ({noisy_bn}).")
    check(
        (m.norm == "noisy") == (m.noise is not None),
        "model.noise" if m.noise is not None else "model.norm",
        OmegaConf.to_container(m.noise) if m.noise is not None else m.norm,
        f"Noisy BN needs its noise and the noise needs noisy BN: use {noisy_bn}.",
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
            f"Noisy BN is BN with noise after it: use {noisy_bn}.",
        )
    check(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "Use a small positive eps, e.g. 1e-5.")
    check(
        0 <= m.bn_momentum <= 1,
        "model.bn_momentum",
        m.bn_momentum,
        "Use a rate in [0, 1], e.g. 0.1.",
    )


def select_device(name: str) -> torch.device:
    """The torch device named by `device=` (auto: the GPU when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"Invalid config: device={name!r}. Use device=auto, cpu, cuda or cuda:<index>."
        ) from None
    check(device.type in ("cpu", "cuda"), "device", name, "Use device=auto, cpu, cuda or cuda:<n>.")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check(count > 0, "device", name, "No CUDA GPU is visible: use device=cpu or auto.")
        check(
            device.index is None or device.index < count,
            "device",
            name,
            f"This machine has {count} GPU(s): use cuda:0 .. cuda:{count - 1}.",
        )
    return device
