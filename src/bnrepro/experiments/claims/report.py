"""What `draw` writes from the CSV files and provenance.json: claims.csv, one figure per
claim (and claim 4's training loss) and README.md (the claims table, each claim with its
section of the paper, its figures, method and notes, how the numbers were made); and the
generated blocks of the pages (bnrepro.docs) that quote results/claims/."""

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from bnrepro import markdown, plots
from bnrepro.atomic import atomic_write_text
from bnrepro.docblocks import claims_table, csv, escape
from bnrepro.driver import write_csv
from bnrepro.experiments.claims.analysis import SPEEDUP_DIGITS, Check, checks, significant
from bnrepro.experiments.claims.protocol import CSV_FILES, PROTOCOLS, accuracy_at, load
from bnrepro.verdicts import runs_commit

# claim -> (title, the section of arXiv:1502.03167 it is from, the claim, figure, method)
DESCRIPTIONS = {
    1: (
        "Scale invariance",
        "Section 3.3, Batch Normalization enables higher learning rates",
        "BN makes a layer invariant to the scale of its weights. For a scalar a, BN((aW)u) = "
        "BN(Wu); the gradient with respect to the layer's input is unchanged, d BN((aW)u)/du = "
        "d BN(Wu)/du; and larger weights get smaller gradients, d BN((aW)u)/d(aW) = (1/a) d "
        "BN(Wu)/dW, which stabilizes the growth of the weights.",
        "claim1_scale_invariance.png",
        "Random W (10x20), u (32x20), gamma, beta and upstream gradient, float64, the paper's "
        "BN with eps = 0, for 41 values of a in [0.1, 10]; loss = sum(upstream * BN((aW)u)). "
        "The identities are exact only for eps = 0; with eps > 0 the normalization divides "
        "by sqrt(a^2 Var + eps), so they hold approximately, worst for small a (grey in (b)).",
    ),
    2: (
        "Why backprop through the statistics",
        "Section 2, Towards Reducing Internal Covariate Shift",
        "The gradient step must take the normalization into account. For a layer x = u + b "
        "normalized as x - E[x], a step that ignores that E[x] depends on b changes b but "
        "neither the layer's output nor the loss, so b grows without bound while the loss stays"
        " fixed; backpropagating through the statistics, as BN does, avoids this.",
        "claim2_stats_backprop.png",
        "The paper's example, run: x = u + b with b the only parameter, normalized by BN without "
        "gamma/beta over a fixed set of 256 examples of 8 features, squared error to a fixed "
        "target with nonzero mean, plain SGD (lr 0.1) for 1,000 steps, float64. The mean "
        "subtraction cancels b, so nothing that b does can change the loss, for either "
        "variant. With the statistics treated as constants (`stats_backprop=False`) every "
        "step moves b by the same nonzero amount: |b| grows linearly without bound while the "
        "loss stays flat. With backprop through them b's gradient is zero and b stays put.",
    ),
    3: (
        "The bias before BN is redundant",
        "Section 3.2, Batch-Normalized Convolutional Networks",
        "In BN(Wu + b) the bias b can be dropped, since the mean subtraction cancels its "
        "effect (beta takes over its role).",
        "claim3_bias_redundancy.png",
        "A random Linear(784 -> 100) with a random bias b, then the paper's BN in training "
        "mode and a sigmoid with a random upstream gradient, on consecutive MNIST training "
        "batches of 60 (one per trial), float64. b's gradient is zero up to rounding and "
        "setting b to zero leaves the output unchanged. (In inference mode b is absorbed by "
        "folding, claim 5.)",
    ),
    4: (
        "BN before the nonlinearity vs after it",
        "Section 3.2, Batch-Normalized Convolutional Networks",
        "BN goes immediately before the nonlinearity, z = g(BN(Wu)). The layer's input u is the"
        " output of another nonlinearity, whose distribution keeps changing shape in training, "
        "while Wu + b is more likely symmetric and non-sparse, so normalizing it gives "
        "activations with a more stable distribution. Measured as: after the same number of "
        "steps, the net with BN before its sigmoids is at least as accurate as with BN after "
        "them (on the next layer's input), and more accurate than without BN.",
        "claim4_bn_position.png",
        "The Figure 1 net trained through the harness (`experiment=figure1`: plain SGD at a "
        "constant rate of 0.1 with no schedule, batches of 60) as `model=mlp`, `model=mlp_bn "
        "model.bn_position=before` (the paper's g(BN(Wu))) and `model=mlp_bn "
        "model.bn_position=after` (BN(g(Wu + b)), hidden biases kept), with the steps and "
        "seeds of the protocol below. Accuracy at a step: the mean over seeds of the test "
        "accuracy logged there. The threshold for 'before >= after' allows 0.005 of seed "
        "noise. The two placements "
        "differ in more than the position of BN: 'after' keeps the hidden biases, and its "
        "last BN normalizes the classifier's input, which 'before' does not; a difference "
        "here is a difference between these two nets, not a clean test of placement alone.",
    ),
    5: (
        "Inference BN is one affine map",
        "Section 3.1, Training and Inference with Batch-Normalized Networks",
        "At inference the means and variances are fixed, so BN is a linear transform of each "
        "activation, which composes with gamma and beta into a single linear transform that "
        "replaces BN(x); folded into the layer before it, the net computes the same function. "
        "The paper states the identity; whether folding also makes inference faster is this "
        "repository's own check.",
        "claim5_folding.png",
        "The trained BN-before net rebuilt with `build_model` from its `model.pt`; "
        "`bnrepro.claim_measures.fold_mlp` folds each BN into the EnsembleLinear before it with "
        "`fold_into_affine`. Logits on the 10,000 test images compared in float32, as the "
        "net runs, and in float64, where float32 rounding no longer hides the identity; "
        "inference timed as one forward pass over the 10,000 test images on the CPU, "
        "folded and unfolded taking turns in each repeat. The speed-up is the median over the "
        "repeats of each repeat's ratio, time unfolded / time folded, so a slow spell of a "
        "shared machine hits both sides of a ratio, with a distribution-free 95% interval for "
        "that median: from the j-th smallest to the j-th largest ratio, with j from the "
        "binomial distribution (`bnrepro.claim_measures.median_interval`). Its verdict is pass "
        "when the whole interval lies above 1, fail when none of it does, and inconclusive when "
        "it straddles 1.",
    ),
    6: (
        "Moving averages vs population statistics (Algorithm 2)",
        "Section 3.1 and Algorithm 2",
        "At inference BN normalizes with population statistics, E[x] = E_B[mu_B] and Var[x] = "
        "m/(m-1) E_B[sigma_B^2] over training mini-batches, and moving averages of the batch "
        "statistics are how the paper tracks a model's accuracy as it trains. Measured as: the "
        "moving averages give the test accuracy of the population statistics, within 0.5 "
        "points.",
        "claim6_population_statistics.png",
        "The trained BN-before net's test accuracy with its moving averages (momentum 0.1) "
        "against `estimate_population_statistics` over the first N training mini-batches of "
        "60 drawn per member as in training.",
    ),
}


# claim -> the figures its section shows after its own: claim 4's nets are trained, and their
# training loss is logged beside the accuracy.
MORE_FIGURES = {4: (("training loss", "claim4_train_loss.png"),)}


def command(settings: dict) -> str:
    """The command that makes results with `settings` (the output folder apart)."""
    words = ["python experiments/claims.py run"]
    words += ["--quick"] if settings.get("protocol") == "quick" else []
    return " ".join([*words, *settings.get("overrides", [])])


INTRO = (
    "# The paper's claims, measured",
    "",
    "Regenerated by `make reproduce-claims` (measuring and training) or `make figures`",
    "(drawing only) from the CSV files and provenance.json in this folder; do not edit by",
    "hand. Six claims of Ioffe & Szegedy, *Batch Normalization* (2015, arXiv:1502.03167),",
    "each stated below with the section of the paper it is from, are each a measured number",
    "with a threshold; `claims.csv` holds this table.",
    "",
)
# What the README says below the claims table: where the thresholds are kept and how the table
# dates them, and why only claim 5's speed-up is rounded.
THRESHOLDS_AND_ROUNDING = (
    "Each threshold is a file of its own, `thresholds/claims/<key>.yaml` (the claim,",
    "its relation and value, and why that value), read by `bnrepro.experiments.claims`. The",
    "table's last column says, from git, whether that file was committed before the commit",
    "the runs were made from (`provenance.json`): the threshold's commit and date, then the",
    "runs'.",
    "",
    "**What is rounded, and why.** Claim 5's speed-up is a timing, and timings vary from run",
    "to run on one machine (load, caches, clock speed). Its median and the two ends of its",
    f"95% interval are rounded to {SPEEDUP_DIGITS} significant digits, in `claims.csv`, in",
    "this table and in the claim 5 figure, so that a rerun on the same machine shows the",
    "same numbers; its verdict is decided on the unrounded interval, so that it changes only",
    "when the conclusion does. The raw times are in `provenance.json`, with the machine that",
    "measured them. Nothing else is rounded: every other number is deterministic on one kind",
    "of machine (the same code and data give the same bits), `claims.csv` holds it as",
    "computed and this table shows 4 significant digits. On another CPU model float",
    "rounding differs in the last digits, and claim 4's training takes another path from",
    "the first step where it does; `TOLERANCES` in `bnrepro.experiments.claims` says how far",
    "each column of the CSV files may move then.",
)


def readme(
    table: pd.DataFrame,
    data: dict[str, pd.DataFrame],
    settings: dict,
    train_device: str,
    history: list[str],
) -> str:
    """README.md: the claims table, then each claim with its figure, method and notes, how
    the numbers were made and the `history` of its result (results/claims/HISTORY.md's)."""
    notes = {
        1: scale_notes(data["scale_invariance.csv"]),
        4: position_notes(data["bn_position_curves.csv"], table, settings),
        5: folding_notes(data["folding_agreement.csv"], table, settings),
        6: population_notes(data["population_statistics.csv"]),
    }
    lines = [*INTRO, *claims_csv_table(table), "", *THRESHOLDS_AND_ROUNDING, ""]
    for number in DESCRIPTIONS:
        lines += claim_section(number, notes.get(number))
    lines += method(settings, train_device)
    if history:
        lines += ["", *history]
    return "\n".join([*lines, ""])


def claims_csv_table(table: pd.DataFrame) -> list[str]:
    """The claims table, from claims.csv's `table`."""
    rows = [
        (
            escape(r.claim), r.measured if isinstance(r.measured, str) else f"{r.measured:.4g}",
            r.threshold, f"**{r.verdict}**", r.threshold_fixed,
        )
        for r in table.itertuples()
    ]  # fmt: skip
    return markdown.table(("claim", "measured", "threshold", "verdict", "threshold fixed"), rows)


def claim_section(number: int, notes: list[str] | None) -> list[str]:
    """Claim `number`'s section: the claim, its figure, how it is measured, the `notes` on
    its numbers and the files it is drawn from."""
    title, source, claim, figure, how = DESCRIPTIONS[number]
    files = ", ".join(f"`{name}`" for name in CSV_FILES[number])
    files += " and the timing in `provenance.json`" if number == 5 else ""
    lines = [f"## {number}. {title}", "", f"**Claim** ({source}): {claim}", ""]
    lines += [f"![claim {number}]({figure})", ""]
    for name, more in MORE_FIGURES.get(number, ()):
        lines += [f"![claim {number}, {name}]({more})", ""]
    lines += [how, ""]
    if notes:
        lines += [*notes, ""]
    return [*lines, f"Drawn from {files}.", ""]


def scale_notes(scale: pd.DataFrame) -> list[str]:
    """Claim 1 with the harness's eps: how far from exact the identities are."""
    approx = scale[scale.eps > 0]
    return [
        f"With eps = {approx.eps.max():g} the largest relative deviation is "
        f"{approx[['out_dev', 'du_dev', 'dw_dev']].to_numpy().max():.2g} (at a = "
        f"{approx.a.min():g}): approximate, not exact.",
    ]


def position_notes(curves: pd.DataFrame, table: pd.DataFrame, settings: dict) -> list[str]:
    """Claim 4: why it is read at two steps of the same runs, BN before minus BN after at each
    with its verdict, and each net's accuracy per seed there."""
    judged = dict(zip(table.claim, table.verdict, strict=True))
    short, long = settings["short_steps"], settings["steps"]
    accuracy = pd.merge(
        accuracy_at(curves, short), accuracy_at(curves, long), on=["variant", "seed"]
    )
    means = accuracy.groupby("variant")[["test_acc_x", "test_acc_y"]].mean()
    gap = means.loc["bn_before"] - means.loc["bn_after"]
    label = "{}. test accuracy at step {:,}, BN before minus BN after the sigmoid"
    return [
        f"Both comparisons are read at two steps of the same runs, {short:,} and {long:,}. "
        "With a constant learning rate and no "
        "schedule nothing in a run depends on how long it is meant to last, so the first "
        f"{short:,} steps of the {long:,}-step runs are exactly {short:,}-step runs with "
        "the same seeds (`tests/test_claims.py` checks this byte for byte on short runs). "
        "The verdicts depend on the step because the nets are compared while they are still "
        "learning, at different speeds: which one is ahead, and by how much, changes as "
        f"training goes on (figure). BN before minus BN after is {gap.test_acc_x:+.4f} at "
        f"step {short:,} (**{judged[label.format(4, short)]}**) and "
        f"{gap.test_acc_y:+.4f} at step {long:,} (**{judged[label.format(4, long)]}**). "
        "The paper's Figure 1 reads its nets at step 50,000, the longer reading of the "
        "published protocol; the shorter reading shows how much a verdict owes to the "
        "length of the runs.",
        "",
        *markdown.table(
            ("net", "seed", f"test accuracy at step {short:,}", f"at step {long:,}"),
            (
                (r.variant, r.seed, f"{r.test_acc_x:.4f}", f"{r.test_acc_y:.4f}")
                for r in accuracy.itertuples()
            ),
        ),
    ]


def folding_notes(agreement: pd.DataFrame, table: pd.DataFrame, settings: dict) -> list[str]:
    """Claim 5: folded against unfolded logits per seed and dtype, and the speed-up."""
    speedup = table[table.claim.str.startswith("5. inference speed-up")].iloc[0]
    return [
        *markdown.table(
            ("seed", "dtype", "max abs. logit difference", "max rel.", "predictions agreeing"),
            (
                (
                    r.seed,
                    r.dtype,
                    f"{r.max_abs_diff:.3g}",
                    f"{r.max_rel_diff:.3g}",
                    f"{r.prediction_agreement:.4f}",
                )
                for r in agreement.itertuples()
            ),
        ),
        "",
        f"Inference speed-up, time unfolded / time folded: {speedup.measured}, "
        f"**{speedup.verdict}** over {settings['timing_repeats']} repeats. Folding removes "
        "the per-unit BN arithmetic (and the member reshapes around it), which is small "
        "next to the matrix products, so any speed-up is small. The times themselves are in "
        "`provenance.json` (`timing`): they belong to the machine, not to the method.",
    ]


def population_notes(population: pd.DataFrame) -> list[str]:
    """Claim 6: the test accuracy per seed, statistics and batch count."""
    return markdown.table(
        ("seed", "statistics", "batches", "test accuracy"),
        (
            (r.seed, r.statistics, r.n_batches or "-", f"{r.test_acc:.4f}")
            for r in population.itertuples()
        ),
    )


def method(settings: dict, train_device: str) -> list[str]:
    """How the numbers were made: the command, the protocol, and what provenance.json holds."""
    short, long = settings["short_steps"], settings["steps"]
    harness = ", ".join(f"`{o}`" for o in settings.get("harness", [])) or "none"
    return [
        "## How these numbers were made",
        "",
        f"- command: `{command(settings)}`",
        f"- protocol: {settings.get('protocol')}; claim 4 trains {long:,} steps with seeds "
        f"{settings.get('seeds')} on `{train_device}` and is read at steps {short:,} and "
        f"{long:,}; claim 6 averages up to {settings.get('population_batches'):,} batches; "
        f"claim 5 times {settings.get('timing_repeats')} repeats on the CPU; harness overrides "
        f"beyond `experiment=figure1`: {harness}",
        "- `provenance.json` holds what changes from run to run or machine to machine: the "
        "command as typed, the commit, the machine, the date, the wall times, the training "
        "runs' directory and claim 5's times",
    ]


def draw_folding(
    agreement: pd.DataFrame, speedup: Check, out_dir: Path, note: str = ""
) -> list[Path]:
    """Claim 5: (a) the inference speed-up and its interval against the threshold, rounded as
    claims.csv shows them, so that the figure holds no timing noise; (b) the largest |logit
    difference| per seed and dtype from `agreement` (seed, dtype, max_abs_diff); a short
    protocol's `note` above."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    median, low, high = (
        float(significant(v)) for v in (speedup.measured, speedup.low, speedup.high)
    )
    axes[0].errorbar(
        [0],
        [median],
        yerr=[[median - low], [high - median]],
        fmt="o",
        capsize=6,
        color="tab:red",
        label="median, 95% interval",
    )
    axes[0].axhline(
        speedup.value,
        color="k",
        linestyle="--",
        linewidth=1,
        label=f"threshold: {speedup.threshold.text}",
    )
    axes[0].set_xlim(-1, 1)
    axes[0].margins(y=0.3)  # the interval off the frame, even where it is one rounded value
    axes[0].set_xticks([])
    axes[0].set_ylabel("time unfolded / time folded")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"(a) inference speed-up: {speedup.verdict()}")

    plots.folding_agreement_panel(axes[1], agreement)
    plots.mark_short_protocol(fig, note)
    fig.tight_layout()
    return plots.save_figure(fig, out_dir, "claim5_folding")


def train_loss_figure(curves: pd.DataFrame, note: str = "") -> plt.Figure:
    """Claim 4's nets' training loss (each logged step's mini-batch) against steps, mean over
    seeds with a min-max band, on a log scale."""
    title = "Figure 1 net: training loss (each logged step's mini-batch; band: min to max)"
    return plots.train_loss_figure(curves, plots.BN_POSITION_STYLE, title, note)


def draw(out_dir: Path) -> None:
    """claims.csv, the figures and README.md from the CSV files and provenance.json in
    `out_dir`, once they are known whole."""
    data, provenance, settings, speedup = load(out_dir)
    found = checks(data, speedup, settings)
    table = pd.DataFrame([c.row(runs_commit(provenance)) for c in found])
    write_csv(out_dir / "claims.csv", table)
    matplotlib.use("Agg")  # figures are written to files, never shown
    # Claims 1 to 3 measure the same in every protocol; 4 to 6 train, or use the trained net.
    note = plots.short_protocol_note(
        settings["steps"], PROTOCOLS["published"].steps, "the published protocol's"
    )
    curves = data["bn_position_curves.csv"]
    speedup = next(c for c in found if c.low is not None)
    paths = [
        *plots.claim_scale_invariance(data["scale_invariance.csv"], out_dir),
        *plots.claim_stats_backprop(data["stats_backprop.csv"], out_dir),
        *plots.claim_bias_redundancy(data["bias_redundancy.csv"], out_dir),
        *plots.claim_bn_position(curves, out_dir, note),
        *plots.save_figure(train_loss_figure(curves, note), out_dir, "claim4_train_loss"),
        *draw_folding(data["folding_agreement.csv"], speedup, out_dir, note),
        *plots.claim_population_statistics(data["population_statistics.csv"], out_dir, note),
    ]
    for path in paths:
        print(f"wrote {path}")
    train_device = provenance.get("train_device", "?")
    text = readme(table, data, settings, train_device, markdown.history_lines(out_dir))
    atomic_write_text(out_dir / "README.md", text)
    print(f"wrote {out_dir / 'README.md'}")
    print(table.drop(columns="threshold_fixed").to_string(index=False, formatters=[str] * 4))


# ---------------------------------------------------------------- the pages' generated blocks


def tally(results: Path, folder: str) -> str:
    counts = csv(results, f"{folder}/claims.csv").verdict.value_counts()
    return ", ".join(
        f"{int(counts[v])} {v}" for v in ("pass", "fail", "inconclusive") if v in counts
    )


def claims_headline(results: Path) -> str:
    claims = csv(results, "claims/claims.csv")
    failing = claims[claims.verdict != "pass"]
    named = "; ".join(f"{r.claim} ({r.verdict})" for r in failing.itertuples())
    return (
        f"**Claims about the transform** (scale invariance, backprop through the statistics, "
        f"the bias, BN's position, folding, population statistics): of {len(claims)} measured "
        f"checks {tally(results, 'claims')}"
        + (f"; not passing: {named}" if named else "")
        + ". [results/claims](results/claims/README.md), [docs/claims.md](docs/claims.md)"
    )


BLOCKS = {
    "claims-headline": claims_headline,
    "claims-table": lambda results: claims_table(results, "claims"),
}
