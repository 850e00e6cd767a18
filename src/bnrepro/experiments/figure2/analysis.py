"""What figure2's results say: the mean curves, Figure 3's table with bootstrap intervals over
seeds and over the held-out sample, where each mean curve crosses the target, the plateau
check, the ladder's and the decay arm's tables, and the paper's relations judged yes, no or
unresolved (docs/figure2.md describes the method)."""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from bnrepro.experiments.figure2.protocol import (
    DECAY_SPEEDUPS,
    LADDER_KEYS,
    MAIN,
    VARIANTS,
    decay_variant,
)

# Figure 3 of the paper: steps to 72.2% (Inception's maximum) and maximum accuracy on ImageNet.
PAPER = {
    "inception": (31.0e6, 0.722),
    "bn_baseline": (13.3e6, 0.727),
    "bn_x5": (2.1e6, 0.730),
    "bn_x30": (2.7e6, 0.748),
    "bn_x5_sigmoid": (None, 0.698),
}
CHANCE_MARGIN = 0.05  # "at chance": maximum accuracy within 5 points of 1 / classes
# Figure 3's intervals: a percentile bootstrap over seeds and over the held-out sample (see
# docs/figure2.md). The numpy seed is fixed so that a redraw of the same CSV files writes the
# same bytes: the seeds are drawn from BOOTSTRAP_SEED's generator, the held-out samples from
# its first spawned child.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
INTERVAL = (2.5, 97.5)  # percentiles of the resamples: a 95% interval
# A curve reaches the target once it is within REACH_ROUNDING of it: the target is a mean over
# seeds, which can round an ulp above accuracies that all equal it (0.8 three times: 0.8 + 2e-16).
REACH_ROUNDING = 1e-9
# Inception's maximum is a fair target only once its curve has levelled off: the mean curve's
# best over the last PLATEAU_TAIL of the run's steps may exceed its best before by less than
# PLATEAU_TOLERANCE (held-out accuracy). Otherwise longer training would raise the target and
# every speed-up with it.
PLATEAU_TOLERANCE = 0.005
PLATEAU_TAIL = 0.2


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy per variant and step, mean over seeds (steps every seed reached)."""
    accuracy = curves.dropna(subset=["test_acc"])
    seeds = curves.groupby("variant").seed.nunique()
    grouped = accuracy.groupby(["variant", "step"]).test_acc.agg(["mean", "min", "max", "count"])
    grouped = grouped.reset_index()
    return grouped[grouped["count"] == grouped.variant.map(seeds)]


def accuracy_matrix(curves: pd.DataFrame, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """The steps at which every seed of `variant` was evaluated (a diverged seed stops early),
    and the held-out accuracies there: one row per seed, in the order of the seeds."""
    wide = curves[curves.variant == variant].pivot(index="seed", columns="step", values="test_acc")
    wide = wide.dropna(axis=1)
    return wide.columns.to_numpy(), wide.to_numpy()


def resampled_means(accuracy: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """One mean curve per row of `picks`, over the rows (seeds) of `accuracy` it names. The
    point estimate is the row of every seed once: one code path for it and the resamples, so
    that identical seeds give an interval equal to the point, to the last bit."""
    return accuracy[picks].mean(axis=1)


def point_means(accuracy: np.ndarray) -> np.ndarray:
    return resampled_means(accuracy, np.arange(len(accuracy))[None, :])


def bootstrap_means(
    accuracy: dict[str, np.ndarray], resamples: int, images: dict[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """`resamples` mean curves per variant, each over the variant's seeds drawn with replacement,
    independently per variant, from a generator seeded with BOOTSTRAP_SEED (the variants in
    the order of `accuracy`, so the same inputs draw the same resamples). Given `images`
    (variant -> the held-out images of each seed's evaluations, in the order of the rows of
    `accuracy`), every accuracy a of a drawn seed is then redrawn as Binomial(n, a) / n from
    the generator's first spawned child; without it, the seeds alone are resampled."""
    seeds = np.random.SeedSequence(BOOTSTRAP_SEED)
    rng, redraw = np.random.default_rng(seeds), np.random.default_rng(seeds.spawn(1)[0])
    picks = {
        variant: rng.integers(0, len(rows), (resamples, len(rows)))
        for variant, rows in accuracy.items()
    }
    if images is None:
        return {variant: resampled_means(accuracy[variant], p) for variant, p in picks.items()}
    means = {}
    for variant, p in picks.items():
        n = images[variant][p][:, :, None]
        means[variant] = (redraw.binomial(n, accuracy[variant][p]) / n).mean(axis=1)
    return means


def evaluation_sd(accuracy: float, images: np.ndarray) -> float:
    """The standard deviation, from the held-out sample alone, of a mean over seeds of
    accuracies near `accuracy`, the seeds evaluated on `images` held-out images each:
    sqrt(a (1 - a) sum_i 1 / n_i) / seeds, each seed's accuracy a binomial proportion."""
    return math.sqrt(accuracy * (1 - accuracy) * np.sum(1 / images)) / len(images)


def first_reaching(means: np.ndarray, steps: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each row of `means` (curves at `steps`), the first step at which it reaches the
    row's `target`; NaN where it never does."""
    if not steps.size:
        return np.full(len(means), math.nan)
    reached = means >= target[:, None] - REACH_ROUNDING
    return np.where(reached.any(axis=1), steps[reached.argmax(axis=1)], math.nan)


def measures(
    means: dict[str, np.ndarray], steps: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """The target and, per variant, steps to it, speed-up and maximum of mean curves. `means`
    holds one curve per row for each variant (at its `steps`), row i of every variant drawn
    together (the point estimate: one row; the bootstrap: a row per resample); row i's target
    is Inception's maximum in row i. Speed-up: Inception's steps over the variant's, 0 where
    the variant never reaches the target, NaN where either is at it from step 0 (before any
    training: toy protocols only)."""
    target = means["inception"].max(axis=1)
    baseline = first_reaching(means["inception"], steps["inception"], target)
    found = {}
    for variant, curves in means.items():
        reached = first_reaching(curves, steps[variant], target)
        with np.errstate(divide="ignore", invalid="ignore"):
            speedup = np.where(np.isnan(reached), 0.0, baseline / reached)
        speedup[(baseline == 0) | (reached == 0)] = math.nan
        best = curves.max(axis=1) if steps[variant].size else np.full(len(curves), math.nan)
        found[variant] = {"steps": reached, "speedup": speedup, "max": best}
    return target, found


def interval(values: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of `values`, NaN left out; (NaN, NaN) when nothing is left."""
    kept = values[~np.isnan(values)]
    if not kept.size:
        return math.nan, math.nan
    low, high = np.percentile(kept, INTERVAL)
    return float(low), float(high)


def steps_interval(steps: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of resampled steps to the target, NaN (never reached) counted
    as infinitely many steps: each end is an evaluated step (the outer one where a percentile
    falls between two), inf where it falls among resamples that never reach the target."""
    values = np.where(np.isnan(steps), math.inf, steps)
    low = np.percentile(values, INTERVAL[0], method="lower")
    high = np.percentile(values, INTERVAL[1], method="higher")
    return float(low), float(high)


def against_target(curve: pd.DataFrame, target: float) -> dict:
    """One run's held-out accuracy (`curve`: step, test_acc, evaluated rows in step order)
    against `target`: the first step at which it reaches it (NaN: never), its maximum and
    the step of it, and its last accuracy (a diverged run's last before it diverged)."""
    reached = curve.step[curve.test_acc >= target - REACH_ROUNDING]
    return {
        "steps_to_target": float(reached.min()) if len(reached) else math.nan,
        "max_acc": curve.test_acc.max(),
        "step_of_max": curve.step[curve.test_acc.idxmax()],
        "final_acc": curve.test_acc.iloc[-1],
    }


def per_seed(curves: pd.DataFrame, summary: pd.DataFrame, target: float) -> pd.DataFrame:
    """seeds.csv: every run's own curve against the target of the table (the maximum of
    Inception's mean curve), in the order of VARIANTS and seeds."""
    accuracy = curves.dropna(subset=["test_acc"]).sort_values("step")
    runs = summary.assign(order=summary.variant.map(VARIANTS.index))
    rows = []
    for r in runs.sort_values(["order", "seed"]).itertuples():
        curve = accuracy[(accuracy.variant == r.variant) & (accuracy.seed == r.seed)]
        rows.append(
            {"variant": r.variant, "seed": r.seed, "status": r.status}
            | against_target(curve, target)
        )
    return pd.DataFrame(rows)


def seed_images(summary: pd.DataFrame, variant: str, seeds: list[int]) -> np.ndarray:
    """The held-out images of each evaluation of `variant`'s runs with `seeds`, in that order."""
    return summary.set_index(["variant", "seed"]).eval_images.loc[variant].loc[seeds].to_numpy()


def crossing(
    mean: np.ndarray, steps: np.ndarray, step: float, target: float, images: np.ndarray
) -> dict:
    """Where a mean curve (`mean` at `steps`) first reaches `target`, at `step` (NaN: never):
    its accuracy there, the margin (that accuracy less the target; 0 within REACH_ROUNDING),
    the evaluation sd of a mean over seeds evaluated on `images` each at that accuracy, and
    whether the margin is under one sd (a marginal crossing)."""
    if math.isnan(step):
        return dict.fromkeys(["crossing_acc", "crossing_margin", "crossing_sd"], math.nan) | {
            "crossing_marginal": None
        }
    accuracy = float(mean[steps == step][0])
    margin = accuracy - target
    margin = 0.0 if abs(margin) <= REACH_ROUNDING else margin
    sd = evaluation_sd(accuracy, images)
    return {
        "crossing_acc": accuracy,
        "crossing_margin": margin,
        "crossing_sd": sd,
        "crossing_marginal": bool(margin < sd),
    }


class Draws(NamedTuple):
    """The mean curves of every variant and what `measures` makes of them: the point (one row)
    and the bootstrap (a row per resample, every variant's row i drawn together)."""

    steps: dict[str, np.ndarray]
    images: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    target: np.ndarray
    point: dict[str, dict[str, np.ndarray]]
    targets: np.ndarray
    resampled: dict[str, dict[str, np.ndarray]]


def draws(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    evaluation_noise: bool = True,
    variants: Sequence[str] = VARIANTS,
) -> Draws:
    """The point estimates and BOOTSTRAP_RESAMPLES resamples of `variants` (plain Inception's
    maximum the target) over seeds and (with `evaluation_noise`) over the held-out sample of
    each evaluation (`summary`'s `eval_images`); the same inputs draw the same resamples."""
    matrices = {variant: accuracy_matrix(curves, variant) for variant in variants}
    steps = {variant: s for variant, (s, _) in matrices.items()}
    accuracy = {variant: a for variant, (_, a) in matrices.items()}
    images = {
        variant: seed_images(summary, variant, sorted(set(curves.seed[curves.variant == variant])))
        for variant in variants
    }
    means = {variant: point_means(a) for variant, a in accuracy.items()}
    target, point = measures(means, steps)
    drawn = bootstrap_means(accuracy, BOOTSTRAP_RESAMPLES, images if evaluation_noise else None)
    targets, resampled = measures(drawn, steps)
    return Draws(steps, images, means, target, point, targets, resampled)


def table(
    curves: pd.DataFrame, summary: pd.DataFrame, num_classes: int, evaluation_noise: bool = True
) -> pd.DataFrame:
    """Figure 3's table on the proxy (table.csv): steps to Inception's maximum, maximum
    accuracy and speed-up of the mean curves over seeds, their bootstrap intervals (`draws`),
    where and by how much each mean curve crosses the target, and the spread of the seeds' own
    steps to the target."""
    steps, images, means, target, point, targets, resampled = draws(
        curves, summary, evaluation_noise
    )
    target = float(target[0])
    target_low, target_high = interval(targets)
    seeds = per_seed(curves, summary, target)
    rows = []
    for variant in VARIANTS:
        runs = summary[summary.variant == variant]
        diverged = runs[runs.status == "diverged"]
        reached = seeds[seeds.variant == variant].steps_to_target.dropna()
        ours, spread, mean = point[variant], resampled[variant], means[variant][0]
        speedup = ours["speedup"][0] if variant in MAIN else math.nan
        speedup_low, speedup_high = (
            interval(spread["speedup"]) if variant in MAIN else (math.nan,) * 2
        )
        steps_low, steps_high = steps_interval(spread["steps"])
        max_low, max_high = interval(spread["max"])
        paper_steps, paper_max = PAPER.get(variant, (None, None))
        rows.append(
            {
                "variant": variant,
                "seeds": len(runs),
                "status": "diverged" if len(diverged) else ",".join(sorted(set(runs.status))),
                "diverged_seeds": len(diverged),
                "diverged_at_step": diverged.diverged_at_step.min() if len(diverged) else None,
                "steps_to_target": ours["steps"][0],
                "steps_to_target_low": steps_low,
                "steps_to_target_high": steps_high,
                **crossing(mean, steps[variant], ours["steps"][0], target, images[variant]),
                "seeds_reaching": len(reached),
                "seed_steps_min": reached.min() if len(reached) else None,
                "seed_steps_max": reached.max() if len(reached) == len(runs) else None,
                "max_acc": ours["max"][0],
                "max_acc_low": max_low,
                "max_acc_high": max_high,
                "step_of_max": steps[variant][mean.argmax()] if mean.size else None,
                "speedup": math.nan if np.isnan(ours["steps"][0]) else speedup,
                "speedup_low": speedup_low,
                "speedup_high": speedup_high,
                "reach_fraction": float(np.mean(~np.isnan(spread["steps"]))),
                "target_acc": target,
                "target_acc_low": target_low,
                "target_acc_high": target_high,
                "chance_acc": 1 / num_classes,
                "paper_steps_to_target": paper_steps,
                "paper_max_acc": paper_max,
                "paper_speedup": PAPER["inception"][0] / paper_steps if paper_steps else None,
            }
        )
    return pd.DataFrame(rows)


def decay_table(
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    decay: pd.DataFrame,
    decay_summary: pd.DataFrame,
    evaluation_noise: bool = True,
) -> pd.DataFrame:
    """decay_table.csv: BN-x5 at each decay speed-up (the decay arm's and the recipe's 6x),
    against plain Inception's maximum: steps to it, maximum accuracy, and the ratio
    steps(Inception) / steps(BN-x5) judged by the relations' rule (`relations`), each with
    its 95% interval over resamples of these variants."""
    arm = [decay_variant(s) for s in DECAY_SPEEDUPS]
    main = ["inception", "bn_x5"]
    found = draws(
        pd.concat([curves[curves.variant.isin(main)], decay]),
        pd.concat([summary[summary.variant.isin(main)], decay_summary]),
        evaluation_noise,
        variants=["inception", *arm, "bn_x5"],
    )
    rows = []
    for variant, speedup in [*zip(arm, DECAY_SPEEDUPS, strict=True), ("bn_x5", 6)]:
        point, spread = found.point[variant], found.resampled[variant]
        ratio = step_ratio(found.point["inception"]["steps"], point["steps"])[0]
        low, high = outer_interval(
            step_ratio(found.resampled["inception"]["steps"], spread["steps"])
        )
        steps_low, steps_high = steps_interval(spread["steps"])
        max_low, max_high = interval(spread["max"])
        rows.append(
            {"decay_speedup": speedup, "variant": variant, "seeds": len(found.images[variant]),
             "steps_to_target": point["steps"][0], "steps_to_target_low": steps_low,
             "steps_to_target_high": steps_high, "max_acc": point["max"][0],
             "max_acc_low": max_low, "max_acc_high": max_high, "ratio": float(ratio),
             "ratio_low": low, "ratio_high": high, "verdict": side(low, high, 1.0),
             "target_acc": float(found.target[0])}
        )  # fmt: skip
    return pd.DataFrame(rows)


def plateau(curves: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """checks.csv: whether plain Inception had levelled off, its mean curve (the first row)
    and each seed's own: its best over the last PLATEAU_TAIL of the run's steps exceeding its
    best before by less than PLATEAU_TOLERANCE, and the step of its maximum."""
    steps, accuracy = accuracy_matrix(curves, "inception")
    seeds = sorted(set(curves.seed[curves.variant == "inception"]))
    cutoff = (1 - PLATEAU_TAIL) * summary[summary.variant == "inception"].steps.max()
    rows = []
    for curve, values in [("mean", point_means(accuracy)[0])] + [
        (f"seed {seed}", accuracy[i]) for i, seed in enumerate(seeds)
    ]:
        before, after = values[steps < cutoff].max(), values[steps >= cutoff].max()
        rows.append(
            {
                "check": "inception_plateau",
                "curve": curve,
                "cutoff_step": cutoff,
                "best_before": before,
                "best_after": after,
                "gain": after - before,
                "tolerance": PLATEAU_TOLERANCE,
                "step_of_max": steps[values.argmax()],
                "plateaued": bool(after - before < PLATEAU_TOLERANCE),
            }
        )
    return pd.DataFrame(rows)


def ladder_table(
    ladder: pd.DataFrame, ladder_summary: pd.DataFrame, target: float, inception_steps: float
) -> pd.DataFrame:
    """ladder_table.csv: per rung of the ladder, how it ended, its held-out accuracy against
    the table's target (plain Inception's maximum) and its speed-up over Inception's mean
    curve (`inception_steps` to the target)."""
    accuracy = ladder.dropna(subset=["test_acc"]).sort_values("step")
    rows = []
    for r in ladder_summary.sort_values(LADDER_KEYS).itertuples(index=False):
        rung = (accuracy.family == r.family) & (accuracy.multiplier == r.multiplier)
        found = against_target(accuracy[rung & (accuracy.seed == r.seed)], target)
        steps = found["steps_to_target"]
        speedup = inception_steps / steps if steps and inception_steps else math.nan
        rows.append(r._asdict() | found | {"speedup": speedup})
    return pd.DataFrame(rows)


YES, NO, UNRESOLVED = "yes", "no", "unresolved"
# The relations of Section 4.2.2, each judged by one rule (experiments/campaigns/
# figure2_cpu_plateau.yaml states it before the runs): the 95% bootstrap interval of the
# relation's own ratio or difference against its null value. A relation of two quantities
# holds when both do. (relation, quantity, kind, numerator, denominator or None)
RELATIONS = [
    ("BN-Baseline reaches the target in fewer steps than Inception",
     "steps(Inception) / steps(BN-Baseline)", "ratio", "inception", "bn_baseline"),
    ("BN-x5 reaches it in far fewer steps: fewer than BN-Baseline and than Inception",
     "steps(BN-Baseline) / steps(BN-x5)", "ratio", "bn_baseline", "bn_x5"),
    ("BN-x5 reaches it in far fewer steps: fewer than BN-Baseline and than Inception",
     "steps(Inception) / steps(BN-x5)", "ratio", "inception", "bn_x5"),
    ("BN-x30 reaches it in fewer steps than Inception",
     "steps(Inception) / steps(BN-x30)", "ratio", "inception", "bn_x30"),
    ("BN-x30 is slower to it than BN-x5",
     "steps(BN-x30) / steps(BN-x5)", "ratio", "bn_x30", "bn_x5"),
    ("BN-x30 ends with the highest maximum accuracy of the five",
     "max(BN-x30) - max(best other of the five)", "highest", "bn_x30", None),
    ("BN-x5-Sigmoid trains (maximum well above chance)",
     "max(BN-x5-Sigmoid) - (chance + margin)", "above chance", "bn_x5_sigmoid", None),
    ("Inception-Sigmoid stays at chance (control)",
     "(chance + margin) - max(Inception-Sigmoid)", "at chance", "inception_sigmoid", None),
]  # fmt: skip


def step_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator of steps to the target, NaN (never reached) counting as
    infinitely many steps: never / never is a tie (1), as is 0 / 0."""
    a = np.where(np.isnan(numerator), math.inf, numerator)
    b = np.where(np.isnan(denominator), math.inf, denominator)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    return np.where(np.isnan(ratio), 1.0, ratio)


def outer_interval(values: np.ndarray) -> tuple[float, float]:
    """The INTERVAL percentiles of `values`, each the outer of the two values it falls
    between (no interpolation, so that infinite values stay infinite)."""
    low = np.percentile(values, INTERVAL[0], method="lower")
    high = np.percentile(values, INTERVAL[1], method="higher")
    return float(low), float(high)


def relations(
    curves: pd.DataFrame, summary: pd.DataFrame, num_classes: int, evaluation_noise: bool = True
) -> pd.DataFrame:
    """relations.csv: each relation's quantity at the point and its 95% interval over the same
    resamples as table.csv's (`draws`), and its verdict by `side` against the null value
    (yes: the interval wholly above it)."""
    found = draws(curves, summary, evaluation_noise)
    threshold = 1 / num_classes + CHANCE_MARGIN
    rows = []
    for relation, quantity, kind, first, second in RELATIONS:
        values = []
        for measured in (found.point, found.resampled):
            if kind == "ratio":
                values.append(step_ratio(measured[first]["steps"], measured[second]["steps"]))
            elif kind == "highest":
                others = [measured[v]["max"] for v in MAIN if v != first]
                values.append(measured[first]["max"] - np.max(others, axis=0))
            elif kind == "above chance":
                values.append(measured[first]["max"] - threshold)
            else:
                values.append(threshold - measured[first]["max"])
        null = 1.0 if kind == "ratio" else 0.0
        low, high = outer_interval(values[1])
        rows.append(
            {"relation": relation, "quantity": quantity, "kind": kind,
             "point": float(values[0][0]), "low": low, "high": high, "null": null,
             "verdict": side(low, high, null)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def side(low: float, high: float, threshold: float, above: bool = True) -> str:
    """yes when the interval [low, high] lies entirely on the claimed side of `threshold`
    (above it; below it where not `above`), no when it lies entirely on the other side (a
    tie counts as the other side), unresolved when it straddles `threshold` or is missing."""
    if above:
        return YES if low > threshold else NO if high <= threshold else UNRESOLVED
    return YES if high < threshold else NO if low >= threshold else UNRESOLVED


def relation_value(value: float, kind: str) -> str:
    """A ratio as 2.50x (inf: the numerator never reaches the target), a difference as +0.0123."""
    if kind == "ratio":
        return "inf" if value == math.inf else f"{value:.2f}x"
    return f"{value:+.4f}"


def verdicts(results: pd.DataFrame, found: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """The paper's relations (Section 4.2.2), each judged on the proxy by the interval of its
    own quantity (`found`: relations.csv), and the control Inception x5 by its seeds (table.csv):
    (relation, paper, ours, yes / no / unresolved)."""
    row = {r.variant: r for r in results.itertuples()}

    def paper_speedup(v: str) -> str:
        return f"{PAPER['inception'][0] / PAPER[v][0]:.1f}x"

    paper = {
        RELATIONS[0][0]: paper_speedup("bn_baseline"),
        RELATIONS[1][0]: f"{paper_speedup('bn_x5')} vs {paper_speedup('bn_baseline')}",
        RELATIONS[3][0]: paper_speedup("bn_x30"),
        RELATIONS[4][0]: f"{paper_speedup('bn_x30')} vs {paper_speedup('bn_x5')}",
        RELATIONS[5][0]: f"{PAPER['bn_x30'][1]:.1%} vs {PAPER['bn_x5'][1]:.1%} (BN-x5)",
        RELATIONS[6][0]: f"{PAPER['bn_x5_sigmoid'][1]:.1%}",
        RELATIONS[7][0]: "never above chance (0.1%)",
    }
    claims = []
    for relation, rows in found.groupby("relation", sort=False):
        ours = "; ".join(
            f"{r.quantity} = {relation_value(r.point, r.kind)} "
            f"[{relation_value(r.low, r.kind)}, {relation_value(r.high, r.kind)}]"
            for r in rows.itertuples()
        )
        verdict = (
            NO if NO in set(rows.verdict) else YES if set(rows.verdict) == {YES} else UNRESOLVED
        )
        claims.append((relation, paper[relation], ours, verdict))
    r = row["inception_x5"]
    ours = f"{r.diverged_seeds} of {r.seeds} seeds diverged" + (
        f", the first at step {r.diverged_at_step:,.0f}" if r.diverged_seeds else ""
    )
    diverges = YES if r.diverged_seeds == r.seeds else NO if not r.diverged_seeds else UNRESOLVED
    claims.append(("Inception at 5x its rate diverges (control)", "diverged", ours, diverges))
    return claims


def at_chance(max_acc: float, chance: float) -> bool:
    return max_acc <= chance + CHANCE_MARGIN
