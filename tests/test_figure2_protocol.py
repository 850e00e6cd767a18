"""Figure 3 with several seeds, on synthetic curves (no training): bootstrap intervals over
seeds (the seeds alone, `evaluation_noise=False`: test_figure2 tests the held-out sample's
redraw), the three-valued verdicts, the plateau check, the learning-rate ladder, and a draw that
is deterministic and refuses an incomplete ladder."""

import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, compose_train, drive
from test_figure2 import (
    RUNS,
    assert_refused,
    build,
    snapshot,
    synthetic,
    synthetic_ladder,
    write_inputs,
)

from bnrepro.experiments import figure2
from bnrepro.experiments.figure2 import analysis, protocol, readme, report


def runs_with(seeds: int, **changed: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every variant of RUNS for `seeds` seeds alike, except the variants named in `changed`
    (variant -> one (final, rise, diverged) per seed)."""
    return build({variant: changed.get(variant, [run] * seeds) for variant, run in RUNS.items()})


def judged(
    runs: tuple[pd.DataFrame, pd.DataFrame], evaluation_noise: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """table.csv and relations.csv of `runs` (curves, summary)."""
    return (
        analysis.table(*runs, num_classes=10, evaluation_noise=evaluation_noise),
        analysis.relations(*runs, num_classes=10, evaluation_noise=evaluation_noise),
    )


def verdict(tables: tuple[pd.DataFrame, pd.DataFrame], relation: str) -> tuple[str, str]:
    """(ours, verdict) of the relation that starts with `relation`."""
    found = [(o, v) for c, _, o, v in analysis.verdicts(*tables) if c.startswith(relation)]
    assert len(found) == 1, relation
    return found[0]


def test_identical_seeds_give_intervals_equal_to_the_points() -> None:
    results = analysis.table(*synthetic(seeds=3), num_classes=10, evaluation_noise=False)
    results = results.set_index("variant")
    for variant in ["inception", "bn_baseline", "bn_x5", "bn_x30"]:
        r = results.loc[variant]
        assert r.speedup_low == r.speedup == r.speedup_high, variant
        assert r.max_acc_low == r.max_acc == r.max_acc_high, variant
        assert r.seed_steps_min == r.steps_to_target == r.seed_steps_max, variant
        assert r.reach_fraction == 1.0 and r.seeds_reaching == 3
    # Never reaching the target: no point, an interval of 0 (the rule for such resamples).
    sigmoid = results.loc["bn_x5_sigmoid"]
    assert math.isnan(sigmoid.speedup) and sigmoid.speedup_low == sigmoid.speedup_high == 0.0
    assert sigmoid.reach_fraction == 0.0 and sigmoid.seeds_reaching == 0


def test_one_seed_gives_points_and_no_unresolved_verdict() -> None:
    """One seed: over seeds alone, every interval is its point and every verdict yes or no."""
    results, found = judged(synthetic(seeds=1), evaluation_noise=False)
    main = results[results.variant.isin(["inception", "bn_baseline", "bn_x5", "bn_x30"])]
    assert (main.speedup_low == main.speedup).all() and (main.speedup_high == main.speedup).all()
    assert (found.low == found.point).all() and (found.high == found.point).all()
    assert {v for *_, v in analysis.verdicts(results, found)} == {"yes"}


def test_a_variant_faster_in_every_seed_gets_yes() -> None:
    inception = [(0.80, 800, None), (0.80, 900, None), (0.80, 1000, None)]
    baseline = [(0.82, 300, None), (0.82, 350, None), (0.82, 400, None)]
    tables = judged(runs_with(3, inception=inception, bn_baseline=baseline))
    results, found = tables
    r = results.set_index("variant").loc["bn_baseline"]
    # Each seed's own curve first reaches 0.80 at 0.7 / 0.72 of its rise, rounded up to an
    # evaluation (every 10 steps): 291.7 -> 300, 340.3 -> 350, 388.9 -> 390.
    assert (r.seed_steps_min, r.seed_steps_max, r.seeds_reaching) == (300, 390, 3)
    assert 1 < r.speedup_low <= r.speedup <= r.speedup_high
    assert r.speedup_low < r.speedup_high  # the seeds differ: the interval has a width
    ours, holds = verdict(tables, "BN-Baseline reaches the target")
    assert holds == "yes"
    # The ratio of steps is the speed-up, drawn from the same resamples as table.csv's; its
    # interval's ends are resampled values (the outer two a percentile falls between), which
    # enclose the interpolated ends of table.csv's.
    ratio = found.iloc[0]
    assert ratio.point == pytest.approx(r.speedup)
    assert ratio.low <= r.speedup_low and ratio.high >= r.speedup_high
    assert ratio.high - ratio.low < 1.25 * (r.speedup_high - r.speedup_low)
    assert ours == (
        f"steps(Inception) / steps(BN-Baseline) = {ratio.point:.2f}x "
        f"[{ratio.low:.2f}x, {ratio.high:.2f}x]"
    )


def test_overlapping_spreads_are_unresolved() -> None:
    """One seed reaches the target fast, the other never: a quarter of the resamples hold only
    the fast one; the rest never reach it (speed-up 0). So the interval straddles 1."""
    tables = judged(
        runs_with(
            2,
            bn_baseline=[(0.82, 300, None), (0.76, 300, None)],
            bn_x30=[(0.86, 150, None), (0.80, 150, None)],
            inception_x5=[(0.30, 100, 60), (0.70, 500, None)],
        ),
        evaluation_noise=False,
    )
    results = tables[0]
    r = results.set_index("variant").loc["bn_baseline"]
    assert math.isnan(r.speedup)  # the mean curve ends at 0.79, below the target
    assert r.speedup_low == 0.0 and r.speedup_high == pytest.approx(1000 / 300)
    assert 0.2 < r.reach_fraction < 0.3
    assert (r.seeds_reaching, r.seed_steps_min) == (1, 300)
    assert verdict(tables, "BN-Baseline reaches the target")[1] == "unresolved"
    # BN-x30's maximum is 0.80 to 0.86 over resamples; BN-x5's is 0.84 in each.
    assert verdict(tables, "BN-x30 ends with the highest")[1] == "unresolved"
    ours, holds = verdict(tables, "Inception at 5x its rate diverges")
    assert (ours, holds) == ("1 of 2 seeds diverged, the first at step 60", "unresolved")


def test_a_variant_slower_in_every_seed_gets_no() -> None:
    tables = judged(
        runs_with(
            3,
            inception=[(0.80, 500, None)] * 3,
            bn_baseline=[(0.82, 1000, None), (0.82, 950, None), (0.82, 900, None)],
            bn_x30=[(0.81, 150, None)] * 3,
            bn_x5_sigmoid=[(0.12, 100, None)] * 3,
            inception_sigmoid=[(0.50, 100, None)] * 3,
            inception_x5=[(0.70, 500, None)] * 3,
        ),
        evaluation_noise=False,
    )
    r = tables[0].set_index("variant").loc["bn_baseline"]
    assert r.speedup_high < 1
    for relation in (
        "BN-Baseline reaches the target",
        "BN-x30 ends with the highest",  # 0.81 against BN-x5's 0.84 in every seed
        "BN-x5-Sigmoid trains",
        "Inception-Sigmoid stays at chance",
        "Inception at 5x its rate diverges",
    ):
        assert verdict(tables, relation)[1] == "no", relation


def test_far_fewer_steps_is_judged_against_bn_baseline_and_inception() -> None:
    """BN-x5 must take fewer steps than both BN-Baseline and Inception (both ratios above 1);
    BN-x30 more steps than BN-x5 to be "slower"."""
    tables = judged(
        runs_with(1, bn_x5=[(0.82, 500, None)], bn_x30=[(0.86, 50, None)]),
        evaluation_noise=False,
    )
    # BN-x5 now reaches the target as late as BN-Baseline (step 490): a tie is not "far fewer",
    # though it is faster than Inception.
    ours, holds = verdict(tables, "BN-x5 reaches it in far fewer steps")
    assert holds == "no"
    assert ours == (
        "steps(BN-Baseline) / steps(BN-x5) = 1.00x [1.00x, 1.00x]; "
        "steps(Inception) / steps(BN-x5) = 2.04x [2.04x, 2.04x]"
    )
    assert verdict(tables, "BN-x30 is slower to it than BN-x5")[1] == "no"


def with_tail(rise: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inception at its plateau of 0.80 from step 500, then rising by `rise` over the last 20%
    of its 1,000 steps."""
    curves, summary = runs_with(1, inception=[(0.80, 500, None)])
    tail = (curves.variant == "inception") & (curves.step > 800)
    ramp = (curves.step[tail] - 800) / 200 * rise
    curves.loc[tail, "test_acc"] = curves.test_acc[tail] + ramp
    return curves, summary


@pytest.mark.parametrize(
    ("curves", "before", "after", "plateaued"),
    [
        (runs_with(1, inception=[(0.80, 500, None)]), 0.80, 0.80, True),
        (with_tail(0.004), 0.80, 0.804, True),
        (with_tail(0.006), 0.80, 0.806, False),
        # rising from 0.1 to 0.80 over all 1,000 steps: 0.1 + 0.7 * 790 / 1000 at the last
        # evaluation before the cutoff (step 800), 0.80 at step 1,000
        (synthetic(seeds=1), 0.653, 0.80, False),
    ],
    ids=["flat", "rises less than the tolerance", "rises more", "rising to the end"],
)
def test_plateau_check(curves, before, after, plateaued) -> None:
    """The bests before and after the cutoff and the gain are those the curves were built
    with, not recomputed from the check's own columns: a gain off by a tenth of the
    tolerance (0.0005, five of 10,000 images) fails."""
    check = analysis.plateau(*curves).iloc[0]
    assert check.plateaued == plateaued
    assert check.cutoff_step == 800 and check.tolerance == analysis.PLATEAU_TOLERANCE
    assert check.best_before == pytest.approx(before, abs=1e-9)
    assert check.best_after == pytest.approx(after, abs=1e-9)
    assert check.gain == pytest.approx(after - before, abs=1e-9)
    assert check.step_of_max == (1000 if after > before else 500)


def test_ladder_table_marks_diverged_rungs() -> None:
    curves, summary = synthetic()
    ladder, ladder_summary = synthetic_ladder(curves, summary)
    rungs = analysis.ladder_table(ladder, ladder_summary, target=0.80, inception_steps=1000.0)
    rungs = rungs.set_index(["family", "multiplier"])
    diverged = rungs[rungs.status == "diverged"]
    assert list(diverged.index) == [("inception", 5), ("inception", 10), ("inception", 30)]
    assert list(diverged.diverged_at_step) == [60, 30, 10]
    assert diverged.steps_to_target.isna().all() and diverged.speedup.isna().all()
    assert rungs.source[("inception", 5)] == "inception_x5"
    assert rungs.source[("bn_recipe", 10)] == "ladder"
    assert rungs.steps_to_target[("bn_recipe", 10)] == 120
    assert rungs.speedup[("bn_recipe", 10)] == pytest.approx(1000 / 120)


def test_a_rung_that_learns_nothing_without_diverging_is_not_called_training() -> None:
    """A rate can leave the loss finite and the accuracy at chance (a collapsed network): the
    ladder says so instead of "trains"."""
    rung = pd.Series(
        {"status": "completed", "max_acc": 0.1095, "step_of_max": 400, "steps_to_target": None,
         "speedup": None, "diverged_at_step": None}
    )  # fmt: skip
    assert readme.ladder_cell(rung, chance=0.1).startswith("fails to train: at chance")
    learned = rung.copy()
    learned["max_acc"] = 0.7
    assert readme.ladder_cell(learned, chance=0.1).startswith("trains: maximum 0.7000")


def test_run_trains_the_ladders_missing_rungs_after_the_sweep(monkeypatch, tmp_path) -> None:
    calls = []
    monkeypatch.setattr(protocol, "multirun", lambda *call: calls.append(call))
    argv = ["run", "--quick", "--seeds", "3,4", "--runs", str(tmp_path), "++log_every=5"]
    protocol.run(figure2.DRIVER.invocation(argv))
    main, inception, bn = calls
    assert "experiment=" + ",".join(protocol.VARIANTS) in main[0] and "seeds=[3],[4]" in main[0]
    for (overrides, sweep_dir, subdir, jobs), experiment, multipliers, family in (
        (inception, "inception", "2,10,30", "inception"),
        (bn, "bn_x5", "1,2,10", "bn_recipe"),
    ):
        assert f"experiment={experiment}" in overrides
        assert f"recipe.lr_multiplier={multipliers}" in overrides
        assert {"seeds=[3]", "++log_every=5", "preset=quick"} <= set(overrides)
        assert sweep_dir == tmp_path / "ladder" / family
        assert subdir == "x${recipe.lr_multiplier}_seed${seeds[0]}"
        assert jobs == protocol.PRESETS["quick"].jobs


def test_a_rung_is_its_experiment_at_another_rate() -> None:
    """`recipe.lr_multiplier` overrides the experiment's own (bn_x5 sets 5) and keeps the
    rest of the recipe: the BN family is BN-x5 at every rate."""
    bn = compose_train(["experiment=bn_x5", "recipe.lr_multiplier=2"])
    assert bn.recipe.lr_multiplier == 2 and bn.recipe.decay_speedup == 6 and bn.model.batch_norm
    plain = compose_train(["experiment=inception", "recipe.lr_multiplier=10"])
    assert plain.recipe.lr_multiplier == 10 and not plain.model.batch_norm


def spread_inputs(folder) -> None:
    """Three seeds that differ, so that the bootstrap has something to resample."""
    write_inputs(
        folder,
        *runs_with(
            3,
            inception=[(0.80, 800, None), (0.79, 900, None), (0.81, 1000, None)],
            bn_x5=[(0.84, 100, None), (0.83, 150, None), (0.85, 300, None)],
        ),
    )


def test_draw_is_deterministic_and_writes_what_verify_compares(tmp_path) -> None:
    spread_inputs(tmp_path)
    report.draw(tmp_path)
    first = snapshot(tmp_path)
    report.draw(tmp_path)
    assert snapshot(tmp_path) == first
    for name, columns in protocol.TOLERANCES.items():
        header = pd.read_csv(tmp_path / name, nrows=0).columns
        assert set(columns) <= set(header), name
    table = pd.read_csv(tmp_path / "table.csv").set_index("variant")
    assert table.speedup_low["bn_x5"] < table.speedup_high["bn_x5"]
    assert np.isfinite(table[["max_acc_low", "max_acc_high"]].to_numpy()).all()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda folder: (folder / "ladder_summary.csv").unlink(),
            "ladder_summary.csv does not exist. Nothing was written. Fix: rebuild the CSV files",
        ),
        (
            lambda folder: drop_rung(folder, "bn_recipe", 10),
            "ladder_summary.csv is incomplete: no rows for family=bn_recipe, multiplier=10, seed=0",
        ),
        (
            lambda folder: edit(
                folder / "ladder_summary.csv",
                lambda s: s.assign(status=s.status.mask(s.multiplier == 2, "crashed")),
            ),
            "lists runs that did not finish as expected: family=bn_recipe, multiplier=2, seed=0: "
            "crashed",
        ),
        (
            lambda folder: edit(
                folder / "ladder.csv", lambda c: c[~((c.multiplier == 1) & (c.step > 500))]
            ),
            "ladder.csv holds curves that do not end at their last step: family=bn_recipe, "
            "multiplier=1, seed=0 ends at step 500, not 1,000",
        ),
    ],
    ids=["no ladder summary", "a rung missing", "a rung crashed", "a rung's curve cut short"],
)
def test_draw_refuses_an_incomplete_ladder_and_writes_nothing(tmp_path, damage, expected):
    write_inputs(tmp_path, *synthetic())
    damage(tmp_path)
    before = snapshot(tmp_path)
    assert_refused(drive(figure2.DRIVER, "draw", "--out", str(tmp_path)), expected)
    assert snapshot(tmp_path) == before


def edit(path, change) -> None:
    change(pd.read_csv(path)).to_csv(path, index=False)


def drop_rung(folder, family: str, multiplier: int) -> None:
    for name in ("ladder.csv", "ladder_summary.csv"):
        edit(
            folder / name,
            lambda f: f[~((f.family == family) & (f.multiplier == multiplier))],
        )


def test_the_plateau_check_judges_the_mean_curve_and_every_seed() -> None:
    """One seed rising by 0.008 over its last 20% while the other is flat: the mean curve
    gains 0.004, under the tolerance, but that seed has not levelled off."""
    curves, summary = runs_with(2, inception=[(0.80, 500, None)] * 2)
    tail = (curves.variant == "inception") & (curves.seed == 1) & (curves.step > 800)
    curves.loc[tail, "test_acc"] += (curves.step[tail] - 800) / 200 * 0.008
    checks = analysis.plateau(curves, summary).set_index("curve")
    assert list(checks.index) == ["mean", "seed 0", "seed 1"]
    assert checks.gain["mean"] == pytest.approx(0.004)
    assert checks.plateaued["mean"] and checks.plateaued["seed 0"]
    assert not checks.plateaued["seed 1"] and checks.gain["seed 1"] == pytest.approx(0.008)


def test_the_decay_arm_judges_bn_x5_at_each_decay_speedup() -> None:
    """BN-x5 decaying 1x reaches plain Inception's maximum later than Inception (ratio below
    1), 3x never does (its curve stops below the target: ratio 0), and the recipe's 6x in a
    tenth of Inception's steps."""
    curves, summary = synthetic(seeds=2)
    decay, decay_summary = build(
        {"bn_x5_decay1": [(0.81, 1000, None)] * 2, "bn_x5_decay3": [(0.79, 200, None)] * 2}
    )
    table = analysis.decay_table(curves, summary, decay, decay_summary, evaluation_noise=False)
    table = table.set_index("decay_speedup")
    assert list(table.index) == [1, 3, 6] and table.variant[6] == "bn_x5"
    assert table.target_acc.iloc[0] == pytest.approx(0.80)
    # 0.1 + 0.71 * step / 1000 first reaches 0.80 at step 985.9: the evaluation at 990.
    assert table.steps_to_target[1] == 990 and table.ratio[1] == pytest.approx(1000 / 990)
    assert table.verdict[1] == "yes"  # every resample draws identical seeds: a point interval
    assert math.isnan(table.steps_to_target[3]) and table.ratio[3] == 0.0
    assert table.verdict[3] == "no"
    assert table.ratio[6] == pytest.approx(10.0) and table.verdict[6] == "yes"
    assert table.max_acc[3] == pytest.approx(0.79)


def test_a_campaigns_readme_dates_its_plan_from_git() -> None:
    """The plan section names the plan file's last change at or before the campaign's commit,
    from git, and when the campaign's first run started; a sweep has no such section."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    if not head:
        pytest.skip("not a git clone")
    plan = "configs/preset/cpu_plateau.yaml"
    campaign = {"plan_file": plan, "commit": head, "plan_sha256": "ab" * 32,
                "started": "2026-12-07T18:00:00+0000"}  # fmt: skip
    text = "\n".join(readme.plan_section({"campaign": campaign}))
    last = subprocess.run(
        ["git", "log", "-1", "--format=%h", head, "--", plan],
        cwd=REPO, capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    assert f"`{plan}`, last changed in {last[:7]} (" in text
    assert "first run started\n2026-12-07T18:00:00+0000." in text
    assert readme.plan_section({}) == []
