"""Markdown for the generated README sections and pages: tables, and a result's history.

Every results README and generated page block writes its tables through `table`, so a table
looks the same wherever it appears: a header row, the `|---|` rule, one line per row, each
cell as given (the caller formats its numbers). A results folder's hand-written HISTORY.md
ends its README (`history_lines`), so that dated history is text, not code.
"""

from collections.abc import Iterable
from pathlib import Path


def row(cells: Iterable[object]) -> str:
    """One table line: `| a | b | c |`."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """The lines of a table: the header, the rule under it, then one line per row."""
    header = list(header)
    return [row(header), "|" + "---|" * len(header), *(row(cells) for cells in rows)]


def history_lines(folder: Path) -> list[str]:
    """The hand-written history of the result in `folder` (its HISTORY.md: what changed in how
    it was judged after its runs, and what git cannot say), as the lines its README ends with;
    none where the folder has no history (a rerun or a quick protocol elsewhere)."""
    path = folder / "HISTORY.md"
    return path.read_text().splitlines() if path.is_file() else []
