"""The Inception proxy's protocol: its presets, how `run` trains plain Inception, BN-Baseline
and BN-Baseline with noisy BN with the late-layer probe and the diagnostics on, and how
`collect` gathers their logged metrics into curves.csv, diagnostics.csv and summary.csv,
checked whole before anything is written or drawn."""

import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from omegaconf import OmegaConf

from bnrepro import driver, presets, tables
from bnrepro.atomic import write_json
from bnrepro.inception_probes import DIAGNOSTIC_COLUMNS

VARIANTS = ("inception", "bn_baseline", "bn_baseline_noisy")
ACCEPTED = {variant: {"completed"} for variant in VARIANTS}
PERCENTILE_COLUMNS = ("p15", "p50", "p85")
METRIC_COLUMNS = {
    "step": "int", "seed": "int", "train_loss": "float", "lr": "float", "test_acc": "float",
    **{column: "float" for column in (*PERCENTILE_COLUMNS, *DIAGNOSTIC_COLUMNS)},
}  # fmt: skip
OPTIONAL = ("train_loss", "test_acc", *PERCENTILE_COLUMNS, *DIAGNOSTIC_COLUMNS)
CURVE_COLUMNS = {
    "variant": "str", "seed": "int", "step": "int", "train_loss": "float", "test_acc": "float",
    **{column: "float" for column in PERCENTILE_COLUMNS},
}  # fmt: skip
SUMMARY_COLUMNS = {
    "variant": "str", "seed": "int", "final_test_acc": "float", "steps": "int", "status": "str",
}  # fmt: skip
PROBE_EVERY = 50
DIAGNOSTICS_EVERY = 500


class Preset(NamedTuple):
    """What this driver adds to configs/preset/<name>.yaml (the proxy's size and length): the
    seeds it trains, how many runs train at a time, and every how many steps a run is probed
    and diagnosed."""

    seeds: tuple[int, ...]
    jobs: int
    probe_every: int = PROBE_EVERY
    diagnostics_every: int = DIAGNOSTICS_EVERY


# gpu: one run at a time, as runs side by side on one GPU each run slower (README "Speed").
PRESETS = {
    "cpu": Preset((0, 1, 2), 2),
    "gpu": Preset((0, 1, 2), 1),
    "quick": Preset((0,), 2, probe_every=10, diagnostics_every=20),
}
# The preset of the committed results/ics/proxy/ and its steps: a figure of fewer steps (the
# quick preset's) says it is of a short protocol.
FULL_PRESET = "gpu"
FULL_STEPS = int(presets.values(FULL_PRESET).steps)
SWEEP_FIX = driver.sweep_fix("ics_proxy", "ics/proxy")
DRAW_FIX = driver.draw_fix("ics_proxy", "ics/proxy")


def results_folder(options: dict) -> str:
    """results/ics/proxy for every preset: its committed results are the gpu preset's."""
    return presets.results_folder("ics/proxy", options.get("preset", "cpu"), PRESETS)


# ---------------------------------------------------------------- training and collecting


def run(invocation: driver.Invocation) -> None:
    """The three recipes x seeds in one Hydra multirun into `--runs`; prints its wall time."""
    preset = PRESETS[invocation.preset]
    started = time.time()
    driver.multirun(
        [
            f"experiment={','.join(VARIANTS)}",
            # The groups the experiments select, named so that Hydra can compose the sweep's base.
            "model=inception_proxy", "data=fashion_mnist", "optim=momentum_proxy", "name=ics_proxy",
            f"seeds={','.join(f'[{s}]' for s in invocation.seeds)}", f"preset={invocation.preset}",
            f"++late_probe.every={preset.probe_every}",
            f"diagnostics.every={preset.diagnostics_every}",
            *([f"device={invocation.device}"] if invocation.device else []), *invocation.overrides,
        ],
        invocation.runs, "${model.variant}_seed${seeds[0]}", invocation.jobs,
    )  # fmt: skip
    print(f"ics_proxy: training took {time.time() - started:.0f} s wall", flush=True)


def collect(invocation: driver.Invocation) -> None:
    """curves.csv, diagnostics.csv, summary.csv and provenance.json of the runs under
    `--runs`, once they are known to be the whole sweep, finished and measured."""
    runs_dir, out_dir = invocation.runs, invocation.out
    runs = tables.load_sweep(runs_dir, SWEEP_FIX)
    tables.check_runs(runs, runs_dir, ACCEPTED)
    curves = tables.load_curves(runs, METRIC_COLUMNS, optional=OPTIONAL)
    diagnostics = curves.dropna(subset=list(DIAGNOSTIC_COLUMNS), how="all")
    runs_of = {(v, s) for v, s in zip(curves.variant, curves.seed, strict=True)}
    diagnosed = {(v, s) for v, s in zip(diagnostics.variant, diagnostics.seed, strict=True)}
    undiagnosed = sorted(runs_of - diagnosed)
    if undiagnosed:
        names = ", ".join(f"{v} seed {s}" for v, s in undiagnosed)
        tables.fail(
            f"The runs of {names} in {runs_dir} logged no diagnostics.",
            "train with diagnostics.every > 0 (at most the run's steps), as `python "
            "experiments/ics_proxy.py run` does",
        )
    summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    configs = {
        variant: OmegaConf.to_container(OmegaConf.load(Path(run_dir) / "config.yaml"))
        for run_dir, variant in runs.groupby("run_dir").variant.first().items()
    }
    keys = ["variant", "seed", "step"]
    curves = curves.dropna(subset=["test_acc", "p50"], how="all")[list(CURVE_COLUMNS)]
    driver.write_csv(out_dir / "curves.csv", curves.sort_values(keys))
    driver.write_csv(
        out_dir / "diagnostics.csv",
        diagnostics[[*keys, *DIAGNOSTIC_COLUMNS]].sort_values(keys),
    )
    driver.write_csv(out_dir / "summary.csv", summary[list(SUMMARY_COLUMNS)].sort_values(keys[:2]))
    write_json(
        out_dir / "provenance.json",
        driver.provenance(
            runs["run_dir"].iloc[0], runs_dir, invocation.command,
            preset=trained_preset(invocation),
            wall_s={
                f"{r.variant}_seed{r.seed}": round(float(r.wall_s), 1) for r in summary.itertuples()
            },
            config=configs,
        ),
    )  # fmt: skip


def trained_preset(invocation: driver.Invocation) -> str | None:
    """The preset the runs were trained with as far as the command says: `run`'s, or quick
    for `collect --quick`; None (the README's "not recorded") for other runs collected."""
    return invocation.preset if invocation.action == "run" or invocation.quick else None


def load(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """curves.csv, diagnostics.csv, summary.csv and provenance.json of `out_dir`, once they
    are known whole."""
    curves_path, summary_path = out_dir / "curves.csv", out_dir / "summary.csv"
    diagnostics_path = out_dir / "diagnostics.csv"
    optional = ("train_loss", "test_acc", *PERCENTILE_COLUMNS)
    curves = tables.read_csv(curves_path, CURVE_COLUMNS, DRAW_FIX, optional=optional)
    summary = tables.read_csv(summary_path, SUMMARY_COLUMNS, DRAW_FIX)
    diagnostic_types = {"variant": "str", "seed": "int", "step": "int"} | {
        column: "float" for column in DIAGNOSTIC_COLUMNS
    }
    provenance = tables.read_json(out_dir / "provenance.json", DRAW_FIX)
    diagnostics = tables.read_csv(
        diagnostics_path, diagnostic_types, DRAW_FIX, optional=DIAGNOSTIC_COLUMNS
    )
    tables.check_columns(
        diagnostics, diagnostics_path, diagnostic_types, DRAW_FIX, optional=DIAGNOSTIC_COLUMNS
    )
    tables.check_curves(curves, curves_path, summary, summary_path, ACCEPTED, DRAW_FIX)
    groups = [(v, s) for v in VARIANTS for s in sorted(set(summary.seed))]
    tables.check_groups(diagnostics, diagnostics_path, ["variant", "seed"], groups, DRAW_FIX)
    tables.check_unique(diagnostics, diagnostics_path, ["variant", "seed", "step"], DRAW_FIX)
    return curves, diagnostics, summary, provenance
