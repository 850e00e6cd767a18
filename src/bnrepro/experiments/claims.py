"""Six claims of the BN paper (arXiv:1502.03167), each a measurement, a verdict and a figure.

    python experiments/claims.py run [--out DIR] [--runs DIR] [hydra overrides ...]
    python experiments/claims.py run --quick   # the whole pipeline small, into runs/claims-quick/
    python experiments/claims.py draw [--out DIR]   # redraw from DIR's CSVs and provenance.json

`run` measures claims 1-3 directly (`bnrepro.claims`), trains the Figure 1 net three ways
through the harness for claim 4 (no BN; BN before the sigmoid, the paper's placement; BN
after it), measures claims 5 and 6 on the trained BN-before net and, once every measurement
is known whole, writes the results as CSV files and everything that changes from run to run
or machine to machine (command, commit, machine, date, wall times, the training runs'
directory, and claim 5's raw timing repeats) as provenance.json. It then does what `draw`
does: claims.csv (claim, measured, threshold, verdict, threshold_fixed; the verdicts by the
rule of bnrepro.verdicts), one figure per claim and README.md, from those files alone.
README.md, the CSV files and the figures hold results only, so a faithful rerun on the same
kind of machine changes provenance.json alone.

By default `run` follows the published protocol, the one results/claims/ is made with: claim 4
trains 50,000 steps with seeds 0,1,2 (Figure 1's protocol) and is read at steps 10,000 and
50,000 of the same runs; claim 6 averages population statistics over up to 1,000 batches;
claim 5 times 100 repeats. It writes results/claims/, and the training runs to
runs/claims/<time>/. `--quick` runs the whole pipeline small (claim 4: 400 steps, seeds 0,1,
read at steps 200 and 400; 10 batches; 10 repeats), in well under a minute on two CPU cores;
without `--out` it writes runs/claims-quick/ (`draw --quick` redraws that folder), never
results/, and its training runs go to runs/claims/<time>/ too. `--out DIR` is the output folder
of either, `--runs DIR` the training runs' folder.

The command line is bnrepro.driver's: `run` takes Hydra overrides of the harness (key=value),
`draw` only `--out` (or `--quick`); anything else is refused before anything starts, with one
paragraph naming it and exit status 2, as are measurements or files found not whole.
"""

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from bnrepro import claims, plots, verdicts  # noqa: E402
from bnrepro.atomic import atomic_write_text, write_json  # noqa: E402
from bnrepro.data import load_mnist  # noqa: E402
from bnrepro.driver import (  # noqa: E402
    REPO,
    Driver,
    Invocation,
    check_protocol,
    provenance,
    write_csv,
)
from bnrepro.mlp_data import to_input  # noqa: E402
from bnrepro.mlp_members import build_model  # noqa: E402
from bnrepro.models.mlp import MLP  # noqa: E402
from bnrepro.tables import (  # noqa: E402
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
from bnrepro.train import train  # noqa: E402

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
MIN_REPEATS = 6  # claim 5: the fewest repeats with a 95% interval (claims.median_interval)
SPEEDUP_DIGITS = 2  # claim 5: significant digits shown of the speed-up and its interval


@dataclass(frozen=True)
class Protocol:
    """How much `run` measures: claim 4 trains `steps` steps with `seeds` (comma-separated) and
    is read at `short_steps` and `steps` of the same runs, claim 6 averages population
    statistics over up to `population_batches` batches, and claim 5 times `timing_repeats`
    passes of each model. `harness` holds overrides of `experiment=figure1` beyond steps and
    seeds."""

    steps: int
    short_steps: int
    seeds: str
    population_batches: int
    timing_repeats: int
    harness: tuple[str, ...] = ()


PROTOCOLS = {
    "published": Protocol(
        steps=50000, short_steps=10000, seeds="0,1,2", population_batches=1000, timing_repeats=100
    ),
    "quick": Protocol(
        steps=400,
        short_steps=200,
        seeds="0,1",
        population_batches=10,
        timing_repeats=10,
        harness=("eval_every=100",),  # Figure 1 evaluates every 500 steps
    ),
}
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
    },
    6: {
        "population_statistics.csv": {
            "seed": "int", "statistics": "str", "n_batches": "int", "test_acc": "float",
        },
    },
}  # fmt: skip
COLUMNS = {name: columns for files in CSV_FILES.values() for name, columns in files.items()}
# For comparing a rerun on another CPU model with the committed files (`make verify`): file ->
# column -> the largest |rerun - committed| that float rounding explains. A column not listed
# is compared exactly (tolerance 0): keys, steps, seeds, counts, text and verdicts. Chosen from
# the committed run (AMD EPYC) against the one before it (Intel Xeon; same computation, data
# and torch): 10 times the largest difference seen, rounded up to a power of ten; where none
# was seen, 10 ulps of the column's largest value, so rounded, or one test image in 10,000 for
# prediction_agreement. Seen: claims 1-3 (float64) differ in their last bits only, claim 4's
# 50,000 steps did not drift apart (train_loss within 3e-6, test_acc within one test image,
# in 2 rows), and claim 6, on the same net, not at all (its test_acc gets claim 4's
# tolerance). One exception: max_abs_diff moved 1.7e-6 (an ulp of the float32 logits), and the
# rule's 1e-4 would be ten times its threshold: it gets 1e-5, the threshold itself (its float64
# rows share the column). claims.csv's `measured` is not compared (inf): it is computed from
# the files above, which are, and its speed-up text, like that row's verdict, belongs to the
# machine that timed it (the Driver's `timed`: verify reports that row, not compares it).
# Every other verdict must match.
TOLERANCES: dict[str, dict[str, float]] = {
    "scale_invariance.csv": {
        "out_dev": 1e-14, "du_dev": 1e-14, "dw_dev": 1e-14, "dw_norm": 1e-12,
        "dw_norm_at_1": 1e-13,
    },
    "stats_backprop.csv": {"b_norm": 1e-12, "b_drift": 1e-12, "loss": 1e-14},
    "bias_redundancy.csv": {
        "bias_norm": 1e-13, "bias_grad_norm": 1e-13, "weight_grad_norm": 1e-12, "out_dev": 1e-14,
    },
    "bn_position_curves.csv": {"train_loss": 1e-4, "test_acc": 1e-3},
    "folding_agreement.csv": {
        "max_abs_diff": 1e-5, "max_rel_diff": 1e-6, "prediction_agreement": 1e-4,
    },
    "population_statistics.csv": {"test_acc": 1e-3},
    "claims.csv": {"measured": math.inf},
}  # fmt: skip
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


def train_variants(runs_dir: Path, protocol: Protocol, overrides: list[str]) -> dict[str, float]:
    """Claim 4: the Figure 1 protocol (as long as `protocol` says) for each of VARIANTS, through
    the harness's `train`, one run directory per variant under `runs_dir`; returns each
    variant's training wall time in seconds."""
    wall_s = {}
    for variant, variant_overrides in VARIANTS.items():
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[
                    "experiment=figure1",
                    "name=claims",
                    *variant_overrides,
                    f"seeds=[{protocol.seeds}]",
                    f"steps={protocol.steps}",
                    *protocol.harness,
                    *overrides,
                ],
            )
        with open_dict(cfg):
            cfg.pop("hydra", None)
        print(f"claim 4: training {variant} ({protocol.steps} steps, seeds {protocol.seeds})")
        info = train(cfg, runs_dir / variant)
        print(f"  {info['status']} in {info['wall_s']:.0f} s", flush=True)
        wall_s[variant] = info["wall_s"]
    return wall_s


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
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Claims 5 and 6 on the trained net of `run_dir`, on the CPU: the results by CSV file name,
    and claim 5's timing (repeat, model, seconds), which belongs to the machine."""
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
    results = {"folding_agreement.csv": pd.concat(agreement), "population_statistics.csv": frame}
    return results, timing


def read_settings(provenance: dict, path: Path, fix: str) -> dict:
    """The protocol settings of provenance.json (read from `path`), once claim 4's two lengths
    are known: `steps` and `short_steps`, whole numbers with 0 < short_steps <= steps."""
    settings = provenance.get("settings")
    if not isinstance(settings, dict):
        fail(f"{path} has no 'settings' object (the protocol the results were made with).", fix)
    lengths = [settings.get(key) for key in ("short_steps", "steps")]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in lengths) or not (
        0 < lengths[0] <= lengths[1]
    ):
        fail(
            f"{path}: settings.short_steps={lengths[0]!r} and settings.steps={lengths[1]!r} are "
            "not claim 4's two lengths, whole numbers with 0 < short_steps <= steps.",
            fix,
        )
    return settings


def timing_record(timing: pd.DataFrame) -> dict[str, list[float]]:
    """Claim 5's timing (repeat, model, seconds) as provenance.json holds it: seconds per pass
    of each model, in the order of the repeats."""
    per_repeat = timing.pivot(index="repeat", columns="model", values="seconds").sort_index()
    return {f"{model}_s": per_repeat[model].tolist() for model in ("unfolded", "folded")}


def read_speedup(provenance: dict, path: Path, fix: str) -> pd.Series:
    """Claim 5's speed-up per repeat, unfolded time / folded time (the two passes ran back to
    back), from the timing in provenance.json (read from `path`), once it is known whole: as
    many positive, finite times of each model as there are repeats, at least MIN_REPEATS."""
    timing = provenance.get("timing")
    if not isinstance(timing, dict):
        fail(f"{path} has no 'timing' object (claim 5's inference times per repeat).", fix)
    times = {}
    for key in ("unfolded_s", "folded_s"):
        values = timing.get(key)
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf
            for v in values
        ):
            fail(f"{path}: timing.{key} is not a list of positive, finite seconds.", fix)
        times[key] = values
    counts = {key: len(values) for key, values in times.items()}
    if len(set(counts.values())) > 1 or min(counts.values()) < MIN_REPEATS:
        fail(
            f"{path}: timing holds {counts['unfolded_s']} unfolded and {counts['folded_s']} "
            f"folded times; claim 5 needs one of each per repeat, at least {MIN_REPEATS} "
            "repeats for a 95% interval.",
            fix,
        )
    return pd.Series(times["unfolded_s"]) / pd.Series(times["folded_s"])


def check_complete(data: dict[str, pd.DataFrame], settings: dict, out_dir: Path, fix: str) -> None:
    """Every measurement of `data` (by CSV file name) is whole: both eps of claim 1 at every
    scale, both toy runs of claim 2 to their last step, trials 0, 1, ... of claim 3, every
    variant of claim 4 for each seed up to settings' `steps`, with a test accuracy there and
    at its `short_steps`, and claims 5 and 6 for each of those seeds, every dtype and batch
    count."""

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
    check_final_steps(curves, path("bn_position_curves.csv"), keys, settings["steps"], fix)
    for step in (settings["short_steps"], settings["steps"]):
        found = set(accuracy_at(curves, step)[keys].itertuples(index=False, name=None))
        lacking = [f"variant={v}, seed={s}" for v, s in expected if (v, s) not in found]
        if lacking:
            fail(
                f"{path('bn_position_curves.csv')} has no test accuracy at step {step:,} for "
                f"{', '.join(lacking)}: claim 4 is read there.",
                fix,
            )

    agreement = data["folding_agreement.csv"]
    expected = [(dtype, seed) for dtype in FOLDING_DTYPES for seed in seeds]
    check_groups(agreement, path("folding_agreement.csv"), ["dtype", "seed"], expected, fix)
    check_unique(agreement, path("folding_agreement.csv"), ["dtype", "seed"], fix)

    population = data["population_statistics.csv"]
    counts = sorted(set(population[population.statistics == "population"].n_batches))
    rows = [("moving", 0), *(("population", n) for n in counts)]
    expected = [(seed, *row) for seed in seeds for row in rows]
    keys = ["seed", "statistics", "n_batches"]
    check_groups(population, path("population_statistics.csv"), keys, expected, fix)
    check_unique(population, path("population_statistics.csv"), keys, fix)


# ---------------------------------------------------------------- verdicts


def significant(value: float, digits: int = SPEEDUP_DIGITS) -> str:
    """`value` rounded to `digits` significant digits, trailing zeros kept (0.90, 1.0)."""
    return f"{value:#.{digits}g}".rstrip(".")


@dataclass(frozen=True)
class Check:
    """One measured number of a claim and the threshold it must meet to pass.

    `threshold` is the claim's file under configs/thresholds/claims/ (bnrepro.verdicts), so
    the value a number is judged against is written, and committed, apart from the code that
    measures it; `claim` is the file's text with this measurement's names filled in. A number
    measured with an interval (`low`, `high`) passes when the whole interval meets the
    threshold, fails when none of it does, and is inconclusive when the interval straddles the
    threshold. Its verdict is decided on the unrounded interval; it is shown rounded to
    SPEEDUP_DIGITS significant digits.
    """

    threshold: verdicts.Threshold
    claim: str
    measured: float
    low: float | None = None
    high: float | None = None

    @property
    def key(self) -> str:
        return self.threshold.key

    @property
    def relation(self) -> str:
        return self.threshold.relation

    @property
    def value(self) -> float:
        return self.threshold.value

    def verdict(self, threshold: verdicts.Threshold | None = None) -> str:
        """The verdict against the claim's threshold, or against `threshold` (an earlier
        value of it, for the row that says the threshold changed after the runs)."""
        if np.isnan(self.measured):
            return "missing"  # the logged data does not hold this measurement
        judge = threshold or self.threshold
        judged = [self.measured] if self.low is None else [self.low, self.high]
        return verdicts.verdict(judge.meets(value) for value in judged)

    def shown(self) -> float | str:
        """The measured number as claims.csv holds it."""
        if self.low is None:
            return self.measured
        return (
            f"{significant(self.measured)} (95% interval "
            f"{significant(self.low)} to {significant(self.high)})"
        )

    def row(self, runs_commit: str | None) -> dict:
        """The claims.csv row, with when the threshold was fixed against `runs_commit`."""
        fixed = verdicts.fixed(self.threshold, runs_commit, self.verdict)
        return verdicts.row(self.claim, self.shown(), self.threshold, self.verdict(), fixed)


def check(
    key: str, measured: float, low: float | None = None, high: float | None = None, **names
) -> Check:
    """Claim `key`'s Check: its threshold file's claim, with `names` filled in, judging
    `measured` (and its interval `low` to `high`)."""
    threshold = verdicts.load("claims", key)
    return Check(threshold, threshold.claim.format(**names), measured, low, high)


def accuracy_at(curves: pd.DataFrame, step: int) -> pd.DataFrame:
    """Per variant and seed, the test accuracy at `step` (variant, seed, test_acc)."""
    rows = curves[(curves.step == step) & curves.test_acc.notna()]
    return rows[["variant", "seed", "test_acc"]]


def checks(data: dict[str, pd.DataFrame], speedup: pd.Series, settings: dict) -> list[Check]:
    """Every claim's measured numbers, from the logged CSV files in `data` (by file name),
    claim 5's speed-up per repeat and the protocol's `settings`."""
    scale = data["scale_invariance.csv"]
    exact = scale[scale.eps == 0]

    toy = data["stats_backprop.csv"]
    const = toy[~toy.stats_backprop].sort_values("step")
    backprop = toy[toy.stats_backprop].sort_values("step")
    steps, drift = const.step.to_numpy(), const.b_drift.to_numpy()
    line = drift[-1] * steps / steps[-1]

    bias = data["bias_redundancy.csv"]

    curves = data["bn_position_curves.csv"]
    lengths = (settings["short_steps"], settings["steps"])
    final = {n: accuracy_at(curves, n).groupby("variant").test_acc.mean() for n in lengths}

    agreement = data["folding_agreement.csv"]
    median, low, high = claims.median_interval(speedup)

    population = data["population_statistics.csv"]
    largest = population[population.statistics == "population"].n_batches.max()
    population_acc = population[population.n_batches == largest].set_index("seed").test_acc
    moving_acc = population[population.statistics == "moving"].set_index("seed").test_acc
    difference = (population_acc - moving_acc).mean()

    return [
        check("1-output-scale", exact.out_dev.max()),
        check("1-input-gradient", exact.du_dev.max()),
        check("1-weight-gradient", exact.dw_dev.max()),
        check("2-bias-growth", const.b_norm.iloc[-1] / const.b_norm.iloc[0]),
        check("2-bias-linear", np.abs(drift - line).max() / drift[-1]),
        check("2-loss-flat", np.ptp(const.loss) / const.loss.iloc[0]),
        check("2-backprop-still", backprop.b_drift.max() / backprop.b_norm.iloc[0]),
        check("3-bias-gradient", (bias.bias_grad_norm / bias.weight_grad_norm).max()),
        check("3-bias-removed", bias.out_dev.max()),
        *(
            check(
                "4-before-vs-after",
                final[n].get("bn_before", np.nan) - final[n].get("bn_after", np.nan),
                step=n,
            )
            for n in lengths
        ),
        *(
            check(
                "4-before-vs-plain",
                final[n].get("bn_before", np.nan) - final[n].get("plain", np.nan),
                step=n,
            )
            for n in lengths
        ),
        check("5-float32-logits", agreement[agreement.dtype == "float32"].max_abs_diff.max()),
        check("5-float64-logits", agreement[agreement.dtype == "float64"].max_abs_diff.max()),
        check("5-speedup", median, low, high),
        check("6-population-vs-moving", abs(difference), batches=largest),
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
        "activations with a more stable distribution. Measured as: after the same number of "
        "steps, the net with BN before its sigmoids is at least as accurate as with BN after "
        "them (on the next layer's input), and more accurate than without BN.",
        "claim4_bn_position.png",
        "The Figure 1 net trained through the harness (`experiment=figure1`: plain SGD at a "
        "constant rate of 0.1 with no schedule, batches of 60) as `model=mlp`, `model=mlp_bn "
        "model.bn_position=before` (the paper's g(BN(Wu))) and `model=mlp_bn "
        "model.bn_position=after` (BN(g(Wu + b)), hidden biases kept), with the steps and "
        "seeds of the protocol below. Accuracy at a step: the mean over seeds of the test "
        "accuracy logged there. The threshold for 'before >= after' allows 0.005 of seed "
        "noise. The two placements "
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
        "folded and unfolded taking turns in each repeat. The speed-up is the median over the "
        "repeats of each repeat's ratio, time unfolded / time folded, so a slow spell of a "
        "shared machine hits both sides of a ratio, with a distribution-free 95% interval for "
        "that median: from the j-th smallest to the j-th largest ratio, with j from the "
        "binomial distribution (`bnrepro.claims.median_interval`). Its verdict is pass when "
        "the whole interval lies above 1, fail when none of it does, and inconclusive when it "
        "straddles 1.",
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


def command(settings: dict) -> str:
    """The command that makes results with `settings` (the output folder apart)."""
    words = ["python experiments/claims.py run"]
    words += ["--quick"] if settings.get("protocol") == "quick" else []
    return " ".join([*words, *settings.get("overrides", [])])


INTRO = (
    "# The paper's claims, measured",
    "",
    "Regenerated by `make reproduce-claims` (measuring and training) or `make figures`",
    "(drawing only) from the CSV files and provenance.json in this folder; do not edit by",
    "hand. Six claims of Ioffe & Szegedy, *Batch Normalization* (2015, arXiv:1502.03167),",
    "each stated below with the section of the paper it is from, are each a measured number",
    "with a threshold; `claims.csv` holds this table.",
    "",
    "| claim | measured | threshold | verdict | threshold fixed |",
    "|---|---|---|---|---|",
)
# What the README says below the claims table: where the thresholds are kept and how the table
# dates them, and why only claim 5's speed-up is rounded.
THRESHOLDS_AND_ROUNDING = (
    "Each threshold is a file of its own, `configs/thresholds/claims/<key>.yaml` (the claim,",
    "its relation and value, and why that value), read by `bnrepro.experiments.claims`. The",
    "table's last column says, from git, whether that file was committed before the commit",
    "the runs were made from (`provenance.json`): the threshold's commit and date, then the",
    "runs'.",
    "",
    "**What is rounded, and why.** Claim 5's speed-up is a timing, and timings vary from run",
    "to run on one machine (load, caches, clock speed). Its median and the two ends of its",
    f"95% interval are rounded to {SPEEDUP_DIGITS} significant digits, in `claims.csv`, in",
    "this table and in the claim 5 figure, so that a rerun on the same machine shows the",
    "same numbers; its verdict is decided on the unrounded interval, so that it changes only",
    "when the conclusion does. The raw times are in `provenance.json`, with the machine that",
    "measured them. Nothing else is rounded: every other number is deterministic on one kind",
    "of machine (the same code and data give the same bits), `claims.csv` holds it as",
    "computed and this table shows 4 significant digits. On another CPU model float",
    "rounding differs in the last digits, and claim 4's training takes another path from",
    "the first step where it does; `TOLERANCES` in `bnrepro.experiments.claims` says how far",
    "each column of the CSV files may move then.",
)


# What changed in the claims of results/claims/ after results were judged, and what the earlier
# judgements gave: from the history of experiments/claims.py, src/bnrepro/experiments/claims.py
# and results/claims/ in git. Shown for the published protocol only.
HISTORY = (
    "## History of this result",
    "",
    "- The thresholds were first committed on 2026-11-25 (as constants of the driver), in the",
    "  same commit as the first results they judged, and have not changed since; they became",
    "  files of their own on 2026-12-04 (the claims table dates each against this folder's",
    "  runs).",
    "- Claim 4 was first read at the end of 10,000-step runs with seeds 0 and 1 (2026-11-25):",
    "  BN before minus BN after -0.0116, fail; BN before minus no BN +0.0185, pass. Runs of",
    "  50,000 steps with seeds 0, 1 and 2 replaced them the same day: -0.0003, pass; +0.0044,",
    "  pass. Since 2026-11-26 both are read at steps 10,000 and 50,000 of the same runs.",
    "- Claim 5's speed-up was first judged on the median of the repeats' ratios alone, timed",
    "  on an Intel Xeon: 1.08, pass (the 10,000-step net), then 0.91, fail (the 50,000-step",
    "  net), both on 2026-11-25. Since 2026-11-26 it is judged on the 95% interval of that",
    "  median (pass only when all of it lies above 1), timed by the machine that made this",
    "  folder; the timing itself (the two models taking turns in each repeat) is unchanged.",
    "- Claim 5's float32 logit difference has failed its threshold in every run (1.1e-5 and",
    "  2.0e-5 on the Intel Xeon).",
)


def readme(
    table: pd.DataFrame, data: dict[str, pd.DataFrame], settings: dict, train_device: str
) -> str:
    """README.md: the claims table, then each claim with its figure, method and notes, how
    the numbers were made and, for the published protocol, the history of its result."""
    notes = {
        1: scale_notes(data["scale_invariance.csv"]),
        4: position_notes(data["bn_position_curves.csv"], table, settings),
        5: folding_notes(data["folding_agreement.csv"], table, settings),
        6: population_notes(data["population_statistics.csv"]),
    }
    lines = [*INTRO, *claim_rows(table), "", *THRESHOLDS_AND_ROUNDING, ""]
    for number in DESCRIPTIONS:
        lines += claim_section(number, notes.get(number))
    lines += method(settings, train_device)
    if settings.get("protocol") == "published":
        lines += ["", *HISTORY]
    return "\n".join([*lines, ""])


def claim_rows(table: pd.DataFrame) -> list[str]:
    """The claims table's rows, from claims.csv's `table`."""
    return [
        f"| {escape(r.claim)} | "
        f"{r.measured if isinstance(r.measured, str) else f'{r.measured:.4g}'} | "
        f"{r.threshold} | **{r.verdict}** | {r.threshold_fixed} |"
        for r in table.itertuples()
    ]


def claim_section(number: int, notes: list[str] | None) -> list[str]:
    """Claim `number`'s section: the claim, its figure, how it is measured, the `notes` on
    its numbers and the files it is drawn from."""
    title, source, claim, figure, how = DESCRIPTIONS[number]
    files = ", ".join(f"`{name}`" for name in CSV_FILES[number])
    files += " and the timing in `provenance.json`" if number == 5 else ""
    lines = [f"## {number}. {title}", "", f"**Claim** ({source}): {claim}", ""]
    lines += [f"![claim {number}]({figure})", "", how, ""]
    if notes:
        lines += [*notes, ""]
    return [*lines, f"Drawn from {files}.", ""]


def scale_notes(scale: pd.DataFrame) -> list[str]:
    """Claim 1 with the harness's eps: how far from exact the identities are."""
    approx = scale[scale.eps > 0]
    return [
        f"With eps = {approx.eps.max():g} the largest relative deviation is "
        f"{approx[['out_dev', 'du_dev', 'dw_dev']].to_numpy().max():.2g} (at a = "
        f"{approx.a.min():g}): approximate, not exact.",
    ]


def position_notes(curves: pd.DataFrame, table: pd.DataFrame, settings: dict) -> list[str]:
    """Claim 4: why it is read at two steps of the same runs, BN before minus BN after at each
    with its verdict, and each net's accuracy per seed there."""
    judged = dict(zip(table.claim, table.verdict, strict=True))
    short, long = settings["short_steps"], settings["steps"]
    accuracy = pd.merge(
        accuracy_at(curves, short), accuracy_at(curves, long), on=["variant", "seed"]
    )
    means = accuracy.groupby("variant")[["test_acc_x", "test_acc_y"]].mean()
    gap = means.loc["bn_before"] - means.loc["bn_after"]
    label = "{}. test accuracy at step {:,}, BN before minus BN after the sigmoid"
    return [
        f"Both comparisons are read at two steps of the same runs, {short:,} and {long:,}. "
        "With a constant learning rate and no "
        "schedule nothing in a run depends on how long it is meant to last, so the first "
        f"{short:,} steps of the {long:,}-step runs are exactly {short:,}-step runs with "
        "the same seeds (`tests/test_claims.py` checks this byte for byte on short runs). "
        "The verdicts depend on the step because the nets are compared while they are still "
        "learning, at different speeds: which one is ahead, and by how much, changes as "
        f"training goes on (figure). BN before minus BN after is {gap.test_acc_x:+.4f} at "
        f"step {short:,} (**{judged[label.format(4, short)]}**) and "
        f"{gap.test_acc_y:+.4f} at step {long:,} (**{judged[label.format(4, long)]}**). "
        "The paper's Figure 1 reads its nets at step 50,000, the longer reading of the "
        "published protocol; the shorter reading shows how much a verdict owes to the "
        "length of the runs.",
        "",
        f"| net | seed | test accuracy at step {short:,} | at step {long:,} |",
        "|---|---|---|---|",
        *[
            f"| {r.variant} | {r.seed} | {r.test_acc_x:.4f} | {r.test_acc_y:.4f} |"
            for r in accuracy.itertuples()
        ],
    ]


def folding_notes(agreement: pd.DataFrame, table: pd.DataFrame, settings: dict) -> list[str]:
    """Claim 5: folded against unfolded logits per seed and dtype, and the speed-up."""
    speedup = table[table.claim.str.startswith("5. inference speed-up")].iloc[0]
    return [
        "| seed | dtype | max abs. logit difference | max rel. | predictions agreeing |",
        "|---|---|---|---|---|",
        *[
            f"| {r.seed} | {r.dtype} | {r.max_abs_diff:.3g} | {r.max_rel_diff:.3g} | "
            f"{r.prediction_agreement:.4f} |"
            for r in agreement.itertuples()
        ],
        "",
        f"Inference speed-up, time unfolded / time folded: {speedup.measured}, "
        f"**{speedup.verdict}** over {settings['timing_repeats']} repeats. Folding removes "
        "the per-unit BN arithmetic (and the member reshapes around it), which is small "
        "next to the matrix products, so any speed-up is small. The times themselves are in "
        "`provenance.json` (`timing`): they belong to the machine, not to the method.",
    ]


def population_notes(population: pd.DataFrame) -> list[str]:
    """Claim 6: the test accuracy per seed, statistics and batch count."""
    return [
        "| seed | statistics | batches | test accuracy |",
        "|---|---|---|---|",
        *[
            f"| {r.seed} | {r.statistics} | {r.n_batches or '-'} | {r.test_acc:.4f} |"
            for r in population.itertuples()
        ],
    ]


def method(settings: dict, train_device: str) -> list[str]:
    """How the numbers were made: the command, the protocol, and what provenance.json holds."""
    short, long = settings["short_steps"], settings["steps"]
    harness = ", ".join(f"`{o}`" for o in settings.get("harness", [])) or "none"
    return [
        "## How these numbers were made",
        "",
        f"- command: `{command(settings)}`",
        f"- protocol: {settings.get('protocol')}; claim 4 trains {long:,} steps with seeds "
        f"{settings.get('seeds')} on `{train_device}` and is read at steps {short:,} and "
        f"{long:,}; claim 6 averages up to {settings.get('population_batches'):,} batches; "
        f"claim 5 times {settings.get('timing_repeats')} repeats on the CPU; harness overrides "
        f"beyond `experiment=figure1`: {harness}",
        "- `provenance.json` holds what changes from run to run or machine to machine: the "
        "command as typed, the commit, the machine, the date, the wall times, the training "
        "runs' directory and claim 5's times",
    ]


def draw_folding(agreement: pd.DataFrame, speedup: Check, out_dir: Path) -> list[Path]:
    """Claim 5: (a) the inference speed-up and its interval against the threshold, rounded as
    claims.csv shows them, so that the figure holds no timing noise; (b) the largest |logit
    difference| per seed and dtype from `agreement` (seed, dtype, max_abs_diff)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    median, low, high = (
        float(significant(v)) for v in (speedup.measured, speedup.low, speedup.high)
    )
    axes[0].errorbar(
        [0],
        [median],
        yerr=[[median - low], [high - median]],
        fmt="o",
        capsize=6,
        color="tab:red",
        label="median, 95% interval",
    )
    axes[0].axhline(
        speedup.value,
        color="k",
        linestyle="--",
        linewidth=1,
        label=f"threshold: {speedup.threshold.text}",
    )
    axes[0].set_xlim(-1, 1)
    axes[0].margins(y=0.3)  # the interval off the frame, even where it is one rounded value
    axes[0].set_xticks([])
    axes[0].set_ylabel("time unfolded / time folded")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"(a) inference speed-up: {speedup.verdict()}")

    plots.folding_agreement_panel(axes[1], agreement)
    fig.tight_layout()
    return plots.save_figure(fig, out_dir, "claim5_folding")


def load(out_dir: Path) -> tuple[dict[str, pd.DataFrame], dict, dict, pd.Series]:
    """The CSV files (by name), provenance.json, its protocol settings and claim 5's speed-up
    per repeat of `out_dir`, once they are known whole."""
    missing = [name for name in [*COLUMNS, "provenance.json"] if not (out_dir / name).exists()]
    if missing:
        fail(f"{out_dir} lacks {', '.join(missing)}.", DRAW_FIX)
    data = {
        name: read_csv(out_dir / name, columns, DRAW_FIX, OPTIONAL.get(name, ()))
        for name, columns in COLUMNS.items()
    }
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    settings = read_settings(provenance, out_dir / "provenance.json", DRAW_FIX)
    speedup = read_speedup(provenance, out_dir / "provenance.json", DRAW_FIX)
    check_complete(data, settings, out_dir, DRAW_FIX)
    return data, provenance, settings, speedup


def judged(out_dir: Path) -> list[Check]:
    """The Checks of the files in `out_dir`, in claims.csv's order."""
    data, _, settings, speedup = load(out_dir)
    return checks(data, speedup, settings)


def runs_commit(provenance: dict) -> str | None:
    """The commit the runs were made from, as provenance.json records it."""
    record = provenance.get("git")
    return record.get("commit") if isinstance(record, dict) else None


def draw(out_dir: Path) -> None:
    """claims.csv, the figures and README.md from the CSV files and provenance.json in
    `out_dir`, once they are known whole."""
    data, provenance, settings, speedup = load(out_dir)
    found = checks(data, speedup, settings)
    table = pd.DataFrame([c.row(runs_commit(provenance)) for c in found])
    write_csv(out_dir / "claims.csv", table)
    paths = [
        *plots.claim_scale_invariance(data["scale_invariance.csv"], out_dir),
        *plots.claim_stats_backprop(data["stats_backprop.csv"], out_dir),
        *plots.claim_bias_redundancy(data["bias_redundancy.csv"], out_dir),
        *plots.claim_bn_position(data["bn_position_curves.csv"], out_dir),
        *draw_folding(
            data["folding_agreement.csv"], next(c for c in found if c.low is not None), out_dir
        ),
        *plots.claim_population_statistics(data["population_statistics.csv"], out_dir),
    ]
    for path in paths:
        print(f"wrote {path}")
    train_device = provenance.get("train_device", "?")
    atomic_write_text(out_dir / "README.md", readme(table, data, settings, train_device))
    print(f"wrote {out_dir / 'README.md'}")
    print(table.drop(columns="threshold_fixed").to_string(index=False, formatters=[str] * 4))


def run(invocation: Invocation) -> None:
    """Trains claim 4's nets into `--runs`, measures every claim and, once all of it is known
    whole, writes the CSV files and provenance.json into `--out` (the protocol: `--quick`'s
    or the published one)."""
    started = time.time()
    name = "quick" if invocation.quick else "published"
    protocol = PROTOCOLS[name]
    out_dir, runs_dir = invocation.out, invocation.runs
    train_wall_s = train_variants(runs_dir, protocol, invocation.overrides)
    data = collect_variants(runs_dir)
    trained_cfg = OmegaConf.load(runs_dir / FOLDED_VARIANT / "config.yaml")
    train_images, _ = load_mnist(trained_cfg.data.root, "train")
    data |= measure_direct(train_images.flatten(1))
    results, timing = measure_trained(
        runs_dir / FOLDED_VARIANT, protocol.population_batches, protocol.timing_repeats
    )
    data |= results
    settings = {"protocol": name, **dataclasses.asdict(protocol), "overrides": invocation.overrides}
    check_complete(data, settings, out_dir, RUN_FIX)
    check_protocol(invocation)
    for csv_name in COLUMNS:
        write_csv(out_dir / csv_name, data[csv_name])
    record = provenance(
        runs_dir / FOLDED_VARIANT, runs_dir, invocation.command,
        settings=settings, timing=timing_record(timing), train_wall_s=train_wall_s,
        wall_s=round(time.time() - started, 1),
    )  # fmt: skip
    write_json(
        out_dir / "provenance.json", {**record, "train_device": record["hardware"]["device"]}
    )


DRIVER = Driver(
    name="claims",
    doc=__doc__,
    run=run,
    collect=None,  # `run` measures and writes the CSV files itself: there is nothing to gather
    draw=draw,
    tolerances=TOLERANCES,
    timed={"claims.csv": "5. inference speed-up"},
)
