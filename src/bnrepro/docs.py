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
around the blocks carries no number a results folder holds. Each experiment's report writes
its own blocks (its BLOCKS, e.g. bnrepro.experiments.figure1.report's); this module gathers
them and renders the pages.
"""

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bnrepro.atomic import atomic_write_text
from bnrepro.errors import BnreproError
from bnrepro.experiments.claims.report import BLOCKS as CLAIMS_BLOCKS
from bnrepro.experiments.figure1.report import BLOCKS as FIGURE1_BLOCKS
from bnrepro.experiments.figure2.report import BLOCKS as FIGURE2_BLOCKS
from bnrepro.experiments.ics.blocks import BLOCKS as ICS_BLOCKS
from bnrepro.experiments.sensitivity.report import BLOCKS as SENSITIVITY_BLOCKS
from bnrepro.paths import REPO

PAGES = ("README.md", "docs/*.md")
BEGIN = re.compile(r"<!-- begin generated: (?P<name>[\w-]+) -->")
END = "<!-- end generated -->"
# A line meant as a marker, whole or damaged: an HTML comment that says begin or end generated.
MARKER = re.compile(r"\s*<!--.*\b(begin|end)\s+generated")
NAN = re.compile(r"\bnan\b", re.IGNORECASE)

BLOCKS: dict[str, Callable[[Path], str]] = {
    **FIGURE1_BLOCKS,
    **SENSITIVITY_BLOCKS,
    **FIGURE2_BLOCKS,
    **CLAIMS_BLOCKS,
    **ICS_BLOCKS,
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
