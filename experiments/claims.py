"""Six claims of the BN paper (arXiv:1502.03167), each a measurement, a verdict and a figure.

    python experiments/claims.py run [--steps 10000] [--seeds 0,1] [--population-batches 1000]
                                     [--timing-repeats 100] [hydra overrides ...]
    python experiments/claims.py draw     # redraw from results/claims/*.csv only

`run` measures claims 1-3 directly (`bnrepro.claims`), trains the Figure 1 net three ways
through the harness for claim 4 (no BN; BN before the sigmoid, the paper's placement; BN
after it), measures claims 5 and 6 on the trained BN-before net, and, once every measurement
is known whole, writes each as a CSV under results/claims/. It then does what `draw` does:
claims.csv (claim, measured, threshold, verdict), one figure per claim and README.md, from
those CSV files alone; README.md states each claim and the section of the paper it is from.
The default of 10,000 steps and 2 seeds keeps claim 4 cheap on a CPU; `--steps 50000
--seeds 0,1,2` is the paper's full protocol.
"""

import argparse
import copy
import json
import operator
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from bnrepro import claims, plots
from bnrepro.atomic import atomic_write_text, write_json
from bnrepro.data import load_mnist
from bnrepro.errors import BnreproError
from bnrepro.models.mlp import MLP
from bnrepro.runinfo import git_state, hardware
from bnrepro.tables import (
    check_final_steps,
    check_groups,
    check_runs,
    check_unique,
    fail,
    load_curves,
    load_sweep,
    read_csv,
    read_json,
)
from bnrepro.train import train
from bnrepro.train_mlp import build_model, to_input

REPO = Path(__file__).resolve().parents[1]
SCALES = np.logspace(-1, 1, 41)  # claim 1: a from 0.1 to 10
APPROXIMATE_EPS = 1e-5  # claim 1 is also measured with the harness's BN eps, for contrast
TOY_STEPS = 1000  # claim 2
BIAS_TRIALS = 20  # claim 3: one MNIST batch of 60 per trial
# claim 4: name -> harness overrides
VARIANTS = {
    "plain": ["model=mlp"],
    "bn_before": ["model=mlp_bn", "model.bn_position=before", "model.variant=bn_before"],
    "bn_after": ["model=mlp_bn", "model.bn_position=after", "model.variant=bn_after"],
}
FOLDED_VARIANT = "bn_before"  # claims 5 and 6 use this trained net
FOLDING_DTYPES = ("float32", "float64")  # claim 5
TIMED_MODELS = ("unfolded", "folded")  # claim 5
METRIC_COLUMNS = {
    "step": "int", "seed": "int", "train_loss": "float", "test_acc": "float",
    "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip
# claim -> its CSV files -> their columns (name -> kind)
CSV_FILES = {
    1: {
        "scale_invariance.csv": {
            "a": "float", "eps": "float", "out_dev": "float", "du_dev": "float",
            "dw_dev": "float", "dw_norm": "float", "dw_norm_at_1": "float",
        },
    },
    2: {
        "stats_backprop.csv": {
            "step": "int", "stats_backprop": "bool", "b_norm": "float", "b_drift": "float",
            "loss": "float",
        },
    },
    3: {
        "bias_redundancy.csv": {
            "trial": "int", "bias_norm": "float", "bias_grad_norm": "float",
            "weight_grad_norm": "float", "out_dev": "float",
        },
    },
    4: {
        "bn_position_curves.csv": {
            "variant": "str", "seed": "int", "step": "int", "train_loss": "float",
            "test_acc": "float",
        },
    },
    5: {
        "folding_agreement.csv": {
            "seed": "int", "max_abs_diff": "float", "max_rel_diff": "float",
            "prediction_agreement": "float", "dtype": "str",
        },
        "folding_timing.csv": {"repeat": "int", "model": "str", "seconds": "float"},
    },
    6: {
        "population_statistics.csv": {
            "seed": "int", "statistics": "str", "n_batches": "int", "test_acc": "float",
        },
    },
}  # fmt: skip
COLUMNS = {name: columns for files in CSV_FILES.values() for name, columns in files.items()}
OPTIONAL = {"bn_position_curves.csv": ("train_loss", "test_acc")}  # may be empty in a row
RUN_FIX = "run the measurements again with `python experiments/claims.py run`"
DRAW_FIX = (
    "measure again with `python experiments/claims.py run`, or restore the committed files "
    "with `git checkout -- results/claims`"
)

# ---------------------------------------------------------------- measuring


def measure_direct(x_train: torch.Tensor) -> dict[str, pd.DataFrame]:
    """Claims 1-3 (no training of the Figure 1 net needed), by CSV file name."""
    scale = [claims.scale_invariance(SCALES, eps=eps) for eps in (0.0, APPROXIMATE_EPS)]
    toy = [claims.stats_backprop_toy(backprop, steps=TOY_STEPS) for backprop in (False, True)]
    batches = [to_input(x_train[60 * i : 60 * (i + 1)], "grey") for i in range(BIAS_TRIALS)]
    return {
        "scale_invariance.csv": pd.concat(scale),
        "stats_backprop.csv": pd.concat(toy),
        "bias_redundancy.csv": claims.bias_redundancy(batches),
    }


def train_variants(runs_dir: Path, seeds: str, steps: int, overrides: list[str]) -> None:
    """Claim 4: the Figure 1 protocol (shortened to `steps`) for each of VARIANTS, through the
    harness's `train`, one run directory per variant under `runs_dir`."""
    for variant, variant_overrides in VARIANTS.items():
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[
                    "experiment=figure1",
                    "name=claims",
                    *variant_overrides,
                    f"seeds=[{seeds}]",
                    f"steps={steps}",
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        print(f"claim 4: training {variant} ({steps} steps, seeds {seeds})", flush=True)
        info = train(cfg, runs_dir / variant)
        print(f"  {info['status']} in {info['wall_s']:.0f} s", flush=True)


def collect_variants(runs_dir: Path) -> dict[str, pd.DataFrame]:
    """Claim 4's curves from the runs of `train_variants`, once each is known to have finished."""
    runs = load_sweep(runs_dir, RUN_FIX)
    check_runs(runs, runs_dir, {variant: {"completed"} for variant in VARIANTS})
    curves = load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    order = {variant: i for i, variant in enumerate(VARIANTS)}
    curves = curves.sort_values("variant", key=lambda v: v.map(order), kind="stable")
    return {"bn_position_curves.csv": curves[list(COLUMNS["bn_position_curves.csv"])]}


def load_trained(run_dir: Path) -> tuple[MLP, DictConfig]:
    """The model of a harness run, rebuilt on the CPU, and the config it was trained with."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    device = torch.device("cpu")
    model = build_model(cfg, device)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device))
    return model, cfg


def measure_trained(
    run_dir: Path, population_batches: int, repeats: int
) -> dict[str, pd.DataFrame]:
    """Claims 5 and 6 on the trained net of `run_dir`, on the CPU, by CSV file name."""
    model, cfg = load_trained(run_dir)
    seeds = list(cfg.seeds)
    train_images, _ = load_mnist(cfg.data.root, "train")
    test_images, test_labels = load_mnist(cfg.data.root, "test")
    x_test = to_input(test_images.flatten(1), cfg.data.input)

    # float32 is how the net runs; float64 separates the identity from float32 rounding
    agreement = []
    for dtype in (torch.float32, torch.float64):
        net = copy.deepcopy(model).to(dtype)
        frame = claims.fold_agreement(net, claims.fold_mlp(net), x_test.to(dtype), seeds)
        agreement.append(frame.assign(dtype=str(dtype).removeprefix("torch.")))
    models = {"unfolded": model, "folded": claims.fold_mlp(model)}
    timing = claims.time_inference(models, x_test, repeats)

    counts = [n for n in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if n < population_batches]
    frame = claims.population_statistics_accuracy(
        model,
        train_images.flatten(1),
        x_test,
        test_labels,
        seeds,
        n_batches=[*counts, population_batches],
        batch_size=cfg.batch_size,
        input_mode=cfg.data.input,
    )
    return {
        "folding_agreement.csv": pd.concat(agreement),
        "folding_timing.csv": timing,
        "population_statistics.csv": frame,
    }


def check_complete(
    data: dict[str, pd.DataFrame], steps: int | None, out_dir: Path, fix: str
) -> None:
    """Every measurement of `data` (by CSV file name) is whole: both eps of claim 1 at every
    scale, both toy runs of claim 2 to their last step, trials 0, 1, ... of claim 3, every
    variant of claim 4 for each seed up to `steps` (where known, else its last logged step),
    and claims 5 and 6 for each of those seeds, every dtype, model, repeat and batch count."""

    def path(name: str) -> Path:
        return out_dir / name

    scale = data["scale_invariance.csv"]
    scales = sorted(set(scale.a))
    expected = [(eps, a) for eps in (0.0, APPROXIMATE_EPS) for a in scales]
    check_groups(scale, path("scale_invariance.csv"), ["eps", "a"], expected, fix)
    check_unique(scale, path("scale_invariance.csv"), ["eps", "a"], fix)

    toy = data["stats_backprop.csv"]
    check_groups(toy, path("stats_backprop.csv"), ["stats_backprop"], [(False,), (True,)], fix)
    check_unique(toy, path("stats_backprop.csv"), ["stats_backprop", "step"], fix)
    last = int(toy.step.max())
    check_final_steps(toy, path("stats_backprop.csv"), ["stats_backprop"], last, fix)

    bias = data["bias_redundancy.csv"]
    trials = [(trial,) for trial in range(len(bias))]
    check_groups(bias, path("bias_redundancy.csv"), ["trial"], trials, fix)

    curves = data["bn_position_curves.csv"]
    seeds = sorted(set(curves.seed))
    keys = ["variant", "seed"]
    expected = [(variant, seed) for variant in VARIANTS for seed in seeds]
    check_groups(curves, path("bn_position_curves.csv"), keys, expected, fix)
    check_unique(curves, path("bn_position_curves.csv"), [*keys, "step"], fix)
    final = steps if steps is not None else int(curves.step.max())
    check_final_steps(curves, path("bn_position_curves.csv"), keys, final, fix)

    agreement = data["folding_agreement.csv"]
    expected = [(dtype, seed) for dtype in FOLDING_DTYPES for seed in seeds]
    check_groups(agreement, path("folding_agreement.csv"), ["dtype", "seed"], expected, fix)
    check_unique(agreement, path("folding_agreement.csv"), ["dtype", "seed"], fix)

    timing = data["folding_timing.csv"]
    repeats = range(int(timing.repeat.max()) + 1)
    expected = [(model, repeat) for model in TIMED_MODELS for repeat in repeats]
    check_groups(timing, path("folding_timing.csv"), ["model", "repeat"], expected, fix)
    check_unique(timing, path("folding_timing.csv"), ["model", "repeat"], fix)

    population = data["population_statistics.csv"]
    counts = sorted(set(population[population.statistics == "population"].n_batches))
    rows = [("moving", 0), *(("population", n) for n in counts)]
    expected = [(seed, *row) for seed in seeds for row in rows]
    keys = ["seed", "statistics", "n_batches"]
    check_groups(population, path("population_statistics.csv"), keys, expected, fix)
    check_unique(population, path("population_statistics.csv"), keys, fix)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))
    print(f"wrote {path}", flush=True)


# ---------------------------------------------------------------- verdicts


RELATIONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Check:
    """One measured number of a claim and the threshold it must meet to pass."""

    number: int
    claim: str
    measured: float
    relation: str
    threshold: float

    def row(self) -> dict:
        if np.isnan(self.measured):
            verdict = "missing"  # the logged data does not hold this measurement
        else:
            verdict = "pass" if RELATIONS[self.relation](self.measured, self.threshold) else "fail"
        return {
            "claim": f"{self.number}. {self.claim}",
            "measured": self.measured,
            "threshold": f"{self.relation} {self.threshold:g}",
            "verdict": verdict,
        }


def final_accuracy(curves: pd.DataFrame) -> pd.DataFrame:
    """Per variant and seed, the test accuracy at the last evaluated step."""
    accuracy = curves.dropna(subset=["test_acc"])
    last = accuracy.groupby(["variant", "seed"]).step.transform("max")
    return accuracy[accuracy.step == last][["variant", "seed", "step", "test_acc"]]


def paired_speedup(timing: pd.DataFrame) -> pd.Series:
    """Per repeat, unfolded time / folded time (the two ran back to back)."""
    per_repeat = timing.pivot(index="repeat", columns="model", values="seconds")
    return per_repeat["unfolded"] / per_repeat["folded"]


def checks(data: dict[str, pd.DataFrame]) -> list[Check]:
    """Every claim's measured numbers, from the logged CSV files in `data` (by file name)."""
    scale = data["scale_invariance.csv"]
    exact = scale[scale.eps == 0]

    toy = data["stats_backprop.csv"]
    const = toy[~toy.stats_backprop].sort_values("step")
    backprop = toy[toy.stats_backprop].sort_values("step")
    steps, drift = const.step.to_numpy(), const.b_drift.to_numpy()
    line = drift[-1] * steps / steps[-1]

    bias = data["bias_redundancy.csv"]

    final = final_accuracy(data["bn_position_curves.csv"]).groupby("variant").test_acc.mean()

    agreement = data["folding_agreement.csv"]
    speedup = paired_speedup(data["folding_timing.csv"])

    population = data["population_statistics.csv"]
    largest = population[population.statistics == "population"].n_batches.max()
    population_acc = population[population.n_batches == largest].set_index("seed").test_acc
    moving_acc = population[population.statistics == "moving"].set_index("seed").test_acc
    difference = (population_acc - moving_acc).mean()

    return [
        Check(
            1, "max rel. deviation of BN((aW)u) from BN(Wu), eps=0", exact.out_dev.max(), "<", 1e-10
        ),
        Check(
            1,
            "max rel. deviation of d/du from its value at a=1, eps=0",
            exact.du_dev.max(),
            "<",
            1e-10,
        ),
        Check(
            1,
            "max rel. deviation of d/d(aW) from (1/a) d/dW, eps=0",
            exact.dw_dev.max(),
            "<",
            1e-10,
        ),
        Check(
            2,
            "statistics as constants: |b| at the end / |b| at the start",
            const.b_norm.iloc[-1] / const.b_norm.iloc[0],
            ">",
            10,
        ),
        Check(
            2,
            "statistics as constants: max deviation of |b - b0| from a line, rel.",
            np.abs(drift - line).max() / drift[-1],
            "<",
            1e-6,
        ),
        Check(
            2,
            "statistics as constants: (max - min) loss / initial loss",
            np.ptp(const.loss) / const.loss.iloc[0],
            "<",
            1e-9,
        ),
        Check(
            2,
            "backprop through statistics: max |b - b0| / |b0|",
            backprop.b_drift.max() / backprop.b_norm.iloc[0],
            "<",
            1e-9,
        ),
        Check(
            3,
            "bias before BN: max over trials of |dL/db| / |dL/dW|",
            (bias.bias_grad_norm / bias.weight_grad_norm).max(),
            "<",
            1e-10,
        ),
        Check(
            3, "removing the bias: max rel. change of the BN output", bias.out_dev.max(), "<", 1e-10
        ),
        Check(
            4,
            "final test accuracy, BN before minus BN after the sigmoid",
            final.get("bn_before", np.nan) - final.get("bn_after", np.nan),
            ">=",
            -0.005,
        ),
        Check(
            4,
            "final test accuracy, BN before the sigmoid minus no BN",
            final.get("bn_before", np.nan) - final.get("plain", np.nan),
            ">",
            0,
        ),
        Check(
            5,
            "folded vs unfolded, float32: max |logit difference|",
            agreement[agreement.dtype == "float32"].max_abs_diff.max(),
            "<",
            1e-5,
        ),
        Check(
            5,
            "folded vs unfolded, float64: max |logit difference|",
            agreement[agreement.dtype == "float64"].max_abs_diff.max(),
            "<",
            1e-10,
        ),
        Check(
            5,
            "inference speed-up: median over repeats of time unfolded / folded",
            speedup.median(),
            ">",
            1,
        ),
        Check(
            6,
            f"|population ({largest} batches) - moving-average| test accuracy",
            abs(difference),
            "<=",
            0.005,
        ),
    ]


# ---------------------------------------------------------------- drawing


# claim -> (title, the section of arXiv:1502.03167 it is from, the claim, figure, method)
DESCRIPTIONS = {
    1: (
        "Scale invariance",
        "Section 3.3, Batch Normalization enables higher learning rates",
        "BN makes a layer invariant to the scale of its weights. For a scalar a, BN((aW)u) = "
        "BN(Wu); the gradient with respect to the layer's input is unchanged, d BN((aW)u)/du = "
        "d BN(Wu)/du; and larger weights get smaller gradients, d BN((aW)u)/d(aW) = (1/a) d "
        "BN(Wu)/dW, which stabilizes the growth of the weights.",
        "claim1_scale_invariance.png",
        "Random W (10x20), u (32x20), gamma, beta and upstream gradient, float64, the paper's "
        "BN with eps = 0, for 41 values of a in [0.1, 10]; loss = sum(upstream * BN((aW)u)). "
        "The identities are exact only for eps = 0; with eps > 0 the normalization divides "
        "by sqrt(a^2 Var + eps), so they hold approximately, worst for small a (grey in (b)).",
    ),
    2: (
        "Why backprop through the statistics",
        "Section 2, Towards Reducing Internal Covariate Shift",
        "The gradient step must take the normalization into account. For a layer x = u + b "
        "normalized as x - E[x], a step that ignores that E[x] depends on b changes b but "
        "neither the layer's output nor the loss, so b grows without bound while the loss stays"
        " fixed; backpropagating through the statistics, as BN does, avoids this.",
        "claim2_stats_backprop.png",
        "The paper's example, run: x = u + b with b the only parameter, normalized by BN without "
        "gamma/beta over a fixed set of 256 examples of 8 features, squared error to a fixed "
        "target with nonzero mean, plain SGD (lr 0.1) for 1,000 steps, float64. The mean "
        "subtraction cancels b, so nothing that b does can change the loss, for either "
        "variant. With the statistics treated as constants (`stats_backprop=False`) every "
        "step moves b by the same nonzero amount: |b| grows linearly without bound while the "
        "loss stays flat. With backprop through them b's gradient is zero and b stays put.",
    ),
    3: (
        "The bias before BN is redundant",
        "Section 3.2, Batch-Normalized Convolutional Networks",
        "In BN(Wu + b) the bias b can be dropped, since the mean subtraction cancels its "
        "effect (beta takes over its role).",
        "claim3_bias_redundancy.png",
        "A random Linear(784 -> 100) with a random bias b, then the paper's BN in training "
        "mode and a sigmoid with a random upstream gradient, on consecutive MNIST training "
        "batches of 60 (one per trial), float64. b's gradient is zero up to rounding and "
        "setting b to zero leaves the output unchanged. (In inference mode b is absorbed by "
        "folding, claim 5.)",
    ),
    4: (
        "BN before the nonlinearity vs after it",
        "Section 3.2, Batch-Normalized Convolutional Networks",
        "BN goes immediately before the nonlinearity, z = g(BN(Wu)). The layer's input u is the"
        " output of another nonlinearity, whose distribution keeps changing shape in training, "
        "while Wu + b is more likely symmetric and non-sparse, so normalizing it gives "
        "activations with a more stable distribution. Measured as: the net with BN before its "
        "sigmoids ends at least as accurate as with BN after them (on the next layer's input), "
        "and more accurate than without BN.",
        "claim4_bn_position.png",
        "The Figure 1 net trained through the harness (`experiment=figure1`, plain SGD, "
        "lr 0.1, batch 60) as `model=mlp`, `model=mlp_bn model.bn_position=before` (the "
        "paper's g(BN(Wu))) and `model=mlp_bn model.bn_position=after` (BN(g(Wu + b)), "
        "hidden biases kept), shortened by default to 10,000 steps and 2 seeds to stay cheap "
        "on a CPU (the settings below say what ran; `--steps 50000 --seeds 0,1,2` is the "
        "paper's protocol). Final accuracy: mean over seeds at the last step. The "
        "threshold for 'before >= after' allows 0.005 of seed noise. The two placements "
        "differ in more than the position of BN: 'after' keeps the hidden biases, and its "
        "last BN normalizes the classifier's input, which 'before' does not; a difference "
        "here is a difference between these two nets, not a clean test of placement alone.",
    ),
    5: (
        "Inference BN is one affine map",
        "Section 3.1, Training and Inference with Batch-Normalized Networks",
        "At inference the means and variances are fixed, so BN is a linear transform of each "
        "activation, which composes with gamma and beta into a single linear transform that "
        "replaces BN(x); folded into the layer before it, the net computes the same function. "
        "The paper states the identity; whether folding also makes inference faster is this "
        "repository's own check.",
        "claim5_folding.png",
        "The trained BN-before net rebuilt with `build_model` from its `model.pt`; "
        "`bnrepro.claims.fold_mlp` folds each BN into the EnsembleLinear before it with "
        "`fold_into_affine`. Logits on the 10,000 test images compared in float32, as the "
        "net runs, and in float64, where float32 rounding no longer hides the identity; "
        "inference timed as one forward pass over the 10,000 test images on the CPU, "
        "folded and unfolded taking turns; the speed-up is the median over the repeats of "
        "each repeat's ratio, so a slow spell of the shared machine hits both sides of a ratio.",
    ),
    6: (
        "Moving averages vs population statistics (Algorithm 2)",
        "Section 3.1 and Algorithm 2",
        "At inference BN normalizes with population statistics, E[x] = E_B[mu_B] and Var[x] = "
        "m/(m-1) E_B[sigma_B^2] over training mini-batches, and moving averages of the batch "
        "statistics are how the paper tracks a model's accuracy as it trains. Measured as: the "
        "moving averages give the test accuracy of the population statistics, within 0.5 "
        "points.",
        "claim6_population_statistics.png",
        "The trained BN-before net's test accuracy with its moving averages (momentum 0.1) "
        "against `estimate_population_statistics` over the first N training mini-batches of "
        "60 drawn per member as in training.",
    ),
}


def escape(text: str) -> str:
    """Markdown table cell: a literal | would end the cell."""
    return text.replace("|", "\\|")


def readme(table: pd.DataFrame, data: dict[str, pd.DataFrame], provenance: dict) -> str:
    lines = [
        "# The paper's claims, measured",
        "",
        "Regenerated by `make reproduce-claims` (measuring and training) or `make figures`",
        "(drawing only) from the CSV files in this folder; do not edit by hand. Six claims of",
        "Ioffe & Szegedy, *Batch Normalization* (2015, arXiv:1502.03167), each stated below",
        "with the section of the paper it is from, are each a measured number with a threshold",
        "fixed in `experiments/claims.py` before the run; `claims.csv` holds this table.",
        "",
        "| claim | measured | threshold | verdict |",
        "|---|---|---|---|",
        *[
            f"| {escape(r.claim)} | {r.measured:.4g} | {r.threshold} | **{r.verdict}** |"
            for r in table.itertuples()
        ],
        "",
    ]
    scale = data["scale_invariance.csv"]
    approx = scale[scale.eps > 0]
    final = final_accuracy(data["bn_position_curves.csv"])
    timing = data["folding_timing.csv"].groupby("model").seconds.median() * 1e3
    speedup = paired_speedup(data["folding_timing.csv"])
    population = data["population_statistics.csv"]
    extra = {
        1: [
            f"With eps = {approx.eps.max():g} the largest relative deviation is "
            f"{approx[['out_dev', 'du_dev', 'dw_dev']].to_numpy().max():.2g} (at a = "
            f"{approx.a.min():g}): approximate, not exact.",
        ],
        4: [
            "| net | seed | step | final test accuracy |",
            "|---|---|---|---|",
            *[
                f"| {r.variant} | {r.seed} | {r.step} | {r.test_acc:.4f} |"
                for r in final.itertuples()
            ],
        ],
        5: [
            "| seed | dtype | max abs. logit difference | max rel. | predictions agreeing |",
            "|---|---|---|---|---|",
            *[
                f"| {r.seed} | {r.dtype} | {r.max_abs_diff:.3g} | {r.max_rel_diff:.3g} | "
                f"{r.prediction_agreement:.4f} |"
                for r in data["folding_agreement.csv"].itertuples()
            ],
            "",
            f"Median inference time: unfolded {timing['unfolded']:.2f} ms, folded "
            f"{timing['folded']:.2f} ms over {data['folding_timing.csv'].repeat.nunique()} "
            f"repeats (ratio of medians {timing['unfolded'] / timing['folded']:.3f}); per-repeat "
            f"speed-up quartiles {speedup.quantile(0.25):.3f}, {speedup.median():.3f}, "
            f"{speedup.quantile(0.75):.3f}. Folding removes the per-unit BN arithmetic (and "
            "the member reshapes around it), which is small next to the matrix products, so "
            "any speed-up is small and a shared machine's load makes it noisy.",
        ],
        6: [
            "| seed | statistics | batches | test accuracy |",
            "|---|---|---|---|",
            *[
                f"| {r.seed} | {r.statistics} | {r.n_batches or '-'} | {r.test_acc:.4f} |"
                for r in population.itertuples()
            ],
        ],
    }
    for number, (title, source, claim, figure, how) in DESCRIPTIONS.items():
        files = ", ".join(f"`{name}`" for name in CSV_FILES[number])
        lines += [f"## {number}. {title}", "", f"**Claim** ({source}): {claim}", ""]
        lines += [f"![claim {number}]({figure})", "", how, ""]
        if number in extra:
            lines += [*extra[number], ""]
        lines += [f"Drawn from {files}.", ""]

    hw = provenance.get("hardware", {})
    git = provenance.get("git", {})
    settings = provenance.get("settings", {})
    lines += [
        "## How these numbers were made",
        "",
        f"- command: `{provenance.get('command', '?')}`",
        f"- code: commit `{git.get('commit')}`"
        + (" (with uncommitted changes)" if git.get("dirty") else ""),
        f"- machine: {hw.get('cpu')} ({hw.get('cpu_count')} cores, torch threads "
        f"{hw.get('torch_threads')}), {hw.get('platform')}, torch {hw.get('torch')}; claim 4 "
        f"trained on `{provenance.get('train_device', '?')}`, claims 5 and 6 measured on the CPU",
        f"- settings: {', '.join(f'{k} = {v}' for k, v in settings.items())}",
        f"- training runs: `{provenance.get('runs_dir')}`",
        f"- wall time of the whole run: {provenance.get('wall_s', float('nan')):.0f} s",
        f"- date: {provenance.get('date')}",
        "",
    ]
    return "\n".join(lines)


def draw(out_dir: Path) -> None:
    """claims.csv, the figures and README.md from the files in `out_dir`, once they are known
    whole."""
    missing = [name for name in COLUMNS if not (out_dir / name).exists()]
    if missing:
        fail(f"{out_dir} lacks {', '.join(missing)}.", DRAW_FIX)
    data = {
        name: read_csv(out_dir / name, columns, DRAW_FIX, OPTIONAL.get(name, ()))
        for name, columns in COLUMNS.items()
    }
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    check_complete(data, provenance.get("settings", {}).get("steps"), out_dir, DRAW_FIX)

    table = pd.DataFrame([check.row() for check in checks(data)])
    write_csv(out_dir / "claims.csv", table)
    paths = [
        *plots.claim_scale_invariance(data["scale_invariance.csv"], out_dir),
        *plots.claim_stats_backprop(data["stats_backprop.csv"], out_dir),
        *plots.claim_bias_redundancy(data["bias_redundancy.csv"], out_dir),
        *plots.claim_bn_position(data["bn_position_curves.csv"], out_dir),
        *plots.claim_folding(data["folding_agreement.csv"], data["folding_timing.csv"], out_dir),
        *plots.claim_population_statistics(data["population_statistics.csv"], out_dir),
    ]
    for path in paths:
        print(f"wrote {path}")
    atomic_write_text(out_dir / "README.md", readme(table, data, provenance))
    print(f"wrote {out_dir / 'README.md'}")
    print(table.to_string(index=False))


def run(args: argparse.Namespace, overrides: list[str]) -> None:
    """Trains claim 4's nets, measures every claim and, once all of it is known whole, writes
    the CSV files and provenance.json into `args.out`."""
    started, git = time.time(), git_state(REPO)
    runs_dir = args.runs or REPO / "runs" / "claims" / time.strftime("%Y-%m-%d_%H-%M-%S")
    train_variants(runs_dir, args.seeds, args.steps, overrides)
    data = collect_variants(runs_dir)
    trained_cfg = OmegaConf.load(runs_dir / FOLDED_VARIANT / "config.yaml")
    train_images, _ = load_mnist(trained_cfg.data.root, "train")
    data |= measure_direct(train_images.flatten(1))
    data |= measure_trained(runs_dir / FOLDED_VARIANT, args.population_batches, args.timing_repeats)
    check_complete(data, args.steps, args.out, RUN_FIX)
    run_info = json.loads((runs_dir / FOLDED_VARIANT / "run.json").read_text())
    for name in COLUMNS:
        write_csv(args.out / name, data[name])
    write_json(
        args.out / "provenance.json",
        {
            "command": " ".join(["python experiments/claims.py", *sys.argv[1:]]),
            "runs_dir": str(
                runs_dir.relative_to(REPO) if runs_dir.is_relative_to(REPO) else runs_dir
            ),
            "git": git,
            "hardware": hardware(torch.device("cpu")),
            "train_device": run_info["hardware"]["device"],
            "settings": {
                "steps": args.steps,
                "seeds": args.seeds,
                "population_batches": args.population_batches,
                "timing_repeats": args.timing_repeats,
                "overrides": " ".join(overrides) or "none",
            },
            "wall_s": round(time.time() - started, 1),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["run", "draw"])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "claims")
    parser.add_argument(
        "--runs", type=Path, default=None, help="training runs dir (default runs/claims/<time>)"
    )
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds for claim 4")
    parser.add_argument("--steps", type=int, default=10000, help="training steps for claim 4")
    parser.add_argument(
        "--population-batches", type=int, default=1000, help="claim 6: batches of 60 averaged"
    )
    parser.add_argument("--timing-repeats", type=int, default=100, help="claim 5: timed passes")
    args, overrides = parser.parse_known_args()
    try:
        if args.action == "run":
            run(args, overrides)
        draw(args.out)
    except BnreproError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
