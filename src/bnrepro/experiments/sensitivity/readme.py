"""README.md of a sensitivity map: its protocol, how each claim is decided in a cell (the
measure, the minimum effect and why, the rule's false-positive rates), where each claim holds,
where the two Figure 1 protocols sit, the diverged members and how the numbers were made."""

import math
import textwrap

import pandas as pd

from bnrepro import markdown
from bnrepro.drift import DEFINITION, DRIFT_FROM
from bnrepro.experiments.sensitivity.analysis import (
    CLAIMS,
    DRIFT_HALVES_FOLDERS,
    DRIFT_HALVES_GAP,
    DRIFT_HALVES_MEDIAN,
    EARLIER_RULE,
    MIN_EFFECT,
    MINIMUM_SINCE,
    NULL_DRAWS,
    RATIOS,
    TEST_IMAGES,
    WEAK_RATE,
    cells,
    early_column,
    false_positive_rates,
)
from bnrepro.experiments.sensitivity.protocol import FIGURE1_STEPS, OPTIMIZERS, PROTOCOLS
from bnrepro.runinfo import stable_command

# Options that only name folders or share out the work: left out of the command the README
# shows, which is then the same for every faithful run of the protocol.
FOLDER_AND_SHARING_OPTIONS = ("--out", "--runs", "--jobs", "--device")


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


def number(value: float, ratio: bool) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}x" if ratio else f"{value * 100:+.2f}"


def cell_text(cell: pd.Series, claim: str) -> str:
    """A cell's mean and verdict of `claim`, or `diverged`."""
    if cell[claim] == "diverged":
        return "diverged"
    _, column, measure = CLAIMS[claim]
    value = ratio_text(cell) if column == "steps_ratio" else number(cell[column], measure in RATIOS)
    return f"{value} {cell[claim]}"


def claim_table(table: pd.DataFrame, claim: str, optimizer: str) -> list[str]:
    """One optimizer's map of one claim: init std down, lr across, mean and verdict."""
    rows = table[table.optimizer == optimizer]
    lrs = sorted(set(rows.lr))
    by_std = [
        (f"{std:g}", *(cell_text(group.set_index("lr").loc[lr], claim) for lr in lrs))
        for std, group in rows.groupby("init_std")
    ]
    return markdown.table(("init std \\ lr", *(f"{lr:g}" for lr in lrs)), by_std)


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


def protocol_name(name: str, folder: str, steps: int) -> str:
    """A protocol's row label: the results folder it is, on a map of Figure 1's length; on a
    shorter map only its optimizer, lr and init std are that folder's, not its numbers."""
    if steps == FIGURE1_STEPS:
        return f"{name} ({folder})"
    return f"{name} at {steps:,} steps ({folder} trains {FIGURE1_STEPS:,})"


def protocol_lines(table: pd.DataFrame, early: str | None, steps: int) -> list[str]:
    header = (
        "protocol", "optimizer, lr, init std", "plain / BN final", "final gap", "early gap",
        "steps to 0.95 plain / BN", "percentile drift plain / BN",
    )  # fmt: skip
    rows = []
    for (name, folder), (optimizer, lr, std) in PROTOCOLS.items():
        label = protocol_name(name, folder, steps)
        cell = table[(table.optimizer == optimizer) & (table.lr == lr) & (table.init_std == std)]
        if cell.empty:
            rows.append((label, f"{OPTIMIZERS[optimizer]}, {lr:g}, {std:g}", "not on this map"))
            continue
        c = cell.iloc[0]
        rows.append(
            (
                label, f"{OPTIMIZERS[optimizer]}, {lr:g}, {std:g}",
                f"{c.plain_final:.4f} / {c.bn_final:.4f}",
                f"{number(c.final_gap, False)} {c.ends_higher}",
                f"{number(c.early_gap, False) if early else '—'} {c.faster_early}",
                f"{ratio_text(c)} {c.sooner_to_095}",
                f"{number(c.drift_ratio, True)} {c.stabler}",
            )
        )  # fmt: skip
    return markdown.table(header, rows)


def readme(members: pd.DataFrame, table: pd.DataFrame, provenance: dict) -> str:
    """README.md: the map's protocol, how each claim is decided, where each holds, where our
    protocols sit, the diverged members and how the numbers were made."""
    early = early_column(members)
    return "\n".join(
        [
            *introduction(members),
            *decision_rule(members, early, provenance),
            *claim_regions(table),
            *protocol_section(table, early, int(members.steps.max())),
            *diverged_section(members),
            *history_section(members, table, provenance),
            *how_made(members, provenance),
        ]
    )


def introduction(members: pd.DataFrame) -> list[str]:
    """The title, the map's length and its grid."""
    steps = int(members.steps.max())
    length = (
        "Figure 1's full 50,000 steps"
        if steps == FIGURE1_STEPS
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


def wrapped(text: str, first: str = "", rest: str = "") -> list[str]:
    """`text` as README lines of at most 90 characters, the first led by `first`, the others by
    `rest` (a list item: "- " and "  ")."""
    return textwrap.wrap(
        text, 90, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def decision_rule(members: pd.DataFrame, early: str | None, provenance: dict) -> list[str]:
    """How a claim is decided in a cell: the measure each claim is decided by, the minimum
    effect of each measure and why, and how often the rule errs where there is no effect."""
    early_steps = {"acc_5k": "5,000", "acc_1k": "1,000"}.get(early)
    steps = int(members.steps.max())
    n_seeds = members.seed.nunique()
    early_text = (
        f"{early_steps}." if early else "5,000 (not decided here: the runs are shorter than "
        "1,000 steps)."
    )  # fmt: skip
    item = {"first": "- ", "rest": "  "}
    rates = false_positive_rates(members)
    return [
        "## How each claim is decided",
        "",
        "Each cell (optimizer, lr, init std) pairs the two nets seed by seed, and each claim is",
        "decided by one measure of BN's advantage per seed:",
        "",
        *wrapped("(a) BN ends higher: final test accuracy with BN minus without.", **item),
        *wrapped(
            "(b) BN learns faster early: test accuracy with BN minus without at step "
            f"{early_text} And the steps to first reach 0.95, without BN / with BN (a seed "
            "where only BN reaches 0.95 counts as BN ahead without bound, one where only the "
            "plain net does as BN behind; one where neither does leaves the cell undefined).",
            **item,
        ),
        *wrapped(
            "(c) BN keeps the sigmoid input's distribution stabler: percentile drift without BN "
            "/ with BN, the suite's one measure of Figure 1(b, c)'s stability, the same in "
            f"every results folder that judges it. {DEFINITION[0].upper()}{DEFINITION[1:]}. "
            "A member's is `drift` in `members.csv`, of the probed last-layer sigmoid's input "
            f"(steps ≥ {DRIFT_FROM * steps:,.0f} here); `drift_p15`, `drift_p50`, `drift_p85` "
            "hold the three ranges.",
            **item,
        ),
        "",
        *wrapped(
            f"With {n_seeds} seed{'s' if n_seeds > 1 else ''} and no effect at all, the seeds "
            f"agree in sign {2 * 0.5**n_seeds:.0%} of the time (2 × 0.5^{n_seeds}), so "
            "agreement alone does not decide a claim. A claim **holds** in a cell when every "
            "seed puts BN ahead *and* the mean over seeds is beyond the measure's minimum "
            "effect (a ratio: above 1 + minimum); it is **reversed** when every seed puts BN "
            "behind and the mean is beyond the minimum the other way (a ratio: below 1 / (1 + "
            "minimum)). A cell whose seeds agree but whose mean is within the minimum is "
            "**small**, one whose seeds disagree is **mixed**; a cell where any member of "
            "either net diverged (its training loss became non-finite) is **diverged** and "
            "decides nothing. The numbers shown are means over seeds."
        ),
        "",
        *minimum_table(members, rates),
        "",
        *minimum_reasons(members, provenance),
        "",
        *false_positive_text(members, rates),
        "",
    ]


def minimum_table(members: pd.DataFrame, rates: dict[str, tuple[float, float] | None]) -> list[str]:
    """Each claim's measure, its minimum effect and the rule's false-positive `rates`."""
    header = (
        "claim", "measure per seed", "minimum effect of the mean",
        "called holds or reversed without an effect", "by agreement in sign alone",
    )  # fmt: skip
    rows = []
    for claim, (title, _, measure) in CLAIMS.items():
        minimum = MIN_EFFECT[measure]
        shown = (
            f"1 ± {minimum:.0%} (above {1 + minimum:.2f}x or below {1 / (1 + minimum):.2f}x)"
            if measure in RATIOS
            else f"± {minimum * 100:.2f} points ({minimum * TEST_IMAGES:.0f} test images)"
        )
        rate = rates[claim]
        with_minimum, by_sign = (
            (f"{rate[0]:.1%}", f"{rate[1]:.1%}") if rate else ("not estimable",) * 2
        )
        rows.append((title, measure, shown, with_minimum, by_sign))
    return markdown.table(header, rows)


def minimum_reasons(members: pd.DataFrame, provenance: dict) -> list[str]:
    """Why each minimum: the noise of one measurement of its measure, with this map's numbers
    where the map has them."""
    alive = members[~members.diverged]
    median = float(alive.final_acc.median())
    error = math.sqrt(median * (1 - median) / TEST_IMAGES) * 100
    config = next(iter(provenance.get("config", {}).values()), {})
    eval_every = config.get("eval_every")
    bn_steps = members[members.net == "bn"].steps_to_095.dropna()
    steps_noise = (
        f"{eval_every:,} steps here, {eval_every / bn_steps.median():.0%} of the "
        f"{bn_steps.median():,.0f} steps the median BN member takes to reach 0.95"
        if eval_every and len(bn_steps)
        else f"{every(eval_every)} here; no BN member of this map reaches 0.95"
    )
    folders = ", ".join(f"results/{name}" for name in DRIFT_HALVES_FOLDERS)
    item = {"first": "- ", "rest": "  "}
    return [
        "Each minimum is the noise of one measurement of its measure, so that no verdict rests",
        "on a difference the measurement alone could make:",
        "",
        *wrapped(
            f"accuracy gap, {MIN_EFFECT['accuracy gap'] * 100:.2f} points: one test image is "
            f"{100 / TEST_IMAGES:.2f} points, and the binomial standard error of one test "
            f"accuracy p on {TEST_IMAGES:,} images, √(p(1 − p) / {TEST_IMAGES:,}), is "
            f"{error:.2f} points at this map's median final accuracy ({median:.4f}), 0.22 points "
            "at 0.95.",
            **item,
        ),
        *wrapped(
            f"steps ratio, {MIN_EFFECT['steps ratio']:.0%}: the steps to 0.95 are known only "
            f"to one evaluation ({steps_noise}).",
            **item,
        ),
        *wrapped(
            f"drift ratio, {MIN_EFFECT['drift ratio']:.0%}: one run's percentile drift "
            "measured from every other probe and from the probes between differ by up to "
            f"{DRIFT_HALVES_GAP:.1%} of its drift (median {DRIFT_HALVES_MEDIAN:.1%}) over the "
            f"24 runs of {folders}: a ratio of two drifts within that of 1 is within the "
            "measure's own noise.",
            **item,
        ),
    ]


def false_positive_text(
    members: pd.DataFrame, rates: dict[str, tuple[float, float] | None]
) -> list[str]:
    """How the false-positive `rates` above were estimated, or why they could not be, and
    which claims' verdicts they leave weak: a minimum at a measure's own noise does not bring
    the rate down where the seeds spread far more than that noise."""
    if members.seed.nunique() < 2:
        return wrapped(
            "The rates without an effect are not estimable on this map: each cell has one "
            "seed, so there is no seed-to-seed spread to measure; and with one seed, a cell "
            "without an effect agrees with itself in sign every time, so it reads holds or "
            "reversed unless its one measure is within the minimum."
        )
    return wrapped(
        "The rates without an effect are estimated from this map's own seed-to-seed spread: "
        f"for each cell where no member diverged and every seed has the measure, {NULL_DRAWS:,} "
        "cells without an effect are simulated, each seed's measure drawn from a normal "
        "distribution around no effect with the standard deviation of that cell's own seeds "
        "(for a ratio, of their logarithms), and the share the rule calls holds or reversed "
        "is averaged over the cells (`sensitivity.false_positive_rates`). By agreement in sign "
        f"alone it would be {2 * 0.5 ** members.seed.nunique():.0%} in every cell whose seeds "
        "spread at all; it is less where a cell's seeds give the same measure, as steps "
        "counted in whole evaluations can." + weak_claims(rates)
    )


def weak_claims(rates: dict[str, tuple[float, float] | None]) -> str:
    """A sentence naming the claims whose rule still calls more than WEAK_RATE of the cells
    without an effect holds or reversed, or nothing where none does."""
    weak = [
        f"{CLAIMS[claim][0]} ({rate[0]:.0%})"
        for claim, rate in rates.items()
        if rate and rate[0] > WEAK_RATE
    ]
    if not weak:
        return ""
    return (
        f" The seeds of {' and '.join(weak)} spread so far beyond their measure's own noise "
        "that its minimum leaves these rates: read those claims' holds and reversed cells with "
        "them in mind."
    )


def claim_regions(table: pd.DataFrame) -> list[str]:
    """For each claim, the cells it holds in and each optimizer's map of it."""
    lines = ["## Where each Figure 1 claim holds", ""]
    for claim, (title, _, _) in CLAIMS.items():
        lines += [f"### {title}", "", region(table, claim), ""]
        for optimizer, name in OPTIMIZERS.items():
            lines += [f"{name}:", "", *claim_table(table, claim, optimizer), ""]
    return lines


def protocol_section(table: pd.DataFrame, early: str | None, steps: int) -> list[str]:
    return [
        "## Where our protocol and the public reproduction's sit",
        "",
        *protocol_lines(table, early, steps),
        "",
        "Accuracy gaps in points (BN − plain); a verdict follows each advantage.",
        "",
    ]


def diverged_section(members: pd.DataFrame) -> list[str]:
    diverged = members[members.diverged]
    rows = markdown.table(
        ("net", "optimizer", "lr", "init std", "seed", "diverged at step"),
        (
            (
                r.net,
                r.optimizer,
                f"{r.lr:g}",
                f"{r.init_std:g}",
                r.seed,
                f"{int(r.diverged_at_step):,}",
            )
            for r in diverged.itertuples()
        ),
    )
    if diverged.empty:
        rows = ["None: every member trained to its last step with a finite loss."]
    return ["## Diverged members", "", *rows, ""]


def history_section(members: pd.DataFrame, table: pd.DataFrame, provenance: dict) -> list[str]:
    """For a map whose runs predate MINIMUM_SINCE: that the minimum effects came after the
    runs, and every cell whose verdict the earlier rule (sign agreement alone) gave otherwise."""
    made = provenance.get("date")
    if not made or made >= MINIMUM_SINCE:
        return []
    earlier = cells(members, EARLIER_RULE)
    judged = [claim for claim in CLAIMS if claim != "sooner_to_095"]
    changed = [
        f"{CLAIMS[claim][0]}, {OPTIMIZERS[now.optimizer]}, lr {now.lr:g}, init std "
        f"{now.init_std:g}: {then[claim]} then, {now[claim]} now"
        for (_, now), (_, then) in zip(table.iterrows(), earlier.iterrows(), strict=True)
        for claim in judged
        if now[claim] != then[claim]
    ]
    return [
        "## History of this result",
        "",
        f"- These runs were made on {made}, before the rule had its minimum effects (added on "
        f"{MINIMUM_SINCE}, each from the noise of its measure): until then every seed agreeing "
        "in sign decided a cell, and the steps to 0.95 were drawn but not judged.",
        "- Under that rule, "
        + (
            f"{len(changed)} cell verdicts read otherwise: " + "; ".join(changed) + "."
            if changed
            else f"every verdict of {', '.join(CLAIMS[k][0].split(' ')[0] for k in judged)} reads "
            "as it does now."
        ),
        "",
    ]


# Results whose provenance.json names a commit older than the code that made them (a GPU
# machine's checkout with the code copied over uncommitted, `dirty: true`): the recorded commit
# -> the line that names the code that ran, from the repository's history.
STALE_PROVENANCE = {
    "ed98d2530422d1f09e5d5aff5b18c658576eb628": (
        "- `provenance.json` records commit ed98d25, the GPU machine's checkout, which is older "
        "than the code that ran there (copied over uncommitted, so `dirty` is true): that code "
        "is c5609bd's with the `EnsembleLinear` change first committed in 2b0c585"
    ),
}


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
        *(
            [STALE_PROVENANCE[commit]]
            if (commit := provenance.get("git", {}).get("commit")) in STALE_PROVENANCE
            else []
        ),
        "",
    ]


def every(steps: int | None) -> str:
    return f"{steps:,} steps" if steps else "(not recorded) steps"
