"""Training harness: `python -m bnrepro.train [experiment=figure1] [model=mlp_bn] [key=value ...]`.

Reads top to bottom: check the config, put the whole dataset on the device, build one
vectorized model holding a member per seed, then train for `steps` mini-batches drawn by
index, logging test accuracy and the percentiles of one sigmoid's input along the way.
Each run directory receives `config.yaml` (resolved), `metrics.csv`, `run.json`
(status, wall time, commit, hardware, per-seed results) and `model.pt`.
"""

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from bnrepro import nn as paper_nn
from bnrepro.checkpoint import load_checkpoint, save_checkpoint
from bnrepro.data import load_mnist
from bnrepro.errors import BnreproError, ConfigError, ResumeError
from bnrepro.loggers import RunLogger
from bnrepro.models.mlp import ACTIVATIONS, MLP
from bnrepro.runinfo import atomic_write_text, git_state, hardware, write_json

METRIC_COLUMNS = ("step", "seed", "train_loss", "test_acc", "p15", "p50", "p85")
PERCENTILES = (0.15, 0.50, 0.85)


INTEGER_KEYS = (
    "steps", "batch_size", "eval_every", "probe.every", "probe.size", "probe.unit",
    "checkpoint_every",
)  # fmt: skip
NUMBER_KEYS = (
    "optim.lr", "optim.momentum", "optim.weight_decay", "model.init_std", "model.bn_eps",
    "model.bn_momentum",
)  # fmt: skip


def validate(cfg: DictConfig) -> None:
    """Rejects values that would fail late or silently train something else."""

    def fail(key: str, value: Any, fix: str) -> None:
        raise ConfigError(f"Invalid config: {key}={value!r}. {fix}")

    for key in INTEGER_KEYS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool):
            fail(key, value, f"{key} must be a whole number, e.g. {key}=100.")
    for key in NUMBER_KEYS:
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            fail(key, value, f"{key} must be a number, e.g. {key}=0.1.")
    seeds = cfg.seeds
    if not OmegaConf.is_list(seeds) or not all(isinstance(s, int) for s in seeds):
        fail("seeds", seeds, "Give a list of whole numbers, e.g. seeds=[0,1,2].")
    if cfg.steps < 1:
        fail("steps", cfg.steps, "Use a positive number of training steps, e.g. steps=50000.")
    if cfg.batch_size < 1 or (cfg.model.batch_norm and cfg.batch_size < 2):
        fail("batch_size", cfg.batch_size, "Use batch_size >= 2 (BN needs two examples per batch).")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        fail("seeds", list(cfg.seeds), "Give distinct seeds as a list, e.g. seeds=[0,1,2].")
    if cfg.optim.lr <= 0:
        fail("optim.lr", cfg.optim.lr, "Use a positive learning rate, e.g. optim.lr=0.1.")
    for key in ("optim.momentum", "optim.weight_decay"):
        if OmegaConf.select(cfg, key) < 0:
            fail(key, OmegaConf.select(cfg, key), f"Use {key} >= 0 (0 turns it off).")
    if cfg.model.bn_eps <= 0:
        fail("model.bn_eps", cfg.model.bn_eps, "Use a small positive eps, e.g. 1e-5.")
    if not 0 <= cfg.model.bn_momentum <= 1:
        fail("model.bn_momentum", cfg.model.bn_momentum, "Use a rate in [0, 1], e.g. 0.1.")
    sizes = list(cfg.model.sizes)
    if len(sizes) < 3 or sizes[0] != 784 or sizes[-1] != 10 or min(sizes) < 1:
        fail(
            "model.sizes",
            sizes,
            "MNIST needs 784 inputs, 10 outputs and at least one hidden layer, "
            "e.g. model.sizes=[784,100,100,100,10].",
        )
    if cfg.probe.size > 10_000:
        fail("probe.size", cfg.probe.size, "The probe set is drawn from the 10,000 test images.")
    if cfg.model.init_std <= 0:
        fail("model.init_std", cfg.model.init_std, "Use a positive std, e.g. model.init_std=0.1.")
    if cfg.checkpoint_every < 0:
        fail("checkpoint_every", cfg.checkpoint_every, "Use 0 (only at the end) or a step count.")
    for key in ("eval_every", "probe.every", "probe.size"):
        if OmegaConf.select(cfg, key) < 1:
            fail(key, OmegaConf.select(cfg, key), f"Use a positive value for {key}.")
    if not 0 <= cfg.probe.unit < cfg.model.sizes[-2]:
        fail("probe.unit", cfg.probe.unit, f"Pick a unit in 0..{cfg.model.sizes[-2] - 1}.")
    if cfg.data.input not in ("grey", "binary"):
        fail("data.input", cfg.data.input, "Use data.input=grey or data.input=binary.")
    if cfg.model.activation not in ACTIVATIONS:
        fail("model.activation", cfg.model.activation, f"Use one of {sorted(ACTIVATIONS)}.")
    if cfg.model.bn_position not in ("before", "after"):
        fail("model.bn_position", cfg.model.bn_position, "Use before (the paper's) or after.")
    if cfg.model.norm not in ("torch", "paper"):
        fail("model.norm", cfg.model.norm, "Use model.norm=torch or model.norm=paper.")
    if not cfg.model.bn_stats_backprop and cfg.model.norm != "paper":
        fail(
            "model.bn_stats_backprop",
            False,
            "Treating the batch statistics as constants needs the paper's transform: "
            "add model.norm=paper.",
        )


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible. Use device=cpu or auto.")
    return device


def build_model(cfg: DictConfig, device: torch.device) -> MLP:
    m = cfg.model

    def make_norm(channels: int) -> nn.Module:
        if m.norm == "paper":
            return paper_nn.BatchNorm(
                channels, eps=m.bn_eps, momentum=m.bn_momentum, stats_backprop=m.bn_stats_backprop
            )
        return nn.BatchNorm1d(channels, eps=m.bn_eps, momentum=m.bn_momentum)

    norm = make_norm if m.batch_norm else None
    model = MLP(len(cfg.seeds), m.sizes, m.activation, norm, m.bn_position)
    model.init_gaussian(m.init_std, list(cfg.seeds))
    return model.to(device)


def to_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 pixels -> float network input: grey levels in [0, 1], or binarized at 128."""
    if mode == "binary":
        return (images >= 128).float()
    return images.float().div_(255)


def data_seed(seed: int) -> int:
    """A seed for the data order of `seed`, independent of the weight-initialization stream."""
    return int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1, np.uint64)[0] >> 1)


class EpochSampler:
    """Mini-batch indices, one row per seed: each epoch a fresh permutation of the training set.

    Each seed has its own generator, so a member's data order does not depend on the others;
    it is seeded from the seed's second SeedSequence child, so data order and initial weights
    (drawn from a generator seeded with the seed itself) are independent streams.
    Its state (generators and current permutations) goes into checkpoints.
    """

    def __init__(self, seeds: list[int], n: int, batch_size: int, device: torch.device):
        self.generators = [torch.Generator().manual_seed(data_seed(seed)) for seed in seeds]
        self.n, self.batch_size, self.device = n, batch_size, device
        self.steps_per_epoch = n // batch_size
        self.order: torch.Tensor | None = None

    def batch(self, step: int) -> torch.Tensor:
        """Indices (members, batch_size) of the mini-batches of training step `step`."""
        position = step % self.steps_per_epoch
        if position == 0 or self.order is None:
            self.order = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.order = self.order.to(self.device)
        start = position * self.batch_size
        return self.order[:, start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generators": [g.get_state() for g in self.generators],
            "order": None if self.order is None else self.order.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, g_state in zip(self.generators, state["generators"], strict=True):
            g.set_state(g_state)
        self.order = None if state["order"] is None else state["order"].to(self.device)


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
def test_accuracy(model: MLP, x: torch.Tensor, y: torch.Tensor, chunk: int = 5000) -> list[float]:
    """Accuracy of each member on (x, y), BN using its inference statistics."""
    model.eval()
    correct = sum(
        (model(x[i : i + chunk]).argmax(-1) == y[i : i + chunk]).sum(-1)
        for i in range(0, len(x), chunk)
    )
    model.train()
    return (correct.double() / len(x)).tolist()


@torch.no_grad()
def sigmoid_input_percentiles(model: MLP, x_probe: torch.Tensor, unit: int) -> list[list[float]]:
    """15/50/85th percentiles per member of the probed unit's input, training-mode network.

    In training mode BN normalizes with the probe set's own statistics, as the paper's
    Figure 1(c) shows the training network; the running statistics are left untouched.
    """
    with preserved_buffers(model):
        _, pre = model.hidden_forward(x_probe)
    q = torch.tensor(PERCENTILES, device=pre.device)
    return torch.quantile(pre[:, :, unit], q, dim=1).T.tolist()


def make_train_step(
    model: MLP, optimizer: torch.optim.Optimizer, x_train: torch.Tensor, y_train: torch.Tensor, cfg
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One SGD step on the mini-batches picked by `index` (members, batch); returns each
    member's mean loss. The loss summed over members gives each member its own gradient."""
    members, input_mode = len(cfg.seeds), cfg.data.input

    def train_step(index: torch.Tensor) -> torch.Tensor:
        flat = index.reshape(-1)
        x = to_input(x_train.index_select(0, flat), input_mode).view(members, -1, x_train.shape[1])
        logits = model(x)
        labels = y_train.index_select(0, flat)
        losses = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none")
        member_loss = losses.view(members, -1).mean(1)
        optimizer.zero_grad(set_to_none=True)
        member_loss.sum().backward()
        optimizer.step()
        return member_loss.detach()

    return train_step


def cuda_graphed(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: Callable[[torch.Tensor], torch.Tensor],
    example_index: torch.Tensor,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Captures `step` as one CUDA graph; the returned function copies the index in and replays.

    Follows PyTorch's whole-network capture recipe: warm-up steps on a side stream (which
    allocate gradients and optimizer state), then the capture. The model and optimizer are
    then put back, in place, to their state before the warm-up, so no step is taken twice;
    optimizer state that the warm-up created is zeroed, and a zero momentum buffer makes the
    first replayed step equal to SGD's first step (no dampening).
    """
    state = [*model.parameters(), *model.buffers()]
    saved = [t.detach().clone() for t in state]
    saved_optimizer = {
        id(param): {k: v.clone() for k, v in param_state.items() if torch.is_tensor(v)}
        for param, param_state in optimizer.state.items()
    }
    static_index = example_index.clone()
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step(static_index)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = step(static_index)
    finally:
        with torch.no_grad():
            for t, s in zip(state, saved, strict=True):
                t.copy_(s)
            for param, param_state in optimizer.state.items():
                before = saved_optimizer.get(id(param), {})
                for key, value in param_state.items():
                    if torch.is_tensor(value) and key in before:
                        value.copy_(before[key])
                    elif torch.is_tensor(value):
                        value.zero_()

    def replay(index: torch.Tensor) -> torch.Tensor:
        static_index.copy_(index)
        graph.replay()
        return static_loss

    return replay


RESULT_KEYS = (
    "data.name", "data.input", "model", "optim", "seeds", "batch_size", "eval_every", "probe",
)  # fmt: skip


def to_plain(value: Any) -> Any:
    """OmegaConf nodes to plain Python containers; other values unchanged."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_state(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The run's latest checkpoint when `resume` is set and one exists, checked against `cfg`."""
    path = run_dir / "checkpoint.pt"
    if not cfg.resume or not path.exists():
        return None
    state = load_checkpoint(path)
    saved_cfg = OmegaConf.create(state["config"])
    saved = flatten({key: to_plain(OmegaConf.select(saved_cfg, key)) for key in RESULT_KEYS})
    now = flatten({key: to_plain(OmegaConf.select(cfg, key)) for key in RESULT_KEYS})
    changed = [f"{k}={saved.get(k)!r} (now {now.get(k)!r})" for k in sorted(saved | now)
               if saved.get(k) != now.get(k)]  # fmt: skip
    if changed:
        raise ResumeError(
            f"Cannot resume {run_dir}: its checkpoint was made with {'; '.join(changed)}. "
            "Fix: resume with the run's original overrides (see its config.yaml), or drop resume "
            "and train in a new directory. Only steps, logging and device may change on resume."
        )
    if state["step"] > cfg.steps:
        raise ResumeError(
            f"Cannot resume {run_dir} with steps={cfg.steps}: it is already at step "
            f"{state['step']}. Fix: pass steps >= {state['step']}."
        )
    return state


def drop_rows_after(metrics_csv: Path, step: int) -> None:
    """Removes rows logged after the checkpoint, so a resumed run never duplicates a row."""
    if not metrics_csv.exists():
        return
    lines = metrics_csv.read_text().splitlines(keepends=True)
    fields = lines[0].count(",") + 1 if lines else 0
    kept = lines[:1] + [
        line
        for line in lines[1:]
        if line.endswith("\n")
        and line.count(",") + 1 == fields
        and int(line.split(",", 1)[0]) <= step
    ]  # a line cut short by a kill is dropped too
    atomic_write_text(metrics_csv, "".join(kept))


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Trains every seed of `cfg` for cfg.steps steps, logging into `run_dir`; returns run info.

    With `resume=true` and a checkpoint in `run_dir`, training continues from it and ends
    with the same metrics as an uninterrupted run.
    """
    started = time.time()
    validate(cfg)
    device = select_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seeds = list(cfg.seeds)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = resume_state(cfg, run_dir)
    metrics_csv = run_dir / "metrics.csv"
    if state is None and metrics_csv.exists():
        if not cfg.resume:
            raise ResumeError(
                f"{run_dir} already holds a run (its metrics.csv). Nothing was changed. Fix: "
                "continue it with resume=true, or train in a new directory (another "
                "hydra.run.dir)."
            )
        drop_rows_after(metrics_csv, -1)  # stopped before its first checkpoint: start over
    info: dict[str, Any] = {
        "name": cfg.name,
        "variant": cfg.model.variant,
        "status": "running",
        "git": git_state(),
        "hardware": hardware(device),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "resumed_from_step": state["step"] if state else None,
    }
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_dir / "run.json", info)

    # Data: the whole set lives on the device as uint8; batches are drawn by index.
    train_images, train_labels = load_mnist(cfg.data.root, "train", download=cfg.data.download)
    test_images, test_labels = load_mnist(cfg.data.root, "test", download=cfg.data.download)
    x_train = train_images.flatten(1).to(device)
    y_train = train_labels.to(device)
    x_test = to_input(test_images.flatten(1).to(device), cfg.data.input)
    y_test = test_labels.to(device)
    x_probe = x_test[: cfg.probe.size]

    model = build_model(cfg, device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    sampler = EpochSampler(seeds, len(x_train), cfg.batch_size, device)
    start_step, loss, wall_before = 0, None, 0.0
    diverged_at: dict[int, int] = {}
    last_rows: dict[int, dict[str, Any]] = {}
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        start_step, loss, wall_before = state["step"], state["loss"], state["wall_s"]
        loss = None if loss is None else loss.to(device)
        diverged_at, last_rows = state["diverged_at"], state["last_rows"]
        drop_rows_after(metrics_csv, start_step)
    logger = RunLogger(
        run_dir,
        cfg,
        METRIC_COLUMNS,
        wandb_id=state["logger"]["wandb_id"] if state else None,
        purge_step=start_step + 1 if state else (0 if cfg.resume else None),
    )
    train_step = make_train_step(model, optimizer, x_train, y_train, cfg)
    if device.type == "cuda" and cfg.cuda_graph:
        example_index = torch.zeros(len(seeds), cfg.batch_size, dtype=torch.long, device=device)
        try:
            train_step = cuda_graphed(model, optimizer, train_step, example_index)
        except RuntimeError as error:  # the model and optimizer are back as they were
            print(f"bnrepro: CUDA graph capture failed ({error}); training eagerly. Set "
                  "cuda_graph=false to skip the attempt.", file=sys.stderr)  # fmt: skip

    def checkpoint(step: int) -> None:
        save_checkpoint(
            run_dir / "checkpoint.pt",
            {
                "step": step,
                "config": OmegaConf.to_container(cfg, resolve=True),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "loss": None if loss is None else loss.cpu(),
                "wall_s": wall_before + time.time() - started,
                "diverged_at": diverged_at,
                "last_rows": last_rows,
                "logger": logger.state_dict(),
            },
        )

    steps, probe_every, eval_every = cfg.steps, cfg.probe.every, cfg.eval_every
    checkpoint_every, probe_unit = cfg.checkpoint_every, cfg.probe.unit
    status = "failed"
    step = start_step
    progress = tqdm(total=steps, initial=start_step, unit="step", disable=not sys.stderr.isatty())
    try:
        for step in range(start_step, steps + 1):
            log_step = step % probe_every == 0 or step % eval_every == 0 or step == steps
            if log_step and not (state and step == start_step):
                percentiles = sigmoid_input_percentiles(model, x_probe, probe_unit)
                evaluate = step % eval_every == 0 or step == steps
                accuracy = test_accuracy(model, x_test, y_test) if evaluate else None
                losses = loss.tolist() if loss is not None else [None] * len(seeds)
                rows = []
                for member, seed in enumerate(seeds):
                    if losses[member] is not None and not torch.isfinite(loss[member]):
                        diverged_at.setdefault(seed, step)
                    rows.append(
                        {
                            "step": step,
                            "seed": seed,
                            "train_loss": losses[member],
                            "test_acc": accuracy[member] if accuracy else None,
                            "p15": percentiles[member][0],
                            "p50": percentiles[member][1],
                            "p85": percentiles[member][2],
                        }
                    )
                logger.log(rows)
                last_rows.update(
                    {
                        row["seed"]: row
                        for row in rows
                        if row["test_acc"] is not None and row["seed"] not in diverged_at
                    }
                )
                if accuracy:
                    progress.set_postfix(test_acc=f"{sum(accuracy) / len(accuracy):.4f}")
                if len(diverged_at) == len(seeds):
                    break
            if step == steps:
                break
            if checkpoint_every and step > start_step and step % checkpoint_every == 0:
                checkpoint(step)
            loss = train_step(sampler.batch(step))
            progress.update(1)
        status = "diverged" if diverged_at else "completed"
        checkpoint(step)
    finally:
        progress.close()
        wall_s = wall_before + time.time() - started
        info.update(
            status=status,
            steps=step,
            wall_s=round(wall_s, 3),
            steps_per_s=round(step / wall_s, 1),
            seeds=[
                {
                    "seed": seed,
                    "status": "diverged"
                    if seed in diverged_at
                    else ("failed" if status == "failed" else "completed"),
                    "diverged_at_step": diverged_at.get(seed),
                    "final_step": last_rows.get(seed, {}).get("step"),
                    "final_test_acc": last_rows.get(seed, {}).get("test_acc"),
                }
                for seed in seeds
            ],
        )
        logger.close(status)
        model_file = run_dir / "model.pt"
        torch.save(model.state_dict(), model_file.with_name(".model.pt.tmp"))
        model_file.with_name(".model.pt.tmp").replace(model_file)
        write_json(run_dir / "run.json", info)
    return info


def record_failure(run_dir: Path, cfg: DictConfig, error: BnreproError) -> None:
    """Marks the run failed in run.json (keeping what it held) with the error's message."""
    run_json = run_dir / "run.json"
    info = json.loads(run_json.read_text()) if run_json.exists() else {}
    if not (run_dir / "config.yaml").exists():
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json(run_json, {**info, "status": "failed", "error": str(error)})


@hydra.main(version_base="1.3", config_path="../../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    train_fn = train
    if cfg.model.name == "inception":
        from bnrepro.train_inception import train as train_fn
    try:
        info = train_fn(cfg, run_dir)
    except BnreproError as error:
        if not isinstance(error, ResumeError):  # a refused resume leaves the run as it was
            record_failure(run_dir, cfg, error)
        print(f"\nbnrepro: {error}\n", file=sys.stderr)
        if hydra_cfg.mode == RunMode.RUN:
            sys.exit(2)
        return
    seeds = ", ".join(f"{s['seed']}: {s['final_test_acc']}" for s in info["seeds"])
    print(f"{info['status']} in {info['wall_s']:.1f} s; final test accuracy by seed {seeds}")


if __name__ == "__main__":
    main()
