"""What both ICS studies measure and judge: the percentile drift and the medians of the
diagnostics per net and seed, a claim judged over seeds against its threshold file, and the
sentences that say what the claims support; and the MNIST net's claims."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from bnrepro import drift as percentile_drift
from bnrepro import verdicts
from bnrepro.drift import PERCENTILES
from bnrepro.experiments.ics.protocol import ICS_PREFIXES, LANDSCAPE, load

# Claim (a)'s "trains about as fast": test accuracy this early (or the last step every curve
# evaluated at before it, in a shorter run). The claims' thresholds are files of their own,
# thresholds/ics/<key>.yaml (bnrepro.verdicts).
ACCURACY_STEP = 5000


def accuracy_step(curves: pd.DataFrame) -> int:
    """ACCURACY_STEP, or the last step every curve evaluated at before it (short runs)."""
    evaluated = curves.dropna(subset=["test_acc"])
    common = set.intersection(*(set(g.step) for _, g in evaluated.groupby(["variant", "seed"])))
    return max(s for s in common if s <= ACCURACY_STEP)


def drift(curves: pd.DataFrame) -> pd.Series:
    """Per (variant, seed): the percentile drift of the probed input (bnrepro.drift), the one
    measure of stability every results folder judges by; rows without a probe, as the
    proxy's evaluations between probes, are left out."""
    probed = curves.dropna(subset=list(PERCENTILES))
    return percentile_drift.drift_by(probed, ["variant", "seed"])


def medians(diagnostics: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, seed): the median over logged steps of each landscape measure, and of the
    relative l2 ICS over logged steps and layers (`ics`)."""
    l2 = [c for c in diagnostics.columns if c.startswith(ICS_PREFIXES[0])]
    grouped = diagnostics.groupby(["variant", "seed"])
    frame = grouped[list(LANDSCAPE)].median()
    frame["ics"] = grouped[l2].apply(lambda rows: float(np.nanmedian(rows.to_numpy())))
    return frame


@dataclass(frozen=True)
class Claim:
    """One claim: a number per seed, judged against the threshold of its file,
    thresholds/<driver>/<key>.yaml (bnrepro.verdicts), so that the value is written
    and committed apart from the code that measures; ics_proxy's claims are this class with
    its own `driver`. `text` is the file's claim with this measurement's names filled in."""

    driver: ClassVar[str] = "ics"
    key: str
    text: str
    per_seed: pd.Series

    @classmethod
    def of(cls, key: str, per_seed: pd.Series, **names: object) -> "Claim":
        return cls(key, verdicts.load(cls.driver, key).claim.format(**names), per_seed)

    @property
    def threshold(self) -> verdicts.Threshold:
        return verdicts.load(self.driver, self.key)

    def verdict(self, threshold: verdicts.Threshold | None = None) -> str:
        """The verdict over seeds against the claim's threshold, or against `threshold` (an
        earlier value of it, for the row that says the threshold changed after the runs)."""
        judge = threshold or self.threshold
        return verdicts.verdict(judge.meets(value) for value in self.per_seed)

    def measured(self) -> str:
        values = self.per_seed
        spread = f" (seeds {values.min():.4g} to {values.max():.4g})" if len(values) > 1 else ""
        return f"{values.mean():.4g}{spread}"

    def row(self, runs_commit: str | None) -> dict:
        """The claims.csv row, with when the threshold was fixed against `runs_commit`."""
        fixed = verdicts.fixed(self.threshold, runs_commit, self.verdict)
        return verdicts.row(self.text, self.measured(), self.threshold, self.verdict(), fixed)


def ratio(table: pd.Series, variant: str, reference: str) -> pd.Series:
    """`table` (indexed by variant, seed) of `variant` over `reference`, seed by seed."""
    return table.xs(variant) / table.xs(reference)


def claims(curves: pd.DataFrame, diagnostics: pd.DataFrame) -> list[Claim]:
    """Every claim's number per seed, in claims.csv's order."""
    step = accuracy_step(curves)
    at = curves[(curves.step == step)].dropna(subset=["test_acc"])
    accuracy = at.set_index(["variant", "seed"]).test_acc
    moves, measures = drift(curves), medians(diagnostics)
    return [
        Claim.of("accuracy", accuracy.xs("noisy") - accuracy.xs("bn"), step=step),
        Claim.of("drift_bn", ratio(moves, "noisy", "bn")),
        Claim.of("drift_plain", ratio(moves, "noisy", "plain")),
        Claim.of("ics", ratio(measures.ics, "bn", "plain")),
        *[Claim.of(key, ratio(measures[key], "bn", "plain")) for key in LANDSCAPE],
    ]


# The input the probe watches, as the README names it.
PROBED = "the sigmoid input"
# The landscape measures as the conclusion names them, and what a verdict says of one.
MEASURES = {
    "loss_range": "the loss range",
    "grad_change": "gradient predictiveness",
    "beta": "effective beta-smoothness",
}
PER_SEED = {
    "pass": "smaller with BN in every seed",
    "fail": "not smaller with BN in any seed",
    "inconclusive": "smaller with BN in some seeds only",
}
COUNTS = {1: "one", 2: "two", 3: "three"}


def listed(items: list[str]) -> str:
    """`items` as prose: a, b and c."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def spread(values: pd.Series) -> str:
    """`values` (one per seed) as their range, or the one value of a single seed."""
    if len(values) == 1:
        return f"{values.iloc[0]:.4g}"
    return f"{values.min():.4g} to {values.max():.4g}"


def drift_without_bn(found: list[Claim]) -> pd.Series:
    """Per seed: the percentile drift of the net without BN over BN's, the suite's own measure
    of how far a layer's input moves, from claim (a)'s two drift ratios (noisy BN / BN over
    noisy BN / no BN), so that it is the same runs' drift the claims judge."""
    by_key = {claim.key: claim.per_seed for claim in found}
    return by_key["drift_bn"] / by_key["drift_plain"]


def drift_verdict(found: list[Claim]) -> str:
    """pass when the net without BN drifted more than BN in every seed, fail when in none."""
    return verdicts.verdict(ratio > 1 for ratio in drift_without_bn(found))


def ics_text(found: list[Claim], probed: str) -> str:
    """What each measure of internal covariate shift says, seed by seed, with its numbers:
    Santurkar et al.'s gradient-based ICS (claim (b)) and the percentile drift of `probed`,
    the input the probe watched. The two can disagree, so neither is reported alone."""
    verdict = {claim.key: claim.verdict() for claim in found}
    (ics,) = [claim for claim in found if claim.key == "ics"]
    gradient = {
        "fail": "BN reduced ICS in every seed",
        "pass": "BN did not reduce ICS in any seed",
    }.get(verdict["ics"], "BN reduced ICS in some seeds only")
    drifted = {
        "pass": "drifted more than with BN in every seed",
        "fail": "did not drift more than with BN in any seed",
    }.get(drift_verdict(found), "drifted more than with BN in some seeds only")
    return (
        f"by Santurkar et al.'s gradient-based ICS measure {gradient} (BN / no BN "
        f"{spread(ics.per_seed)}); by the {percentile_drift.NAME} of {probed}, the input "
        f"without BN {drifted} (no BN / BN {spread(drift_without_bn(found))})"
    )


def noisy_text(found: list[Claim], probed: str) -> str:
    """What noisy BN's claims say of BN's speed and the stability of `probed`, and how close
    the accuracy claim's worst seed came to its threshold: with few seeds a margin of a few
    test images cannot carry a claim that stability plays no part."""
    verdict = {claim.key: claim.verdict() for claim in found}
    if verdict["accuracy"] != "pass" or verdict["drift_bn"] != "pass":
        return (
            f"Noisy BN did not both train about as fast as BN and have a less stable {probed}, "
            "so this experiment does not separate BN's speed from the stability of its inputs."
        )
    (accuracy,) = [claim for claim in found if claim.key == "accuracy"]
    worst = accuracy.per_seed.min()
    seeds = len(accuracy.per_seed)
    margin = worst - accuracy.threshold.value
    return (
        f"Noisy BN trained about as fast as BN while its {probed} drifted more than BN's, so "
        "here BN's speed did not need inputs as stable as BN's; but with "
        f"{seeds} seed{'s' if seeds > 1 else ''} and the worst {margin:.2g} inside its "
        f"threshold ({worst:.4g} against {accuracy.threshold.text}), this does not show that "
        "stable inputs play no part in it."
    )


def landscape_text(verdict: dict[str, str]) -> str:
    """Each landscape measure's verdict, whether each is consistent across seeds (its verdict
    is not inconclusive) and whether the three agree with each other (the same verdict)."""
    each = [f"{name} is {PER_SEED[verdict[key]]}" for key, name in MEASURES.items()]
    consistent = [name for key, name in MEASURES.items() if verdict[key] != "inconclusive"]
    if len(consistent) == len(MEASURES):
        seeds = "each measure is consistent across seeds"
    elif not consistent:
        seeds = "no measure is consistent across seeds"
    else:
        seeds = f"only {listed(consistent)} {'is' if len(consistent) == 1 else 'are'} "
        seeds += "consistent across seeds"
    agree = len({verdict[key] for key in MEASURES}) == 1
    measures = "agree with each other" if agree else "disagree with each other"
    return f"Of the landscape measures, {listed(each)}: {seeds}, and the measures {measures}."


def supported(found: list[Claim]) -> str:
    """What the data says of each explanation: of the premise of the paper's ICS hypothesis
    (that BN reduces internal covariate shift), by each of the two measures, and of the
    smoothness explanation, by how many of its three measures BN made smaller in every seed."""
    verdict = {claim.key: claim.verdict() for claim in found}
    says = {"pass": "contradicts", "fail": "supports"}  # of claim (b): BN does not reduce ICS
    gradient = says.get(verdict["ics"], "does not decide (the seeds disagree on)")
    drift = {"pass": "supports it", "fail": "contradicts it"}.get(
        drift_verdict(found), "does not decide it (the seeds disagree)"
    )
    ics_part = (
        f"the gradient-based ICS measure {gradient} the premise of the paper's ICS hypothesis "
        f"(that BN reduces internal covariate shift) and the {percentile_drift.NAME} {drift}"
    )
    passed = [name for key, name in MEASURES.items() if verdict[key] == "pass"]
    if len(passed) == len(MEASURES):
        smooth = "supports the smoothness explanation in all three of its measures"
    elif not passed:
        smooth = "supports the smoothness explanation in none of its three measures"
    else:
        smooth = (
            f"supports the smoothness explanation in {COUNTS[len(passed)]} of its three "
            f"measures only ({listed(passed)})"
        )
    return f"{ics_part}; the data {smooth}"


def conclusion(found: list[Claim]) -> list[str]:
    """A few lines on what the data supports: what each measure of ICS says, each landscape
    measure's consistency across seeds and whether the measures agree with each other, what
    noisy BN says, and what that makes of each explanation."""
    verdict = {claim.key: claim.verdict() for claim in found}
    seeds = len(found[0].per_seed)
    return [
        f"Over {seeds} seed{'s' if seeds > 1 else ''}, {ics_text(found, PROBED)}.",
        landscape_text(verdict),
        noisy_text(found, "sigmoid input"),
        f"On this net {supported(found)}.",
    ]


def judged(out_dir: Path) -> list[Claim]:
    """The claims of the files in `out_dir`, in claims.csv's order."""
    curves, diagnostics, _, _ = load(out_dir)
    return claims(curves, diagnostics)
