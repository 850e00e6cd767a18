"""The claims' verdicts: each measured number of claims.csv against the threshold of its file
(thresholds/claims/, bnrepro.verdicts), from the logged CSV files alone."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bnrepro import claim_measures, verdicts
from bnrepro.experiments.claims.protocol import accuracy_at, load

SPEEDUP_DIGITS = 2  # claim 5: significant digits shown of the speed-up and its interval


def significant(value: float, digits: int = SPEEDUP_DIGITS) -> str:
    """`value` rounded to `digits` significant digits, trailing zeros kept (0.90, 1.0)."""
    return f"{value:#.{digits}g}".rstrip(".")


@dataclass(frozen=True)
class Check:
    """One measured number of a claim and the threshold it must meet to pass.

    `threshold` is the claim's file under thresholds/claims/ (bnrepro.verdicts), so
    the value a number is judged against is written, and committed, apart from the code that
    measures it; `claim` is the file's text with this measurement's names filled in. A number
    measured with an interval (`low`, `high`) passes when the whole interval meets the
    threshold, fails when none of it does, and is inconclusive when the interval straddles the
    threshold. Its verdict is decided on the unrounded interval; it is shown rounded to
    SPEEDUP_DIGITS significant digits.
    """

    threshold: verdicts.Threshold
    claim: str
    measured: float
    low: float | None = None
    high: float | None = None

    @property
    def key(self) -> str:
        return self.threshold.key

    @property
    def relation(self) -> str:
        return self.threshold.relation

    @property
    def value(self) -> float:
        return self.threshold.value

    def verdict(self, threshold: verdicts.Threshold | None = None) -> str:
        """The verdict against the claim's threshold, or against `threshold` (an earlier
        value of it, for the row that says the threshold changed after the runs)."""
        if np.isnan(self.measured):
            return "missing"  # the logged data does not hold this measurement
        judge = threshold or self.threshold
        judged = [self.measured] if self.low is None else [self.low, self.high]
        return verdicts.verdict(judge.meets(value) for value in judged)

    def shown(self) -> float | str:
        """The measured number as claims.csv holds it."""
        if self.low is None:
            return self.measured
        return (
            f"{significant(self.measured)} (95% interval "
            f"{significant(self.low)} to {significant(self.high)})"
        )

    def row(self, runs_commit: str | None) -> dict:
        """The claims.csv row, with when the threshold was fixed against `runs_commit`."""
        fixed = verdicts.fixed(self.threshold, runs_commit, self.verdict)
        return verdicts.row(self.claim, self.shown(), self.threshold, self.verdict(), fixed)


def check(
    key: str, measured: float, low: float | None = None, high: float | None = None, **names: object
) -> Check:
    """Claim `key`'s Check: its threshold file's claim, with `names` filled in, judging
    `measured` (and its interval `low` to `high`)."""
    threshold = verdicts.load("claims", key)
    return Check(threshold, threshold.claim.format(**names), measured, low, high)


def checks(data: dict[str, pd.DataFrame], speedup: pd.Series, settings: dict) -> list[Check]:
    """Every claim's measured numbers, from the logged CSV files in `data` (by file name),
    claim 5's speed-up per repeat and the protocol's `settings`."""
    scale = data["scale_invariance.csv"]
    exact = scale[scale.eps == 0]

    toy = data["stats_backprop.csv"]
    const = toy[~toy.stats_backprop].sort_values("step")
    backprop = toy[toy.stats_backprop].sort_values("step")
    steps, drift = const.step.to_numpy(), const.b_drift.to_numpy()
    line = drift[-1] * steps / steps[-1]

    bias = data["bias_redundancy.csv"]

    curves = data["bn_position_curves.csv"]
    lengths = (settings["short_steps"], settings["steps"])
    final = {n: accuracy_at(curves, n).groupby("variant").test_acc.mean() for n in lengths}

    agreement = data["folding_agreement.csv"]
    median, low, high = claim_measures.median_interval(speedup)

    population = data["population_statistics.csv"]
    largest = population[population.statistics == "population"].n_batches.max()
    population_acc = population[population.n_batches == largest].set_index("seed").test_acc
    moving_acc = population[population.statistics == "moving"].set_index("seed").test_acc
    difference = (population_acc - moving_acc).mean()

    return [
        check("1-output-scale", exact.out_dev.max()),
        check("1-input-gradient", exact.du_dev.max()),
        check("1-weight-gradient", exact.dw_dev.max()),
        check("2-bias-growth", const.b_norm.iloc[-1] / const.b_norm.iloc[0]),
        check("2-bias-linear", np.abs(drift - line).max() / drift[-1]),
        check("2-loss-flat", np.ptp(const.loss) / const.loss.iloc[0]),
        check("2-backprop-still", backprop.b_drift.max() / backprop.b_norm.iloc[0]),
        check("3-bias-gradient", (bias.bias_grad_norm / bias.weight_grad_norm).max()),
        check("3-bias-removed", bias.out_dev.max()),
        *(
            check(
                "4-before-vs-after",
                final[n].get("bn_before", np.nan) - final[n].get("bn_after", np.nan),
                step=n,
            )
            for n in lengths
        ),
        *(
            check(
                "4-before-vs-plain",
                final[n].get("bn_before", np.nan) - final[n].get("plain", np.nan),
                step=n,
            )
            for n in lengths
        ),
        check("5-float32-logits", agreement[agreement.dtype == "float32"].max_abs_diff.max()),
        check("5-float64-logits", agreement[agreement.dtype == "float64"].max_abs_diff.max()),
        check("5-speedup", median, low, high),
        check("6-population-vs-moving", abs(difference), batches=largest),
    ]


def judged(out_dir: Path) -> list[Check]:
    """The Checks of the files in `out_dir`, in claims.csv's order."""
    data, _, settings, speedup = load(out_dir)
    return checks(data, speedup, settings)
