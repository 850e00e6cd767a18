"""The one measure of how far a sigmoid's input distribution moves during training.

Figure 1(b, c) shows the 15th, 50th and 85th percentiles of a sigmoid's input over training
and says that with BN the distribution is "much more stable". Every place this suite judges
that claim (figure1, sensitivity, ics, ics_proxy) uses the measure here, so that a verdict on
stability means the same in every results folder:

    percentile drift = the mean over the 15th, 50th and 85th percentiles of each one's range
                       (max - min) over the steps at or after DRIFT_FROM of the run

The first 2% of the run is left out: there every network moves away from its initialization,
which is not the drift the figure is about. A range measures how far the distribution has
wandered over the run; it does not count the step-to-step jitter of a probe, which a mean
change between consecutive probes would, and the two can disagree on which network
drifts more. Every results README that judges stability names this measure.
"""

import pandas as pd

# The quantile levels the trainers' probes take of a sigmoid's input, and the metrics.csv
# columns they are logged in.
QUANTILES = (0.15, 0.50, 0.85)
PERCENTILES = ("p15", "p50", "p85")
DRIFT_FROM = 0.02
NAME = "percentile drift"
DEFINITION = (
    "percentile drift: the mean over the 15th, 50th and 85th percentiles of the sigmoid "
    f"input of each one's range (max - min) over the steps at or after {DRIFT_FROM:.0%} of "
    "the run (bnrepro.drift)"
)


def percentile_ranges(curve: pd.DataFrame, steps: int) -> dict[str, float]:
    """Each percentile's range over the rows of `curve` (step, p15, p50, p85) at steps >=
    DRIFT_FROM * `steps`, the run's length; rows without a probe are left out."""
    late = curve[curve.step >= DRIFT_FROM * steps].dropna(subset=list(PERCENTILES))
    return {p: float(late[p].max() - late[p].min()) for p in PERCENTILES}


def drift(curve: pd.DataFrame, steps: int) -> float:
    """The percentile drift of one run's `curve` of `steps` steps."""
    ranges = percentile_ranges(curve, steps)
    return sum(ranges.values()) / len(ranges)


def drift_by(curves: pd.DataFrame, keys: list[str]) -> pd.Series:
    """The percentile drift of each group of `curves` by `keys`, each group's run length
    taken as its last logged step."""
    return curves.groupby(keys).apply(
        lambda rows: drift(rows, int(rows.step.max())), include_groups=False
    )
