"""Figure 1 across the choices the paper does not state: optimizer, learning rate, init std.

    python experiments/sensitivity.py run [--jobs 2] [--device cpu] [--steps 50000]
    python experiments/sensitivity.py run --lrs 0.01,0.1,1 --init-stds 0.01,0.1   # another grid
    python experiments/sensitivity.py run --quick   # 2 rates x 2 stds x 1 seed x 300 steps
    python experiments/sensitivity.py collect --runs runs/sensitivity/<time>
    python experiments/sensitivity.py draw          # redraw from results/sensitivity/ only

`run` trains Figure 1's protocol (experiment=figure1: 50,000 steps of 60, test accuracy every
500 steps, the sigmoid-input percentiles every 100) for both nets (model=mlp, mlp_bn) and both
optimizers (optim=sgd: plain SGD; optim=momentum_mlp: momentum 0.9): four jobs of one Hydra
multirun of `python -m bnrepro.train`, each into <runs>/<optimizer>/<net>/, each a vectorized
model that holds every member of the grid: each learning rate x each init std x each seed.
`--jobs` of them train at a time (2 on a CPU, one per core, each on one thread; with
`--device cuda` all four at once). A member whose loss becomes non-finite is recorded as
diverged and is data, never a failure of the sweep. Then `run` collects the runs into
results/sensitivity/members.csv (one row per member) and does what `draw` does:
sensitivity.png/.pdf, heatmaps of the BN advantage per optimizer, and README.md, which says
over which cells of the map each Figure 1 claim holds, by the rule of `verdict`.

`--steps N` trains a shorter map (a quick look; the README names the length it was drawn
from); `--lrs` and `--init-stds` another grid; `--quick` is a tiny protocol whose results go
to runs/sensitivity-quick/. Both our default (plain SGD, lr 0.1, std 0.1) and the public
reproduction's protocol (momentum 0.9, lr 0.01, std 0.01; experiment=figure1_momentum) are
points of the default grid.

members.csv and README.md hold results only; what changes from one faithful run to the next
(wall times, date, machine, commit, the command as typed, the runs' directory) is written to
provenance.json alone. `collect` and `draw` write nothing unless their inputs are whole
(bnrepro.tables): four runs (two nets x two optimizers) over the same grid, each ended
`completed` or `diverged`, each member's curve logged to the run's last step.
"""

import itertools
import json
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bnrepro.atomic import atomic_write_text, write_json
from bnrepro.driver import (
    Driver,
    Invocation,
    Option,
    device_option,
    draw_fix,
    hydra_list,
    multirun,
    positive_int,
    provenance,
    steps_option,
    sweep_fix,
    value_list,
    write_csv,
)
from bnrepro.plots import HeatmapPanel, sensitivity_heatmaps
from bnrepro.runinfo import stable_command
from bnrepro.tables import (
    RESUME,
    check_final_steps,
    check_groups,
    check_unique,
    fail,
    listing,
    load_sweep,
    read_csv,
    read_json,
)

NETS = {"mlp": "plain", "mlp_bn": "bn"}  # model config -> the run's model.variant
OPTIMIZERS = {"sgd": "plain SGD", "momentum_mlp": "momentum 0.9"}  # optim config -> name
# The committed protocol: 5 rates x 4 init stds x 3 seeds per (net, optimizer), Figure 1's
# 50,000 steps. Both ends of 0.01..1 are in each axis.
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
INIT_STDS = (0.01, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
QUICK = {"lrs": (0.1, 1.0), "init_stds": (0.01, 0.1), "seeds": (0,), "steps": 300}
QUICK_OVERRIDES = ("eval_every=50", "probe.every=25")
# Where the two protocols of results/figure1 and results/figure1_momentum sit on the map:
# name -> (optimizer, lr, init_std).
PROTOCOLS = {
    "ours (results/figure1)": ("sgd", 0.1, 0.1),
    "public reproduction (results/figure1_momentum)": ("momentum_mlp", 0.01, 0.01),
}

RUN_STATUSES = {"completed", "diverged"}
METRIC_COLUMNS = {
    "step": "int", "member": "int", "seed": "int", "lr": "float", "init_std": "float",
    "train_loss": "float", "test_acc": "float", "p15": "float", "p50": "float", "p85": "float",
}  # fmt: skip
# What a member's curve may lack: evaluations between eval_every steps, everything once it
# diverged.
OPTIONAL_METRICS = ("train_loss", "test_acc", "p15", "p50", "p85")
CHECKPOINTS = {"acc_1k": 1_000, "acc_5k": 5_000, "acc_10k": 10_000}
TARGETS = {"steps_to_095": 0.95, "steps_to_097": 0.97}
PERCENTILES = ("p15", "p50", "p85")
# Drift of the sigmoid input's distribution, Figure 1(b, c): for each percentile, its range
# (max - min) over the steps after the first 2% of the run (steps >= 1,000 of 50,000, leaving
# out the first moves away from the initialization); `drift` is the mean of the three ranges.
DRIFT_FROM = 0.02
MEMBER_KEYS = ("net", "optimizer", "lr", "init_std", "seed")
# Options that only name folders or share out the work: left out of the command the README
# shows, which is then the same for every faithful run of the protocol.
FOLDER_AND_SHARING_OPTIONS = ("--out", "--runs", "--jobs", "--device")
# Absolute tolerances within which `make verify` takes a rerun on another machine as the same
# map (members.csv column -> tolerance): Figure 1's for accuracies (five test images), one
# evaluation (500 steps) for the steps to a target, and twice Figure 1's percentile tolerance
# for a drift (a difference of two percentiles). Not yet measured between two machines for
# this map; members at the edge of divergence (lr 1 with momentum) may need more.
TOLERANCES: dict[str, dict[str, float]] = {
    "members.csv": {
        **{column: 5e-4 for column in ("final_acc", "acc_1k", "acc_5k", "acc_10k")},
        "steps_to_095": 500,
        "steps_to_097": 500,
        **{column: 2e-4 for column in ("drift_p15", "drift_p50", "drift_p85", "drift")},
    }
}
MEMBER_COLUMNS = {
    "net": "str", "optimizer": "str", "lr": "float", "init_std": "float", "seed": "int",
    "steps": "int", "final_acc": "float", "acc_1k": "float", "acc_5k": "float",
    "acc_10k": "float", "steps_to_095": "int", "steps_to_097": "int", "drift_p15": "float",
    "drift_p50": "float", "drift_p85": "float", "drift": "float", "diverged": "bool",
    "diverged_at_step": "int",
}  # fmt: skip
# Empty where a member has no such value: a checkpoint past the run's end, a target never
# reached, anything after a member diverged.
MEMBER_OPTIONAL = (
    "final_acc", *CHECKPOINTS, *TARGETS, "drift_p15", "drift_p50", "drift_p85", "drift",
    "diverged_at_step",
)  # fmt: skip
SWEEP_FIX = sweep_fix("sensitivity")
DRAW_FIX = draw_fix("sensitivity")


# ---------------------------------------------------------------- training


def run(invocation: Invocation) -> None:
    """The four runs (net x optimizer) in one multirun, each into <runs>/<optimizer>/<net>/;
    `--jobs` at a time, by default 2 (one per core of the 2-core CPU) or all four on a GPU."""
    multirun(
        [
            "experiment=figure1", "name=sensitivity",
            # The BN runs first: they take longer, and Hydra launches the jobs in the order of
            # the product of the swept values (the last override's vary fastest), so with two
            # jobs at a time each slot trains one BN and one plain run, and the sweep ends after
            # about the sum of one of each.
            "model=mlp_bn,mlp", f"optim={','.join(OPTIMIZERS)}",
            f"seeds={hydra_list(QUICK['seeds'] if invocation.quick else SEEDS)}",
            f"grid.lr={hydra_list(invocation.lrs)}",
            f"grid.init_std={hydra_list(invocation.init_stds)}",
            *([f"steps={invocation.steps}"] if invocation.steps else []),
            *([f"device={invocation.device}"] if invocation.device else []),
            *(QUICK_OVERRIDES if invocation.quick else ()),
            *invocation.overrides,
        ],
        invocation.runs, "${optim.name}/${model.variant}",
        invocation.jobs,
    )  # fmt: skip


# ---------------------------------------------------------------- one member


def first_step_at(accuracy: pd.DataFrame, target: float) -> float:
    """The first evaluated step whose test accuracy is at least `target`, else NaN."""
    reached = accuracy.step[accuracy.test_acc >= target]
    return float(reached.min()) if len(reached) else math.nan


def summarize(curve: pd.DataFrame, steps: int, diverged_at: float | None) -> dict:
    """One member's numbers from its `curve` (step, test_acc, p15, p50, p85; test accuracy
    empty between evaluations) of a run of `steps` steps: the accuracy at the end and at the
    CHECKPOINTS, the first evaluated step at each of the TARGETS, the drift of each percentile
    (its range over steps >= DRIFT_FROM * steps) and their mean. Everything from the step a
    member diverged on is left out; a diverged member has no final accuracy and no drift."""
    diverged = diverged_at is not None and not math.isnan(diverged_at)
    if diverged:
        curve = curve[curve.step < diverged_at]
    accuracy = curve.dropna(subset=["test_acc"]).set_index("step", drop=False)
    late = curve[curve.step >= DRIFT_FROM * steps]
    drifts = {
        f"drift_{p}": math.nan if diverged else float(late[p].max() - late[p].min())
        for p in PERCENTILES
    }
    return {
        "final_acc": math.nan if diverged else float(accuracy.test_acc.get(steps, math.nan)),
        **{
            column: float(accuracy.test_acc.get(step, math.nan))
            for column, step in CHECKPOINTS.items()
        },
        **{column: first_step_at(accuracy, target) for column, target in TARGETS.items()},
        **drifts,
        "drift": float(np.mean(list(drifts.values()))),
        "diverged": diverged,
        "diverged_at_step": float(diverged_at) if diverged else math.nan,
    }


# ---------------------------------------------------------------- collect


def check_sweep(runs: pd.DataFrame, runs_dir: Path) -> None:
    """`runs` (load_sweep's rows, one per member) are the whole sweep: one run per net and
    optimizer, each ended completed or diverged, all four over the same full grid."""
    problems = []
    for run_dir, rows in runs.groupby("run_dir", sort=True):
        first = rows.iloc[0]
        if first.variant not in NETS.values() or first.optimizer not in OPTIMIZERS:
            problems.append(
                f"{run_dir} trained net {first.variant!r} with optimizer {first.optimizer!r}, "
                "not one of this sweep's"
            )
        elif "member" not in rows or rows.member.isna().any():
            problems.append(f"{run_dir} was trained without a grid (its run.json has no members)")
        else:
            statuses = {first.status, *rows.seed_status}
            for status in sorted(str(s) for s in statuses - RUN_STATUSES):
                hint = first.error if isinstance(first.error, str) else None
                problems.append(f"{run_dir}: {status}" + (f" ({hint})" if hint else ""))
    if problems:
        fail(
            f"The sweep in {runs_dir} is not finished: {listing(problems)}.",
            RESUME,
        )
    counts = runs.groupby(["optimizer", "variant"]).run_dir.nunique()
    missing = [
        f"no run of {net} with {optimizer}"
        for optimizer in OPTIMIZERS
        for net in NETS.values()
        if (optimizer, net) not in counts.index
    ]
    repeated = [f"{n} runs of {net} with {opt}" for (opt, net), n in counts.items() if n > 1]
    grids = {
        run_dir: frozenset(rows[["lr", "init_std", "seed"]].itertuples(index=False, name=None))
        for run_dir, rows in runs.groupby("run_dir", sort=True)
    }
    reference = next(iter(grids.values()))
    lrs, stds, seeds = (sorted({m[i] for m in reference}) for i in range(3))
    if set(itertools.product(lrs, stds, seeds)) != reference:
        missing.append(f"{next(iter(grids))} does not train every lr x init_std x seed")
    for run_dir, members in grids.items():
        if members != reference:
            missing.append(f"{run_dir} trained another grid than {next(iter(grids))}")
    if missing or repeated:
        fail(
            f"The sweep in {runs_dir} is incomplete: {listing(missing + repeated)}.",
            "train the missing runs with `python experiments/sensitivity.py run`, or collect a "
            "directory that holds each net and optimizer once, over one grid",
        )


def run_members(run_dir: Path, run: pd.DataFrame) -> list[dict]:
    """One row of members.csv per member of the run in `run_dir` (`run`: its rows of
    load_sweep), once its metrics.csv holds every member's curve to the run's last step."""
    path = run_dir / "metrics.csv"
    fix = f"resume or rerun the run in {run_dir}, then collect again"
    metrics = read_csv(path, METRIC_COLUMNS, fix, OPTIONAL_METRICS)
    check_groups(metrics, path, ["member"], [(int(m),) for m in run.member], fix)
    check_unique(metrics, path, ["member", "step"], fix)
    steps = int(run.steps.iloc[0])
    check_final_steps(metrics, path, ["member"], steps, fix)
    curves = dict(iter(metrics.groupby("member")))
    return [
        {
            "net": member.variant,
            "optimizer": member.optimizer,
            "lr": member.lr,
            "init_std": member.init_std,
            "seed": int(member.seed),
            "steps": int(run["config.steps"].iloc[0]),
            **summarize(curves[int(member.member)], steps, member.diverged_at_step),
        }
        for member in run.itertuples()
    ]


def sweep_wall_s(run_dirs: Iterable[Path]) -> float:
    """From the first run's start to the last one's end, by each run.json's `started` and
    `wall_s` (a resumed run's counts its earlier sessions too): the sweep's wall time, the
    number to compare with a rerun's at the same --jobs."""
    spans = []
    for run_dir in run_dirs:
        info = json.loads((run_dir / "run.json").read_text())
        start = datetime.strptime(info["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        spans.append((start, start + info["wall_s"]))
    return round(max(end for _, end in spans) - min(start for start, _ in spans), 1)


def launched_jobs(runs_dir: Path) -> int | None:
    """How many runs trained at a time: the launcher's n_jobs in the multirun.yaml Hydra wrote
    into the sweep folder; None for runs trained some other way."""
    path = runs_dir / "multirun.yaml"
    if not path.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(path), "hydra.launcher.n_jobs")


def collect(invocation: Invocation) -> None:
    """Writes members.csv and provenance.json of the runs under `--runs`, once they are known
    to be the whole sweep, each member logged to its run's last step."""
    runs_dir, out_dir = invocation.runs, invocation.out
    runs = load_sweep(runs_dir, SWEEP_FIX).rename(columns={"config.optim.name": "optimizer"})
    check_sweep(runs, runs_dir)
    by_run = {Path(run_dir): run for run_dir, run in runs.groupby("run_dir", sort=True)}
    members = pd.DataFrame(
        [row for run_dir, run in by_run.items() for row in run_members(run_dir, run)]
    )
    members = members.sort_values(list(MEMBER_KEYS)).reset_index(drop=True)
    for column in (*TARGETS, "diverged_at_step"):
        members[column] = members[column].astype("Int64")
    names = {
        run_dir: f"{run.optimizer.iloc[0]}/{run.variant.iloc[0]}" for run_dir, run in by_run.items()
    }
    write_csv(out_dir / "members.csv", members[list(MEMBER_COLUMNS)])
    write_json(
        out_dir / "provenance.json",
        provenance(
            runs.run_dir.iloc[0], runs_dir, invocation.command,
            jobs=launched_jobs(runs_dir), sweep_wall_s=sweep_wall_s(by_run),
            wall_s={names[run_dir]: run.wall_s.iloc[0] for run_dir, run in by_run.items()},
            config={
                name: OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
                for run_dir, name in names.items()
            },
        ),
    )  # fmt: skip


# ---------------------------------------------------------------- the map


def verdict(advantages: pd.Series) -> str:
    """The rule every claim is decided by in one cell of the map, from the BN advantage of
    each seed (BN minus plain, or plain / BN - 1 for a ratio; NaN where undefined): `holds`
    when every seed's advantage is positive, `reversed` when every one is negative, `mixed`
    otherwise; `undefined` when a seed has none."""
    if advantages.isna().any() or advantages.empty:
        return "undefined"
    if (advantages > 0).all():
        return "holds"
    if (advantages < 0).all():
        return "reversed"
    return "mixed"


def early_column(members: pd.DataFrame) -> str | None:
    """The checkpoint that decides `BN learns faster early`: 5,000 steps (a tenth of Figure
    1's run), or 1,000 in a map too short to reach 5,000; None in one shorter still."""
    alive = members[~members.diverged]
    for column in ("acc_5k", "acc_1k"):
        if alive[column].notna().all() and not alive.empty:
            return column
    return None


def steps_ratio(plain: float, bn: float) -> float:
    """Steps to 0.95 without BN over with BN, one seed: inf where only BN reaches it, 0 where
    only the plain net does, NaN where neither does."""
    if math.isnan(bn):
        return 0.0 if not math.isnan(plain) else math.nan
    return math.inf if math.isnan(plain) else plain / bn


def cells(members: pd.DataFrame) -> pd.DataFrame:
    """One row per (optimizer, lr, init_std): the BN advantage of each claim, mean over seeds,
    and its verdict; cells where a member of either net diverged have no verdict."""
    early = early_column(members)
    paired = members.pivot_table(
        index=["optimizer", "lr", "init_std", "seed"],
        columns="net",
        values=["final_acc", "acc_1k", "acc_5k", "steps_to_095", "drift", "diverged"],
        aggfunc="first",
        dropna=False,
    )
    rows = []
    for (optimizer, lr, init_std), seeds in paired.groupby(level=[0, 1, 2]):
        plain_diverged = int(seeds["diverged"]["plain"].astype(bool).sum())
        bn_diverged = int(seeds["diverged"]["bn"].astype(bool).sum())
        final = seeds["final_acc"]["bn"] - seeds["final_acc"]["plain"]
        gap_early = (
            seeds[early]["bn"] - seeds[early]["plain"]
            if early
            else pd.Series(math.nan, final.index)
        )
        ratio = pd.Series(
            [
                steps_ratio(p, b)
                for p, b in zip(
                    seeds["steps_to_095"]["plain"].astype(float),
                    seeds["steps_to_095"]["bn"].astype(float),
                    strict=True,
                )
            ],
            index=final.index,
        )
        drift = seeds["drift"]["plain"] / seeds["drift"]["bn"]
        row = {
            "optimizer": optimizer, "lr": lr, "init_std": init_std,
            "plain_diverged": plain_diverged, "bn_diverged": bn_diverged,
            "seeds": len(seeds), "final_gap": final.mean(), "early_gap": gap_early.mean(),
            "plain_final": seeds["final_acc"]["plain"].mean(),
            "bn_final": seeds["final_acc"]["bn"].mean(),
            "reached_plain": int(seeds["steps_to_095"]["plain"].notna().sum()),
            "reached_bn": int(seeds["steps_to_095"]["bn"].notna().sum()),
            "steps_ratio": ratio.mean() if np.isfinite(ratio).all() else math.nan,
            "drift_ratio": drift.mean(),
        }  # fmt: skip
        claims = {"ends_higher": final, "faster_early": gap_early, "stabler": drift - 1}
        for claim, advantage in claims.items():
            row[claim] = "diverged" if plain_diverged or bn_diverged else verdict(advantage)
        rows.append(row)
    return pd.DataFrame(rows)


def ratio_text(cell: pd.Series) -> str:
    """A steps-to-0.95 cell's text: the ratio, or which net never reached 0.95."""
    if cell.plain_diverged or cell.bn_diverged:
        return "div."
    if not math.isnan(cell.steps_ratio):
        return f"{cell.steps_ratio:.1f}x"
    if cell.reached_bn == cell.seeds and cell.reached_plain == 0:
        return "BN only"
    if cell.reached_plain == cell.seeds and cell.reached_bn == 0:
        return "plain only"
    if cell.reached_plain == 0 and cell.reached_bn == 0:
        return "neither"
    return f"{cell.reached_plain}/{cell.reached_bn} seeds"


CAPTION = (
    "Means over seeds. After a value: + the claim holds in every seed, − it is reversed in "
    "every seed, ± mixed; div.: a member diverged. Grey: no value."
)
VERDICT_MARK = {"holds": "+", "reversed": "−", "mixed": "±", "diverged": "div.", "undefined": "?"}


def panels(table: pd.DataFrame, early: str | None) -> list[HeatmapPanel]:
    """The four heatmaps of the map: value, text and verdict mark of every cell."""

    def text(value: pd.Series, fmt: str, claim: pd.Series, unit: str = "") -> list[str]:
        return [
            "div." if mark == "diverged" else f"{v:{fmt}}{unit}{VERDICT_MARK[mark]}"
            for v, mark in zip(value, claim, strict=True)
        ]

    def shown(values: pd.Series) -> pd.Series:
        """No colour for a diverged cell: its mean is over the seeds that did not diverge."""
        return values.where(table.ends_higher != "diverged")

    early_name = {"acc_5k": "5,000", "acc_1k": "1,000"}.get(early, "—")
    return [
        HeatmapPanel(
            "final accuracy gap, BN − plain (points)", shown(table.final_gap * 100),
            text(table.final_gap * 100, "+.2f", table.ends_higher), "difference",
        ),
        HeatmapPanel(
            f"accuracy gap at step {early_name} (points)", shown(table.early_gap * 100),
            text(table.early_gap * 100, "+.1f", table.faster_early), "difference",
        ),
        HeatmapPanel(
            "steps to 0.95: plain / BN", shown(table.steps_ratio),
            [ratio_text(cell) for _, cell in table.iterrows()], "ratio",
        ),
        HeatmapPanel(
            "percentile drift: plain / BN", shown(table.drift_ratio),
            text(table.drift_ratio, ".1f", table.stabler, "x"), "ratio",
        ),
    ]  # fmt: skip


# ---------------------------------------------------------------- README

CLAIMS = {
    "ends_higher": ("(a) BN ends higher", "final_gap", "final test accuracy, BN − plain, points"),
    "faster_early": ("(b) BN learns faster early", "early_gap", None),
    "stabler": (
        "(c) BN keeps the sigmoid input's distribution stabler",
        "drift_ratio",
        "drift without BN / drift with BN",
    ),
}


def number(value: float, claim: str) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}x" if claim == "stabler" else f"{value * 100:+.2f}"


def claim_table(table: pd.DataFrame, claim: str, optimizer: str) -> list[str]:
    """One optimizer's map of one claim: init std down, lr across, mean and verdict."""
    rows = table[table.optimizer == optimizer]
    lrs = sorted(set(rows.lr))
    lines = [
        "| init std \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
        "|---|" + "---|" * len(lrs),
    ]
    value = CLAIMS[claim][1]
    for std, by_std in rows.groupby("init_std"):
        by_lr = by_std.set_index("lr")
        lines.append(
            f"| {std:g} | "
            + " | ".join(
                "diverged" if by_lr.at[lr, claim] == "diverged"
                else f"{number(by_lr.at[lr, value], claim)} {by_lr.at[lr, claim]}"
                for lr in lrs
            )
            + " |"
        )  # fmt: skip
    return lines


def region(table: pd.DataFrame, claim: str) -> str:
    """How many cells of each optimizer's map end with each verdict."""
    parts = []
    for optimizer, name in OPTIMIZERS.items():
        counts = table[table.optimizer == optimizer][claim].value_counts()
        total = int(counts.sum())
        found = ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if verdict != "holds")
        parts.append(
            f"{name}: holds in {int(counts.get('holds', 0))} of {total} cells"
            + (f" ({found})" if found else "")
        )
    return "; ".join(parts) + "."


def protocol_lines(table: pd.DataFrame, early: str | None) -> list[str]:
    lines = [
        "| protocol | optimizer, lr, init std | plain / BN final | final gap | early gap | "
        "steps to 0.95 plain / BN | drift plain / BN |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (optimizer, lr, std) in PROTOCOLS.items():
        cell = table[(table.optimizer == optimizer) & (table.lr == lr) & (table.init_std == std)]
        if cell.empty:
            lines.append(f"| {name} | {OPTIMIZERS[optimizer]}, {lr:g}, {std:g} | not on this map |")
            continue
        c = cell.iloc[0]
        lines.append(
            f"| {name} | {OPTIMIZERS[optimizer]}, {lr:g}, {std:g} | "
            f"{c.plain_final:.4f} / {c.bn_final:.4f} | {number(c.final_gap, '')} {c.ends_higher} | "
            f"{number(c.early_gap, '') if early else '—'} {c.faster_early} | {ratio_text(c)} | "
            f"{number(c.drift_ratio, 'stabler')} {c.stabler} |"
        )
    return lines


def readme(members: pd.DataFrame, table: pd.DataFrame, provenance: dict) -> str:
    """README.md: the map's protocol, how each claim is decided, where each holds, where our
    protocols sit, the diverged members and how the numbers were made."""
    early = early_column(members)
    return "\n".join(
        [
            *introduction(members),
            *decision_rule(members, early),
            *claim_regions(table),
            *protocol_section(table, early),
            *diverged_section(members),
            *how_made(members, provenance),
        ]
    )


def introduction(members: pd.DataFrame) -> list[str]:
    """The title, the map's length and its grid."""
    steps = int(members.steps.max())
    length = (
        "Figure 1's full 50,000 steps"
        if steps == 50_000
        else f"{steps:,} steps, shorter than Figure 1's 50,000 (a quick look)"
    )
    lrs, stds = (", ".join(f"{v:g}" for v in sorted(set(members[k]))) for k in ("lr", "init_std"))
    return [
        "# Figure 1 across learning rate, init std and optimizer",
        "",
        "Regenerated by `make reproduce-sensitivity` (training) or `make figures` (drawing only) "
        "from",
        "`members.csv` in this folder; do not edit by hand.",
        "",
        f"This map was trained for {length}.",
        "",
        "The paper states no optimizer, learning rate or initialization for its MNIST net. Both",
        "nets (without and with BN) are trained with each optimizer "
        f"({', '.join(OPTIMIZERS.values())})",
        f"at every learning rate ({lrs}) and every init std ({stds};",
        f"weights drawn from N(0, std²)), seeds {', '.join(map(str, sorted(set(members.seed))))}: "
        f"{len(members):,} members.",
        "",
        "![BN advantage over the map](sensitivity.png)",
        "",
    ]


def decision_rule(members: pd.DataFrame, early: str | None) -> list[str]:
    """How a claim is decided in a cell, and the advantage each claim is decided by."""
    early_steps = {"acc_5k": "5,000", "acc_1k": "1,000"}.get(early)
    steps = int(members.steps.max())
    return [
        "## How each claim is decided",
        "",
        "Each cell (optimizer, lr, init std) pairs the two nets seed by seed. A claim **holds** in",
        "a cell when BN's advantage is positive for every seed, is **reversed** when it is",
        "negative for every seed, and is **mixed** otherwise; a cell where any member of either",
        "net diverged (its training loss became non-finite) is **diverged** and decides nothing.",
        "The numbers shown are means over seeds. The advantages:",
        "",
        "- (a) BN ends higher: final test accuracy with BN minus without.",
        "- (b) BN learns faster early: test accuracy with BN minus without at step "
        + (
            f"{early_steps}."
            if early
            else "5,000 (not decided here: the runs are shorter than 1,000 steps)."
        ),
        "  The steps to first reach 0.95 (without BN / with BN) are drawn beside it.",
        "- (c) BN keeps the sigmoid input's distribution stabler: drift without BN / drift with BN",
        "  (the advantage is this ratio minus 1: positive where BN drifts less). A member's",
        "  drift (`drift` in `members.csv`) is the mean over the 15th, 50th and 85th percentiles",
        "  of the probed last-layer sigmoid's input (Figure 1(b, c)) of each",
        "  percentile's range, max − min, over the steps after the first 2% of the run",
        f"  (steps ≥ {DRIFT_FROM * steps:,.0f} here); `drift_p15`, `drift_p50`, `drift_p85` hold "
        "the three ranges.",
        "",
    ]


def claim_regions(table: pd.DataFrame) -> list[str]:
    """For each claim, the cells it holds in and each optimizer's map of it."""
    lines = ["## Where each Figure 1 claim holds", ""]
    for claim, (title, _, _) in CLAIMS.items():
        lines += [f"### {title}", "", region(table, claim), ""]
        for optimizer, name in OPTIMIZERS.items():
            lines += [f"{name}:", "", *claim_table(table, claim, optimizer), ""]
    return lines


def protocol_section(table: pd.DataFrame, early: str | None) -> list[str]:
    return [
        "## Where our protocol and the public reproduction's sit",
        "",
        *protocol_lines(table, early),
        "",
        "Accuracy gaps in points (BN − plain); a verdict follows each advantage.",
        "",
    ]


def diverged_section(members: pd.DataFrame) -> list[str]:
    diverged = members[members.diverged]
    rows = [
        "| net | optimizer | lr | init std | seed | diverged at step |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r.net} | {r.optimizer} | {r.lr:g} | {r.init_std:g} | {r.seed} | "
            f"{int(r.diverged_at_step):,} |"
            for r in diverged.itertuples()
        ],
    ]
    if diverged.empty:
        rows = ["None: every member trained to its last step with a finite loss."]
    return ["## Diverged members", "", *rows, ""]


def how_made(members: pd.DataFrame, provenance: dict) -> list[str]:
    """The protocol, what members.csv leaves empty, and the command, without the options
    that only name folders or share out the work."""
    config = next(iter(provenance.get("config", {}).values()), {})
    eval_every = config.get("eval_every")
    probe_every = config.get("probe", {}).get("every")
    command = provenance.get("command")
    shown = stable_command(command, FOLDER_AND_SHARING_OPTIONS) if command else "not recorded"
    return [
        "## How these numbers were made",
        "",
        f"- protocol: Figure 1's (`experiment=figure1`: batches of 60) for "
        f"{int(members.steps.max()):,} steps; test accuracy every {every(eval_every)}, the "
        f"percentiles every {every(probe_every)}",
        "- members.csv: one row per member; the accuracies at steps 1,000, 5,000 and 10,000, the",
        "  first evaluated step at 0.95 and 0.97, and everything of a diverged member from the",
        "  step it diverged on are empty where there is no such value",
        f"- command: `{shown}`",
        "- the machine, the code's commit, the date and each run's wall time: `provenance.json`",
        "",
    ]


def every(steps: int | None) -> str:
    return f"{steps:,} steps" if steps else "(not recorded) steps"


def check_members(members: pd.DataFrame, path: Path) -> None:
    """members.csv is whole: every net x optimizer x lr x init std x seed once, a final
    accuracy for each member that did not diverge, a step for each one that did."""
    grid = itertools.product(
        sorted(NETS.values()),
        sorted(OPTIMIZERS),
        *(sorted(set(members[k])) for k in MEMBER_KEYS[2:]),
    )
    check_groups(members, path, list(MEMBER_KEYS), grid, DRAW_FIX)
    check_unique(members, path, list(MEMBER_KEYS), DRAW_FIX)
    bad = members[members.diverged == members.final_acc.notna()]
    bad = pd.concat([bad, members[members.diverged & members.diverged_at_step.isna()]])
    if not bad.empty:
        r = bad.iloc[0]
        fail(
            f"{path}: the member net={r.net}, optimizer={r.optimizer}, lr={r.lr:g}, "
            f"init_std={r.init_std:g}, seed={r.seed} has diverged={r.diverged} but "
            + ("a final accuracy." if r.diverged and r.final_acc == r.final_acc else
               "no step it diverged on." if r.diverged else "no final accuracy."),
            DRAW_FIX,
        )  # fmt: skip


def draw(out_dir: Path) -> None:
    """sensitivity.png/.pdf and README.md from members.csv, once it is known whole."""
    path = out_dir / "members.csv"
    members = read_csv(path, MEMBER_COLUMNS, DRAW_FIX, MEMBER_OPTIONAL)
    members["diverged"] = members.diverged.astype(bool)
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    check_members(members, path)
    table = cells(members)
    for written in sensitivity_heatmaps(
        table, OPTIMIZERS, panels(table, early_column(members)), out_dir, CAPTION
    ):
        print(f"wrote {written}")
    atomic_write_text(out_dir / "README.md", readme(members, table, provenance))
    print(f"wrote {out_dir / 'README.md'}")


DRIVER = Driver(
    name="sensitivity",
    doc=__doc__,
    run=run,
    collect=collect,
    draw=draw,
    options=(
        steps_option(None, QUICK["steps"], "Figure 1's 50,000"),
        Option(
            "--lrs",
            f"learning rates of the grid (default {','.join(f'{v:g}' for v in LRS)})",
            value_list("--lrs", "0.01,0.1,1"),
            LRS,
            QUICK["lrs"],
        ),
        Option(
            "--init-stds",
            f"init stds of the grid (default {','.join(f'{v:g}' for v in INIT_STDS)})",
            value_list("--init-stds", "0.01,0.1,1"),
            INIT_STDS,
            QUICK["init_stds"],
        ),
        device_option(),
        Option(
            "--jobs",
            "training processes at a time (default 2; 4, every run at once, with --device cuda)",
            positive_int("--jobs", "processes at a time", 2),
            lambda options: (
                len(NETS) * len(OPTIMIZERS) if (options["device"] or "").startswith("cuda") else 2
            ),
        ),
    ),
    tolerances=TOLERANCES,
)
