"""Markdown for the generated README sections and pages: tables, ranges of numbers, and the
link to a result's history.

Every results README and generated page block writes its tables through `table`, so a table
looks the same wherever it appears: a header row, the `|---|` rule, one line per row, each
cell as given (the caller formats its numbers). A results folder's dated history is a
hand-written HISTORY.md beside its README, which links it (`history_lines`), so that history
is text, not code.
"""

from collections.abc import Iterable
from pathlib import Path

HISTORY_FILE = "HISTORY.md"


def row(cells: Iterable[object]) -> str:
    """One table line: `| a | b | c |`."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """The lines of a table: the header, the rule under it, then one line per row."""
    header = list(header)
    return [row(header), "|" + "---|" * len(header), *(row(cells) for cells in rows)]


def span(low: float, high: float, spec: str) -> str:
    """`low`–`high` in `spec`, or one number where they are equal."""
    return f"{low:{spec}}" if f"{low:{spec}}" == f"{high:{spec}}" else f"{low:{spec}}–{high:{spec}}"


def history_lines(folder: Path) -> list[str]:
    """The README's section linking `folder`'s hand-written HISTORY.md (what changed in how
    the result was made or judged after its first runs, and its reruns elsewhere: what git
    cannot say); none where the folder has no history (a rerun or a quick protocol
    elsewhere)."""
    if not (folder / HISTORY_FILE).is_file():
        return []
    return [
        "## History of this result",
        "",
        "Earlier protocols and judgements of this result, what they gave, and its reruns on "
        f"other machines: [{HISTORY_FILE}]({HISTORY_FILE}).",
    ]
