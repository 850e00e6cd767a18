"""The numbers of README.md and docs/*.md, written from the committed results.

    python -m bnrepro.docs           # rewrite every generated block (make docs)
    python -m bnrepro.docs --check   # exit 1, naming the files, where a block is out of date

A page quotes results only inside generated blocks:

    <!-- begin generated: figure1-protocols -->
    ...written by BLOCKS["figure1-protocols"] from results/figure1*/summary.csv...
    <!-- end generated -->

Everything between the two markers is replaced by what the block's function writes from the
CSV files (and provenance.json) of results/, so a sentence that quotes a result cannot drift
from the data: `make docs` rewrites the blocks after new results, and a test (run by `make
test`, so CI) fails when a page in the tree differs from what this module writes. The prose
around the blocks carries no number a results folder holds.
"""

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd

from bnrepro.atomic import atomic_write_text
from bnrepro.committed import csv
from bnrepro.drift import NAME as DRIFT_NAME
from bnrepro.errors import BnreproError
from bnrepro.experiments.figure2 import report as figure2_report
from bnrepro.markdown import span, table

REPO = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/*.md")
BEGIN = re.compile(r"<!-- begin generated: (?P<name>[\w-]+) -->")
END = "<!-- end generated -->"
# A line meant as a marker, whole or damaged: an HTML comment that says begin or end generated.
MARKER = re.compile(r"\s*<!--.*\b(begin|end)\s+generated")
NAN = re.compile(r"\bnan\b", re.IGNORECASE)
FIGURE1_FOLDERS = {
    "figure1": ("figure1 (SGD lr 0.1, N(0, 0.1²))", "grey"),
    "figure1_binary": ("figure1", "binary"),
    "figure1_momentum": ("figure1_momentum (momentum 0.9, lr 0.01, N(0, 0.01²))", "grey"),
    "figure1_momentum_binary": ("figure1_momentum", "binary"),
}


def accuracy(values: pd.Series) -> str:
    """Mean (min–max) of final accuracies, four decimals."""
    return f"{values.mean():.4f} ({values.min():.4f}–{values.max():.4f})"


def final_accuracies(results: Path, folder: str) -> dict[str, pd.Series]:
    summary = csv(results, f"{folder}/summary.csv")
    return {v: summary[summary.variant == v].final_test_acc for v in ("plain", "bn")}


def stabler_seeds(results: Path, folder: str) -> tuple[int, int]:
    from bnrepro.experiments.figure1 import drifts_less

    return drifts_less(csv(results, f"{folder}/curves.csv"))


# ---------------------------------------------------------------- Figure 1


def figure1_protocols(results: Path) -> str:
    from bnrepro.experiments.figure1 import PAPER_ACCURACY, PUBLISHED, published_name

    lines = [
        "| protocol | input | without BN | with BN | gap (points) | BN drifts less | folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder, (protocol, data_input) in FIGURE1_FOLDERS.items():
        acc = final_accuracies(results, folder)
        gap = (acc["bn"].mean() - acc["plain"].mean()) * 100
        less, seeds = stabler_seeds(results, folder)
        lines.append(
            f"| {protocol} | {data_input} | {accuracy(acc['plain'])} | {accuracy(acc['bn'])} | "
            f"{gap:.2f} | {less} of {seeds} seeds | `results/{folder}/` |"
        )
    header, published = PUBLISHED["figure1_momentum"]
    name = published_name(header)
    gap = (published["bn"] - published["plain"]) * 100
    lines += [
        f"| {name}'s published run (1 seed) | grey | {published['plain']:.4f} | "
        f"{published['bn']:.4f} | {gap:.2f} | | its README |",
        f"| the paper's Figure 1(a), read off the plot | binary | ≈ {PAPER_ACCURACY['plain']} | "
        f"≈ {PAPER_ACCURACY['bn']} | ≈ 3 | | |",
        "",
        "Final test accuracy, mean over seeds (min–max), from each folder's `summary.csv`; "
        f'"BN drifts less": the seeds in which the BN net\'s {DRIFT_NAME} (`bnrepro.drift`) '
        "is below the plain net's, from `curves.csv`.",
    ]
    return "\n".join(lines)


def first_steps_above(curves: pd.DataFrame, variant: str, level: float) -> pd.Series:
    """Per seed, the first evaluated step at which `variant`'s test accuracy exceeds `level`."""
    rows = curves[(curves.variant == variant) & (curves.test_acc > level)]
    return rows.groupby("seed").step.min()


def figure1_protocol_notes(results: Path) -> str:
    from bnrepro.experiments.figure1 import PUBLISHED, published_name

    header, published = PUBLISHED["figure1_momentum"]
    name = published_name(header)
    momentum = final_accuracies(results, "figure1_momentum")
    curves = csv(results, "figure1_momentum/curves.csv")
    stuck = first_steps_above(curves, "plain", 0.5)
    at_10k = curves[(curves.variant == "bn") & (curves.step == 10_000)].test_acc
    default = first_steps_above(csv(results, "figure1/curves.csv"), "plain", 0.5)
    stuck_at, bn_at = span(stuck.min(), stuck.max(), ","), span(at_10k.min(), at_10k.max(), ".4f")
    default_at = span(default.min(), default.max(), ",")
    differences = {v: (momentum[v].mean() - published[v]) * 100 for v in ("plain", "bn")}
    costs = []
    for grey, binary in (
        ("figure1", "figure1_binary"),
        ("figure1_momentum", "figure1_momentum_binary"),
    ):
        a, b = final_accuracies(results, grey), final_accuracies(results, binary)
        cost = ", ".join(
            f"{(a[v].mean() - b[v].mean()) * 100:.2f} ({label})"
            for v, label in (("plain", "without BN"), ("bn", "with BN"))
        )
        costs.append(f"{grey} {cost}")
    return (
        f"Under the public reproduction's protocol our seeds' mean differs from {name}'s "
        f"single published seed by {differences['plain']:+.2f} points without BN and "
        f"{differences['bn']:+.2f} with BN. The gap comes from the plain net: with N(0, 0.01²) "
        f"weights its test accuracy first exceeds 0.5 at step {stuck_at} "
        f"and it has not caught up when the run ends, while the BN net is at "
        f"{bn_at} by step 10,000. Under our default protocol the "
        f"plain net first exceeds 0.5 at step {default_at}. Binary "
        f"input lowers the final accuracy (points, grey minus binary): {'; '.join(costs)}."
    )


def figure1_headline(results: Path) -> str:
    acc = final_accuracies(results, "figure1")
    momentum = final_accuracies(results, "figure1_momentum")
    less, seeds = stabler_seeds(results, "figure1")
    return (
        f"**Figure 1** (MNIST, {len(acc['bn'])} seeds): with BN the net ends at "
        f"{acc['bn'].mean():.4f} against {acc['plain'].mean():.4f} without "
        f"({(acc['bn'].mean() - acc['plain'].mean()) * 100:+.2f} points; the paper's plot: about "
        f"+3); under a public reproduction's protocol (momentum, N(0, 0.01²) weights) "
        f"{(momentum['bn'].mean() - momentum['plain'].mean()) * 100:+.2f} points. BN's sigmoid "
        f"input drifts less in {less} of {seeds} seeds ({DRIFT_NAME}). "
        "[results/figure1](results/figure1/README.md), [docs/figure1.md](docs/figure1.md)"
    )


# ---------------------------------------------------------------- the sensitivity map


def sensitivity_cells(results: Path) -> pd.DataFrame:
    from bnrepro.experiments.sensitivity import cells

    return cells(csv(results, "sensitivity/members.csv"))


def sensitivity_map(results: Path) -> str:
    from bnrepro.experiments.sensitivity import CLAIMS, region

    table = sensitivity_cells(results)
    lines = []
    for claim, (title, _, _) in CLAIMS.items():
        lines.append(f"- **{title}**: {region(table, claim)}")
    return "\n".join(lines)


def widest_std_gaps(members: pd.DataFrame) -> str:
    """BN's lead at the largest init std, at every rate but the largest (where momentum's
    plain net is stuck), over both optimizers, against its lead at our default protocol
    (PROTOCOLS' "ours"): the region where the gaps are neither huge nor small."""
    from bnrepro.experiments.sensitivity import OPTIMIZERS, PROTOCOLS, cells, gap_range

    table = cells(members)
    std, rates = table.init_std.max(), sorted(set(table.lr))[:-1]
    ranges = [gap_range(table, optimizer, [std], rates) for optimizer in OPTIMIZERS]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    optimizer, lr, default_std = PROTOCOLS["ours", "results/figure1"]
    default = gap_range(table, optimizer, [default_std], [lr])[0]
    return (
        f"At init std {std:g}, at every rate below {max(table.lr):g}, BN ends {low:+.2f} to "
        f"{high:+.2f} points ahead with either optimizer: {low / default:.1f} to "
        f"{high / default:.1f} times its lead at our default protocol ({OPTIMIZERS[optimizer]}, "
        f"lr {lr:g}, init std {default_std:g}: {default:+.2f})."
    )


def sensitivity_gaps(results: Path) -> str:
    from bnrepro.experiments.sensitivity import OPTIMIZERS, headline

    members = csv(results, "sensitivity/members.csv")
    gaps = headline(members)["final_gap_points"]
    lines = []
    for optimizer, name in OPTIMIZERS.items():
        by_std = gaps[optimizer]
        lrs = sorted({lr for row in by_std.values() for lr in row})
        lines += [
            f"| {name}: init std \\ lr | " + " | ".join(f"{lr:g}" for lr in lrs) + " |",
            "|---|" + "---|" * len(lrs),
            *[
                f"| {std:g} | " + " | ".join(f"{by_std[std][lr]:+.2f}" for lr in lrs) + " |"
                for std in sorted(by_std)
            ],
            "",
        ]
    lines.append(
        "Final test accuracy, BN minus plain, points, mean over seeds (`members.csv`; "
        "`headline` in `bnrepro.experiments.sensitivity`)."
    )
    lines += ["", widest_std_gaps(members)]
    return "\n".join(lines)


def sensitivity_headline(results: Path) -> str:
    from bnrepro.experiments.sensitivity import CHECKPOINTS, CLAIMS, OPTIMIZERS, early_column

    table = sensitivity_cells(results)
    early = early_column(csv(results, "sensitivity/members.csv"))
    parts = []
    for claim, (title, _, _) in CLAIMS.items():
        if claim == "faster_early" and early:
            title = f"{title}: accuracy at step {CHECKPOINTS[early]:,}"
        counts = ", ".join(
            f"{int((table[table.optimizer == o][claim] == 'holds').sum())} of "
            f"{int((table.optimizer == o).sum())} with {name}"
            for o, name in OPTIMIZERS.items()
        )
        parts.append(f"{title}: {counts}")
    return (
        "**Figure 1 across optimizer, learning rate and init std** (the paper gives none). "
        "Cells where each claim holds (every seed agrees and the mean is beyond the measure's "
        "minimum effect): "
        + "; ".join(parts)
        + ". [results/sensitivity](results/sensitivity/README.md), "
        "[docs/sensitivity.md](docs/sensitivity.md)"
    )


# ---------------------------------------------------------------- claims and ICS


def escape(text: str) -> str:
    """`text` safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def shown(measured) -> str:
    """A measured number to 4 significant digits; text (a range over seeds) as written."""
    try:
        return f"{float(measured):.4g}"
    except ValueError:
        return str(measured)


def claims_table(results: Path, folder: str) -> str:
    claims = csv(results, f"{folder}/claims.csv")
    rows = [
        (escape(r.claim), shown(r.measured), r.threshold, f"**{r.verdict}**")
        for r in claims.itertuples()
    ]
    return "\n".join(table(("claim", "measured", "threshold", "verdict"), rows))


def tally(results: Path, folder: str) -> str:
    counts = csv(results, f"{folder}/claims.csv").verdict.value_counts()
    return ", ".join(
        f"{int(counts[v])} {v}" for v in ("pass", "fail", "inconclusive") if v in counts
    )


def claims_headline(results: Path) -> str:
    claims = csv(results, "claims/claims.csv")
    failing = claims[claims.verdict != "pass"]
    named = "; ".join(f"{r.claim} ({r.verdict})" for r in failing.itertuples())
    return (
        f"**Claims about the transform** (scale invariance, backprop through the statistics, "
        f"the bias, BN's position, folding, population statistics): of {len(claims)} measured "
        f"checks {tally(results, 'claims')}"
        + (f"; not passing: {named}" if named else "")
        + ". [results/claims](results/claims/README.md), [docs/claims.md](docs/claims.md)"
    )


def ics_findings(results: Path, folder: str) -> str:
    """What `folder`'s results found, in words: what each measure of ICS says (the
    gradient-based one of claim (b) and the percentile drift, which can disagree), which
    landscape measures BN made smaller, and whether noisy BN separated speed from stable
    inputs."""
    from bnrepro.experiments import ics, ics_proxy

    driver = {"ics": ics, "ics/proxy": ics_proxy}[folder]
    measures = ics.ics_text(driver.judged(results / folder), driver.PROBED)
    claims = csv(results, f"{folder}/claims.csv")
    landscape = claims[claims.claim.str.startswith("(c)")]
    name = landscape.claim.str.extract(r"median ([^,]+),")[0]
    smaller = ", ".join(name[landscape.verdict == "pass"]) or "none"
    noisy = claims[claims.claim.str.startswith("(a)")].verdict.tolist()
    separated = noisy[0] == "pass" and noisy[1] == "pass"
    return (
        f"{measures}; landscape measures smaller with BN in every seed: {smaller} (of "
        f"{len(landscape)}); noisy BN "
        + (
            "trained about as fast as BN while its inputs drifted more"
            if separated
            else "did not both train about as fast as BN and drift more"
        )
    )


def thresholds_fixed(results: Path, folders: tuple[str, ...]) -> str:
    """What each folder's claims.csv says, in its threshold_fixed column, of when its
    thresholds were first committed against the commit its runs were made from: each text
    with how many of the folder's rows say it."""
    lines = []
    for folder in folders:
        fixed = csv(results, f"{folder}/claims.csv").threshold_fixed
        counts = fixed.value_counts(sort=False)
        said = "; ".join(f"{text} ({count} of {len(fixed)})" for text, count in counts.items())
        lines.append(f"- `results/{folder}/`: {said}")
    return "\n".join(lines)


def ics_headline(results: Path) -> str:
    return (
        "**Internal covariate shift put to the test** (Santurkar et al. 2018). On the MNIST "
        f"net: {ics_findings(results, 'ics')}. On the Inception proxy: "
        f"{ics_findings(results, 'ics/proxy')}. "
        "[results/ics](results/ics/README.md), [results/ics/proxy](results/ics/proxy/README.md), "
        "[docs/ics.md](docs/ics.md)"
    )


BLOCKS: dict[str, Callable[[Path], str]] = {
    "figure1-headline": figure1_headline,
    "figure1-protocols": figure1_protocols,
    "figure1-protocol-notes": figure1_protocol_notes,
    "sensitivity-headline": sensitivity_headline,
    "sensitivity-map": sensitivity_map,
    "sensitivity-gaps": sensitivity_gaps,
    **figure2_report.BLOCKS,
    "claims-headline": claims_headline,
    "claims-table": lambda results: claims_table(results, "claims"),
    "ics-headline": ics_headline,
    "ics-claims": lambda results: claims_table(results, "ics"),
    "ics-proxy-claims": lambda results: claims_table(results, "ics/proxy"),
    "ics-findings": lambda results: f"Over the seeds: {ics_findings(results, 'ics')}.",
    "ics-proxy-findings": lambda results: f"Over the seeds: {ics_findings(results, 'ics/proxy')}.",
    "ics-thresholds-fixed": lambda results: thresholds_fixed(results, ("ics", "ics/proxy")),
}


class PageError(BnreproError):
    """A page cannot be rendered: its markers are damaged, it names a block this module does
    not write, or a results file a block reads is not whole."""


class UnknownBlock(PageError):
    """A begin marker names a block that is not in BLOCKS."""


@dataclass(frozen=True)
class Block:
    """A generated block of a page: its name and the indices of its two marker lines."""

    name: str
    begin: int
    end: int


def page_fail(page: str, index: int, problem: str, fix: str, kind: type = PageError) -> NoReturn:
    raise kind(f"{page} line {index + 1}: {problem} Nothing was written. Fix: {fix}.")


def blocks(lines: list[str], page: str) -> list[Block]:
    """The generated blocks of a page's `lines`, once its markers are known whole: every
    marker line exact, each begin marker followed by its end marker before the next begin,
    every block one that BLOCKS writes. Without this a stray begin marker would swallow the
    hand-written text up to the next block's end, and a lone one would be skipped."""
    markers = (
        "a line `<!-- begin generated: NAME -->` before the block and `<!-- end generated -->` "
        "after it, nothing else on either line"
    )
    found: list[Block] = []
    opened: tuple[str, int] | None = None
    for index, line in enumerate(lines):
        text = line.rstrip("\n")
        if not MARKER.match(text):
            continue
        begin = BEGIN.fullmatch(text)
        if begin and opened:
            page_fail(
                page, index,
                f"the begin marker of block {begin['name']!r} comes before the end marker of "
                f"block {opened[0]!r}, begun at line {opened[1] + 1}.",
                f"end block {opened[0]!r} with `{END}`, or remove the stray begin marker; "
                f"a block holds {markers}",
            )  # fmt: skip
        elif begin and begin["name"] not in BLOCKS:
            page_fail(
                page, index,
                f"the generated block {begin['name']!r} is not one that bnrepro.docs writes.",
                f"use one of {', '.join(BLOCKS)}, or add it to BLOCKS", UnknownBlock,
            )  # fmt: skip
        elif begin:
            opened = (begin["name"], index)
        elif text == END and opened:
            found.append(Block(opened[0], opened[1], index))
            opened = None
        elif text == END:
            page_fail(
                page, index, "an end marker with no begin marker above it.",
                f"add the block's begin marker or remove the end marker; a block holds {markers}",
            )  # fmt: skip
        else:
            page_fail(
                page, index, f"{text.strip()!r} is a damaged marker.",
                f"write {markers}",
            )  # fmt: skip
    if opened:
        page_fail(
            page, opened[1], f"the begin marker of block {opened[0]!r} has no end marker below it.",
            f"add `{END}` on its own line after the block",
        )  # fmt: skip
    return found


def block_text(block: Block, results: Path, page: str) -> str:
    """What `block` holds, written from `results`: refused where a file it reads is not
    whole or where it would publish `nan` (a result missing from a file it reads)."""
    try:
        text = BLOCKS[block.name](results).rstrip()
    except BnreproError as error:
        raise PageError(f"{page} line {block.begin + 1}, block {block.name!r}: {error}") from None
    if NAN.search(text):
        page_fail(
            page, block.begin,
            f"block {block.name!r} would publish nan: a number it reads from results/ is missing.",
            "restore or rebuild the results folder it reads (see BLOCKS[name] in bnrepro.docs), "
            "then run `make docs` again",
        )  # fmt: skip
    return text


def render(text: str, results: Path, page: str = "the page") -> str:
    """`text` (the page named `page`) with every generated block rewritten from `results`."""
    lines = text.splitlines(keepends=True)
    for block in reversed(blocks(lines, page)):
        lines[block.begin + 1 : block.end] = [block_text(block, results, page) + "\n"]
    return "".join(lines)


def pages(repo: Path = REPO) -> list[Path]:
    return [path for pattern in PAGES for path in sorted(repo.glob(pattern))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnrepro.docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    rendered = {}
    try:
        for path in pages():
            text = path.read_text()
            written = render(text, REPO / "results", str(path.relative_to(REPO)))
            if written != text:
                rendered[path] = written
    except BnreproError as error:
        print(f"bnrepro: {error}", file=sys.stderr)
        return 2
    stale = [path.relative_to(REPO) for path in rendered]
    if not args.check:
        for path, written in rendered.items():
            atomic_write_text(path, written)
            print(f"wrote {path.relative_to(REPO)}")
    if args.check and stale:
        print(
            f"{', '.join(map(str, stale))} differ from what the results say: run `make docs` "
            "and commit the pages.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
