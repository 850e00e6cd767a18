"""Internal covariate shift put to the test on the MNIST MLP (Santurkar et al. 2018's diagnostics).

    python experiments/ics.py run [--seeds 0,1,2] [--steps 50000] [--every 500] [--jobs 2]
                                  [--device cpu] [hydra overrides ...]
    python experiments/ics.py run --quick   # 2 seeds x 600 steps into runs/ics-quick/
    python experiments/ics.py collect --runs runs/ics/<time>   # gather finished runs
    python experiments/ics.py draw          # redraw from results/ics/*.csv only

`run` trains the net without BN, with BN and with noisy BN with Figure 1's protocol, measuring
each layer's ICS and the loss landscape every `--every` steps; `collect` writes curves.csv,
diagnostics.csv, summary.csv and provenance.json; `draw` the figures, claims.csv and README.md
from them. `--quick` writes to runs/ics-quick/. The same study on the Inception proxy is
`python experiments/ics_proxy.py` (bnrepro.experiments.ics.proxy), which shares this package's
measures and report. The method: docs/ics.md.
"""

from bnrepro.driver import (
    Driver,
    Option,
    device_option,
    jobs_option,
    positive_int,
    seeds_option,
    steps_option,
)
from bnrepro.experiments.ics import protocol, report

OPTIONS = (
    seeds_option(protocol.DEFAULT_SEEDS, protocol.QUICK["seeds"]),
    steps_option(None, protocol.QUICK["steps"], "Figure 1's 50,000"),
    Option(
        "--every",
        f"diagnostics every this many steps (default {protocol.DEFAULT_EVERY})",
        positive_int("--every", "steps between diagnostics", protocol.DEFAULT_EVERY),
        protocol.DEFAULT_EVERY,
        protocol.QUICK["every"],
    ),
    jobs_option(2),
    device_option(),
)
DRIVER = Driver(
    name="ics", doc=__doc__, run=protocol.run, collect=protocol.collect, draw=report.draw,
    options=OPTIONS, tolerances=protocol.TOLERANCES,
)  # fmt: skip
