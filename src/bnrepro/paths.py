"""Where the suite's folders are, defined once for every module, script and config.

From a clone (pyproject.toml and configs/ beside the src/ that holds this package: `make`,
`python -m bnrepro.train`, an install with `pip install -e .`) the folders are the clone's,
wherever a command starts; from an installed wheel they are the current directory's, since
there is no clone to keep them in. The Hydra configs are the package bnrepro.configs: the
clone's configs/ (src/bnrepro/configs links to it), which the wheel ships. The training app
names the same folders in its `paths` group (configs/paths/default.yaml) through the resolver
`${bnrepro.root:}` (bnrepro/__init__.py registers it).
"""

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def clone_of(package: Path) -> Path | None:
    """The clone whose src/ holds `package`, or None where `package` is installed."""
    top = package.parents[1]
    if package.parent.name == "src" and (top / "pyproject.toml").is_file():
        return top if (top / "configs").is_dir() else None
    return None


CLONE = clone_of(PACKAGE)
REPO = CLONE or Path.cwd()  # the clone, else the directory the command started in
RESULTS = REPO / "results"  # the committed results, a folder per driver (and preset)
RUNS = REPO / "runs"  # training runs and `--quick` results, never committed
CONFIGS = (PACKAGE / "configs").resolve()  # the Hydra configs (train.yaml and its groups)


def data_dir() -> Path:
    """The datasets' folder: $BNREPRO_DATA, a relative path taken from REPO (where `make`
    fetches into), else REPO/data. Read at each call, so that a caller's environment set
    after import counts."""
    return REPO / os.environ.get("BNREPRO_DATA", "data")
