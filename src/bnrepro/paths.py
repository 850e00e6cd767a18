"""Where the repository's folders are, defined once for every module and script.

The code runs from its checkout (src/bnrepro/), so the repository is two folders above this
file. The training configs name the data folder themselves (configs/data/*.yaml:
`${oc.env:BNREPRO_DATA,data}`); `data_dir` is the same folder for the Python side.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"  # the committed results, a folder per driver (and preset)
RUNS = REPO / "runs"  # training runs and `--quick` results, never committed
CONFIGS = REPO / "configs"  # the Hydra configs (train.yaml and its groups)


def data_dir() -> Path:
    """The datasets' folder: $BNREPRO_DATA, a relative path taken from the repository (where
    `make` fetches into), else <repo>/data. Read at each call, so that a caller's environment
    set after import counts."""
    return REPO / os.environ.get("BNREPRO_DATA", "data")
