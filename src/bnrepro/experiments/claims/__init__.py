"""Six claims of the BN paper (arXiv:1502.03167), each a measurement, a verdict and a figure.

    python experiments/claims.py run [--out DIR] [--runs DIR] [hydra overrides ...]
    python experiments/claims.py run --quick   # the whole pipeline small, into runs/claims-quick/
    python experiments/claims.py draw [--out DIR]   # redraw from DIR's CSVs and provenance.json

`run` measures every claim (training claim 4's three nets into runs/claims/<time>/) and writes
the CSV files and provenance.json into results/claims/, then does what `draw` does: claims.csv,
one figure per claim (with claim 4's training loss) and README.md. `--quick` runs the whole
pipeline small, in well under a minute on two CPU cores, into runs/claims-quick/; its figures
of claims 4 to 6 say that they are of a short protocol. The protocols: docs/claims.md.
"""

from bnrepro.driver import Driver
from bnrepro.experiments.claims.protocol import TOLERANCES, run
from bnrepro.experiments.claims.report import draw

# No collect: `run` measures and writes the CSV files itself, so there is nothing to gather.
DRIVER = Driver(
    name="claims", doc=__doc__, run=run, draw=draw, tolerances=TOLERANCES,
    timed={"claims.csv": "5. inference speed-up"},
)  # fmt: skip
