"""Figure 1 across the choices the paper does not state: optimizer, learning rate, init std.

    python experiments/sensitivity.py run [--jobs 2] [--device cpu] [--steps 50000]
    python experiments/sensitivity.py run --lrs 0.01,0.1,1 --init-stds 0.01,0.1   # another grid
    python experiments/sensitivity.py run --quick   # 2 rates x 2 stds x 1 seed x 300 steps
    python experiments/sensitivity.py collect --runs runs/sensitivity/<time>
    python experiments/sensitivity.py draw          # redraw from results/sensitivity/ only

`run` trains both nets with both optimizers over the grid (four vectorized runs), `collect`
writes results/sensitivity/members.csv (one row per member) and provenance.json, `draw`
sensitivity.png/.pdf and README.md, which says over which cells each Figure 1 claim holds.
`--quick` writes to runs/sensitivity-quick/. The protocol and the rule that decides a cell:
docs/sensitivity.md.
"""

from bnrepro.driver import Driver, Option, device_option, positive_int, steps_option, value_list
from bnrepro.experiments.sensitivity import protocol, report

OPTIONS = (
    steps_option(None, protocol.QUICK["steps"], "Figure 1's 50,000"),
    Option(
        "--lrs",
        f"learning rates of the grid (default {','.join(f'{v:g}' for v in protocol.LRS)})",
        value_list("--lrs", "0.01,0.1,1"),
        protocol.LRS,
        protocol.QUICK["lrs"],
    ),
    Option(
        "--init-stds",
        f"init stds of the grid (default {','.join(f'{v:g}' for v in protocol.INIT_STDS)})",
        value_list("--init-stds", "0.01,0.1,1"),
        protocol.INIT_STDS,
        protocol.QUICK["init_stds"],
    ),
    device_option(),
    Option(
        "--jobs",
        "training processes at a time (default 2; 4, every run at once, with --device cuda)",
        positive_int("--jobs", "processes at a time", 2),
        lambda options: (
            len(protocol.NETS) * len(protocol.OPTIMIZERS)
            if (options["device"] or "").startswith("cuda")
            else 2
        ),
    ),
)
DRIVER = Driver(
    name="sensitivity", doc=__doc__, run=protocol.run, collect=protocol.collect, draw=report.draw,
    options=OPTIONS, tolerances=protocol.TOLERANCES,
)  # fmt: skip
