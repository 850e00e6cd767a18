"""The Inception training step's speed: the proxy step of Figures 2 and 3, and 224 px ImageNet.

    python experiments/bench_inception.py --device cpu  [--json out.json]
    python experiments/bench_inception.py --device cuda [--json out.json]

Every figure is a median over repeated timings in this one process, and each option is
printed beside its baseline measured in the same run, with their ratio: these machines are
noisy, so only same-run ratios compare.

- proxy: the trainer's own step (bnrepro.train_inception: batch indices and random numbers
  in, distortion, forward, backward, fused SGD update) at the proxy's preset for the device
  (configs/preset/cpu.yaml: width 1/8, 16 px; gpu.yaml for cuda: width 1/4, 32 px; batch 32),
  BN-x5 and plain Inception. On the CPU: contiguous vs channels-last memory, and the
  held-out evaluation. On a GPU: eager vs one CUDA graph (bnrepro.graphs), and the evaluation
  of the 10,000 held-out images in one inference pass.
- imagenet (GPU only): training images/s at 224 px, batch 256, bf16 autocast and
  channels-last, of BN-Inception and torchvision's GoogLeNet in the same run, and each
  per multiply-add (BN-Inception has 1.29x GoogLeNet's multiply-adds).

With `--cuda-tests` (what `make gpu-check` runs) it first runs every CUDA test of the suite,
the tests marked `cuda` under tests/ (`pytest -m cuda`, slow and integration ones included),
records each one's outcome and the counts (and writes pytest's JUnit XML beside the JSON), and
times the MLP of Figure 1 (BN, one seed, a whole run of the harness) with and without its CUDA
graph. It exits non-zero, after writing the JSON, when those tests did not all pass.

The thread split on the CPU (two runs of one thread each against one run of two threads) is
measured by `--thread-split`, which starts the two runs as separate processes.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from bench import harness_config, run_config
from omegaconf import open_dict

from bnrepro import inception_checks, inception_recipe
from bnrepro import train_inception as ti
from bnrepro.driver import Parser, positive_int, script_args
from bnrepro.fetch import ensure_dataset
from bnrepro.graphs import cuda_graphed
from bnrepro.models.inception import Inception, count_multiply_adds
from bnrepro.paths import REPO, data_dir
from bnrepro.replicas import Replicas
from bnrepro.train_mlp import train as train_mlp


def proxy_config(experiment: str, device: str, channels_last: bool, threads: int | None):
    """`experiment` with the proxy's preset for `device` (configs/preset/cpu.yaml or gpu.yaml),
    one seed, loggers off."""
    cfg = run_config(
        [
            f"experiment={experiment}",
            f"preset={'gpu' if device == 'cuda' else 'cpu'}",
            f"device={device}",
            f"channels_last={str(channels_last).lower()}",
            f"threads={threads or 'null'}",
        ]
    )
    return inception_checks.validate(cfg)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, calls: int) -> float:
    """Median seconds per call of `fn` over `repeats` timings of `calls` calls each."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def proxy_step(cfg, graph: bool) -> tuple[Any, Any, torch.device]:
    """The trainer's step for `cfg` (and its evaluation), as `train` builds them."""
    settings = inception_recipe.recipe_settings(cfg)
    replicas = Replicas(0, 1, torch.device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = ti.load_data(cfg, settings, replicas.device)
    model, optimizer, lr = ti.build_training(cfg, settings, replicas, None)
    features = model.fc.in_features
    step_inputs, make_batch, eval_batches = ti.pipeline(data, cfg, settings, replicas, 0, features)
    autocast = inception_recipe.amp_autocast(cfg, replicas.device)
    train_step = ti.make_train_step(model, optimizer, make_batch, autocast)
    if graph:
        train_step = cuda_graphed(model, optimizer, train_step, step_inputs(0))
    counter = iter(range(10**9))

    def step() -> None:
        i = next(counter)
        lr.fill_(settings.lr)
        train_step(*step_inputs(i))

    def evaluation() -> None:
        ti.evaluate(model, eval_batches(), autocast)

    return step, evaluation, replicas.device


def bench_proxy(device: str, steps: int, threads: int | None) -> dict[str, float]:
    """ms per step (and per evaluation) of each option, with ratios to the baseline."""
    results = {}
    graphs = (False, True) if device == "cuda" else (False,)
    for experiment in ("bn_x5", "inception"):
        for channels_last in (False, True) if device == "cpu" else (False,):
            for graph in graphs:
                cfg = proxy_config(experiment, device, channels_last, threads)
                step, evaluation, dev = proxy_step(cfg, graph)
                for _ in range(10):
                    step()
                key = f"{experiment}/{'channels_last' if channels_last else 'contiguous'}"
                key += "/graphed" if graph else "/eager"
                results[f"{key}/step_ms"] = 1e3 * timed(step, dev, 5, steps)
                evaluation()
                results[f"{key}/eval_ms"] = 1e3 * timed(evaluation, dev, 3, 1)
                print(
                    f"{key:40s} step {results[f'{key}/step_ms']:7.2f} ms   "
                    f"evaluation ({cfg.data.eval_size or 10_000} images) "
                    f"{results[f'{key}/eval_ms']:8.1f} ms",
                    flush=True,
                )
        base = results[f"{experiment}/contiguous/eager/step_ms"]
        for key in [k for k in results if k.startswith(experiment) and k.endswith("step_ms")]:
            results[key.replace("step_ms", "speedup")] = base / results[key]
            print(f"  {key.replace('/step_ms', ''):38s} {base / results[key]:5.2f}x the eager "
                  "contiguous step")  # fmt: skip
    return results


def bench_imagenet(batch: int, steps: int) -> dict[str, float]:
    """Training images/s at 224 px (bf16, channels-last) of BN-Inception and GoogLeNet."""
    import torchvision

    device = torch.device("cuda")
    models = {
        "bn_inception": Inception(num_classes=1000, norm="batch"),
        "googlenet": torchvision.models.googlenet(
            num_classes=1000, aux_logits=False, init_weights=True
        ),
    }
    results = {}
    for name, model in models.items():
        macs = count_multiply_adds(model)
        model = model.to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=True)
        x = torch.randn(batch, 3, 224, 224, device=device).contiguous(
            memory_format=torch.channels_last
        )
        y = torch.randint(0, 1000, (batch,), device=device)

        def step(model=model, optimizer=optimizer, x=x, y=y) -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(5):
            step()
        seconds = timed(step, device, 3, steps)
        results[f"{name}/img_s"] = batch / seconds
        results[f"{name}/gmacs"] = macs / 1e9
        print(f"{name:14s} {batch / seconds:8.0f} img/s   {macs / 1e9:.2f} G multiply-adds")
    per_mac = {n: results[f"{n}/img_s"] * results[f"{n}/gmacs"] for n in models}
    results["per_mac_ratio"] = per_mac["bn_inception"] / per_mac["googlenet"]
    print(f"BN-Inception / GoogLeNet per multiply-add: {results['per_mac_ratio']:.2f}x")
    return results


def bench_mlp(steps: int) -> dict[str, float]:
    """Steps/s of whole Figure 1 runs (BN, one seed, evaluations included) on the GPU, eager
    and as one CUDA graph."""
    results = {}
    for graph in (False, True):
        cfg = harness_config("mlp_bn", steps, str(data_dir()), "cuda", [])
        with open_dict(cfg):
            cfg.cuda_graph = graph
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            train_mlp(cfg, Path(run_dir))
            results[f"{'graphed' if graph else 'eager'}_steps_s"] = steps / (
                time.perf_counter() - start
            )
    results["speedup"] = results["graphed_steps_s"] / results["eager_steps_s"]
    print(
        f"MLP (BN, whole run of {steps} steps): eager {results['eager_steps_s']:.0f} steps/s, "
        f"graphed {results['graphed_steps_s']:.0f} steps/s ({results['speedup']:.2f}x)"
    )
    return results


OUTCOMES = ("passed", "failed", "error", "skipped")


def junit_outcomes(junit: Path) -> dict[str, str]:
    """Each test case of pytest's JUnit XML, `module::name[parameters]`, and its outcome."""
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        tags = {child.tag for child in case}
        outcome = next((o for o in ("failure", "error", "skipped") if o in tags), "passed")
        name = f"{case.get('classname')}::{case.get('name')}"
        outcomes[name] = "failed" if outcome == "failure" else outcome
    return outcomes


def cuda_tests(junit: Path | None) -> dict[str, Any]:
    """Every test marked `cuda` under tests/, slow and integration ones included (`-m cuda`
    replaces the default selection of pyproject.toml): the command, its exit status, pytest's
    last line, the counts and each test's outcome, read from pytest's JUnit XML (kept at
    `junit` when one is given)."""
    with tempfile.TemporaryDirectory() as scratch:
        xml = (junit or Path(scratch) / "cuda-tests.xml").resolve()
        if xml.is_relative_to(REPO):  # recorded relative to the repository
            xml = xml.relative_to(REPO)
        (REPO / xml).parent.mkdir(parents=True, exist_ok=True)
        (REPO / xml).unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", f"--junitxml={xml}", "tests",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        tests = junit_outcomes(REPO / xml) if (REPO / xml).exists() else {}
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(result.stdout[-3000:], result.stderr[-2000:], sep="\n", flush=True)
    counts = Counter(tests.values())
    return {
        "command": " ".join(command[1:]),
        "returncode": result.returncode,
        "summary": summary,
        "counts": {outcome: counts[outcome] for outcome in OUTCOMES},
        "tests": tests,
    }


def thread_split(steps: int) -> dict[str, float]:
    """Proxy steps/s of the machine: two one-thread runs at once against one two-thread run."""

    def run(threads: int, copies: int) -> float:
        command = [
            sys.executable, __file__, "--device", "cpu", "--threads", str(threads),
            "--steps", str(steps), "--only-step",
        ]  # fmt: skip
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(copies)
        ]
        step_ms = [float(p.communicate()[0].split()[-1]) for p in procs]
        return sum(1e3 / ms for ms in step_ms)

    results = {"two_runs_one_thread_steps_s": run(1, 2), "one_run_two_threads_steps_s": run(2, 1)}
    for key, value in results.items():
        print(f"{key:32s} {value:6.1f} steps/s in all")
    return results


def main() -> None:
    parser = Parser(
        prog="python experiments/bench_inception.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--steps", type=positive_int("--steps", "steps per timing", 20), help="steps per timing"
    )
    parser.add_argument(
        "--threads",
        type=positive_int("--threads", "CPU threads", 1),
        default=1,
        help="CPU threads (cpu only)",
    )
    parser.add_argument("--thread-split", action="store_true", help="cpu: also the thread split")
    parser.add_argument(
        "--cuda-tests", action="store_true", help="cuda: also the CUDA tests and the MLP's graph"
    )
    parser.add_argument("--only-step", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = script_args(parser)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_inception: --device cuda needs a CUDA GPU; none is visible.")
    ensure_dataset("fashion_mnist", str(data_dir()))
    threads = args.threads if args.device == "cpu" else None
    if args.only_step:  # one BN-x5 timing, for --thread-split's child processes
        cfg = proxy_config("bn_x5", "cpu", True, threads)
        step, _, device = proxy_step(cfg, False)
        for _ in range(5):
            step()
        print(1e3 * timed(step, device, 3, args.steps or 20))
        return
    steps = args.steps or (50 if args.device == "cuda" else 20)
    results: dict[str, Any] = {"device": args.device, "torch": torch.__version__}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    if args.cuda_tests and args.device == "cuda":
        junit = args.json.with_name("cuda-tests.xml") if args.json else None
        results["cuda_tests"] = cuda_tests(junit)
        results["mlp"] = bench_mlp(steps=3000)
    results["proxy"] = bench_proxy(args.device, steps, threads)
    if args.thread_split:
        results["thread_split"] = thread_split(steps)
    if args.device == "cuda":
        results["imagenet"] = bench_imagenet(batch=256, steps=20)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    tests = results.get("cuda_tests")
    if tests and tests["returncode"] != 0:
        sys.exit(f"bench_inception: the CUDA tests did not all pass: {tests['summary']}")


if __name__ == "__main__":
    main()
