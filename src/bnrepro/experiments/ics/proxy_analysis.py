"""The Inception proxy's claims: the measures both studies share (bnrepro.experiments.ics.analysis),
judged against the proxy's own threshold files, and what they support."""

from pathlib import Path

import pandas as pd

from bnrepro.experiments.ics import analysis
from bnrepro.experiments.ics.protocol import LANDSCAPE
from bnrepro.experiments.ics.proxy_protocol import VARIANTS, load


def mean_accuracy(curves: pd.DataFrame) -> pd.Series:
    """Per (variant, seed): held-out accuracy averaged over every evaluation after step 0."""
    evaluated = curves[curves.step > 0].dropna(subset=["test_acc"])
    return evaluated.groupby(["variant", "seed"]).test_acc.mean()


class Claim(analysis.Claim):
    """One claim of the proxy: analysis.Claim judged against thresholds/ics_proxy/."""

    driver = "ics_proxy"


def claims(curves: pd.DataFrame, diagnostics: pd.DataFrame) -> list[Claim]:
    """Every claim's number per seed, in claims.csv's order."""
    accuracy, moves = mean_accuracy(curves), analysis.drift(curves)
    measures = analysis.medians(diagnostics)
    noisy, bn, plain = VARIANTS[2], VARIANTS[1], VARIANTS[0]
    return [
        Claim.of("accuracy", accuracy.xs(noisy) - accuracy.xs(bn)),
        Claim.of("drift_bn", analysis.ratio(moves, noisy, bn)),
        Claim.of("drift_plain", analysis.ratio(moves, noisy, plain)),
        Claim.of("ics", analysis.ratio(measures.ics, bn, plain)),
        *[Claim.of(key, analysis.ratio(measures[key], bn, plain)) for key in LANDSCAPE],
    ]


# The input the probe watches, as the README names it.
PROBED = "the late layer's input"


def conclusion(found: list[Claim]) -> list[str]:
    """What the data supports, in a few lines (analysis.conclusion's, for the proxy's late
    layer)."""
    verdict = {claim.key: claim.verdict() for claim in found}
    seeds = len(found[0].per_seed)
    return [
        f"Over {seeds} seed{'s' if seeds > 1 else ''}, {analysis.ics_text(found, PROBED)}.",
        analysis.landscape_text(verdict),
        analysis.noisy_text(found, "late-layer input"),
        f"On this proxy {analysis.supported(found)}.",
    ]


def judged(out_dir: Path) -> list[Claim]:
    """The claims of the files in `out_dir`, in claims.csv's order."""
    curves, diagnostics, _, _ = load(out_dir)
    return claims(curves, diagnostics)
