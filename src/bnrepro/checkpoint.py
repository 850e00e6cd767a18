"""Reading training checkpoints (bnrepro.lifecycle writes them), failing clearly when damaged."""

import warnings
from pathlib import Path
from typing import Any

import torch

from bnrepro.errors import ResumeError


class CheckpointError(ResumeError):
    """A checkpoint cannot be read or does not belong to this run."""


def short_reason(error: BaseException) -> str:
    """The gist of a torch.load error in a few words: its type and first sentence. PyTorch's
    messages run to paragraphs of advice that does not apply (for a file that is not a safe
    checkpoint, the operand its restricted unpickler refused is the useful part)."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first.split(". ")[0].rstrip(".")
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, on the CPU. Any failure of torch.load is a CheckpointError:
    on damaged bytes its unpickler raises whatever it trips on (RuntimeError from the zip
    reader, UnpicklingError, EOFError, KeyError, ...), and warns about the pickle protocol
    it finds, which says nothing more, so warnings are silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path.name} in {path.parent} cannot be read: {short_reason(error)}. It is corrupt "
            "or truncated; nothing was changed. Fix: train in a new directory (another "
            "hydra.run.dir), or put back an intact copy of the checkpoint and resume again."
        ) from error
