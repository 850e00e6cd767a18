"""Figure 1's protocol: how `run` trains the plain and the BN net (every seed in one vectorized
model each) and how `collect` gathers their logged metrics into curves.csv and summary.csv,
checked whole before anything is written; and which experiment and input a results folder's
runs were trained with."""

from pathlib import Path

from omegaconf import OmegaConf

from bnrepro import driver, tables
from bnrepro.atomic import write_json

VARIANTS = ("plain", "bn")
ACCEPTED = {variant: {"completed"} for variant in VARIANTS}
METRIC_COLUMNS = tables.MLP_METRIC_COLUMNS
CURVE_COLUMNS = {
    "variant": "str", "seed": "int", "step": "int", "test_acc": "float",
    "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip
SUMMARY_COLUMNS = {
    "variant": "str", "seed": "int", "final_test_acc": "float", "steps": "int", "status": "str",
}  # fmt: skip
DEFAULT_SEEDS = (0, 1, 2)  # with experiment=figure1's 50,000 steps: the committed protocol
QUICK = {"seeds": (0, 1), "steps": 1000}
# Absolute tolerances (CSV file -> column -> tolerance) within which a rerun on another CPU
# model or on a GPU still reproduces the committed results; every other column must match
# exactly. A full rerun on an AMD EPYC against the committed Intel Xeon results gave identical
# final accuracies, test accuracies one test image (1e-4) apart in 2 of 3,006 curve rows, and
# percentiles up to 3.1e-5 apart: the tolerances allow five test images and about three times
# the percentiles' measured gap. No GPU rerun has been measured.
TOLERANCES: dict[str, dict[str, float]] = {
    "curves.csv": {"test_acc": 5e-4, "p15": 1e-4, "p50": 1e-4, "p85": 1e-4},
    "summary.csv": {"final_test_acc": 5e-4},
}

DEFAULT_EXPERIMENT = "figure1"
DEFAULT_INPUT = "grey"  # configs/data/mnist.yaml


SWEEP_FIX = driver.sweep_fix("figure1")
DRAW_FIX = driver.draw_fix("figure1")


def results_folder(options: dict) -> str:
    """results/<experiment>: each experiment's results in its own folder."""
    return options.get("experiment", DEFAULT_EXPERIMENT)


def run(invocation: driver.Invocation) -> None:
    """Both nets (every seed in one vectorized model each) in one multirun, one net a job;
    then the runs' curves, training loss included, into `--runs`/plots/ (bnrepro.plot):
    curves.csv keeps the test accuracy and the percentiles only, so the training loss is
    drawn where it is logged, each run's metrics.csv."""
    driver.multirun(
        [
            f"experiment={invocation.experiment}", "model=mlp,mlp_bn",
            f"seeds={driver.hydra_list(invocation.seeds)}",
            *([f"steps={invocation.steps}"] if invocation.steps else []),
            *([f"device={invocation.device}"] if invocation.device else []),
            *invocation.overrides,
        ],
        invocation.runs, "${model.variant}", invocation.jobs,
    )  # fmt: skip
    # Imported here: bnrepro.plot sets matplotlib's Agg backend, which a notebook that imports
    # this package for its analysis must not get.
    from bnrepro.plot import plot_sweep

    for path in plot_sweep(invocation.runs, invocation.runs / "plots"):
        print(f"wrote {path}", flush=True)


def collect(invocation: driver.Invocation) -> None:
    """Writes curves.csv, summary.csv and provenance.json of the runs under `--runs`, once
    they are known to be the whole sweep (both nets, every seed), finished. The experiment is
    the runs' own `name` (each configs/experiment/NAME.yaml sets name: NAME)."""
    runs_dir, out_dir = invocation.runs, invocation.out
    runs = tables.load_sweep(runs_dir, SWEEP_FIX)
    tables.check_runs(runs, runs_dir, ACCEPTED)
    curves = tables.load_curves(runs, METRIC_COLUMNS, optional=("train_loss", "test_acc"))
    summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    wall = runs.groupby("variant").wall_s.max()  # all seeds of a net train in one run
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for run_dir, variant in runs.groupby("run_dir").variant.first().items()
    }
    driver.write_csv(out_dir / "curves.csv", curves[list(CURVE_COLUMNS)])
    driver.write_csv(out_dir / "summary.csv", summary[list(SUMMARY_COLUMNS)])
    write_json(
        out_dir / "provenance.json",
        driver.provenance(
            runs["run_dir"].iloc[0], runs_dir, invocation.command,
            wall_s=wall.to_dict(), config=configs, experiment=experiment_of(configs),
        ),
    )  # fmt: skip


def experiment_of(configs: dict) -> str:
    """The experiment both nets' runs were trained with."""
    names = sorted({config["name"] for config in configs.values()})
    return names[0] if len(names) == 1 else "+".join(names)


def protocol(provenance: dict) -> tuple[str, str]:
    """(experiment, input) of the runs behind a results folder, from their provenance.json;
    a provenance without them (results/figure1/ before --experiment existed) is figure1's."""
    inputs = sorted(
        {
            config.get("data", {}).get("input", DEFAULT_INPUT)
            for config in provenance.get("config", {}).values()
        }
    )
    return provenance.get("experiment", DEFAULT_EXPERIMENT), "+".join(inputs) or DEFAULT_INPUT
