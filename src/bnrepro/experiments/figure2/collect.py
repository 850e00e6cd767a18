"""figure2's `collect`: the finished runs of a sweep (separate or packed, with its ladder and
decay arm) gathered into the results folder's CSV files and provenance.json, once they are
known to be the whole protocol (bnrepro.tables)."""

import json
import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from bnrepro.atomic import write_json
from bnrepro.driver import Invocation, provenance, write_csv
from bnrepro.experiments.figure2.protocol import (
    ACCEPTED,
    CAMPAIGNS,
    CURVE_COLUMNS,
    DECAY_DIR,
    DECAY_FIX,
    DECAY_SPEEDUPS,
    DECAY_STATUSES,
    DRAW_FIX,
    LADDER_COLUMNS,
    LADDER_DIR,
    LADDER_FAMILIES,
    LADDER_FIX,
    LADDER_KEYS,
    LADDER_MULTIPLIERS,
    LADDER_REUSED,
    LADDER_STATUSES,
    LADDER_SUMMARY_COLUMNS,
    METRIC_COLUMNS,
    PACKED_SWEEPS,
    PACKS_DIR,
    SUMMARY_COLUMNS,
    SWEEP_FIX,
    decay_variant,
    ladder_rungs,
    rung_name,
)
from bnrepro.tables import (
    MEASURED,
    MISSING_FIX,
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

# The images in each dataset's test split (bnrepro.data pins the files by their md5): what one
# evaluation takes when `data.eval_size` is null; otherwise it takes the split's first
# `eval_size`.
TEST_IMAGES = {"mnist": 10_000, "fashion_mnist": 10_000}


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


def run_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's rows (SUMMARY_COLUMNS) of `runs` as `load_sweep` gives them: each run's
    own status and the held-out images of its evaluations, by variant and seed."""
    summary = runs.drop(columns="status").rename(columns={"seed_status": "status"})
    summary["eval_images"] = eval_images(runs)
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


def missing_fix(runs_dir: Path) -> str:
    """How to train the runs a sweep or a campaign's records lack."""
    campaign = campaign_record(runs_dir).get("campaign")
    if not campaign:
        return MISSING_FIX
    plan = campaign.get("plan_file", "<its plan file>")
    preset = next((name for name, path in CAMPAIGNS.items() if path == plan), None)
    make = f" (`make reproduce-figure2 PRESET={preset}`)" if preset else ""
    return (
        f"these are a campaign's records: train its missing runs with `python -m bnrepro.campaign "
        f"run {plan} --runs <its runs folder>`{make}, which copies each ended run's record here, "
        "then collect again"
    )


def sweep_wall_s(run_dirs: Iterable[str]) -> int:
    """The seconds from the first start to the last end of the runs in `run_dirs`, from
    their run.json."""
    spans = []
    for run_dir in run_dirs:
        info = json.loads((Path(run_dir) / "run.json").read_text())
        start = datetime.strptime(info["started"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
        spans.append((start, start + info["wall_s"]))
    return round(max(end for _, end in spans) - min(s for s, _ in spans))


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
    check_runs(runs, runs_dir, ACCEPTED, missing_fix(runs_dir))
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
            sweep_wall_s=sweep_wall_s(run_dirs),
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


def pack_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Every pack's metrics.csv, checked whole (each member of `runs` logged once a step up to
    its last), each row with its member's variant of the main comparison and rung of the
    ladder (`main`, `rung`)."""
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
    return metrics


def packed_ladder(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ladder.csv and ladder_summary.csv (LADDER_COLUMNS, LADDER_SUMMARY_COLUMNS) of the
    members that are rungs of the ladder: `runs` (each member's `variant_main` and `rung`) and
    their `metrics`."""
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
    return ladder, ladder_summary


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
    runs["eval_images"] = eval_images(runs)
    metrics = pack_metrics(runs)
    runs = runs.rename(columns={"main": "variant_main"})
    summary = runs.dropna(subset=["variant_main"]).drop(columns=["variant", "status"])
    summary = summary.rename(columns={"variant_main": "variant", "seed_status": "status"})
    summary = summary[list(SUMMARY_COLUMNS)].sort_values(["variant", "seed"])
    curves = metrics.dropna(subset=["main"]).rename(columns={"main": "variant"})
    curves = curves[list(CURVE_COLUMNS)].sort_values(["variant", "seed", "step"])
    check_curves(
        curves, out_dir / "curves.csv", summary, out_dir / "summary.csv", ACCEPTED, SWEEP_FIX
    )
    ladder, ladder_summary = packed_ladder(runs, metrics)
    check_ladder(ladder, out_dir / "ladder.csv", ladder_summary, out_dir / "ladder_summary.csv")
    write_csv(out_dir / "curves.csv", curves)
    write_csv(out_dir / "summary.csv", summary)
    write_csv(out_dir / "ladder.csv", ladder)
    write_csv(out_dir / "ladder_summary.csv", ladder_summary)
    packs = runs.drop_duplicates("run_dir")
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
            sweep_wall_s=sweep_wall_s(packs.run_dir),
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


def eval_images(runs: pd.DataFrame) -> list[int]:
    """The held-out images of each evaluation of each run of `runs` (as `load_sweep` gives
    them), from its data config."""
    return [
        held_out_images(data, f"{run_dir}/config.yaml")
        for data, run_dir in zip(run_data(runs), runs.run_dir, strict=True)
    ]


def trained_preset(invocation: Invocation) -> str | None:
    """The preset the runs were trained with as far as the command says: `run`'s, or quick
    for `collect --quick`; None (the README's "not recorded") for other runs collected."""
    return invocation.preset if invocation.action == "run" or invocation.quick else None


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
