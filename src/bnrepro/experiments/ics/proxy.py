"""Internal covariate shift put to the test on the Inception proxy (Santurkar et al. 2018).

    python experiments/ics_proxy.py run [--preset cpu|gpu] [--device cuda] [hydra overrides ...]
    python experiments/ics_proxy.py run --quick   # a tiny protocol into runs/ics/proxy-quick/
    python experiments/ics_proxy.py collect --runs runs/ics/proxy/<time>
    python experiments/ics_proxy.py draw          # redraw from results/ics/proxy/*.csv only

The Inception half of results/ics/ (experiments/ics.py is the MNIST half). `run` trains plain
Inception, BN-Baseline and BN-Baseline with noisy BN on the Fashion-MNIST proxy at the sizes of
the preset (configs/preset/<name>.yaml; the seeds, runs at a time and the measurements' cadences
are PRESETS), with a late-layer probe and the diagnostics on, and prints its wall time;
`collect` writes curves.csv, diagnostics.csv, summary.csv and provenance.json; `draw` the
figures, claims.csv and README.md from them. The method and the presets: docs/ics.md.
"""

from bnrepro.driver import Driver, device_option, preset_options
from bnrepro.experiments.ics.proxy_protocol import PRESETS, collect, results_folder, run
from bnrepro.experiments.ics.proxy_report import draw

OPTIONS = (
    *preset_options(PRESETS, "cpu"),
    device_option(),
)
DRIVER = Driver(
    name="ics_proxy", doc=__doc__, run=run, collect=collect, draw=draw, options=OPTIONS,
    folder=results_folder,
)  # fmt: skip
