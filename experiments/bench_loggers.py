"""`make bench`: what TensorBoard logging costs a run (`logger.tensorboard=false` vs `true`).

    python experiments/bench_loggers.py [--repeats 3] [--mlp-steps 2000] [--proxy-steps 100]

Whole harness runs (`bnrepro.train.train`, start-up, data and every logged row included) in
this one process, with the same seeds, off and on in alternating order after one warm-up run
of each (so imports and caches are paid before timing):

- the MLP of Figure 1's quick protocol (BN, seeds 0 and 1, a row per seed every 100 steps, the
  test accuracy every 500);
- the Inception proxy at the quick preset (width 1/16, 16 px, a loss row every 10 steps, the
  held-out accuracy every 20), a short run whose rows come more often than any preset's.

Printed for each: the median steps/s off and on, and the median CPU seconds per step (every
thread of the process: TensorBoard writes its files from a thread of its own), with their
on/off ratios, which a busy machine moves by a few percent either way; and, measured directly
and so steadier, the share of an `on` run's wall time spent inside the TensorBoard sink's calls
(opening a writer per seed, each row's scalars, closing). Then the one-off cost of importing
TensorBoard's writer in a fresh interpreter, which a run pays once.
"""

import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import run_config

from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.fetch import ensure_dataset, ensure_mnist
from bnrepro.loggers import TensorBoardRuns
from bnrepro.paths import REPO, data_dir
from bnrepro.train import train


def mlp_overrides(steps: int, data_root: str) -> list[str]:
    return ["experiment=figure1", "model=mlp_bn", "seeds=[0,1]", f"steps={steps}",
            "device=cpu", f"data.root={data_root}"]  # fmt: skip


def proxy_overrides(steps: int, data_root: str) -> list[str]:
    return ["experiment=bn_x5", "preset=quick", "seeds=[0]", f"steps={steps}",
            "checkpoint_every=0", f"data.root={data_root}"]  # fmt: skip


@contextlib.contextmanager
def sink_time() -> Iterator[list[float]]:
    """Adds the seconds spent in each call of the TensorBoard sink (`TensorBoardRuns.log`,
    which opens the writers, and `.close`) to the list it yields, while inside."""
    spent: list[float] = []
    originals = {name: getattr(TensorBoardRuns, name) for name in ("log", "close")}

    def timed(method: Callable) -> Callable:
        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args)
            finally:
                spent.append(time.perf_counter() - start)

        return call

    try:
        for name, method in originals.items():
            setattr(TensorBoardRuns, name, timed(method))
        yield spent
    finally:
        for name, method in originals.items():
            setattr(TensorBoardRuns, name, method)


def timed_run(overrides: list[str], tensorboard: bool) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of the whole process, seconds inside the TensorBoard sink)
    of one run in a fresh directory."""
    cfg = run_config([*overrides, f"logger.tensorboard={str(tensorboard).lower()}"])
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
        with sink_time() as spent:
            wall, cpu = time.perf_counter(), time.process_time()
            train(cfg, Path(run_dir))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, sum(spent)


def compare(label: str, overrides: list[str], steps: int, repeats: int) -> None:
    """Prints the median speed off and on, and on/off ratios, of `repeats` runs of each."""
    timings: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for setting in (False, True):
        timed_run(overrides, setting)  # warm-up: imports, data, allocator
    for repeat in range(repeats):
        for setting in (False, True) if repeat % 2 == 0 else (True, False):
            timings[setting].append(timed_run(overrides, setting))
    wall = {s: statistics.median(t[0] for t in timings[s]) for s in timings}
    cpu = {s: statistics.median(t[1] for t in timings[s]) for s in timings}
    sink = statistics.median(t[2] / t[0] for t in timings[True])
    print(
        f"{label}: off {steps / wall[False]:6.0f} steps/s, {cpu[False] / steps * 1e3:6.2f} ms CPU"
        f"/step | on {steps / wall[True]:6.0f} steps/s, {cpu[True] / steps * 1e3:6.2f} ms CPU"
        f"/step | on/off: wall {wall[True] / wall[False]:.3f}x, CPU {cpu[True] / cpu[False]:.3f}x"
        f" | inside the sink: {sink:.2%} of the run's wall time (median of {repeats})",
        flush=True,
    )


def writer_import_s() -> float:
    """Seconds a fresh interpreter with torch loaded takes to import TensorBoard's writer."""
    code = (
        "import time, torch; start = time.perf_counter(); import torch.utils.tensorboard; "
        "print(time.perf_counter() - start)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return float(result.stdout)


def main() -> None:
    parser = Parser(prog="python experiments/bench_loggers.py", description=__doc__)
    parser.add_argument(
        "--repeats", type=positive_int("--repeats", "timed runs of each setting", 3), default=3
    )
    parser.add_argument(
        "--mlp-steps", type=positive_int("--mlp-steps", "MLP steps", 2000), default=2000
    )
    parser.add_argument(
        "--proxy-steps", type=positive_int("--proxy-steps", "proxy steps", 100), default=100
    )
    parser.add_argument("--data", default=str(data_dir()))
    args = script_args(parser)
    data_root = str(Path(args.data).resolve())
    ensure_mnist(data_root)
    ensure_dataset("fashion_mnist", data_root)
    print("TensorBoard's cost: logger.tensorboard=false vs true, whole runs, one CPU thread")
    mlp = mlp_overrides(args.mlp_steps, data_root)
    compare(f"MLP (BN, 2 seeds, {args.mlp_steps} steps)", mlp, args.mlp_steps, args.repeats)
    proxy = proxy_overrides(args.proxy_steps, data_root)
    label = f"Inception proxy (BN-x5, quick preset, {args.proxy_steps} steps)"
    compare(label, proxy, args.proxy_steps, args.repeats)
    print(f"importing torch.utils.tensorboard, once per process: {writer_import_s():.2f} s")


if __name__ == "__main__":
    main()
