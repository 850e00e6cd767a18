"""`make bench`: training speed of the harness against a conventional PyTorch loop.

Both are measured in this one process, on the same machine, back to back, so their ratio is
meaningful even on a noisy machine. Printed for the plain and the BN net:

- the harness (`bnrepro.train_mlp.train`, its full logging schedule included) in steps/s;
- a conventional loop (torchvision MNIST dataset + DataLoader, batch 60, the same net as an
  nn.Sequential, SGD) in steps/s, and harness / conventional;
- the cost of a step of 48 members trained together in one vectorized model (the sensitivity
  grid's 4 learning rates x 4 init stds x 3 seeds), relative to a step of one member;
- with --full, the wall time of Figure 1's full protocol (50,000 steps) for one seed: each net
  alone in this process, then both nets at once as two `python -m bnrepro.train` processes (one
  per net, as on a 2-core machine one would run them).

Targets on the 2-core development machine: the harness at least 4x the conventional loop, 48
members at most 12x the cost of one, the full protocol of both nets within 40 s.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import nn

from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.fetch import ensure_mnist
from bnrepro.paths import CONFIGS, REPO, data_dir
from bnrepro.train_mlp import train


def run_config(overrides: list[str]):
    """The config `python -m bnrepro.train <overrides>` would train, wandb off, without the
    `hydra` node (a trainer called directly needs none)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "logger.wandb.mode=disabled"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


GRID_48 = ["seeds=[0,1,2]", "grid.lr=[0.01,0.1,0.3,1.0]", "grid.init_std=[0.01,0.1,0.3,1.0]"]


def harness_config(model: str, steps: int, data_root: str, device: str, extra: list[str]):
    return run_config(
        [
            "experiment=figure1",
            f"model={model}",
            "seeds=[0]",
            f"steps={steps}",
            f"data.root={data_root}",
            f"device={device}",
            *extra,
        ]
    )


def harness_steps_per_s(
    model: str, steps: int, data_root: str, device: str, extra: list[str] | None = None
):
    """Steps/s of a whole harness run, data loading and logging schedule included."""
    cfg = harness_config(model, steps, data_root, device, extra or [])
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        train(cfg, Path(run_dir))
        wall = time.perf_counter() - start
    return steps / wall, wall


def both_nets_in_parallel_wall(data_root: str, device: str, steps: int = 50_000) -> float:
    """Wall time of Figure 1's protocol (`steps` steps, one seed) for both nets at once, one
    whole `python -m bnrepro.train` process per net (start-up included)."""
    with tempfile.TemporaryDirectory() as runs:
        commands = [
            [
                sys.executable, "-m", "bnrepro.train", "experiment=figure1", f"model={model}",
                "seeds=[0]", f"steps={steps}", f"data.root={Path(data_root).resolve()}",
                f"device={device}", "logger.wandb.mode=disabled", f"hydra.run.dir={runs}/{model}",
            ]
            for model in ("mlp", "mlp_bn")
        ]  # fmt: skip
        start = time.perf_counter()
        processes = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL) for c in commands]
        failed = [c for c, p in zip(commands, processes, strict=True) if p.wait() != 0]
        wall = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{' '.join(failed[0])} failed; run it alone to see why.")
    return wall


def conventional_steps_per_s(batch_norm: bool, steps: int, data_root: str, device: str) -> float:
    """A textbook PyTorch loop: Dataset + DataLoader feeding an nn.Sequential, no evaluation."""
    dataset = torchvision.datasets.MNIST(
        data_root, train=True, transform=torchvision.transforms.ToTensor()
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=60, shuffle=True, drop_last=True)
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in in (784, 100, 100):
        layers.append(nn.Linear(n_in, 100, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(100))
        layers.append(nn.Sigmoid())
    layers.append(nn.Linear(100, 10))
    model = nn.Sequential(*layers).to(device)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    done, start = 0, time.perf_counter()
    while done < steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = Parser(prog="python experiments/bench.py", description=__doc__)
    parser.add_argument(
        "--steps",
        type=positive_int("--steps", "harness steps", 5000),
        default=5000,
        help="harness steps per measurement",
    )
    parser.add_argument(
        "--baseline-steps",
        type=positive_int("--baseline-steps", "conventional steps", 2000),
        default=2000,
    )
    parser.add_argument(
        "--grid-steps",
        type=positive_int("--grid-steps", "steps of the 48 members", 1000),
        default=1000,
        help="steps of the 48 members",
    )
    parser.add_argument("--full", action="store_true", help="also time the full 50,000 steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", default=str(data_dir()))
    args = script_args(parser)
    ensure_mnist(args.data)
    torch.set_num_threads(1)  # the harness's default; the conventional loop gets the same
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread")
    full_wall = 0.0
    for model, batch_norm in (("mlp", False), ("mlp_bn", True)):
        ours, _ = harness_steps_per_s(model, args.steps, args.data, args.device)
        conventional = conventional_steps_per_s(
            batch_norm, args.baseline_steps, args.data, args.device
        )
        one, _ = harness_steps_per_s(model, args.grid_steps, args.data, args.device)
        grid, _ = harness_steps_per_s(model, args.grid_steps, args.data, args.device, GRID_48)
        print(
            f"{model:7s} harness {ours:7.0f} steps/s | conventional {conventional:7.0f} steps/s"
            f" | ratio {ours / conventional:5.2f}x (target >= 4)"
            f" | 48 members cost {one / grid:5.2f}x one member (target <= 12)"
        )
        if args.full:
            _, wall = harness_steps_per_s(model, 50_000, args.data, args.device)
            full_wall += wall
            print(f"{model:7s} full protocol (50,000 steps, 1 seed): {wall:.1f} s")
    if args.full:
        print(f"Figure 1 full protocol, both nets, 1 seed, one after the other: {full_wall:.1f} s")
        parallel = both_nets_in_parallel_wall(args.data, args.device)
        print(
            f"Figure 1 full protocol, both nets, 1 seed, one process per net at once: "
            f"{parallel:.1f} s wall (target <= 40)"
        )


if __name__ == "__main__":
    main()
