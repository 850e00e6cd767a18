"""What a run records about itself: the code version, the hardware, the batch job, the command.

torch is imported only where the hardware is read: the drivers' `draw` and `collect` use
`stable_command` alone, and starting them without torch saves about a second and a half.
"""

import os
import platform
import shlex
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """The commit of the code that ran and whether the work tree had uncommitted changes."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=normal")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: "torch.device") -> dict[str, Any]:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cluster_job(environ: Mapping[str, str] = os.environ) -> str | None:
    """The batch job this process runs in: `submitit-local <id> on <host>` under submitit's
    local executor (SLURM's stand-in on one machine), `slurm <SLURM_JOB_ID>` in a SLURM job,
    None outside one. A requeued job keeps its id (bnrepro.resume.requeued_job)."""
    if "SUBMITIT_LOCAL_JOB_ID" in environ:
        return f"submitit-local {environ['SUBMITIT_LOCAL_JOB_ID']} on {socket.gethostname()}"
    if "SLURM_JOB_ID" in environ:
        return f"slurm {environ['SLURM_JOB_ID']}"
    return None


def stable_command(command: str, dropped: tuple[str, ...] = ("--out", "--runs")) -> str:
    """`command` without the options in `dropped` (by default those that only name folders):
    the same for every faithful run of one protocol, wherever it writes."""
    kept: list[str] = []
    for word in shlex.split(command):
        if kept and kept[-1] in dropped:
            kept.pop()
        elif not word.startswith(tuple(f"{option}=" for option in dropped)):
            kept.append(word)
    return shlex.join(kept)
