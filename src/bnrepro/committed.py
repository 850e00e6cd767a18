"""The committed results as the pages' generated blocks read them: bnrepro.docs renders the
blocks, and each experiment's report writes its own from results/ through these functions, so
that a missing or damaged file is refused with one paragraph naming it and the fix, and no page
is written from it."""

import json
from pathlib import Path

import pandas as pd

from bnrepro.errors import BnreproError
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
