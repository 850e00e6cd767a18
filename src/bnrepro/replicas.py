"""The DDP replicas of a single Inception run (`torchrun --nproc-per-node=N -m bnrepro.train`).

`Replicas` is this process's rank among them and the few collectives the trainer needs
(broadcast, gather, the loss and finiteness reduced over replicas, a stop on every rank
together); on one replica, without torchrun, each does nothing. A module of its own so that
the trainer's loop reads the same with one process or several: DDP is confined here and to the
model's wrapping (bnrepro.train_inception).
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from bnrepro.config import select_device


@dataclass
class Replicas:
    """This process's place among the DDP replicas (rank 0 of 1 without torchrun), and the
    collectives the trainer needs, which do nothing on a single replica."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def join(cls, cfg: DictConfig) -> "Replicas":
        """Joins the torchrun process group when there is one."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        device = select_device(cfg.device)
        if world_size == 1:
            return cls(0, 1, device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
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
