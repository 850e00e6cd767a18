"""The DDP replicas of a single Inception run (`torchrun --nproc-per-node=N -m bnrepro.train`,
or `srun` with one task per GPU).

`Replicas` is this process's rank among them and the few collectives the trainer needs
(broadcast, gather, the loss and finiteness reduced over replicas, a stop on every rank
together); on one replica, without torchrun, each does nothing. A module of its own so that
the trainer's loop reads the same with one process or several: DDP is confined here and to the
model's wrapping (bnrepro.train_inception).

`process_group` reads where this process stands: torchrun's variables where torchrun set them,
else, in a SLURM job step of several tasks (`srun`), SLURM's mapped onto them.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from bnrepro.config import select_device

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: `gpu[07-09,12],cpu3` -> `gpu07`."""
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = index
            break
    return re.sub(r"\[([^,\-\]]+)[^\]]*\]", r"\1", nodelist[:end])


def process_group(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables for this process: torchrun's own where WORLD_SIZE is set; in a SLURM
    job step of several tasks (srun sets SLURM_STEP_NUM_TASKS), SLURM_PROCID, the step's task
    count and SLURM_LOCALID as rank, world size and local rank, the step's first node as the
    master (MASTER_ADDR and MASTER_PORT where set win; the port defaults to one drawn from the
    job id, so that jobs sharing a node do not collide); empty for a single process (a SLURM
    batch script of several tasks running python without srun is one)."""
    if "WORLD_SIZE" in environ:
        return {key: environ[key] for key in TORCHRUN_VARIABLES if key in environ}
    tasks = int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks <= 1:
        return {}
    nodes = environ.get("SLURM_STEP_NODELIST") or environ["SLURM_JOB_NODELIST"]
    job = environ.get("SLURM_JOB_ID", "")
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": str(tasks),
        "LOCAL_RANK": environ["SLURM_LOCALID"],
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(nodes),
        "MASTER_PORT": environ.get("MASTER_PORT")
        or str(15000 + int(job) % 10000 if job.isdigit() else 29500),
    }


def world_size() -> int:
    """How many processes train this run (1 without torchrun or a multi-task srun)."""
    return int(process_group(os.environ).get("WORLD_SIZE", "1"))


@dataclass
class Replicas:
    """This process's place among the DDP replicas (rank 0 of 1 without torchrun), and the
    collectives the trainer needs, which do nothing on a single replica."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def join(cls, cfg: DictConfig) -> "Replicas":
        """Joins the process group of torchrun or srun when there is one (srun's variables
        are set as torchrun's for torch's env:// rendezvous). A replica on a GPU takes the one
        of its local rank, modulo the GPUs it sees (srun's --gpus-per-task shows one)."""
        group = process_group(os.environ)
        os.environ.update(group)
        world_size = int(group.get("WORLD_SIZE", "1"))
        device = select_device(cfg.device)
        if world_size == 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(group["LOCAL_RANK"]) % torch.cuda.device_count())
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value`, on every rank."""
        shared = [value]
        if self.world_size > 1:
            dist.broadcast_object_list(shared, src=0)
        return shared[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        gathered = [value] * self.world_size
        if self.world_size > 1:
            dist.all_gather_object(gathered, value)
        return gathered

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank."""
        tensor = torch.tensor(float(flag), device=self.device)
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def loss_check(self, mean_loss: torch.Tensor, finite: torch.Tensor) -> tuple[float, bool]:
        """The mean loss over replicas, and whether loss and parameters are finite on all."""
        if self.world_size > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= self.world_size
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return mean_loss.item(), bool(finite.item())

    def run_options(self, stop_every: int) -> dict[str, Any]:
        """What bnrepro.lifecycle.Run needs to follow rank 0 and stop on every rank together."""
        if self.world_size == 1:
            return {}
        return {
            "main_process": self.main,
            "broadcast": self.broadcast,
            "sync_stop": self.any,
            "stop_every": stop_every,
        }
