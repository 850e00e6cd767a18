"""Figure 1 of the paper (MNIST, Section 4.1): train both nets, then draw the figure.

    python experiments/figure1.py run [--seeds 0,1,2] [--steps 50000] [hydra overrides ...]
    python experiments/figure1.py run --experiment figure1_momentum   # -> results/figure1_momentum/
    python experiments/figure1.py run --quick   # 2 seeds x 1,000 steps into runs/figure1-quick/
    python experiments/figure1.py collect --runs runs/figure1/<time>   # gather finished runs
    python experiments/figure1.py draw          # redraw from results/figure1/*.csv only

`run` trains the plain and the BN net, `collect` writes curves.csv, summary.csv and
provenance.json, `draw` figure1.png/.pdf and README.md from them. `--experiment NAME` trains
configs/experiment/NAME.yaml instead of figure1 (into results/NAME/); Hydra overrides such as
`data.input=binary` go to both runs. The protocols and our choices: docs/figure1.md.
"""

from bnrepro.driver import (
    Driver,
    Option,
    device_option,
    jobs_option,
    seeds_option,
    steps_option,
)
from bnrepro.experiments.figure1 import protocol, report

OPTIONS = (
    Option(
        "--experiment",
        "the configs/experiment/ file to train both nets with (default figure1); results "
        "go to results/<experiment>/ unless --out names another folder",
        default=protocol.DEFAULT_EXPERIMENT,
    ),
    seeds_option(protocol.DEFAULT_SEEDS, protocol.QUICK["seeds"]),
    steps_option(None, protocol.QUICK["steps"], "the experiment's, 50,000 for figure1"),
    jobs_option(2),
    device_option(),
)
DRIVER = Driver(
    name="figure1", doc=__doc__, run=protocol.run, collect=protocol.collect, draw=report.draw,
    options=OPTIONS, tolerances=protocol.TOLERANCES, folder=protocol.results_folder,
)  # fmt: skip
