"""Markdown for the generated README sections and pages: tables, and ranges of numbers.

Every results README and generated page block writes its tables through `table`, so a table
looks the same wherever it appears: a header row, the `|---|` rule, one line per row, each
cell as given (the caller formats its numbers).
"""

from collections.abc import Iterable


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
