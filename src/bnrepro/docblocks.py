"""What the pages' generated blocks share: the results files they are written from, read whole or
refused in one paragraph, and the pieces more than one experiment's blocks write.

Each experiment's report module writes its own blocks from the committed results (its BLOCKS);
bnrepro.docs puts them into README.md and docs/*.md.
"""

import json
from pathlib import Path

import pandas as pd

from bnrepro.errors import BnreproError
from bnrepro.markdown import table
from bnrepro.tables import csv_problem


class UnreadableResults(BnreproError):
    """A results file the generated blocks are written from is missing or damaged."""


def unreadable(file: Path, problem: str) -> UnreadableResults:
    return UnreadableResults(
        f"{file} {problem}, and the pages' generated blocks are written from it. Nothing was "
        "written. Fix: restore "
        "the committed results with `git checkout -- results/` (or rebuild the folder with its "
        "driver's collect or draw), then run `python -m bnrepro.docs` again."
    )


def csv(results: Path, path: str) -> pd.DataFrame:
    """results/`path`, once it is known to be a whole CSV file (bnrepro.tables.csv_problem)."""
    file = results / path
    for folder in (results, file.parent):
        if not folder.is_dir():
            raise unreadable(folder, "does not exist")
    problem = csv_problem(file)
    if problem:
        raise unreadable(file, problem)
    try:
        return pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise unreadable(file, f"is not a readable CSV file ({error})") from None


def provenance(results: Path, folder: str) -> dict:
    file = results / folder / "provenance.json"
    try:
        return json.loads(file.read_text())
    except OSError as error:
        raise unreadable(file, f"cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise unreadable(file, f"is not valid JSON ({error})") from None


def escape(text: str) -> str:
    """`text` safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def shown(measured: float | str) -> str:
    """A measured number to 4 significant digits; text (a range over seeds) as written."""
    try:
        return f"{float(measured):.4g}"
    except ValueError:
        return str(measured)


def claims_table(results: Path, folder: str) -> str:
    """The claims table of `folder`'s claims.csv (bnrepro.verdicts' rows), as the claims and
    ICS pages quote it."""
    claims = csv(results, f"{folder}/claims.csv")
    rows = [
        (escape(r.claim), shown(r.measured), r.threshold, f"**{r.verdict}**")
        for r in claims.itertuples()
    ]
    return "\n".join(table(("claim", "measured", "threshold", "verdict"), rows))
