"""What `draw` writes from members.csv: sensitivity.png/.pdf (the BN advantage of each claim
as heatmaps over lr and init std, one row per optimizer) and README.md; and the generated
blocks of the pages (bnrepro.docs) that quote the map."""

from pathlib import Path

import matplotlib
import pandas as pd

from bnrepro import markdown
from bnrepro.atomic import atomic_write_text
from bnrepro.docblocks import csv
from bnrepro.experiments.sensitivity.analysis import (
    CLAIMS,
    cells,
    early_column,
    gap_range,
    headline,
)
from bnrepro.experiments.sensitivity.protocol import (
    CHECKPOINTS,
    DRAW_FIX,
    FIGURE1_STEPS,
    MEMBER_COLUMNS,
    MEMBER_OPTIONAL,
    OPTIMIZERS,
    PROTOCOLS,
    check_members,
)
from bnrepro.experiments.sensitivity.readme import ratio_text, readme, region
from bnrepro.plots import HeatmapPanel, sensitivity_heatmaps, short_protocol_note
from bnrepro.tables import read_csv, read_json

CAPTION = (
    "Means over seeds. After a value: + the claim holds (every seed agrees, the mean is beyond "
    "the measure's minimum), − it is reversed likewise, ≈ every seed agrees but the mean is "
    "within the minimum, ± the seeds disagree; div.: a member diverged. Grey: no value."
)
VERDICT_MARK = {
    "holds": "+", "reversed": "−", "small": "≈", "mixed": "±", "diverged": "div.",
    "undefined": "?",
}  # fmt: skip


def panels(table: pd.DataFrame, early: str | None) -> list[HeatmapPanel]:
    """The four heatmaps of the map: value, text and verdict mark of every cell."""

    def text(value: pd.Series, fmt: str, claim: pd.Series, unit: str = "") -> list[str]:
        return [
            "div." if mark == "diverged" else f"{v:{fmt}}{unit}{VERDICT_MARK[mark]}"
            for v, mark in zip(value, claim, strict=True)
        ]

    def shown(values: pd.Series) -> pd.Series:
        """No colour for a diverged cell: its mean is over the seeds that did not diverge."""
        return values.where(table.ends_higher != "diverged")

    early_name = {"acc_5k": "5,000", "acc_1k": "1,000"}.get(early, "—")
    return [
        HeatmapPanel(
            "final accuracy gap, BN − plain (points)", shown(table.final_gap * 100),
            text(table.final_gap * 100, "+.2f", table.ends_higher), "difference",
        ),
        HeatmapPanel(
            f"accuracy gap at step {early_name} (points)", shown(table.early_gap * 100),
            text(table.early_gap * 100, "+.1f", table.faster_early), "difference",
        ),
        HeatmapPanel(
            "steps to 0.95: plain / BN", shown(table.steps_ratio),
            [steps_text(cell) for _, cell in table.iterrows()],
            "ratio",
        ),
        HeatmapPanel(
            "percentile drift: plain / BN", shown(table.drift_ratio),
            text(table.drift_ratio, ".1f", table.stabler, "x"), "ratio",
        ),
    ]  # fmt: skip


def steps_text(cell: pd.Series) -> str:
    """A steps-to-0.95 heatmap cell's text: the ratio with its verdict's mark, or the words of
    `ratio_text` alone where a net did not reach 0.95 in every seed (they say which net did,
    and a mark after them would not fit the cell)."""
    text = ratio_text(cell)
    return text + VERDICT_MARK[cell.sooner_to_095] if text.endswith("x") else text


def draw(out_dir: Path) -> None:
    """sensitivity.png/.pdf and README.md from members.csv, once it is known whole."""
    path = out_dir / "members.csv"
    members = read_csv(path, MEMBER_COLUMNS, DRAW_FIX, MEMBER_OPTIONAL)
    members["diverged"] = members.diverged.astype(bool)
    provenance = read_json(out_dir / "provenance.json", DRAW_FIX)
    check_members(members, path)
    table = cells(members)
    matplotlib.use("Agg")  # figures are written to files, never shown
    note = short_protocol_note(int(members.steps.max()), FIGURE1_STEPS, "Figure 1's")
    for written in sensitivity_heatmaps(
        table, OPTIMIZERS, panels(table, early_column(members)), out_dir, CAPTION, note
    ):
        print(f"wrote {written}")
    atomic_write_text(out_dir / "README.md", readme(members, table, provenance))
    print(f"wrote {out_dir / 'README.md'}")


# ---------------------------------------------------------------- the pages' generated blocks


def sensitivity_cells(results: Path) -> pd.DataFrame:
    return cells(csv(results, "sensitivity/members.csv"))


def sensitivity_map(results: Path) -> str:
    table = sensitivity_cells(results)
    lines = []
    for claim, (title, _, _) in CLAIMS.items():
        lines.append(f"- **{title}**: {region(table, claim)}")
    return "\n".join(lines)


def widest_std_gaps(members: pd.DataFrame) -> str:
    """BN's lead at the largest init std, at every rate but the largest (where momentum's
    plain net is stuck), over both optimizers, against its lead at our default protocol
    (PROTOCOLS' "ours"): the region where the gaps are neither huge nor small."""
    table = cells(members)
    std, rates = table.init_std.max(), sorted(set(table.lr))[:-1]
    ranges = [gap_range(table, optimizer, [std], rates) for optimizer in OPTIMIZERS]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    optimizer, lr, default_std = PROTOCOLS["ours", "results/figure1"]
    default = gap_range(table, optimizer, [default_std], [lr])[0]
    ours = f"{OPTIMIZERS[optimizer]}, lr {lr:g}, init std {default_std:g}: {default:+.2f}"
    return (
        f"At init std {std:g}, at every rate below {max(table.lr):g}, BN ends {low:+.2f} to "
        f"{high:+.2f} points ahead with either optimizer: {low / default:.1f} to "
        f"{high / default:.1f} times its lead at our default protocol ({ours})."
    )


def sensitivity_gaps(results: Path) -> str:
    members = csv(results, "sensitivity/members.csv")
    gaps = headline(members)["final_gap_points"]
    lines = []
    for optimizer, name in OPTIMIZERS.items():
        by_std = gaps[optimizer]
        lrs = sorted({lr for row in by_std.values() for lr in row})
        header = (f"{name}: init std \\ lr", *(f"{lr:g}" for lr in lrs))
        rows = [(f"{std:g}", *(f"{by_std[std][lr]:+.2f}" for lr in lrs)) for std in sorted(by_std)]
        lines += [*markdown.table(header, rows), ""]
    lines.append(
        "Final test accuracy, BN minus plain, points, mean over seeds (`members.csv`; "
        "`headline` in `bnrepro.experiments.sensitivity`)."
    )
    lines += ["", widest_std_gaps(members)]
    return "\n".join(lines)


def sensitivity_headline(results: Path) -> str:
    table = sensitivity_cells(results)
    early = early_column(csv(results, "sensitivity/members.csv"))
    parts = []
    for claim, (title, _, _) in CLAIMS.items():
        if claim == "faster_early" and early:
            title = f"{title}: accuracy at step {CHECKPOINTS[early]:,}"
        counts = ", ".join(
            f"{int((table[table.optimizer == o][claim] == 'holds').sum())} of "
            f"{int((table.optimizer == o).sum())} with {name}"
            for o, name in OPTIMIZERS.items()
        )
        parts.append(f"{title}: {counts}")
    return (
        "**Figure 1 across optimizer, learning rate and init std** (the paper gives none). "
        "Cells where each claim holds (every seed agrees and the mean is beyond the measure's "
        "minimum effect): "
        + "; ".join(parts)
        + ". [results/sensitivity](results/sensitivity/README.md), "
        "[docs/sensitivity.md](docs/sensitivity.md)"
    )


BLOCKS = {
    "sensitivity-headline": sensitivity_headline,
    "sensitivity-map": sensitivity_map,
    "sensitivity-gaps": sensitivity_gaps,
}
