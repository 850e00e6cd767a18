"""How a measured claim is judged against its threshold, and the claims.csv row that says so.

The drivers that test claims (experiments/claims.py, ics.py, ics_proxy.py) write claims.csv
files with the same columns and decide their verdicts by the same rule: a claim passes when
every number it is judged on (each seed's, or both ends of an interval) meets its threshold,
fails when none does, and is inconclusive when they disagree. Keeping the rule and the row
here means one claims.csv reads like another, and a verdict cannot mean one thing in one
results folder and another elsewhere.
"""

import operator
from collections.abc import Iterable
from typing import Any

RELATIONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# Every threshold is a constant in its driver, written before the runs it judges.
FIXED = "before the runs"


def verdict(meets: Iterable[bool]) -> str:
    """pass when every one of `meets` holds, fail when none does, inconclusive otherwise."""
    found = set(meets)
    return "pass" if found == {True} else "fail" if found == {False} else "inconclusive"


def row(claim: str, measured: Any, relation: str, threshold: float, judged: str) -> dict:
    """A claims.csv row: the claim, the number as shown, its threshold and verdict `judged`."""
    return {
        "claim": claim,
        "measured": measured,
        "threshold": f"{relation} {threshold:g}",
        "verdict": judged,
        "threshold_fixed": FIXED,
    }
