"""The packed speed-up: N runs of one Inception recipe as the N members of one model
(bnrepro.train_packed) against the same N runs trained one after another on the same device.

    python experiments/bench_packed.py --device cpu  [--members 1,3,9] [--json out.json]
    python experiments/bench_packed.py --device cuda [--members 1,3,9,15] [--json out.json]

Both sides are the trainers' own steps, built by the trainers' own functions, at the size of a
preset of configs/preset/ (`--preset`; by default cpu.yaml on the CPU: width 1/8, 16 px;
gpu_plateau.yaml, the packed protocol of experiments/figure2.py, on a GPU: width 1/8, 32 px;
batch 32), seeds 0..N-1:

- packed: one step of bnrepro.train_packed's loop (`build_packed_training`, `packed_pipeline`,
  `make_packed_step`: every member's batch, `member_losses`, backward through their sum,
  MemberSGD's update with each member's rate), on a GPU captured as one CUDA graph as the
  trainer captures it (`cuda_graph=true`);
- separate: N single runs (bnrepro.train_inception's `build_training`, `pipeline`,
  `make_train_step`; each graphed on a GPU), stepped one after another: what N runs cost on
  one device.

Each timing is `--steps` steps after warm-up steps, with the device synchronized at both ends;
the two sides alternate `--repeats` times and the median of each is kept, so the ratio is
measured in one process, on one machine, back to back. Printed per member count: each side's
milliseconds for one step of all N members, the steps a second each member makes, and
"packed speed-up: X.XXx for N members" (separate time / packed time). Held-out evaluation,
logging and checkpoints are not timed. The target on one H200 at the gpu_plateau preset's
size is 8x or more for 9 members.
"""

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from bench import run_config
from omegaconf import DictConfig

from bnrepro import inception_checks, inception_data, inception_recipe
from bnrepro import train_inception as ti
from bnrepro import train_packed as tp
from bnrepro.config import select_device
from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.fetch import ensure_dataset
from bnrepro.graphs import cuda_graphed
from bnrepro.paths import data_dir
from bnrepro.replicas import Replicas
from bnrepro.runinfo import hardware

DEFAULTS = {
    "cpu": {"steps": 10, "warmup": 2, "repeats": 1},
    "cuda": {"steps": 100, "warmup": 10, "repeats": 3},
}
"""Timed steps, warm-up steps and repeats per device when not given: on 2 CPU cores the
default run (9 members at the cpu preset's size) takes well under a minute."""


def bench_config(
    experiment: str, preset: str, device: str, seeds: Sequence[int], overrides: Sequence[str] = ()
) -> DictConfig:
    """The config `python -m bnrepro.train experiment=<experiment> preset=<preset>
    seeds=<seeds>` would train, on `device`, with `overrides` last."""
    return run_config(
        [
            f"experiment={experiment}",
            f"preset={preset}",
            f"device={device}",
            f"seeds=[{','.join(str(s) for s in seeds)}]",
            f"data.root={data_dir()}",
            *overrides,
        ]
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def memory_format(cfg: DictConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def packed_step(
    cfg: DictConfig, data: inception_data.ProxyData, device: torch.device
) -> Callable[[], None]:
    """One step of bnrepro.train_packed's training loop for `cfg`'s members: the rates of the
    step, its inputs, noisy BN's draws (when the model has them), the packed step."""
    cfg = tp.validate_packed(cfg)
    members = tp.grid_members(cfg)
    settings = [tp.member_settings(cfg, m) for m in members]
    model, optimizer, lr, schedule = tp.build_packed_training(cfg, members, settings, device)
    step_inputs, make_batch, _ = tp.packed_pipeline(
        data, cfg, members, settings, model.fc.in_features, memory_format(cfg)
    )
    autocast = inception_recipe.amp_autocast(cfg, device)
    bn_noise = inception_data.BNNoiseDraws(model, [m["seed"] for m in members])
    train_step = tp.make_packed_step(model, optimizer, make_batch, autocast)
    if cfg.cuda_graph and device.type == "cuda":
        train_step = cuda_graphed(model, optimizer, train_step, step_inputs(0))
    loss_sum = torch.zeros(len(members), device=device)
    counter = itertools.count()

    def step() -> None:
        i = next(counter)
        lr.copy_(schedule(i))
        inputs = step_inputs(i)
        if bn_noise:
            bn_noise.resample(i)
        loss_sum.add_(train_step(*inputs))

    return step


def single_step(
    cfg: DictConfig, data: inception_data.ProxyData, device: torch.device
) -> Callable[[], None]:
    """One step of bnrepro.train_inception's training loop for `cfg`'s one seed."""
    cfg = inception_checks.validate(cfg)
    settings = inception_recipe.recipe_settings(cfg)
    replicas = Replicas(0, 1, device)
    model, optimizer, lr = ti.build_training(cfg, settings, replicas, None)
    step_inputs, make_batch, _ = ti.pipeline(data, cfg, settings, replicas, 0, model.fc.in_features)
    autocast = inception_recipe.amp_autocast(cfg, device)
    bn_noise = inception_data.BNNoiseDraws(model, [int(cfg.seeds[0])])
    train_step = ti.make_train_step(model, optimizer, make_batch, autocast)
    if cfg.cuda_graph and device.type == "cuda":
        train_step = cuda_graphed(model, optimizer, train_step, step_inputs(0))
    loss_sum = torch.zeros((), device=device)
    decay_rate = cfg.optim.decay_rate
    counter = itertools.count()

    def step() -> None:
        i = next(counter)
        lr.fill_(inception_recipe.learning_rate(i, settings.lr, decay_rate, settings.decay_steps))
        inputs = step_inputs(i)
        if bn_noise:
            bn_noise.resample(i)
        loss_sum.add_(train_step(*inputs))

    return step


def seconds_per_step(step: Callable[[], None], device: torch.device, steps: int) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def measure(
    experiment: str,
    preset: str,
    device: str,
    members: int,
    steps: int,
    warmup: int,
    repeats: int = 1,
    overrides: Sequence[str] = (),
    data: inception_data.ProxyData | None = None,
) -> dict[str, float]:
    """`members` runs of `experiment` packed and separate: milliseconds per step of all of
    them (`packed_ms`, `separate_ms`), each member's steps a second (`packed_steps_s`,
    `separate_steps_s`) and their ratio (`speedup`)."""
    packed_cfg = bench_config(experiment, preset, device, range(members), overrides)
    dev = select_device(packed_cfg.device)
    if data is None:
        data = inception_data.load_proxy(packed_cfg, dev)
    packed = packed_step(packed_cfg, data, dev)
    singles = [
        single_step(bench_config(experiment, preset, device, [seed], overrides), data, dev)
        for seed in range(members)
    ]

    def separate() -> None:
        for single in singles:
            single()

    for _ in range(warmup):
        packed()
        separate()
    times: dict[str, list[float]] = {"packed": [], "separate": []}
    for _ in range(repeats):
        times["packed"].append(seconds_per_step(packed, dev, steps))
        times["separate"].append(seconds_per_step(separate, dev, steps))
    packed_s, separate_s = (statistics.median(times[k]) for k in ("packed", "separate"))
    packed_steps_s, separate_steps_s = 1 / packed_s, 1 / separate_s
    return {
        "members": members,
        "packed_ms": 1e3 * packed_s,
        "separate_ms": 1e3 * separate_s,
        "packed_steps_s": packed_steps_s,
        "separate_steps_s": separate_steps_s,
        "speedup": packed_steps_s / separate_steps_s,
    }


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def member_counts(text: str) -> list[int]:
    try:
        counts = [int(word) for word in text.split(",") if word.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"give positive member counts, e.g. 1,3,9; not {text!r}")
    return counts


def main() -> None:
    parser = Parser(
        prog="python experiments/bench_packed.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", help="a preset of configs/preset/ (default: the device's)")
    parser.add_argument("--experiment", default="bn_x5", help="bn_x5 (default), inception, ...")
    parser.add_argument(
        "--members", type=member_counts, default=[9], help="member counts, e.g. 1,3,9,15"
    )
    parser.add_argument(
        "--steps", type=positive_int("--steps", "timed steps", 10), help="timed steps per repeat"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps first")
    parser.add_argument(
        "--repeats",
        type=positive_int("--repeats", "timings", 3),
        help="timings per side; the median is kept",
    )
    parser.add_argument(
        "--threads",
        type=positive_int("--threads", "CPU threads", 1),
        help="CPU threads (default: the preset's)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.width=0.0625")
    args = script_args(parser)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_packed: --device cuda needs a CUDA GPU; none is visible.")
    preset = args.preset or ("gpu_plateau" if args.device == "cuda" else "cpu")
    defaults = DEFAULTS[args.device]
    steps, warmup, repeats = (
        defaults[key] if getattr(args, key) is None else getattr(args, key)
        for key in ("steps", "warmup", "repeats")
    )
    ensure_dataset("fashion_mnist", str(data_dir()))
    cfg = bench_config(args.experiment, preset, args.device, [0], args.overrides)
    threads = args.threads or cfg.threads
    if threads:
        torch.set_num_threads(threads)
    device = select_device(cfg.device)
    data = inception_data.load_proxy(cfg, device)
    size = {
        "width": cfg.model.width,
        "size": cfg.data.size,
        "resize": cfg.data.resize,
        "batch_size": cfg.batch_size,
        "channels_last": cfg.channels_last,
        "amp": cfg.amp,
        "cuda_graph": cfg.cuda_graph and device.type == "cuda",
    }
    info = hardware(device)
    name = info.get("gpu", info["cpu"])
    print(
        f"{args.experiment} at the {preset} preset's size (width {size['width']}, "
        f"{size['size']} px {size['resize']}, batch {size['batch_size']}"
        f"{', one CUDA graph per model' if size['cuda_graph'] else ''}) on {name}, "
        f"{plural(torch.get_num_threads(), 'thread')}, torch {torch.__version__}: "
        f"median of {repeats} x {steps} steps after {warmup} warm-up",
        flush=True,
    )
    print(
        f"{'members':>7s} {'packed ms':>10s} {'separate ms':>12s} "
        f"{'packed steps/s':>15s} {'separate steps/s':>17s}  (a step of all members; "
        "steps/s per member)",
        flush=True,
    )
    rows = []
    for count in args.members:
        row = measure(
            args.experiment, preset, args.device, count, steps, warmup, repeats,
            args.overrides, data,
        )  # fmt: skip
        rows.append(row)
        print(
            f"{count:7d} {row['packed_ms']:10.2f} {row['separate_ms']:12.2f} "
            f"{row['packed_steps_s']:15.2f} {row['separate_steps_s']:17.2f}",
            flush=True,
        )
        print(f"packed speed-up: {row['speedup']:.2f}x for {plural(count, 'member')}", flush=True)
    if args.json:
        results: dict[str, Any] = {
            "experiment": args.experiment,
            "preset": preset,
            "config": size,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "warmup": warmup,
            "repeats": repeats,
            "device_name": name,
            **info,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
