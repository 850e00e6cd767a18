"""What Figure 1's curves are judged by: the accuracies the paper's plot and a published
reproduction give, how often BN's sigmoid input drifted less than the plain net's, and when a
net first passes an accuracy."""

import pandas as pd

from bnrepro.drift import drift_by

PAPER_ACCURACY = {"plain": 0.95, "bn": 0.98}  # read off the paper's Figure 1(a) at 50k steps
PAPER_STEPS = 50_000  # the paper's Figure 1 trains both nets 50,000 steps (Section 4.1)
# Final test accuracies that others published for an experiment's protocol: experiment ->
# (column header, {variant: accuracy}).
PUBLISHED = {
    "figure1_momentum": (
        "[Al13n0231](https://github.com/Al13n0231/batch-normalization-reproduction) (1 seed, grey)",
        {"plain": 0.9492, "bn": 0.9815},
    ),
}


def published_name(header: str) -> str:
    """The name of a PUBLISHED entry, from its Markdown link header."""
    return header.split("]")[0].lstrip("[")


def drifts_less(curves: pd.DataFrame) -> tuple[int, int]:
    """(seeds in which BN's sigmoid input drifted less than the plain net's, seeds), by the
    suite's percentile drift."""
    drifts = drift_by(curves, ["variant", "seed"])
    less = drifts.xs("bn") < drifts.xs("plain")
    return int(less.sum()), len(less)


def first_steps_above(curves: pd.DataFrame, variant: str, level: float) -> pd.Series:
    """Per seed, the first evaluated step at which `variant`'s test accuracy exceeds `level`."""
    rows = curves[(curves.variant == variant) & (curves.test_acc > level)]
    return rows.groupby("seed").step.min()
