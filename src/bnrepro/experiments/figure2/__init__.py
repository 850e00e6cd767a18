"""Figures 2 and 3 of the paper (Inception and its BN variants, Section 4.2) on a proxy dataset.

    python experiments/figure2.py run [--preset cpu|gpu|gpu_plateau] [--seeds 0,1] [--jobs 2]
                                      [--packing separate|packed] [overrides ...]
    python experiments/figure2.py run --quick   # a 1-minute protocol into runs/figure2-quick/
    python experiments/figure2.py collect --runs runs/figure2/<time>   # gather finished runs
    python experiments/figure2.py draw          # redraw from results/figure2/*.csv only

`run` trains the five variants and the two controls of Section 4.2.2 on Fashion-MNIST, one
Hydra multirun, then the learning-rate ladder (plain Inception and the BN recipe at x1 to x30
the base rate), and does what `collect` and `draw` do. `collect` gathers a finished sweep into
results/figure2/ (curves.csv, summary.csv, ladder.csv, ladder_summary.csv, provenance.json;
decay.csv and decay_summary.csv for the cpu_plateau campaign's decay arm). `draw` writes, from
those files alone, table.csv (the Figure 3 analogue with 95% bootstrap intervals),
relations.csv (the paper's relations judged yes, no or unresolved), seeds.csv, checks.csv (the
plateau check), ladder_table.csv (and decay_table.csv), figure2.png/.pdf,
figure2_train_loss.png/.pdf, ladder.png/.pdf and README.md; the figures of a run shorter than
the cpu preset's (--quick's) say so above their panels. The cpu preset writes results/figure2/,
another preset results/figure2_<preset>/; cpu_plateau is trained as a campaign (`make
reproduce-figure2 PRESET=cpu_plateau`). Extra arguments are Hydra overrides for every run (keys
only the experiment files define need `++`).

The protocol, the presets and the method of the intervals and verdicts: docs/figure2.md.
"""

from bnrepro.driver import Driver, Option, device_option, preset_options
from bnrepro.experiments.figure2 import collect, protocol, report

OPTIONS = (
    *preset_options(protocol.PRESETS, "cpu"),
    device_option(),
    Option(
        "--packing",
        "separate: a process per recipe and seed; packed: a process per architecture, its "
        "recipes, rates and seeds the members of one model (default: the preset's, "
        + "; ".join(f"{name} {preset.packing}" for name, preset in protocol.PRESETS.items())
        + ")",
        default=lambda options: protocol.PRESETS[options["preset"]].packing,
        choices=protocol.PACKINGS,
    ),
)
DRIVER = Driver(
    name="figure2", doc=__doc__, run=protocol.run, collect=collect.collect, draw=report.draw,
    options=OPTIONS, tolerances=protocol.TOLERANCES, folder=protocol.results_folder,
)  # fmt: skip
