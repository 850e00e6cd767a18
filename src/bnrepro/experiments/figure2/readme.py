"""figure2's README.md, one section a function, from the tables `draw` writes and
provenance.json."""

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from bnrepro import markdown
from bnrepro.experiments.figure2.analysis import (
    BOOTSTRAP_RESAMPLES,
    CHANCE_MARGIN,
    PLATEAU_TAIL,
    PLATEAU_TOLERANCE,
    at_chance,
    relation_value,
    verdicts,
)
from bnrepro.experiments.figure2.protocol import CONTROLS, LABELS, LADDER_LABELS, MAIN
from bnrepro.runinfo import stable_command
from bnrepro.verdicts import NO_HISTORY, file_at, has_history

PAPER_CONTROLS = {
    "inception_x5": "diverged (parameters reached machine infinity)",
    "inception_sigmoid": "never above chance (0.1% on 1000 classes)",
}
# The paper's schedule: GoogLeNet's lr x 0.96 every 8 epochs; plain Inception took 31M steps of
# 32 to its maximum, about 97 of those decays; the recipes decay 6 times faster (change 4).
PAPER_INCEPTION_DECAYS = 97
PAPER_DECAY_SPEEDUP = 6
# A row of table.csv or summary.csv as `DataFrame.itertuples()` gives it: its columns by name.
TableRow = Any


def missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt(value: float | None, spec: str, suffix: str = "", none: str = "—") -> str:
    """`value` formatted with `spec` and `suffix`, or `none` when it is missing (None, NaN, inf)."""
    return none if missing(value) else f"{value:{spec}}{suffix}"


def with_interval(point: float | None, low: float | None, high: float | None, spec: str) -> str:
    """`point [low, high]`, each formatted with `spec`."""
    return f"{fmt(point, spec)} [{fmt(low, spec)}, {fmt(high, spec)}]"


def speedup_text(r: TableRow) -> str:
    """A row's speed-up and its interval: "not reached" where the mean curve never reaches
    the target, "—" where the speed-up is undefined (at the target from step 0)."""
    point = "not reached" if missing(r.steps_to_target) else fmt(r.speedup, ".1f", "x")
    return f"{point} [{fmt(r.speedup_low, '.1f', 'x')}, {fmt(r.speedup_high, '.1f', 'x')}]"


def seed_spread(r: TableRow) -> str:
    """The fewest and most steps one seed's own curve took to the target."""
    if not r.seeds_reaching:
        return "none reached"
    if r.seeds_reaching < r.seeds:
        return f"{r.seed_steps_min:,.0f} at best; {r.seeds_reaching} of {r.seeds} reached"
    return f"{r.seed_steps_min:,.0f}–{r.seed_steps_max:,.0f}"


def ladder_cell(r: TableRow, chance: float) -> str:
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


def steps_text(r: TableRow) -> str:
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


def crossing_text(r: TableRow) -> str:
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


FIGURE3_HEADER = (
    "model", "steps to target [95%]", "per seed", "max accuracy [95%]", "speed-up [95%]",
    "resamples reaching it", "paper: steps", "paper: max", "paper: speed-up",
)  # fmt: skip


def figure3_rows(results: pd.DataFrame) -> list[tuple]:
    """The Figure 3 analogue's rows: each of the five variants beside the paper's."""
    rows = []
    for r in results[results.variant.isin(MAIN)].itertuples():
        paper_steps = None if missing(r.paper_steps_to_target) else r.paper_steps_to_target / 1e6
        accuracy = with_interval(r.max_acc, r.max_acc_low, r.max_acc_high, ".4f")
        rows.append(
            (
                LABELS[r.variant], steps_text(r), seed_spread(r), accuracy, speedup_text(r),
                f"{r.reach_fraction:.1%}", fmt(paper_steps, ".1f", "M", none="not reached"),
                f"{r.paper_max_acc:.1%}", fmt(r.paper_speedup, ".1f", "x"),
            )
        )  # fmt: skip
    return rows


def figure3_section(results: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """The title, Figure 2 and the Figure 3 analogue with its intervals."""
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
        "![training loss](figure2_train_loss.png)",
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
        *markdown.table(FIGURE3_HEADER, figure3_rows(results)),
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
    return lines


def crossings_section(results: pd.DataFrame) -> list[str]:
    """Where each mean curve crosses the target, by how much, beside the evaluation noise."""
    return [
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
        *markdown.table(
            ("model", "mean accuracy there", "crossing"),
            [
                (LABELS[r.variant], fmt(r.crossing_acc, ".4f"), crossing_text(r))
                for r in results[results.variant.isin(MAIN)].itertuples()
            ],
        ),
    ]


def controls_section(results: pd.DataFrame) -> list[str]:
    """How the two controls ended, beside the paper's outcome."""
    rows = []
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
        rows.append((LABELS[r.variant], ours, PAPER_CONTROLS[r.variant]))
    return ["", "## Controls", "", *markdown.table(("control", "ours", "paper"), rows)]


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
        *markdown.table(
            ("relation (Section 4.2.2)", "paper", "ours [95%]", "verdict"),
            verdicts(results, found),
        ),
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
    ]
    header = ("rate", "seed", LADDER_LABELS["inception"], LADDER_LABELS["bn_recipe"])
    cells = []
    for (multiplier, seed), rows in ladder.groupby(["multiplier", "seed"]):
        cell = {r.family: ladder_cell(r, chance) for r in rows.itertuples()}
        cells.append((f"x{multiplier}", seed, cell["inception"], cell["bn_recipe"]))
    return lines + markdown.table(header, cells)


def runs_section(seeds: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Every run of the main sweep: how it ended and its own curve against the target."""
    runs = seeds.merge(summary[["variant", "seed", "diverged_at_step", "steps"]])
    header = (
        "variant", "seed", "status", "diverged at step", "steps", "steps to target",
        "max accuracy",
    )  # fmt: skip
    rows = [
        (
            r.variant, r.seed, r.status, fmt(r.diverged_at_step, ",.0f"), f"{r.steps:,}",
            fmt(r.steps_to_target, ",.0f", none="not reached"), f"{r.max_acc:.4f}",
        )
        for r in runs.itertuples()
    ]  # fmt: skip
    return ["", "## Per run", "", *markdown.table(header, rows)]


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
    ]
    header = (
        "decay speed-up", "steps to target [95%]", "max accuracy [95%]",
        "steps(Inception) / steps(BN-x5) [95%]", "fewer steps than Inception",
    )  # fmt: skip
    rows = []
    for r in decays.itertuples():
        ratio = ", ".join(relation_value(v, "ratio") for v in (r.ratio_low, r.ratio_high))
        rows.append(
            (
                f"{r.decay_speedup}x{' (the recipe)' if r.variant == 'bn_x5' else ''}",
                steps_text(r), with_interval(r.max_acc, r.max_acc_low, r.max_acc_high, ".4f"),
                f"{relation_value(r.ratio, 'ratio')} [{ratio}]", r.verdict,
            )
        )  # fmt: skip
    return lines + markdown.table(header, rows)


def readme(
    results: pd.DataFrame,
    found: pd.DataFrame,
    seeds: pd.DataFrame,
    checks: pd.DataFrame,
    ladder: pd.DataFrame,
    summary: pd.DataFrame,
    provenance: dict,
    decays: pd.DataFrame | None = None,
    history: Sequence[str] = (),
) -> str:
    """README.md: the Figure 3 analogue with intervals, the verdicts, the plateau check and
    the ladder, from the tables `draw` writes; how they were made where provenance.json says;
    `history`, the section linking HISTORY.md (bnrepro.markdown.history_lines)."""
    lines = [
        *figure3_section(results, summary),
        *crossings_section(results),
        *controls_section(results),
        *relations_section(results, found),
        *plan_section(provenance),
        *plateau_section(checks),
        *(decay_section(decays) if decays is not None else []),
        *ladder_section(ladder, results.chance_acc.iloc[0], provenance),
        *runs_section(seeds, summary),
        *(protocol_section(provenance) if provenance else []),
        *(["", *history] if history else []),
        "",
    ]
    return "\n".join(lines)
