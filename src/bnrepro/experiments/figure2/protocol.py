"""What figure2 trains and what it accepts from a sweep: the variants, the learning-rate ladder
and the decay arm, the presets, the columns of each results file and the tolerances of a
rerun, and `run`, the sweeps that train them (docs/figure2.md describes the protocol)."""

from typing import NamedTuple

from bnrepro import presets
from bnrepro.driver import Invocation, UsageError, draw_fix, hydra_list, multirun, sweep_fix

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
# The preset of the committed results/figure2/ and its steps: a figure of fewer steps (the
# quick preset's) says it is of a short protocol.
FULL_PRESET = "cpu"
FULL_STEPS = int(presets.values(FULL_PRESET).steps)
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
# exactly. Training is chaotic here: a rerun of the cpu preset on another CPU model
# (results/figure2/HISTORY.md) moved the training losses by up to 0.088 and the held-out
# accuracies by up to 0.049. The tolerances allow about 1.25 times those gaps, to every
# accuracy, to the plateau check's gain (a difference of two maxima), to the crossing's margin
# (an accuracy less a maximum) and to its evaluation sd (a function of an accuracy that varies
# less than it). The step counts and speed-ups (steps to the target and their interval, step
# of the maximum, the speed-ups' intervals, the per-seed steps, the fraction of resamples
# reaching the target) and whether a crossing is marginal jump by whole evaluations when a
# curve moves this much, and a rung of the ladder may diverge a few steps earlier or later, so
# they are not given a tolerance: such a rerun reports them as differing.
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


def ladder_rungs(family: str) -> list[int]:
    """The multipliers of `family` that the ladder trains: those the main sweep does not."""
    return [m for m in LADDER_MULTIPLIERS if (family, m) not in LADDER_REUSED]


def rung_name(family: str, multiplier: float) -> str:
    return f"{family}_x{multiplier:g}"


def decay_variant(speedup: float) -> str:
    return f"bn_x5_decay{speedup:g}"


def results_folder(options: dict) -> str:
    """results/figure2 for the cpu preset (and its --quick protocol), results/figure2_<preset>
    for another."""
    return presets.results_folder("figure2", options.get("preset", "cpu"), ("cpu", "quick"))


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
