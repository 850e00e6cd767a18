"""`make bench` (second part): the paper's BN transform (`bnrepro.nn.BatchNorm`) against PyTorch's.

For each input shape, times one training-mode forward + backward of each implementation,
interleaved in the same process (median of several repeats), and prints their ratio. Runs on
the CPU, and on the GPU too when one is visible.
"""

import statistics
import time

import torch
from torch import nn

from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.nn import BatchNorm

SHAPES = {
    "MLP layer (60, 100)": (60, 100),
    "MLP, 5 seeds (60, 500)": (60, 500),
    "conv (32, 64, 28, 28)": (32, 64, 28, 28),
    "conv (256, 192, 28, 28)": (256, 192, 28, 28),
}


def time_fwd_bwd(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward through `layer`."""
    grad = torch.randn_like(x)

    def once() -> None:
        x.grad = None
        layer(x).backward(grad)

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        once()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = Parser(prog="python experiments/bench_norm.py", description=__doc__)
    parser.add_argument("--repeats", type=positive_int("--repeats", "timings", 50), default=50)
    args = script_args(parser)
    torch.set_num_threads(1)  # as the harness: see `threads` in configs/train.yaml
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        print(f"device {device}: forward + backward, median of {args.repeats}")
        for name, shape in SHAPES.items():
            if device == "cpu" and shape[0] == 256:
                continue  # too slow to be worth the wait on a small CPU
            channels = shape[1]
            torch_bn = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(channels).to(device)
            paper_bn = BatchNorm(channels).to(device)
            x = torch.randn(shape, device=device, requires_grad=True)
            ours = time_fwd_bwd(paper_bn, x, args.repeats)
            reference = time_fwd_bwd(torch_bn, x, args.repeats)
            print(
                f"  {name:26s} paper {ours * 1e6:9.1f} us | torch {reference * 1e6:9.1f} us"
                f" | paper/torch {ours / reference:5.2f}x"
            )


if __name__ == "__main__":
    main()
