"""Figures 2 and 3 of the paper (Inception and its BN variants, Section 4.2) on a proxy dataset.

    python experiments/figure2.py run [--preset cpu|gpu] [--seeds 0,1] [--jobs 2] [overrides ...]
    python experiments/figure2.py run --quick   # a 1-minute protocol into runs/figure2-quick/
    python experiments/figure2.py collect --runs runs/figure2/<time>   # gather finished runs
    python experiments/figure2.py draw          # redraw from results/figure2/*.csv only

`run` trains the five variants and the two controls of Section 4.2.2 (one run per recipe and
seed) in one Hydra multirun, `python -m bnrepro.train -m experiment=inception,bn_baseline,...
seeds=[0],[1] preset=cpu`, on Fashion-MNIST; a diverging run ends with status `diverged` and
the sweep goes on. It then trains the learning-rate ladder, the stability boundary: plain
Inception (`experiment=inception`) and BN-Inception with the recipe changes (`experiment=bn_x5`)
at x1, x2, x5, x10 and x30 the base learning rate (`recipe.lr_multiplier`), for the sweep's
first seed. The main sweep already holds four rungs (Inception x1 and x5, the BN recipe x5 and
x30); the six others are two more multiruns, one per family, into <sweep dir>/ladder/<family>/,
where a diverged run is a result like any other. `run` collects the logged metrics into
results/figure2/ (curves.csv, summary.csv; ladder.csv, ladder_summary.csv), then does what
`draw` does:
- figure2.png/.pdf: held-out accuracy against steps, like the paper's Figure 2;
- relations.csv: each of the paper's relations as a ratio or difference of the table's
  measures, its 95% interval over the same resamples and its verdict (yes / no / unresolved);
- table.csv: the Figure 3 analogue, steps to reach plain Inception's maximum accuracy, maximum
  accuracy and speed-up of the mean curve over seeds, each with a 95% bootstrap interval over
  seeds and the held-out sample, and the per-seed spread, beside the paper's numbers; the step
  at which each mean curve crosses the target and the margin there; the controls' outcomes;
- seeds.csv: each seed's steps to that target, maximum and final accuracy;
- checks.csv: whether plain Inception's mean curve had plateaued, so that its maximum is a fair
  target;
- ladder_table.csv and ladder.png/.pdf: which rates diverge, which train, and how fast;
- README.md: all of the above, with each of the paper's relations judged yes, no or unresolved.
Its default, the cpu preset, is the protocol of the committed results/figure2/; `--quick` is a
short protocol whose results go to runs/figure2-quick/ (any action: `--out` names another
folder), never over results/.

Intervals: a percentile bootstrap over seeds and over the held-out sample. Each of
BOOTSTRAP_RESAMPLES resamples draws every variant's seeds with replacement, independently per
variant and Inception's too; then it redraws every logged accuracy a of every drawn seed's
curve as Binomial(n, a) / n, n being the held-out images that run evaluated on (summary.csv's
column `eval_images`): a parametric bootstrap of the held-out sample, which says how far an
accuracy measured on n images can be from the accuracy on the distribution they come from.
From these curves it recomputes the mean curves, the target (the resampled Inception's
maximum), each variant's maximum and steps to the target, and the speed-ups; the 2.5th and
97.5th percentiles over resamples are the interval (for steps, the outer evaluated steps, a
resample that never reaches the target counting as never). A resample whose mean curve never
reaches the target has speed-up 0 (`reach_fraction` counts the others). With one seed, the
seeds' draw has nothing to resample and the intervals are those of the held-out sample alone.

The redraw treats every evaluation as an independent sample of n images, but a run evaluates
the same n images (the first n of the test split) at every step, and every run evaluates the
same ones. The error of a fixed sample is shared: between the steps of one curve, and to a
lesser degree between seeds and variants. So the redraw errs (a) wide for the relations,
which compare curves measured on the same images, where a shared error cancels and the
redraw lets it vary; (b) narrow for one accuracy taken alone as the accuracy on the whole
distribution, since an error the seeds share does not average out over them as the redraw
assumes; and (c) upward for every maximum: the best of a redrawn curve is the best of more
noise, so the intervals of the target and of the maxima lean above their points, for
Inception and the variants alike.

Crossing the target: the README and table.csv give the step at which each mean curve first
reaches the target, its mean accuracy there and the margin (that accuracy minus the target),
beside the evaluation noise of a mean over the seeds' curves at that accuracy a, sd =
sqrt(a (1 - a) sum_i 1/n_i) / seeds (sqrt(a (1 - a) / n) / sqrt(seeds) for one n): a margin
under one sd is a marginal crossing, which another held-out sample of the same size could
undo.

The CSV files and README.md hold results only; what changes from one faithful run to the next
(wall times, date, machine, commit, the commands as typed, the runs' directory) is written to
provenance.json alone.

`collect` and `draw` write nothing unless their inputs are whole (bnrepro.tables): every
variant for every seed and every rung of the ladder, each run `completed` (the control
Inception x5 and any rung of the ladder may also be `diverged`), each curve logged to its run's
last step. Otherwise they print one paragraph naming the file or run and the fix, and exit with
status 2.

Extra arguments are Hydra overrides for every run; keys that only the experiment files define
need `++` (e.g. `++log_every=10`), as Hydra checks overrides before applying an experiment.

Presets: the proxy's size and length are configs/preset/<name>.yaml (everything else is the
recipes' configs); the seeds, the processes at a time and the packing are this driver's
PRESETS (`--seeds`, `--jobs` and `--packing` change them). Results go to results/figure2/ for
the cpu preset and to results/figure2_<preset>/ for another.
- cpu: width 1/8, 16x16 inputs, channels-last, 2,000 steps, 3 seeds, 2,000 held-out images
  every 100 steps, two runs at a time on one thread each (two one-thread runs make 1.8x the
  steps of one two-thread run on 2 cores: experiments/bench_inception.py --thread-split); 37
  minutes on this project's 2-core machine, the ladder included (results/figure2/). Plain
  Inception is still rising at its end (checks.csv).
- gpu: width 1/4, 32x32 inputs, 2,000 steps, 3 seeds, all 10,000 held-out images every 200
  steps, four runs at a time on one GPU, the ladder for the first seed.
- gpu_plateau: width 1/8, 32x32 inputs, 10,000 steps (100 of Inception's decays), 3 seeds,
  all 10,000 held-out images every 500 steps, packed: five models on one GPU, one after the
  other, hold every recipe, control and rung of the ladder for every seed as their members.
- cpu_plateau: width 1/8, 16x16 inputs, lr x 0.96 every 60 steps, all 10,000 held-out images
  every 100 steps, each run 180 of its own decays: a campaign of hours on 2 cores, trained by
  `make reproduce-figure2 PRESET=cpu_plateau` (bnrepro.campaign, the plan
  experiments/campaigns/figure2_cpu_plateau.yaml), not by `run`.
- quick (`--quick`): width 1/16, 16x16 inputs, 40 steps, 1 seed, 500 held-out images, two runs
  at a time on one thread each, wandb off: every variant and rung runs, none learns much; it
  exists to check that a rerun reproduces the reference in results/reference/figure2/
  (experiments/verify.py).

Packed (`--packing packed`, bnrepro.train_packed): the runs that share an architecture train
as the members of one model, in one process: `experiment=inception,bn_x5` with
`grid.lr_multiplier=[1,2,5,10,30]` (each family's whole ladder, Inception x1 and x5, BN-x5 and
BN-x30 among its rungs) and `experiment=bn_baseline,bn_x5_sigmoid,inception_sigmoid`, every
seed a member, into <sweep dir>/packs/ladder/ and <sweep dir>/packs/recipes/. `collect` splits
the members into the files a separate sweep gives. Each member trains as its separate run
would, to float rounding (tests/test_train_packed.py).
"""

import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from bnrepro.atomic import atomic_write_text, write_json  # noqa: E402
from bnrepro.driver import (  # noqa: E402
    Driver,
    Invocation,
    Option,
    UsageError,
    device_option,
    draw_fix,
    hydra_list,
    multirun,
    preset_options,
    provenance,
    sweep_fix,
    write_csv,
)
from bnrepro.plots import save_figure  # noqa: E402
from bnrepro.runinfo import stable_command  # noqa: E402
from bnrepro.tables import (  # noqa: E402
    MEASURED,
    check_columns,
    check_curves,
    check_final_steps,
    check_groups,
    check_runs,
    check_unique,
    describe,
    fail,
    listing,
    load_curves,
    load_sweep,
    read_csv,
    read_json,
)
from bnrepro.verdicts import NO_HISTORY, file_at, has_history  # noqa: E402

# The controls first: the diverging one ends early and frees its slot for the next run.
VARIANTS = [
    "inception_x5",
    "inception",
    "bn_baseline",
    "bn_x5",
    "bn_x30",
    "bn_x5_sigmoid",
    "inception_sigmoid",
]
MAIN = ["inception", "bn_baseline", "bn_x5", "bn_x30", "bn_x5_sigmoid"]
CONTROLS = ["inception_x5", "inception_sigmoid"]
LABELS = {
    "inception": "Inception",
    "bn_baseline": "BN-Baseline",
    "bn_x5": "BN-x5",
    "bn_x30": "BN-x30",
    "bn_x5_sigmoid": "BN-x5-Sigmoid",
    "inception_x5": "control: Inception x5",
    "inception_sigmoid": "control: Inception-Sigmoid",
}
STYLES = {
    "inception": {"color": "tab:blue", "linestyle": "-"},
    "bn_baseline": {"color": "tab:orange", "linestyle": "-"},
    "bn_x5": {"color": "tab:green", "linestyle": "-"},
    "bn_x30": {"color": "tab:red", "linestyle": "-"},
    "bn_x5_sigmoid": {"color": "tab:purple", "linestyle": "-"},
    "inception_x5": {"color": "tab:gray", "linestyle": "--"},
    "inception_sigmoid": {"color": "tab:brown", "linestyle": ":"},
}
# Figure 3 of the paper: steps to 72.2% (Inception's maximum) and maximum accuracy on ImageNet.
PAPER = {
    "inception": (31.0e6, 0.722),
    "bn_baseline": (13.3e6, 0.727),
    "bn_x5": (2.1e6, 0.730),
    "bn_x30": (2.7e6, 0.748),
    "bn_x5_sigmoid": (None, 0.698),
}
PAPER_CONTROLS = {
    "inception_x5": "diverged (parameters reached machine infinity)",
    "inception_sigmoid": "never above chance (0.1% on 1000 classes)",
}
# The paper's schedule: GoogLeNet's lr x 0.96 every 8 epochs; plain Inception took 31M steps of
# 32 to its maximum, about 97 of those decays; the recipes decay 6 times faster (change 4).
PAPER_INCEPTION_DECAYS = 97
PAPER_DECAY_SPEEDUP = 6
CHANCE_MARGIN = 0.05  # "at chance": maximum accuracy within 5 points of 1 / classes
# Figure 3's intervals: a percentile bootstrap over seeds and over the held-out sample (see the
# module docstring). The numpy seed is fixed so that a redraw of the same CSV files writes the
# same bytes: the seeds are drawn from BOOTSTRAP_SEED's generator, the held-out samples from
# its first spawned child.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# The images in each dataset's test split (bnrepro.data pins the files by their md5): what one
# evaluation takes when `data.eval_size` is null; otherwise it takes the split's first
# `eval_size`.
TEST_IMAGES = {"mnist": 10_000, "fashion_mnist": 10_000}
INTERVAL = (2.5, 97.5)  # percentiles of the resamples: a 95% interval
# A curve reaches the target once it is within REACH_ROUNDING of it: the target is a mean over
# seeds, which can round an ulp above accuracies that all equal it (0.8 three times: 0.8 + 2e-16).
REACH_ROUNDING = 1e-9
# Inception's maximum is a fair target only once its curve has levelled off: the mean curve's
# best over the last PLATEAU_TAIL of the run's steps may exceed its best before by less than
# PLATEAU_TOLERANCE (held-out accuracy). Otherwise longer training would raise the target and
# every speed-up with it.
PLATEAU_TOLERANCE = 0.005
PLATEAU_TAIL = 0.2
# The learning-rate ladder (the stability boundary): multiples of the base learning rate, for
# two families, each an experiment that `recipe.lr_multiplier` rescales.
LADDER_MULTIPLIERS = (1, 2, 5, 10, 30)
LADDER_FAMILIES = {"inception": "inception", "bn_recipe": "bn_x5"}  # family -> experiment
LADDER_LABELS = {
    "inception": "Inception (no BN)",
    "bn_recipe": "BN-Inception with the recipe changes",
}
# The rungs the main sweep trains anyway, seed for seed: (family, multiplier) -> its variant.
LADDER_REUSED = {
    ("inception", 1): "inception",
    ("inception", 5): "inception_x5",
    ("bn_recipe", 5): "bn_x5",
    ("bn_recipe", 30): "bn_x30",
}
LADDER_DIR = "ladder"  # the ladder's sweeps, inside the main sweep's directory
# The decay arm (the cpu_plateau campaign): BN-x5 with its learning-rate decay sped up 1x and
# 3x besides the recipe's 6x (the main sweep's BN-x5), since the proxy's schedule is our choice
# and the speed-ups may hinge on how fast the recipes decay on it. Its runs sit in DECAY_DIR.
DECAY_DIR = "decay"
DECAY_SPEEDUPS = (1, 3)
DECAY_STATUSES = {"completed", "diverged"}
LADDER_STATUSES = {"completed", "diverged"}  # where training diverges is what the ladder finds


class Preset(NamedTuple):
    """What this driver adds to configs/preset/<name>.yaml (the proxy's size and length): the
    seeds it trains, how many processes train at a time, and whether the runs of one
    architecture train as the packed members of one model (`PACKINGS`)."""

    seeds: tuple[int, ...]
    jobs: int
    packing: str = "separate"


PRESETS = {
    "cpu": Preset((0, 1, 2), 2),
    "gpu": Preset((0, 1, 2), 4),
    "gpu_plateau": Preset((0, 1, 2), 1, "packed"),
    "cpu_plateau": Preset((0, 1, 2), 2),
    "quick": Preset((0,), 2),
}
# separate: one process per recipe and seed, the ladder's own rungs for the first seed only;
# packed: one process per architecture (bnrepro.train_packed), its recipes and seeds the members
# of one model, and the whole ladder for every seed (the rungs are members too). On one GPU a
# packed model takes the step of one run (kernel-bound), so four runs at a time gained nothing
# where a pack of 15 members trains 15.
PACKINGS = ("separate", "packed")
# Presets trained as a campaign (bnrepro.campaign): hours of runs that any stop interrupts and
# the next start resumes, from a plan of run lengths committed before the runs.
CAMPAIGNS = {"cpu_plateau": "experiments/campaigns/figure2_cpu_plateau.yaml"}
PACKS_DIR = "packs"  # the packed sweeps, inside the sweep's directory
# The packed sweeps: name -> (the experiments, one pack each; whether the ladder's rates are
# its members). The ladder's families are packs of every rate and seed; the other recipes have
# architectures of their own (LRN, sigmoid), one pack of their seeds each.
PACKED_SWEEPS = {
    "ladder": (tuple(LADDER_FAMILIES.values()), True),
    "recipes": (("bn_baseline", "bn_x5_sigmoid", "inception_sigmoid"), False),
}
# The groups the experiments select, named so that Hydra can compose the sweep's base.
GROUPS = ["model=inception_proxy", "data=fashion_mnist", "optim=momentum_proxy"]

# The statuses each variant may end with: only the control at 5x Inception's rate may diverge.
ACCEPTED = {variant: {"completed"} for variant in VARIANTS} | {
    "inception_x5": {"completed", "diverged"}
}
METRIC_COLUMNS = {
    "step": "int", "seed": "int", "train_loss": "float", "lr": "float", "test_acc": "float",
}  # fmt: skip
CURVE_COLUMNS = {
    "variant": "str", "seed": "int", "step": "int", "train_loss": "float", "lr": "float",
    "test_acc": "float",
}  # fmt: skip
# eval_images: the held-out images of each evaluation of the run (the n of its accuracies).
SUMMARY_COLUMNS = {
    "variant": "str", "seed": "int", "status": "str", "diverged_at_step": "float", "steps": "int",
    "eval_images": "int",
}  # fmt: skip
LADDER_COLUMNS = {
    "family": "str", "multiplier": "int", "seed": "int", "step": "int", "train_loss": "float",
    "lr": "float", "test_acc": "float",
}  # fmt: skip
# source: the main sweep's variant a reused rung comes from, or "ladder".
LADDER_SUMMARY_COLUMNS = {
    "family": "str", "multiplier": "int", "seed": "int", "source": "str", "status": "str",
    "diverged_at_step": "float", "steps": "int",
}  # fmt: skip
LADDER_KEYS = ["family", "multiplier", "seed"]
# Absolute tolerances (CSV file -> column -> tolerance) within which a rerun on another CPU
# model or on a GPU still reproduces the committed results; every other column must match
# exactly. Training is chaotic here: Inception and BN-x5 rerun with the cpu preset on an AMD
# EPYC started from the same step-0 accuracy as the committed Intel Xeon runs, but their
# training losses differed from step 50 on, by up to 0.088, and their held-out accuracies by
# up to 0.049 (0.011 in maximum accuracy); the learning rates were identical. The tolerances
# allow about 1.25 times those gaps, to every accuracy, to the plateau check's gain (a
# difference of two maxima), to the crossing's margin (an accuracy less a maximum) and to its
# evaluation sd (a function of an accuracy that varies less than it). The step counts and
# speed-ups (steps to the target and their interval, step of the maximum, the speed-ups'
# intervals, the per-seed steps, the fraction of resamples reaching the target) and whether a
# crossing is marginal jump by whole evaluations when a curve moves this much, and a rung of
# the ladder may diverge a few steps earlier or later, so they are not given a tolerance: such
# a rerun reports them as differing. No GPU rerun has been measured.
TOLERANCES: dict[str, dict[str, float]] = {
    "curves.csv": {"train_loss": 0.11, "test_acc": 0.06},
    "table.csv": dict.fromkeys(
        [
            *("max_acc", "max_acc_low", "max_acc_high"),
            *("target_acc", "target_acc_low", "target_acc_high"),
            *("crossing_acc", "crossing_margin", "crossing_sd"),
        ],
        0.06,
    ),
    "seeds.csv": {"max_acc": 0.06, "final_acc": 0.06},
    "checks.csv": {"best_before": 0.06, "best_after": 0.06, "gain": 0.06},
    "ladder.csv": {"train_loss": 0.11, "test_acc": 0.06},
    "ladder_table.csv": {"max_acc": 0.06, "final_acc": 0.06},
}
SWEEP_FIX = sweep_fix("figure2")
DECAY_FIX = (
    "train the decay arm into <sweep dir>/decay/ (the cpu_plateau campaign trains it: `make "
    "reproduce-figure2 PRESET=cpu_plateau`), or collect a sweep without a decay/ folder"
)
LADDER_FIX = (
    "train the learning-rate ladder into <sweep dir>/ladder/ (`python experiments/figure2.py "
    "run` trains it after the main sweep, and prints its two commands), then collect again"
)
DRAW_FIX = draw_fix("figure2")


# ---------------------------------------------------------------- training and collecting


def ladder_rungs(family: str) -> list[int]:
    """The multipliers of `family` that the ladder trains: those the main sweep does not."""
    return [m for m in LADDER_MULTIPLIERS if (family, m) not in LADDER_REUSED]


def rung_name(family: str, multiplier: float) -> str:
    return f"{family}_x{multiplier:g}"


def run(invocation: Invocation) -> None:
    """The main sweep into `--runs`, then the ladder's other rungs for its first seed, one
    multirun per family (Hydra sweeps whole products; the families' rungs differ); or, packed,
    the two sweeps of PACKED_SWEEPS into `--runs`/packs/."""
    seeds, jobs = invocation.seeds, invocation.jobs
    plan = CAMPAIGNS.get(invocation.preset)
    if plan:
        raise UsageError(
            f"--preset {invocation.preset} is trained as a campaign of hours that resumes across "
            "stops, with run lengths fixed in its plan, not as one sweep. Nothing was run or "
            f"written. Fix: `make reproduce-figure2 PRESET={invocation.preset}` (that is, "
            f"`python -m bnrepro.campaign run {plan} --runs <a folder outside the clone>`), "
            "and `make campaign-status` to follow it."
        )
    device = [f"device={invocation.device}"] if invocation.device else []
    common = [f"preset={invocation.preset}", *device, *invocation.overrides]
    if invocation.packing == "packed":
        if len(seeds) < 2:
            raise UsageError(
                f"--packing packed with the one seed {seeds[0]}"
                f"{' of --quick' if invocation.quick else ''} would train the recipes without a "
                "grid as separate runs, which a packed collect does not read. Nothing was run or "
                "written. Fix: give two seeds or more (e.g. --seeds 0,1,2), or --packing separate."
            )
        for name, (experiments, ladder) in PACKED_SWEEPS.items():
            rates = [f"++grid.lr_multiplier={hydra_list(LADDER_MULTIPLIERS)}"] if ladder else []
            multirun(
                [
                    f"experiment={','.join(experiments)}", *GROUPS, f"seeds={hydra_list(seeds)}",
                    *rates, *common,
                ],
                invocation.runs / PACKS_DIR / name, "${model.variant}", jobs,
            )  # fmt: skip
        return
    multirun(
        [
            f"experiment={','.join(VARIANTS)}", *GROUPS,
            f"seeds={','.join(f'[{s}]' for s in seeds)}", *common,
        ],
        invocation.runs, "${model.variant}_seed${seeds[0]}", jobs,
    )  # fmt: skip
    for family, experiment in LADDER_FAMILIES.items():
        multirun(
            [
                f"experiment={experiment}", *GROUPS, f"seeds=[{seeds[0]}]",
                f"recipe.lr_multiplier={','.join(str(m) for m in ladder_rungs(family))}", *common,
            ],
            invocation.runs / LADDER_DIR / family, "x${recipe.lr_multiplier}_seed${seeds[0]}", jobs,
        )  # fmt: skip


def sweep_command(sweep_dir: Path) -> str | None:
    """The command that trained the multirun in `sweep_dir`, from Hydra's multirun.yaml."""
    sweep = sweep_dir / "multirun.yaml"
    if not sweep.exists():
        return None
    overrides = OmegaConf.load(sweep).hydra.overrides
    # Hydra stores the subdir as one job resolved it, and its own mode: not what was typed.
    skip = ("hydra.sweep.subdir", "hydra.mode")
    typed = [o for o in overrides.hydra if not o.startswith(skip)]
    return " ".join(["python -m bnrepro.train -m", *overrides.task, *typed])


def collect_ladder(
    ladder_dir: Path, curves: pd.DataFrame, summary: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ladder's runs under `ladder_dir`, checked whole (every rung it trains, for the same
    seeds, each completed or diverged), and its curves and summary (LADDER_COLUMNS,
    LADDER_SUMMARY_COLUMNS): its own rungs and those of the main sweep (`curves`, `summary`)
    for the same seeds."""
    runs = load_sweep(ladder_dir, LADDER_FIX)
    families = {experiment: family for family, experiment in LADDER_FAMILIES.items()}
    multipliers = runs.get("config.recipe.lr_multiplier", pd.Series(math.nan, index=runs.index))
    runs["variant"] = [
        rung_name(families.get(variant, variant), m)
        for variant, m in zip(runs.variant, multipliers, strict=True)
    ]
    rungs = {rung_name(f, m): (f, m) for f in LADDER_FAMILIES for m in ladder_rungs(f)}
    check_runs(runs, ladder_dir, {rung: LADDER_STATUSES for rung in rungs})
    seeds = sorted(set(runs.seed))
    absent = sorted(set(seeds) - set(summary.seed))
    if absent:
        fail(
            f"The ladder in {ladder_dir} was trained with seed(s) {absent}, which the main "
            "sweep lacks; its other rungs are the main sweep's runs of the same seed.",
            "train the ladder with a seed of the main sweep (`run` uses its first)",
        )
    own = load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    own_summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    family = {rung: f for rung, (f, _) in rungs.items()}
    multiplier = {rung: m for rung, (_, m) in rungs.items()}

    def with_rung(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(
            family=frame.variant.map(family), multiplier=frame.variant.map(multiplier)
        )

    parts = [with_rung(own)]
    summaries = [with_rung(own_summary).assign(source="ladder")]
    for (rung_family, rung_multiplier), variant in LADDER_REUSED.items():
        reused = {"family": rung_family, "multiplier": rung_multiplier}
        parts.append(curves[(curves.variant == variant) & curves.seed.isin(seeds)].assign(**reused))
        rows = summary[(summary.variant == variant) & summary.seed.isin(seeds)]
        summaries.append(rows.assign(source=variant, **reused))
    ladder = pd.concat(parts).sort_values([*LADDER_KEYS, "step"])[list(LADDER_COLUMNS)]
    ladder_summary = pd.concat(summaries).sort_values(LADDER_KEYS)[list(LADDER_SUMMARY_COLUMNS)]
    return runs, ladder, ladder_summary


def decay_variant(speedup: float) -> str:
    return f"bn_x5_decay{speedup:g}"


def run_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's rows (SUMMARY_COLUMNS) of `runs` as `load_sweep` gives them: each run's
    own status and the held-out images of its evaluations, by variant and seed."""
    summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    summary["eval_images"] = [
        held_out_images(data, f"{run_dir}/config.yaml")
        for data, run_dir in zip(run_data(runs), runs.run_dir, strict=True)
    ]
    return summary[list(SUMMARY_COLUMNS)].sort_values(["variant", "seed"])


def collect_decay(decay_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The decay arm's runs under `decay_dir`, checked whole (BN-x5 at each of DECAY_SPEEDUPS
    for the same seeds, each completed or diverged), and its curves and summary (the main
    sweep's CURVE_COLUMNS and SUMMARY_COLUMNS, the variant named by its decay speed-up)."""
    runs = load_sweep(decay_dir, DECAY_FIX)
    runs["variant"] = [decay_variant(s) for s in runs["config.recipe.decay_speedup"]]
    check_runs(runs, decay_dir, {decay_variant(s): DECAY_STATUSES for s in DECAY_SPEEDUPS})
    curves = load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    summary = run_summary(runs)
    return runs, curves[list(CURVE_COLUMNS)], summary


def recorded_preset(run_dirs: Iterable[str]) -> str | None:
    """The preset every run's run.json records among its overrides (`preset=NAME`), None
    where they record none or differ."""
    found = set()
    for run_dir in run_dirs:
        overrides = json.loads((Path(run_dir) / "run.json").read_text()).get("overrides") or []
        found.add(next((o.split("=", 1)[1] for o in overrides if o.startswith("preset=")), None))
    return found.pop() if len(found) == 1 else None


def campaign_record(runs_dir: Path) -> dict:
    """{"campaign": its campaign.json} for the runs (or records) of a campaign
    (bnrepro.campaign: the commit that trained them, the plan file and its sha256, when it
    started); {} for a sweep."""
    path = runs_dir / "campaign.json"
    if not path.exists():
        return {}
    fix = "restore campaign.json from the campaign's runs folder, then collect again"
    return {"campaign": read_json(path, fix)}


def collect(invocation: Invocation) -> None:
    """Writes curves.csv, summary.csv, ladder.csv, ladder_summary.csv and provenance.json of
    the runs under `--runs`, once they are known to be the whole sweep and ladder (every
    variant, seed and rung), finished."""
    runs_dir, out_dir = invocation.runs, invocation.out
    if (runs_dir / PACKS_DIR).is_dir():
        collect_packed(invocation)
        return
    ladder_dir, decay_dir = runs_dir / LADDER_DIR, runs_dir / DECAY_DIR
    runs = load_sweep(runs_dir, SWEEP_FIX, skip=(ladder_dir, decay_dir))
    check_runs(runs, runs_dir, ACCEPTED)
    curves = load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    summary = run_summary(runs)
    ladder_runs, ladder, ladder_summary = collect_ladder(ladder_dir, curves, summary)
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for variant, run_dir in runs.groupby("variant").run_dir.first().items()
    }
    write_csv(out_dir / "curves.csv", curves[list(CURVE_COLUMNS)])
    write_csv(out_dir / "summary.csv", summary)
    write_csv(out_dir / "ladder.csv", ladder)
    write_csv(out_dir / "ladder_summary.csv", ladder_summary)
    wall = {f"{r.variant}_seed{r.seed}": r.wall_s for r in runs.itertuples()}
    wall |= {f"{LADDER_DIR}/{r.variant}_seed{r.seed}": r.wall_s for r in ladder_runs.itertuples()}
    run_dirs = [*runs.run_dir.unique(), *ladder_runs.run_dir.unique()]
    if decay_dir.is_dir():
        decay_runs, decay, decay_summary = collect_decay(decay_dir)
        write_csv(out_dir / "decay.csv", decay)
        write_csv(out_dir / "decay_summary.csv", decay_summary)
        wall |= {f"{DECAY_DIR}/{r.variant}_seed{r.seed}": r.wall_s for r in decay_runs.itertuples()}
        run_dirs += list(decay_runs.run_dir.unique())
    spans = []
    for run_dir in run_dirs:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        start = datetime.strptime(info["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        spans.append((start, start + info["wall_s"]))
    write_json(
        out_dir / "provenance.json",
        provenance(
            runs.run_dir.iloc[0], runs_dir, invocation.command,
            sweep_command=sweep_command(runs_dir),
            ladder_sweep_commands={
                family: sweep_command(ladder_dir / family) for family in LADDER_FAMILIES
            },
            preset=trained_preset(invocation) or recorded_preset(run_dirs),
            **campaign_record(runs_dir),
            sweep_wall_s=round(max(end for _, end in spans) - min(s for s, _ in spans)),
            wall_s=wall,
            config=configs,
        ),
    )  # fmt: skip


def member_roles(experiment: str, multiplier: float) -> tuple[str | None, tuple | None]:
    """What a packed member is: (its variant of the main comparison or None, its (family,
    multiplier) rung of the ladder or None)."""
    families = {e: family for family, e in LADDER_FAMILIES.items()}
    if experiment not in families:
        return experiment, None
    if multiplier not in LADDER_MULTIPLIERS:
        fail(
            f"A pack of {experiment} holds a member at learning-rate multiplier {multiplier}, "
            f"not one of the ladder's {list(LADDER_MULTIPLIERS)}.",
            "train the packs with `python experiments/figure2.py run --packing packed`, which "
            "sets grid.lr_multiplier to the ladder's rates, then collect again",
        )
    rung = (families[experiment], int(multiplier))
    return LADDER_REUSED.get(rung), rung


def check_packs(packs_dir: Path) -> None:
    """Every pack of PACKED_SWEEPS has its folder, <packs_dir>/<sweep>/<experiment>, with its
    run.json: a missing one is named as such, not as the variants it would have held."""
    packs = [
        packs_dir / name / e
        for name, (experiments, _) in PACKED_SWEEPS.items()
        for e in experiments
    ]
    absent = [str(pack) for pack in packs if not (pack / "run.json").is_file()]
    if absent:
        fail(
            f"The packed sweep in {packs_dir} lacks {len(absent)} of its {len(packs)} packs "
            f"(no folder with a run.json): {listing(absent)}.",
            "give --runs the whole sweep that `python experiments/figure2.py run --packing "
            "packed` trained (its packs under <sweep dir>/packs/), or train the missing packs "
            "into it, then collect again",
        )


def collect_packed(invocation: Invocation) -> None:
    """`collect` for a packed sweep (`--runs`/packs/): each pack's members split into the
    files a separate sweep gives (curves.csv and summary.csv of the seven variants, ladder.csv
    and ladder_summary.csv of every rung and seed), once the packs are known whole."""
    runs_dir, out_dir = invocation.runs, invocation.out
    packs_dir = runs_dir / PACKS_DIR
    check_packs(packs_dir)
    runs = load_sweep(packs_dir, SWEEP_FIX)
    problems = [
        f"{r.run_dir}: {r.status}" for r in runs.drop_duplicates("run_dir").itertuples()
        if r.status not in LADDER_STATUSES
    ]  # fmt: skip
    if problems:
        fail(f"The sweep in {packs_dir} is not finished: {listing(problems)}.", SWEEP_FIX)
    multipliers = runs.get("lr_multiplier", pd.Series(math.nan, index=runs.index))
    roles = [member_roles(v, m) for v, m in zip(runs.variant, multipliers, strict=True)]
    runs["main"] = [main for main, _ in roles]
    runs["rung"] = [rung for _, rung in roles]
    diverged = runs.seed_status == "diverged"
    runs["steps"] = runs.diverged_at_step.where(diverged, runs.steps).astype(int)
    runs["eval_images"] = [
        held_out_images(data, f"{run_dir}/config.yaml")
        for data, run_dir in zip(run_data(runs), runs.run_dir, strict=True)
    ]
    columns = {"step": "int", "member": "int", "seed": "int"} | {
        k: v for k, v in METRIC_COLUMNS.items() if k not in ("step", "seed")
    }
    metrics = []
    for run_dir, members in runs.groupby("run_dir", sort=True):
        path = Path(run_dir) / "metrics.csv"
        fix = f"resume or rerun the pack in {run_dir}, then collect again"
        frame = read_csv(path, columns, fix, ("train_loss", "test_acc"), MEASURED)
        check_groups(frame, path, ["member"], [(m,) for m in members.member], fix)
        check_unique(frame, path, ["member", "step"], fix)
        check_final_steps(frame, path, ["member"], members.set_index("member").steps, fix)
        metrics.append(frame.merge(members[["member", "main", "rung"]], on="member"))
    metrics = pd.concat(metrics, ignore_index=True)
    runs = runs.rename(columns={"main": "variant_main"})
    summary = runs.dropna(subset=["variant_main"]).drop(columns=["variant", "status"])
    summary = summary.rename(columns={"variant_main": "variant", "seed_status": "status"})
    summary = summary[list(SUMMARY_COLUMNS)].sort_values(["variant", "seed"])
    curves = metrics.dropna(subset=["main"]).rename(columns={"main": "variant"})
    curves = curves[list(CURVE_COLUMNS)].sort_values(["variant", "seed", "step"])
    check_curves(
        curves, out_dir / "curves.csv", summary, out_dir / "summary.csv", ACCEPTED, SWEEP_FIX
    )
    rungs = runs.dropna(subset=["rung"]).rename(columns={"seed_status": "rung_status"})
    ladder_summary = pd.DataFrame(
        {
            "family": [f for f, _ in rungs.rung],
            "multiplier": [m for _, m in rungs.rung],
            "seed": rungs.seed,
            "source": [v if isinstance(v, str) else "ladder" for v in rungs.variant_main],
            "status": rungs.rung_status,
            "diverged_at_step": rungs.diverged_at_step,
            "steps": rungs.steps,
        }
    ).sort_values(LADDER_KEYS)
    on_ladder = metrics.dropna(subset=["rung"])
    ladder = on_ladder.assign(
        family=[f for f, _ in on_ladder.rung], multiplier=[m for _, m in on_ladder.rung]
    ).sort_values([*LADDER_KEYS, "step"])[list(LADDER_COLUMNS)]
    check_ladder(ladder, out_dir / "ladder.csv", ladder_summary, out_dir / "ladder_summary.csv")
    write_csv(out_dir / "curves.csv", curves)
    write_csv(out_dir / "summary.csv", summary)
    write_csv(out_dir / "ladder.csv", ladder)
    write_csv(out_dir / "ladder_summary.csv", ladder_summary)
    packs = runs.drop_duplicates("run_dir")
    spans = []
    for run_dir in packs.run_dir:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        start = datetime.strptime(info["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        spans.append((start, start + info["wall_s"]))
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for variant, run_dir in zip(packs.variant, packs.run_dir, strict=True)
    }
    write_json(
        out_dir / "provenance.json",
        provenance(
            packs.run_dir.iloc[0], runs_dir, invocation.command,
            packing="packed",
            pack_sweep_commands={
                name: sweep_command(packs_dir / name) for name in PACKED_SWEEPS
            },
            preset=trained_preset(invocation),
            sweep_wall_s=round(max(end for _, end in spans) - min(s for s, _ in spans)),
            wall_s={f"{PACKS_DIR}/{r.variant}": r.wall_s for r in packs.itertuples()},
            members={r.variant: int((runs.run_dir == r.run_dir).sum()) for r in packs.itertuples()},
            config=configs,
        ),
    )  # fmt: skip


def run_data(runs: pd.DataFrame) -> list[dict]:
    """The `data.name` and `data.eval_size` of each run of `runs` (as `load_sweep` gives them,
    its config flattened), None where its config has no such key."""
    columns = {key: f"config.data.{key}" for key in ("name", "eval_size")}
    values = {
        key: runs[column] if column in runs else pd.Series(None, index=runs.index)
        for key, column in columns.items()
    }
    return [
        {key: None if pd.isna(value) else value for key, value in zip(values, row, strict=True)}
        for row in zip(*values.values(), strict=True)
    ]


def held_out_images(data: dict, source: str) -> int:
    """The held-out images of each evaluation of a run whose data config is `data` (its
    `name` and `eval_size`, read from `source`): the first `eval_size` of the test split, or
    all of it where `eval_size` is null."""
    name, size = data.get("name"), data.get("eval_size")
    if name not in TEST_IMAGES:
        fail(
            f"{source} names the dataset {name!r}, not one whose test split this driver knows "
            f"({', '.join(TEST_IMAGES)}), so the held-out images of its evaluations are unknown.",
            "train the sweep on one of those datasets (`python experiments/figure2.py run`)",
        )
    whole = TEST_IMAGES[name]
    return whole if size is None else min(int(size), whole)


def trained_preset(invocation: Invocation) -> str | None:
    """The preset the runs were trained with as far as the command says: `run`'s, or quick
    for `collect --quick`; None (the README's "not recorded") for other runs collected."""
    return invocation.preset if invocation.action == "run" or invocation.quick else None


# ---------------------------------------------------------------- Figure 3 with intervals


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy per variant and step, mean over seeds (steps every seed reached)."""
    accuracy = curves.dropna(subset=["test_acc"])
    seeds = curves.groupby("variant").seed.nunique()
    grouped = accuracy.groupby(["variant", "step"]).test_acc.agg(["mean", "min", "max", "count"])
    grouped = grouped.reset_index()
    return grouped[grouped["count"] == grouped.variant.map(seeds)]


def accuracy_matrix(curves: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps at which every seed of `variant` was evaluated (a diverged seed stops early),
    and the held-out accuracies there: one row per seed, in the order of the seeds."""
    wide = curves[curves.variant == variant].pivot(index="seed", columns="step", values="test_acc")
    wide = wide.dropna(axis=1)
    return wide.columns.to_numpy(), wide.to_numpy()


def resampled_means(accuracy: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One mean curve per row of `picks`, over the rows (seeds) of `accuracy` it names. The
    point estimate is the row of every seed once: one code path for it and the resamples, so
    that identical seeds give an interval equal to the point, to the last bit."""
    return accuracy[picks].mean(axis=1)


def point_means(accuracy: np.ndarray) -> np.ndarray:
    return resampled_means(accuracy, np.arange(len(accuracy))[None, :])


def bootstrap_means(
    accuracy: dict[str, np.ndarray], resamples: int, images: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """`resamples` mean curves per variant, each over the variant's seeds drawn with replacement,
    independently per variant, from a generator seeded with BOOTSTRAP_SEED (the variants in
    the order of `accuracy`, so the same inputs draw the same resamples). Given `images`
    (variant -> the held-out images of each seed's evaluations, in the order of the rows of
    `accuracy`), every accuracy a of a drawn seed is then redrawn as Binomial(n, a) / n from
    the generator's first spawned child; without it, the seeds alone are resampled."""
    seeds = np.random.SeedSequence(BOOTSTRAP_SEED)
    rng, redraw = np.random.default_rng(seeds), np.random.default_rng(seeds.spawn(1)[0])
    picks = {
        variant: rng.integers(0, len(rows), (resamples, len(rows)))
        for variant, rows in accuracy.items()
    }
    if images is None:
        return {variant: resampled_means(accuracy[variant], p) for variant, p in picks.items()}
    means = {}
    for variant, p in picks.items():
        n = images[variant][p][:, :, None]
        means[variant] = (redraw.binomial(n, accuracy[variant][p]) / n).mean(axis=1)
    return means


def evaluation_sd(accuracy: float, images: np.ndarray) -> float:
    """The standard deviation, from the held-out sample alone, of a mean over seeds of
    accuracies near `accuracy`, the seeds evaluated on `images` held-out images each:
    sqrt(a (1 - a) sum_i 1 / n_i) / seeds, each seed's accuracy a binomial proportion."""
    return math.sqrt(accuracy * (1 - accuracy) * np.sum(1 / images)) / len(images)


def first_reaching(means: np.ndarray, steps: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each row of `means` (curves at `steps`), the first step at which it reaches the
    row's `target`; NaN where it never does."""
    if not steps.size:
        return np.full(len(means), math.nan)
    reached = means >= target[:, None] - REACH_ROUNDING
    return np.where(reached.any(axis=1), steps[reached.argmax(axis=1)], math.nan)


def measures(
    means: dict[str, np.ndarray], steps: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """The target and, per variant, steps to it, speed-up and maximum of mean curves. `means`
    holds one curve per row for each variant (at its `steps`), row i of every variant drawn
    together (the point estimate: one row; the bootstrap: a row per resample); row i's target
    is Inception's maximum in row i. Speed-up: Inception's steps over the variant's, 0 where
    the variant never reaches the target, NaN where either is at it from step 0 (before any
    training: toy protocols only)."""
    target = means["inception"].max(axis=1)
    baseline = first_reaching(means["inception"], steps["inception"], target)
    found = {}
    for variant, curves in means.items():
        reached = first_reaching(curves, steps[variant], target)
        with np.errstate(divide="ignore", invalid="ignore"):
            speedup = np.where(np.isnan(reached), 0.0, baseline / reached)
        speedup[(baseline == 0) | (reached == 0)] = math.nan
        best = curves.max(axis=1) if steps[variant].size else np.full(len(curves), math.nan)
        found[variant] = {"steps": reached, "speedup": speedup, "max": best}
    return target, found


def interval(values: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of `values`, NaN left out; (NaN, NaN) when nothing is left."""
    kept = values[~np.isnan(values)]
    if not kept.size:
        return math.nan, math.nan
    low, high = np.percentile(kept, INTERVAL)
    return float(low), float(high)


def steps_interval(steps: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of resampled steps to the target, NaN (never reached) counted
    as infinitely many steps: each end is an evaluated step (the outer one where a percentile
    falls between two), inf where it falls among resamples that never reach the target."""
    values = np.where(np.isnan(steps), math.inf, steps)
    low = np.percentile(values, INTERVAL[0], method="lower")
    high = np.percentile(values, INTERVAL[1], method="higher")
    return float(low), float(high)


def against_target(curve: pd.DataFrame, target: float) -> dict:
    """One run's held-out accuracy (`curve`: step, test_acc, evaluated rows in step order)
    against `target`: the first step at which it reaches it (NaN: never), its maximum and
    the step of it, and its last accuracy (a diverged run's last before it diverged)."""
    reached = curve.step[curve.test_acc >= target - REACH_ROUNDING]
    return {
        "steps_to_target": float(reached.min()) if len(reached) else math.nan,
        "max_acc": curve.test_acc.max(),
        "step_of_max": curve.step[curve.test_acc.idxmax()],
        "final_acc": curve.test_acc.iloc[-1],
    }


def per_seed(curves: pd.DataFrame, summary: pd.DataFrame, target: float) -> pd.DataFrame:
    """seeds.csv: every run's own curve against the target of the table (the maximum of
    Inception's mean curve), in the order of VARIANTS and seeds."""
    accuracy = curves.dropna(subset=["test_acc"]).sort_values("step")
    runs = summary.assign(order=summary.variant.map(VARIANTS.index))
    rows = []
    for r in runs.sort_values(["order", "seed"]).itertuples():
        curve = accuracy[(accuracy.variant == r.variant) & (accuracy.seed == r.seed)]
        rows.append(
            {"variant": r.variant, "seed": r.seed, "status": r.status}
            | against_target(curve, target)
        )
    return pd.DataFrame(rows)


def seed_images(summary: pd.DataFrame, variant: str, seeds) -> np.ndarray:
    """The held-out images of each evaluation of `variant`'s runs with `seeds`, in that order."""
    return summary.set_index(["variant", "seed"]).eval_images.loc[variant].loc[seeds].to_numpy()


def crossing(
    mean: np.ndarray, steps: np.ndarray, step: float, target: float, images: np.ndarray
) -> dict:
    """Where a mean curve (`mean` at `steps`) first reaches `target`, at `step` (NaN: never):
    its accuracy there, the margin (that accuracy less the target; 0 within REACH_ROUNDING),
    the evaluation sd of a mean over seeds evaluated on `images` each at that accuracy, and
    whether the margin is under one sd (a marginal crossing)."""
    if math.isnan(step):
        return dict.fromkeys(["crossing_acc", "crossing_margin", "crossing_sd"], math.nan) | {
            "crossing_marginal": None
        }
    accuracy = float(mean[steps == step][0])
    margin = accuracy - target
    margin = 0.0 if abs(margin) <= REACH_ROUNDING else margin
    sd = evaluation_sd(accuracy, images)
    return {
        "crossing_acc": accuracy,
        "crossing_margin": margin,
        "crossing_sd": sd,
        "crossing_marginal": bool(margin < sd),
    }


class Draws(NamedTuple):
    """The mean curves of every variant and what `measures` makes of them: the point (one row)
    and the bootstrap (a row per resample, every variant's row i drawn together)."""

    steps: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    target: np.ndarray
    point: dict[str, dict[str, np.ndarray]]
    targets: np.ndarray
    resampled: dict[str, dict[str, np.ndarray]]


def draws(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    evaluation_noise: bool = True,
    variants: Sequence[str] = VARIANTS,
) -> Draws:
    """The point estimates and BOOTSTRAP_RESAMPLES resamples of `variants` (plain Inception's
    maximum the target) over seeds and (with `evaluation_noise`) over the held-out sample of
    each evaluation (`summary`'s `eval_images`); the same inputs draw the same resamples."""
    matrices = {variant: accuracy_matrix(curves, variant) for variant in variants}
    steps = {variant: s for variant, (s, _) in matrices.items()}
    accuracy = {variant: a for variant, (_, a) in matrices.items()}
    images = {
        variant: seed_images(summary, variant, sorted(set(curves.seed[curves.variant == variant])))
        for variant in variants
    }
    means = {variant: point_means(a) for variant, a in accuracy.items()}
    target, point = measures(means, steps)
    drawn = bootstrap_means(accuracy, BOOTSTRAP_RESAMPLES, images if evaluation_noise else None)
    targets, resampled = measures(drawn, steps)
    return Draws(steps, images, means, target, point, targets, resampled)


def table(
    curves: pd.DataFrame, summary: pd.DataFrame, num_classes: int, evaluation_noise: bool = True
) -> pd.DataFrame:
    """Figure 3's table on the proxy (table.csv): steps to Inception's maximum, maximum
    accuracy and speed-up of the mean curves over seeds, their bootstrap intervals (`draws`),
    where and by how much each mean curve crosses the target, and the spread of the seeds' own
    steps to the target."""
    steps, images, means, target, point, targets, resampled = draws(
        curves, summary, evaluation_noise
    )
    target = float(target[0])
    target_low, target_high = interval(targets)
    seeds = per_seed(curves, summary, target)
    rows = []
    for variant in VARIANTS:
        runs = summary[summary.variant == variant]
        diverged = runs[runs.status == "diverged"]
        reached = seeds[seeds.variant == variant].steps_to_target.dropna()
        ours, spread, mean = point[variant], resampled[variant], means[variant][0]
        speedup = ours["speedup"][0] if variant in MAIN else math.nan
        speedup_low, speedup_high = (
            interval(spread["speedup"]) if variant in MAIN else (math.nan,) * 2
        )
        steps_low, steps_high = steps_interval(spread["steps"])
        max_low, max_high = interval(spread["max"])
        paper_steps, paper_max = PAPER.get(variant, (None, None))
        rows.append(
            {
                "variant": variant,
                "seeds": len(runs),
                "status": "diverged" if len(diverged) else ",".join(sorted(set(runs.status))),
                "diverged_seeds": len(diverged),
                "diverged_at_step": diverged.diverged_at_step.min() if len(diverged) else None,
                "steps_to_target": ours["steps"][0],
                "steps_to_target_low": steps_low,
                "steps_to_target_high": steps_high,
                **crossing(mean, steps[variant], ours["steps"][0], target, images[variant]),
                "seeds_reaching": len(reached),
                "seed_steps_min": reached.min() if len(reached) else None,
                "seed_steps_max": reached.max() if len(reached) == len(runs) else None,
                "max_acc": ours["max"][0],
                "max_acc_low": max_low,
                "max_acc_high": max_high,
                "step_of_max": steps[variant][mean.argmax()] if mean.size else None,
                "speedup": math.nan if np.isnan(ours["steps"][0]) else speedup,
                "speedup_low": speedup_low,
                "speedup_high": speedup_high,
                "reach_fraction": float(np.mean(~np.isnan(spread["steps"]))),
                "target_acc": target,
                "target_acc_low": target_low,
                "target_acc_high": target_high,
                "chance_acc": 1 / num_classes,
                "paper_steps_to_target": paper_steps,
                "paper_max_acc": paper_max,
                "paper_speedup": PAPER["inception"][0] / paper_steps if paper_steps else None,
            }
        )
    return pd.DataFrame(rows)


def decay_table(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    decay: pd.DataFrame,
    decay_summary: pd.DataFrame,
    evaluation_noise: bool = True,
) -> pd.DataFrame:
    """decay_table.csv: BN-x5 at each decay speed-up (the decay arm's and the recipe's 6x),
    against plain Inception's maximum: steps to it, maximum accuracy, and the ratio
    steps(Inception) / steps(BN-x5) judged by the relations' rule (`relations`), each with
    its 95% interval over resamples of these variants."""
    arm = [decay_variant(s) for s in DECAY_SPEEDUPS]
    main = ["inception", "bn_x5"]
    found = draws(
        pd.concat([curves[curves.variant.isin(main)], decay]),
        pd.concat([summary[summary.variant.isin(main)], decay_summary]),
        evaluation_noise,
        variants=["inception", *arm, "bn_x5"],
    )
    rows = []
    for variant, speedup in [*zip(arm, DECAY_SPEEDUPS, strict=True), ("bn_x5", 6)]:
        point, spread = found.point[variant], found.resampled[variant]
        ratio = step_ratio(found.point["inception"]["steps"], point["steps"])[0]
        low, high = outer_interval(
            step_ratio(found.resampled["inception"]["steps"], spread["steps"])
        )
        steps_low, steps_high = steps_interval(spread["steps"])
        max_low, max_high = interval(spread["max"])
        rows.append(
            {"decay_speedup": speedup, "variant": variant, "seeds": len(found.images[variant]),
             "steps_to_target": point["steps"][0], "steps_to_target_low": steps_low,
             "steps_to_target_high": steps_high, "max_acc": point["max"][0],
             "max_acc_low": max_low, "max_acc_high": max_high, "ratio": float(ratio),
             "ratio_low": low, "ratio_high": high, "verdict": side(low, high, 1.0),
             "target_acc": float(found.target[0])}
        )  # fmt: skip
    return pd.DataFrame(rows)


def plateau(curves: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """checks.csv: whether plain Inception had levelled off, its mean curve (the first row)
    and each seed's own: its best over the last PLATEAU_TAIL of the run's steps exceeding its
    best before by less than PLATEAU_TOLERANCE, and the step of its maximum."""
    steps, accuracy = accuracy_matrix(curves, "inception")
    seeds = sorted(set(curves.seed[curves.variant == "inception"]))
    cutoff = (1 - PLATEAU_TAIL) * summary[summary.variant == "inception"].steps.max()
    rows = []
    for curve, values in [("mean", point_means(accuracy)[0])] + [
        (f"seed {seed}", accuracy[i]) for i, seed in enumerate(seeds)
    ]:
        before, after = values[steps < cutoff].max(), values[steps >= cutoff].max()
        rows.append(
            {
                "check": "inception_plateau",
                "curve": curve,
                "cutoff_step": cutoff,
                "best_before": before,
                "best_after": after,
                "gain": after - before,
                "tolerance": PLATEAU_TOLERANCE,
                "step_of_max": steps[values.argmax()],
                "plateaued": bool(after - before < PLATEAU_TOLERANCE),
            }
        )
    return pd.DataFrame(rows)


def ladder_table(
    ladder: pd.DataFrame, ladder_summary: pd.DataFrame, target: float, inception_steps: float
) -> pd.DataFrame:
    """ladder_table.csv: per rung of the ladder, how it ended, its held-out accuracy against
    the table's target (plain Inception's maximum) and its speed-up over Inception's mean
    curve (`inception_steps` to the target)."""
    accuracy = ladder.dropna(subset=["test_acc"]).sort_values("step")
    rows = []
    for r in ladder_summary.sort_values(LADDER_KEYS).itertuples(index=False):
        rung = (accuracy.family == r.family) & (accuracy.multiplier == r.multiplier)
        found = against_target(accuracy[rung & (accuracy.seed == r.seed)], target)
        steps = found["steps_to_target"]
        speedup = inception_steps / steps if steps and inception_steps else math.nan
        rows.append(r._asdict() | found | {"speedup": speedup})
    return pd.DataFrame(rows)


def figure2(curves: pd.DataFrame, results: pd.DataFrame, out_dir: Path) -> list[Path]:
    """(a) held-out accuracy of every run against steps, mean over seeds with a min-max band;
    (b) the same near the top for the five variants, with Inception's maximum as the target."""
    means = mean_curves(curves)
    target = results.target_acc.iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, variants in zip(axes, (VARIANTS, MAIN), strict=True):
        for variant in variants:
            curve = means[means.variant == variant]
            if curve.empty:
                continue
            seeds = curves[curves.variant == variant].seed.nunique()
            label = f"{LABELS[variant]} ({seeds} seed{'s' * (seeds > 1)})"
            ax.plot(curve.step, curve["mean"], label=label, **STYLES[variant])
            if seeds > 1:
                ax.fill_between(
                    curve.step,
                    curve["min"],
                    curve["max"],
                    color=STYLES[variant]["color"],
                    alpha=0.15,
                )
            row = results[results.variant == variant].iloc[0]
            if row.status == "diverged":
                ax.plot(curve.step.iloc[-1], curve["mean"].iloc[-1], "x", color="k", markersize=8)
            if variant in MAIN and not pd.isna(row.steps_to_target):
                ax.plot(row.steps_to_target, target, "o", color=STYLES[variant]["color"])
        ax.axhline(target, color="k", linewidth=0.8, linestyle=":")
        ax.set_xlabel("training steps")
        ax.set_ylabel("held-out accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("(a) every run (x: diverged)")
    axes[0].legend(loc="center right", fontsize=8)
    top = means[means.variant.isin(MAIN)]["mean"].max()
    axes[1].set_ylim(max(0.0, target - 0.15), min(1.0, top + 0.02))
    axes[1].set_title(f"(b) the five variants; dotted: Inception's max {target:.3f}")
    fig.tight_layout()
    return save_figure(fig, out_dir, "figure2")


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt(value, spec: str, suffix: str = "", none: str = "—") -> str:
    """`value` formatted with `spec` and `suffix`, or `none` when it is missing (None, NaN, inf)."""
    return none if missing(value) else f"{value:{spec}}{suffix}"


def with_interval(point, low, high, spec: str) -> str:
    """`point [low, high]`, each formatted with `spec`."""
    return f"{fmt(point, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"


def speedup_text(r) -> str:
    """A row's speed-up and its interval: "not reached" where the mean curve never reaches
    the target, "—" where the speed-up is undefined (at the target from step 0)."""
    point = "not reached" if missing(r.steps_to_target) else fmt(r.speedup, ".1f", "x")
    return f"{point} [{fmt(r.speedup_low, '.1f', 'x')}, {fmt(r.speedup_high, '.1f', 'x')}]"


YES, NO, UNRESOLVED = "yes", "no", "unresolved"
# The relations of Section 4.2.2, each judged by one rule (experiments/campaigns/
# figure2_cpu_plateau.yaml states it before the runs): the 95% bootstrap interval of the
# relation's own ratio or difference against its null value. A relation of two quantities
# holds when both do. (relation, quantity, kind, numerator, denominator or None)
RELATIONS = [
    ("BN-Baseline reaches the target in fewer steps than Inception",
     "steps(Inception) / steps(BN-Baseline)", "ratio", "inception", "bn_baseline"),
    ("BN-x5 reaches it in far fewer steps: fewer than BN-Baseline and than Inception",
     "steps(BN-Baseline) / steps(BN-x5)", "ratio", "bn_baseline", "bn_x5"),
    ("BN-x5 reaches it in far fewer steps: fewer than BN-Baseline and than Inception",
     "steps(Inception) / steps(BN-x5)", "ratio", "inception", "bn_x5"),
    ("BN-x30 reaches it in fewer steps than Inception",
     "steps(Inception) / steps(BN-x30)", "ratio", "inception", "bn_x30"),
    ("BN-x30 is slower to it than BN-x5",
     "steps(BN-x30) / steps(BN-x5)", "ratio", "bn_x30", "bn_x5"),
    ("BN-x30 ends with the highest maximum accuracy of the five",
     "max(BN-x30) - max(best other of the five)", "highest", "bn_x30", None),
    ("BN-x5-Sigmoid trains (maximum well above chance)",
     "max(BN-x5-Sigmoid) - (chance + margin)", "above chance", "bn_x5_sigmoid", None),
    ("Inception-Sigmoid stays at chance (control)",
     "(chance + margin) - max(Inception-Sigmoid)", "at chance", "inception_sigmoid", None),
]  # fmt: skip
RELATION_COLUMNS = {
    "relation": "str", "quantity": "str", "kind": "str", "point": "float", "low": "float",
    "high": "float", "null": "float", "verdict": "str",
}  # fmt: skip


def step_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator of steps to the target, NaN (never reached) counting as
    infinitely many steps: never / never is a tie (1), as is 0 / 0."""
    a = np.where(np.isnan(numerator), math.inf, numerator)
    b = np.where(np.isnan(denominator), math.inf, denominator)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    return np.where(np.isnan(ratio), 1.0, ratio)


def outer_interval(values: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of `values`, each the outer of the two values it falls
    between (no interpolation, so that infinite values stay infinite)."""
    low = np.percentile(values, INTERVAL[0], method="lower")
    high = np.percentile(values, INTERVAL[1], method="higher")
    return float(low), float(high)


def relations(
    curves: pd.DataFrame, summary: pd.DataFrame, num_classes: int, evaluation_noise: bool = True
) -> pd.DataFrame:
    """relations.csv: each relation's quantity at the point and its 95% interval over the same
    resamples as table.csv's (`draws`), and its verdict by `side` against the null value
    (yes: the interval wholly above it)."""
    found = draws(curves, summary, evaluation_noise)
    threshold = 1 / num_classes + CHANCE_MARGIN
    rows = []
    for relation, quantity, kind, first, second in RELATIONS:
        values = []
        for measured in (found.point, found.resampled):
            if kind == "ratio":
                values.append(step_ratio(measured[first]["steps"], measured[second]["steps"]))
            elif kind == "highest":
                others = [measured[v]["max"] for v in MAIN if v != first]
                values.append(measured[first]["max"] - np.max(others, axis=0))
            elif kind == "above chance":
                values.append(measured[first]["max"] - threshold)
            else:
                values.append(threshold - measured[first]["max"])
        null = 1.0 if kind == "ratio" else 0.0
        low, high = outer_interval(values[1])
        rows.append(
            {"relation": relation, "quantity": quantity, "kind": kind,
             "point": float(values[0][0]), "low": low, "high": high, "null": null,
             "verdict": side(low, high, null)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def side(low: float, high: float, threshold: float, above: bool = True) -> str:
    """yes when the interval [low, high] lies entirely on the claimed side of `threshold`
    (above it; below it where not `above`), no when it lies entirely on the other side (a
    tie counts as the other side), unresolved when it straddles `threshold` or is missing."""
    if above:
        return YES if low > threshold else NO if high <= threshold else UNRESOLVED
    return YES if high < threshold else NO if low >= threshold else UNRESOLVED


def relation_value(value: float, kind: str) -> str:
    """A ratio as 2.50x (inf: the numerator never reaches the target), a difference as +0.0123."""
    if kind == "ratio":
        return "inf" if value == math.inf else f"{value:.2f}x"
    return f"{value:+.4f}"


def verdicts(results: pd.DataFrame, found: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """The paper's relations (Section 4.2.2), each judged on the proxy by the interval of its
    own quantity (`found`: relations.csv), and the control Inception x5 by its seeds (table.csv):
    (relation, paper, ours, yes / no / unresolved)."""
    row = {r.variant: r for r in results.itertuples()}

    def paper_speedup(v: str) -> str:
        return f"{PAPER['inception'][0] / PAPER[v][0]:.1f}x"

    paper = {
        RELATIONS[0][0]: paper_speedup("bn_baseline"),
        RELATIONS[1][0]: f"{paper_speedup('bn_x5')} vs {paper_speedup('bn_baseline')}",
        RELATIONS[3][0]: paper_speedup("bn_x30"),
        RELATIONS[4][0]: f"{paper_speedup('bn_x30')} vs {paper_speedup('bn_x5')}",
        RELATIONS[5][0]: f"{PAPER['bn_x30'][1]:.1%} vs {PAPER['bn_x5'][1]:.1%} (BN-x5)",
        RELATIONS[6][0]: f"{PAPER['bn_x5_sigmoid'][1]:.1%}",
        RELATIONS[7][0]: "never above chance (0.1%)",
    }
    claims = []
    for relation, rows in found.groupby("relation", sort=False):
        ours = "; ".join(
            f"{r.quantity} = {relation_value(r.point, r.kind)} "
            f"[{relation_value(r.low, r.kind)}, {relation_value(r.high, r.kind)}]"
            for r in rows.itertuples()
        )
        verdict = (
            NO if NO in set(rows.verdict) else YES if set(rows.verdict) == {YES} else UNRESOLVED
        )
        claims.append((relation, paper[relation], ours, verdict))
    r = row["inception_x5"]
    ours = f"{r.diverged_seeds} of {r.seeds} seeds diverged" + (
        f", the first at step {r.diverged_at_step:,.0f}" if r.diverged_seeds else ""
    )
    diverges = YES if r.diverged_seeds == r.seeds else NO if not r.diverged_seeds else UNRESOLVED
    claims.append(("Inception at 5x its rate diverges (control)", "diverged", ours, diverges))
    return claims


def ladder_figure(
    ladder: pd.DataFrame, rungs: pd.DataFrame, target: float, out_dir: Path
) -> list[Path]:
    """Held-out accuracy against steps for every rung of the ladder, one panel per family,
    one colour per learning-rate multiplier (every seed's curve in it, one legend entry per
    rung and outcome); x: the last evaluation of a diverged run."""
    colors = dict(zip(LADDER_MULTIPLIERS, plt.cm.viridis(np.linspace(0, 0.9, 5)), strict=True))
    accuracy = ladder.dropna(subset=["test_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (letter, family) in zip(axes, enumerate(LADDER_FAMILIES), strict=True):
        labelled = set()
        for r in rungs[rungs.family == family].itertuples():
            run = (accuracy.family == family) & (accuracy.multiplier == r.multiplier)
            curve = accuracy[run & (accuracy.seed == r.seed)]
            label = f"x{r.multiplier}" + (
                f", diverged at step {r.diverged_at_step:,.0f}" if r.status == "diverged" else ""
            )
            if label in labelled:
                label = None
            labelled.add(label)
            ax.plot(curve.step, curve.test_acc, color=colors[r.multiplier], label=label)
            if r.status == "diverged":
                ax.plot(curve.step.iloc[-1], curve.test_acc.iloc[-1], "x", color="k")
        ax.axhline(target, color="k", linewidth=0.8, linestyle=":")
        ax.set_xlabel("training steps")
        ax.set_title(f"({'ab'[letter]}) {LADDER_LABELS[family]}")
        ax.legend(loc="lower right", fontsize=8, title="learning rate")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("held-out accuracy")
    fig.suptitle(f"Learning-rate ladder; dotted: Inception's maximum {target:.3f}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_dir, "ladder")


def seed_spread(r) -> str:
    """The fewest and most steps one seed's own curve took to the target."""
    if not r.seeds_reaching:
        return "none reached"
    if r.seeds_reaching < r.seeds:
        return f"{r.seed_steps_min:,.0f} at best; {r.seeds_reaching} of {r.seeds} reached"
    return f"{r.seed_steps_min:,.0f}–{r.seed_steps_max:,.0f}"


def at_chance(max_acc: float, chance: float) -> bool:
    return max_acc <= chance + CHANCE_MARGIN


def ladder_cell(r, chance: float) -> str:
    """One rung of the ladder in words: diverged, stuck at chance (the loss stayed finite but
    nothing was learned), or how high and how fast it trained."""
    if r.status == "diverged":
        return f"diverged at step {r.diverged_at_step:,.0f} (maximum before: {r.max_acc:.4f})"
    if at_chance(r.max_acc, chance):
        return f"fails to train: at chance (maximum {r.max_acc:.4f})"
    reached = (
        "not reached"
        if missing(r.steps_to_target)
        else f"at step {r.steps_to_target:,.0f} ({fmt(r.speedup, '.1f', 'x')})"
    )
    return f"trains: maximum {r.max_acc:.4f} at step {r.step_of_max:,}; target {reached}"


# ---------------------------------------------------------------- README, one section a function


def steps_text(r) -> str:
    """A row's steps to the target and their interval ("never": a resample's mean curve that
    never reaches it); "not reached" alone where neither the point nor the interval does."""
    point = fmt(r.steps_to_target, ",.0f", none="not reached")
    ends = [
        "never" if end == math.inf else fmt(end, ",.0f")
        for end in (r.steps_to_target_low, r.steps_to_target_high)
    ]
    if missing(r.steps_to_target) and ends == ["never", "never"]:
        return point
    return f"{point} [{ends[0]}, {ends[1]}]"


def images_text(summary: pd.DataFrame) -> str:
    """The held-out images of each evaluation, over every run of `summary`."""
    low, high = int(summary.eval_images.min()), int(summary.eval_images.max())
    return f"n = {low:,}" if low == high else f"n = {low:,} to {high:,} (by run)"


def crossing_text(r) -> str:
    """How a variant's mean curve crosses the target (a row of table.csv): the step, the
    margin and whether the margin is under one evaluation sd."""
    if r.variant == "inception":
        return f"its maximum, at step {r.step_of_max:,.0f}, is the target"
    if missing(r.steps_to_target):
        return (
            f"does not reach it: its maximum, {r.max_acc:.4f}, is {r.max_acc - r.target_acc:+.4f} "
            "from it"
        )
    where = f"crosses at step {r.steps_to_target:,.0f} by {r.crossing_margin:+.4f}"
    if r.crossing_marginal:
        return f"{where} (marginal: under one evaluation sd, {r.crossing_sd:.4f})"
    return f"{where} ({r.crossing_margin / r.crossing_sd:.1f} evaluation sd of {r.crossing_sd:.4f})"


def figure3_section(results: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The title, Figure 2, the Figure 3 analogue with its intervals and where each mean curve
    crosses the target."""
    r0 = results.iloc[0]
    n_seeds = int(results.set_index("variant").seeds["inception"])
    lines = [
        "# Figures 2 and 3: Inception and its batch-normalized variants, on a proxy",
        "",
        "Regenerated by `make reproduce-figure2` (training) or `make figures` (drawing only) from",
        "`curves.csv`, `summary.csv`, `ladder.csv` and `ladder_summary.csv` in this folder; do",
        "not edit by hand.",
        "",
        "![Figure 2](figure2.png)",
        "",
        "## Figure 3 analogue",
        "",
        "Target: plain Inception's maximum held-out accuracy, "
        f"{with_interval(r0.target_acc, r0.target_acc_low, r0.target_acc_high, '.4f')}, the "
        f"maximum of its mean curve over {n_seeds} seed{'s' * (n_seeds > 1)} (the paper's 72.2%).",
        "Steps, maxima and speed-ups are of the mean curves over seeds (`table.csv`), with their",
        "95% bootstrap intervals over seeds and over the held-out sample in brackets",
        f"({BOOTSTRAP_RESAMPLES:,} resamples; each evaluation took {images_text(summary)} held-out",
        "images, `summary.csv` column `eval_images`); per seed: the fewest and the most steps one",
        "seed's own curve took to the target (`seeds.csv`). The paper's steps are in millions of",
        "ImageNet steps; only the ratios and orderings compare.",
        "",
        "| model | steps to target [95%] | per seed | max accuracy [95%] | speed-up [95%] "
        "| resamples reaching it | paper: steps | paper: max | paper: speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results[results.variant.isin(MAIN)].itertuples():
        paper_steps = None if missing(r.paper_steps_to_target) else r.paper_steps_to_target / 1e6
        accuracy = with_interval(r.max_acc, r.max_acc_low, r.max_acc_high, ".4f")
        lines.append(
            f"| {LABELS[r.variant]} | {steps_text(r)} | "
            f"{seed_spread(r)} | {accuracy} | {speedup_text(r)} | {r.reach_fraction:.1%} | "
            f"{fmt(paper_steps, '.1f', 'M', none='not reached')} | {r.paper_max_acc:.1%} | "
            f"{fmt(r.paper_speedup, '.1f', 'x')} |"
        )
    lines += [
        "",
        "Intervals: each resample draws every variant's seeds with replacement, independently",
        "per variant and Inception's too, then redraws every accuracy a that a drawn seed logged",
        "on n held-out images as Binomial(n, a) / n, and recomputes the mean curves, the target",
        "(that resample's Inception maximum), the maxima and the steps to the target; the",
        "interval runs from the 2.5th to the 97.5th percentile (for steps, the outer evaluated",
        "step, `never` where it falls among resamples that never reach the target). A resample",
        "whose mean curve never reaches the target counts as speed-up 0; the share that does",
        "reach it is in the table.",
        "The redraw treats each evaluation as a fresh sample of n images, while every evaluation",
        "of every run takes the same n, the first n of the test split. Their shared error cancels",
        "between curves measured on them, which the redraw lets vary: for the relations below,",
        "which compare such curves, the intervals err wide. For one accuracy taken alone as the",
        "test distribution's, they err narrow: an error the seeds share does not average out over",
        "them as the redraw assumes. And the best of a redrawn curve is the best of more noise:",
        "the intervals of the target and of the maxima lean above their points, for every",
        "variant alike.",
    ]
    if n_seeds == 1:
        lines.append(
            "With one seed the seeds' draw has nothing to resample: the intervals are the "
            "held-out sample's alone."
        )
    lines += [
        "",
        "### Where each mean curve crosses the target",
        "",
        "The step at which each variant's mean curve first reaches the target, and the margin",
        "by which it clears it there (its mean accuracy a less the target), beside the",
        "evaluation sd of a mean of the seeds' curves at that accuracy, sqrt(a (1 - a) / n) /",
        "sqrt(seeds) (sqrt(a (1 - a) sum 1/n_i) / seeds where the seeds' n differ; `table.csv`:",
        "`crossing_acc`, `crossing_margin`, `crossing_sd`, `crossing_marginal`). A margin under",
        "one sd is marginal: the crossing rests on less than one evaluation's noise.",
        "",
        "| model | mean accuracy there | crossing |",
        "|---|---|---|",
        *[
            f"| {LABELS[r.variant]} | {fmt(r.crossing_acc, '.4f')} | {crossing_text(r)} |"
            for r in results[results.variant.isin(MAIN)].itertuples()
        ],
    ]
    return lines


def controls_section(results: pd.DataFrame) -> list[str]:
    """How the two controls ended, beside the paper's outcome."""
    lines = ["", "## Controls", "", "| control | ours | paper |", "|---|---|---|"]
    for r in results[results.variant.isin(CONTROLS)].itertuples():
        if r.status == "diverged":
            ours = (
                f"diverged at step {r.diverged_at_step:,.0f} "
                f"({r.diverged_seeds} of {r.seeds} seeds)"
            )
        else:
            ours = (
                f"{r.status}; maximum accuracy {fmt(r.max_acc, '.4f')} (chance {r.chance_acc:.2f})"
            )
        lines.append(f"| {LABELS[r.variant]} | {ours} | {PAPER_CONTROLS[r.variant]} |")
    return lines


def relations_section(results: pd.DataFrame, found: pd.DataFrame) -> list[str]:
    """The paper's relations, each with its verdict, and how a verdict is reached."""
    return [
        "",
        "## The paper's relations, checked",
        "",
        "One rule judges every relation: the 95% bootstrap interval of its own ratio or",
        "difference (`relations.csv`), drawn from the same resamples as the table above, against",
        "its null value (1 for a ratio, 0 for a difference): `yes` when the interval lies wholly",
        "on the paper's side, `no` when it lies wholly on the other side or on the null value,",
        "`unresolved` when it straddles it. A ratio of steps counts a curve that never reaches",
        "the target as taking infinitely many steps (inf), two that never reach it as a tie. A",
        "relation of two quantities holds when both do. Inception x5 diverges: `yes` when every",
        "seed diverged, `no` when none did (a count, with nothing to resample).",
        "",
        "| relation (Section 4.2.2) | paper | ours [95%] | verdict |",
        "|---|---|---|---|",
        *[f"| {c} | {p} | {o} | {v} |" for c, p, o, v in verdicts(results, found)],
        "",
        f'"At chance": a maximum accuracy less than {CHANCE_MARGIN:.2f} above 1/classes.',
    ]


def plateau_section(checks: pd.DataFrame) -> list[str]:
    """Whether plain Inception had levelled off (`checks`: checks.csv, the mean curve's row
    first, then each seed's)."""
    check, seeds = checks.iloc[0], checks.iloc[1:]
    lines = [
        "",
        "## Plateau check",
        "",
        f"Plain Inception's mean curve is at its maximum at step {check.step_of_max:,}. Its best "
        f"from step {check.cutoff_step:,.0f} on (the last {PLATEAU_TAIL:.0%} of its steps) is "
        f"{check.best_after:.4f}, against {check.best_before:.4f} before: a gain of "
        f"{check.gain:+.4f}, {'less' if check.plateaued else 'not less'} than the tolerance "
        f"{PLATEAU_TOLERANCE}: **{'plateaued' if check.plateaued else 'not plateaued'}** "
        "(`checks.csv`).",
    ]
    if len(seeds) > 1:
        lines.append(
            "Each seed's own curve: "
            + "; ".join(
                f"{r.curve} {r.gain:+.4f} ({'plateaued' if r.plateaued else 'not plateaued'})"
                for r in seeds.itertuples()
            )
            + "."
        )
    if not check.plateaued:
        lines.append(
            "Inception was still improving: a longer run would raise the target, so the steps to "
            "it and the speed-ups depend on the run's length."
        )
    return lines


def rates(rows: pd.DataFrame) -> str:
    """The multipliers of the rungs in `rows`, as x1, x5, ..."""
    return ", ".join(f"x{m}" for m in rows.multiplier.unique()) or "no rate"


def seeds_text(seeds: list[int]) -> str:
    return f"seed {seeds[0]} only" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def ladder_section(ladder: pd.DataFrame, chance: float, provenance: dict) -> list[str]:
    """The learning-rate ladder: where each family diverges or stays at chance, and each rung."""
    optim = provenance.get("config", {}).get("inception", {}).get("optim", {})
    base_lr = f" ({optim['lr']})" if "lr" in optim else ""
    failed = {
        family: (
            rates(rows[rows.status == "diverged"]),
            rates(
                rows[(rows.status != "diverged") & rows.max_acc.map(lambda a: at_chance(a, chance))]
            ),
        )
        for family, rows in ladder.groupby("family")
    }
    lines = [
        "",
        "## The stability boundary: a learning-rate ladder",
        "",
        f"Each rung trains one family at a multiple of the base learning rate{base_lr}, "
        f"{seeds_text(sorted(set(ladder.seed)))}: Inception as it is",
        "(`experiment=inception recipe.lr_multiplier=M`) and BN-Inception with the other six",
        "changes of Section 4.2.1 (`experiment=bn_x5 recipe.lr_multiplier=M`: BN-x5 is its x5",
        "rung, BN-x30 its x30). Inception x1 and x5 and the BN recipe's x5 and x30 are the",
        "Figure 3 analogue's runs (`ladder_summary.csv`, column `source`)"
        + (
            "; each family's rungs and seeds are the members of one packed model."
            if provenance.get("packing") == "packed"
            else "."
        ),
        "The target and the speed-up are those of the Figure 3 analogue, against Inception's",
        "mean curve (`ladder_table.csv`).",
        f"Diverged (non-finite loss or weights): Inception at {failed['inception'][0]}; the BN "
        f"recipe at {failed['bn_recipe'][0]}. Stuck at chance (finite, nothing learned): "
        f"Inception at {failed['inception'][1]}; the BN recipe at {failed['bn_recipe'][1]}.",
        "",
        "![Learning-rate ladder](ladder.png)",
        "",
        f"| rate | seed | {LADDER_LABELS['inception']} | {LADDER_LABELS['bn_recipe']} |",
        "|---|---|---|---|",
    ]
    for (multiplier, seed), rows in ladder.groupby(["multiplier", "seed"]):
        cells = {r.family: ladder_cell(r, chance) for r in rows.itertuples()}
        lines.append(f"| x{multiplier} | {seed} | {cells['inception']} | {cells['bn_recipe']} |")
    return lines


def runs_section(seeds: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Every run of the main sweep: how it ended and its own curve against the target."""
    runs = seeds.merge(summary[["variant", "seed", "diverged_at_step", "steps"]])
    return [
        "",
        "## Per run",
        "",
        "| variant | seed | status | diverged at step | steps | steps to target | max accuracy |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r.variant} | {r.seed} | {r.status} | {fmt(r.diverged_at_step, ',.0f')} | "
            f"{r.steps:,} | {fmt(r.steps_to_target, ',.0f', none='not reached')} | "
            f"{r.max_acc:.4f} |"
            for r in runs.itertuples()
        ],
    ]


def protocol_section(provenance: dict) -> list[str]:
    """The preset, the command and the proxy's sizes and optimizer, from provenance.json."""
    config = provenance.get("config", {}).get("inception", {})
    model, data, optim = config.get("model", {}), config.get("data", {}), config.get("optim", {})
    command = provenance.get("command")
    packed = provenance.get("packing") == "packed"
    sweeps = "the two packed sweeps" if packed else "the sweep and the ladder's two sweeps"
    return [
        "",
        "## How these numbers were made",
        "",
        f"- preset: `{provenance.get('preset') or 'not recorded'}`; "
        f"command: `{stable_command(command) if command else 'not recorded'}`",
        f"- proxy: {data.get('name')} at {data.get('size')}x{data.get('size')} "
        f"({data.get('resize')}), {data.get('eval_size') or 'all'} held-out images per "
        f"evaluation every {config.get('eval_every')} steps; Inception width {model.get('width')} "
        f"with the `{model.get('stem')}` stem; {config.get('steps')} steps of "
        f"{config.get('batch_size')}",
        f"- base optimizer: momentum {optim.get('momentum')}, lr {optim.get('lr')}, "
        f"L2 {optim.get('weight_decay')}, lr x {optim.get('decay_rate')} every "
        f"{optim.get('decay_steps')} steps (the recipes change these as Section 4.2.1 says)",
        *schedule_lines(config),
        *packing_lines(provenance),
        "- the machine, the code's commit, the date, each run's wall time and the commands of "
        f"{sweeps} as typed: `provenance.json`",
    ]


def schedule_lines(config: dict) -> list[str]:
    """How the paper's schedule maps onto the proxy's: decays in steps, the same for any run
    length, and how many of them the run covers."""
    optim, steps = config.get("optim", {}), config.get("steps")
    decay, rate = optim.get("decay_steps"), optim.get("decay_rate")
    if not (decay and steps and rate):
        return []
    fast = decay / PAPER_DECAY_SPEEDUP
    return [
        f"- schedule: the decay is counted in the proxy's steps, not as a share of the run, so "
        f"a longer run changes no step of a shorter one. Inception's rate falls by "
        f"{rate} every {decay:g} steps: {steps / decay:.0f} decays in {steps:,} steps, to "
        f"{rate ** (steps / decay):.3f} of its start (the paper's Inception reached its maximum "
        f"after about {PAPER_INCEPTION_DECAYS} of GoogLeNet's decays of 4% every 8 epochs). The "
        f"recipes' 6x faster decay (change 4) is a decay every {fast:.3g} steps: their rate is "
        f"below 2% of its start from step {math.log(0.02) / math.log(rate) * fast:,.0f} on."
    ]


def packing_lines(provenance: dict) -> list[str]:
    """How the runs were grouped into processes, for a packed sweep."""
    members = provenance.get("members")
    if provenance.get("packing") != "packed" or not members:
        return []
    packs = ", ".join(f"{variant} ({count})" for variant, count in members.items())
    return [
        f"- packed: {len(members)} models, the runs of one architecture the members of one "
        f"(bnrepro.train_packed), members in brackets: {packs}"
    ]


# Earlier protocols of a preset's committed results and what they gave, shown in its README so
# that a reader sees which outcomes changed with the protocol (preset -> lines).
HISTORY = {
    "cpu": [
        "- Until 2026-11-26 the cpu preset trained one seed per recipe for 3,000 steps with "
        "`decay_steps = steps / 32` (GoogLeNet's own schedule over its ~250 epochs). Plain "
        "Inception's maximum, 0.7802, came at its last step; BN-Baseline, BN-x5 and BN-x30 "
        "reached it 2.2x, 5.0x and 3.3x sooner, Inception x5 never, and BN-x5-Sigmoid, which "
        "does not reach the target under the current protocol, 2.5x sooner.",
        "- The same one-seed protocol on an Intel Xeon gave 1.6x, 3.2x and 2.7x for BN-Baseline, "
        "BN-x5 and BN-x30: the CPU's float rounding alone moved the one-seed factors, which is "
        "why the current protocol has three seeds and intervals.",
    ],
}


def history_section(provenance: dict) -> list[str]:
    """Earlier protocols' outcomes for the preset that made these results, if it changed."""
    lines = HISTORY.get(provenance.get("preset"), [])
    return ["", "## History of this result", "", *lines] if lines else []


def plan_section(provenance: dict) -> list[str]:
    """For a campaign's results: its plan file (run lengths and relation rules), when git says
    it was committed, against when the campaign's first run started; nothing for a sweep."""
    campaign = provenance.get("campaign")
    if not campaign:
        return []
    path, commit = campaign.get("plan_file", "?"), campaign.get("commit")
    if not has_history():
        when = NO_HISTORY
    else:
        plan = file_at(path, commit) if isinstance(commit, str) else None
        when = f"last changed in {plan[1]}" if plan else "not recorded (not in this clone)"
    return [
        "",
        "## The plan, fixed before the runs",
        "",
        f"This campaign's run lengths and relation rules are `{path}`, {when}, the version",
        f"the campaign trained from (its commit {str(commit)[:7]}, plan sha256",
        f"{str(campaign.get('plan_sha256'))[:12]}); the campaign's first run started",
        f"{campaign.get('started')}. Each run's length follows the plan's rule; each run's",
        "`run.json` lists its segments (hardware and commit of every start).",
    ]


def decay_section(decays: pd.DataFrame) -> list[str]:
    """The decay arm: BN-x5 at each decay speed-up against plain Inception's maximum."""
    lines = [
        "",
        "## The decay arm: does the speed-up hinge on the 6x faster decay?",
        "",
        "The recipes decay their learning rate 6 times faster than plain Inception, as the paper's",
        "did relative to its own schedule; the proxy's schedule is our choice. BN-x5 also trained",
        "with its decay 1x and 3x faster (`decay_table.csv`). Each row is judged by the relations'",
        "rule: the 95% interval of steps(Inception) / steps(BN-x5) against 1.",
        "",
        "| decay speed-up | steps to target [95%] | max accuracy [95%] | steps(Inception) / "
        "steps(BN-x5) [95%] | fewer steps than Inception |",
        "|---|---|---|---|---|",
    ]
    for r in decays.itertuples():
        ratio = ", ".join(relation_value(v, "ratio") for v in (r.ratio_low, r.ratio_high))
        lines.append(
            f"| {r.decay_speedup}x{' (the recipe)' if r.variant == 'bn_x5' else ''} | "
            f"{steps_text(r)} | {with_interval(r.max_acc, r.max_acc_low, r.max_acc_high, '.4f')} | "
            f"{relation_value(r.ratio, 'ratio')} [{ratio}] | {r.verdict} |"
        )
    return lines


def readme(
    results: pd.DataFrame,
    found: pd.DataFrame,
    seeds: pd.DataFrame,
    checks: pd.DataFrame,
    ladder: pd.DataFrame,
    summary: pd.DataFrame,
    provenance: dict,
    decays: pd.DataFrame | None = None,
) -> str:
    """README.md: the Figure 3 analogue with intervals, the verdicts, the plateau check and
    the ladder, from the tables `draw` writes; how they were made where provenance.json says."""
    lines = [
        *figure3_section(results, summary),
        *controls_section(results),
        *relations_section(results, found),
        *plan_section(provenance),
        *plateau_section(checks),
        *(decay_section(decays) if decays is not None else []),
        *ladder_section(ladder, results.chance_acc.iloc[0], provenance),
        *runs_section(seeds, summary),
        *(protocol_section(provenance) if provenance else []),
        *history_section(provenance),
        "",
    ]
    return "\n".join(lines)


def check_ladder(
    ladder: pd.DataFrame, ladder_path: Path, summary: pd.DataFrame, summary_path: Path
) -> None:
    """The collected ladder is whole: `summary` has one row for each rung (family and
    multiplier) and seed, each completed or diverged, and `ladder` one curve for each, logged
    once per step up to the run's last step."""
    if summary.empty:
        fail(f"{summary_path} holds no runs.", DRAW_FIX)
    bad = [
        f"{describe(LADDER_KEYS, (r.family, r.multiplier, r.seed))}: {r.status}"
        for r in summary.itertuples()
        if r.status not in LADDER_STATUSES
    ]
    if bad:
        fail(
            f"{summary_path} lists runs that did not finish as expected: {listing(bad)}.", DRAW_FIX
        )
    seeds = sorted(set(summary.seed))
    rungs = [(f, m, s) for f in LADDER_FAMILIES for m in LADDER_MULTIPLIERS for s in seeds]
    check_groups(summary, summary_path, LADDER_KEYS, rungs, DRAW_FIX)
    check_unique(summary, summary_path, LADDER_KEYS, DRAW_FIX)
    check_groups(ladder, ladder_path, LADDER_KEYS, rungs, DRAW_FIX)
    check_unique(ladder, ladder_path, [*LADDER_KEYS, "step"], DRAW_FIX)
    steps = summary.set_index(LADDER_KEYS).steps
    check_final_steps(ladder, ladder_path, LADDER_KEYS, steps, DRAW_FIX)


def configured_images(summary: pd.DataFrame, summary_path: Path, provenance: dict) -> list[int]:
    """The held-out images of each run of a summary.csv collected before `collect` recorded
    them (column `eval_images`): from each variant's data config in provenance.json, which
    `collect` wrote from the runs' config.yaml, every seed of a variant trained with the same
    overrides."""
    configs = provenance.get("config", {})
    absent = sorted(set(summary.variant) - {v for v, c in configs.items() if "data" in c})
    if absent:
        fail(
            f"{summary_path} has no column eval_images, and provenance.json beside it records no "
            f"data config for {listing(absent)}, so the held-out images of their evaluations are "
            "unknown.",
            "collect the runs again (`python experiments/figure2.py collect --runs <sweep dir>`), "
            "which records them",
        )
    where = str(summary_path.parent / "provenance.json")
    return [held_out_images(configs[variant]["data"], where) for variant in summary.variant]


def read_decay_arm(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """decay.csv and decay_summary.csv in `out_dir`, checked whole; None where the sweep had
    no decay arm (no decay.csv)."""
    curves_path, summary_path = out_dir / "decay.csv", out_dir / "decay_summary.csv"
    if not curves_path.exists():
        return None
    curves = read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    summary = read_csv(summary_path, SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",))
    accepted = {decay_variant(s): DECAY_STATUSES for s in DECAY_SPEEDUPS}
    check_curves(curves, curves_path, summary, summary_path, accepted, DRAW_FIX)
    return curves, summary


def draw(out_dir: Path) -> None:
    """table.csv, seeds.csv, checks.csv, ladder_table.csv, figure2.png/.pdf, ladder.png/.pdf
    and README.md from the files in `out_dir`, once they are known whole; and summary.csv's
    column `eval_images` where it was collected without it (`configured_images`)."""
    curves_path, summary_path = out_dir / "curves.csv", out_dir / "summary.csv"
    ladder_path, ladder_summary_path = out_dir / "ladder.csv", out_dir / "ladder_summary.csv"
    curves = read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    collected = {name: kind for name, kind in SUMMARY_COLUMNS.items() if name != "eval_images"}
    summary = read_csv(summary_path, collected, DRAW_FIX, optional=("diverged_at_step",))
    ladder = read_csv(ladder_path, LADDER_COLUMNS, DRAW_FIX, optional=("train_loss", "test_acc"))
    ladder_summary = read_csv(
        ladder_summary_path, LADDER_SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",)
    )
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    recorded = "eval_images" in summary
    if not recorded:
        summary = summary.assign(eval_images=configured_images(summary, summary_path, provenance))
    check_columns(summary, summary_path, SUMMARY_COLUMNS, DRAW_FIX, optional=("diverged_at_step",))
    check_curves(curves, curves_path, summary, summary_path, ACCEPTED, DRAW_FIX)
    check_ladder(ladder, ladder_path, ladder_summary, ladder_summary_path)
    num_classes = provenance.get("config", {}).get("inception", {}).get("data", {})
    results = table(curves, summary, num_classes.get("num_classes", 10))
    found = relations(curves, summary, num_classes.get("num_classes", 10))
    target = results.target_acc.iloc[0]
    inception_steps = results.set_index("variant").steps_to_target["inception"]
    seeds = per_seed(curves, summary, target)
    checks = plateau(curves, summary)
    rungs = ladder_table(ladder, ladder_summary, target, inception_steps)
    arm = read_decay_arm(out_dir)
    decays = decay_table(curves, summary, *arm) if arm else None
    if not recorded:
        write_csv(summary_path, summary[list(SUMMARY_COLUMNS)])
    write_csv(out_dir / "table.csv", results)
    write_csv(out_dir / "relations.csv", found)
    write_csv(out_dir / "seeds.csv", seeds)
    write_csv(out_dir / "checks.csv", checks)
    write_csv(out_dir / "ladder_table.csv", rungs)
    if decays is not None:
        write_csv(out_dir / "decay_table.csv", decays)
    for path in [
        *figure2(curves, results, out_dir),
        *ladder_figure(ladder, rungs, target, out_dir),
    ]:
        print(f"wrote {path}")
    atomic_write_text(
        out_dir / "README.md",
        readme(results, found, seeds, checks, rungs, summary, provenance, decays),
    )
    print(f"wrote {out_dir / 'README.md'}")


def results_folder(options: dict) -> str:
    """results/figure2 for the cpu preset (and its --quick protocol), results/figure2_<preset>
    for another, so that no preset writes over another's results."""
    preset = options.get("preset", "cpu")
    return "figure2" if preset in ("cpu", "quick") else f"figure2_{preset}"


DRIVER = Driver(
    name="figure2",
    doc=__doc__,
    run=run,
    collect=collect,
    draw=draw,
    options=(
        *preset_options(PRESETS, "cpu"),
        device_option(),
        Option(
            "--packing",
            "separate: a process per recipe and seed; packed: a process per architecture, its "
            "recipes, rates and seeds the members of one model (default: the preset's, "
            + "; ".join(f"{name} {preset.packing}" for name, preset in PRESETS.items())
            + ")",
            default=lambda options: PRESETS[options["preset"]].packing,
            choices=PACKINGS,
        ),
    ),
    tolerances=TOLERANCES,
    folder=results_folder,
)
