"""Reading training checkpoints (bnrepro.lifecycle writes them), failing clearly when damaged."""

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from bnrepro.errors import ResumeError


class CheckpointError(ResumeError):
    """A checkpoint cannot be read or does not belong to this run."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ) as error:
        raise CheckpointError(
            f"The checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}). "
            "Nothing was changed. Fix: move it away to start this run from scratch, or point "
            "hydra.run.dir at another run directory to resume that one."
        ) from error
