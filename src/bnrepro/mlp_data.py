"""The MNIST data of the MLP (Section 4.1): the whole set on the device, batches drawn by index.

`load_mnist_on` puts the 60,000 training images there as uint8 and the test images as network
input (`to_input`); `EpochSampler` draws each member's mini-batch indices, a fresh permutation
every epoch from the member's own generator (`data_seed`), and `batch_of` gathers a step's
batches. A library module: the trainer (bnrepro.train_mlp) and the claims that reuse its data
order and input (bnrepro.claim_measures, experiments/claims.py) read MNIST from here.
"""

from typing import Any

import numpy as np
import torch

from bnrepro.data import load_mnist
from bnrepro.errors import ConfigError

MNIST_TRAIN_SIZE = 60_000
MNIST_TEST_SIZE = 10_000


def load_mnist_on(
    device: torch.device, root: str, input_mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST on `device`: the training images (60000, 784) as uint8 and their labels, the test
    images (10000, 784) as network input (`to_input` with `input_mode`) and their labels."""
    train_images, train_labels = load_mnist(root, "train")
    test_images, test_labels = load_mnist(root, "test")
    x_train = train_images.flatten(1).to(device)
    y_train = train_labels.to(device)
    x_test = to_input(test_images.flatten(1).to(device), input_mode)
    y_test = test_labels.to(device)
    return x_train, y_train, x_test, y_test


def to_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """uint8 pixels -> float network input: grey levels in [0, 1], or binarized at 128."""
    if mode == "binary":
        return (images >= 128).float()
    return images.float().div_(255)


def data_seed(seed: int) -> int:
    """A seed for the data order of `seed`, independent of the weight-initialization stream."""
    return int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1, np.uint64)[0] >> 1)


class EpochSampler:
    """Mini-batch indices, one row per seed: each epoch a fresh permutation of the training set.

    Each seed has its own generator, so a member's data order does not depend on the others;
    it is seeded from the seed's second SeedSequence child, so data order and initial weights
    (drawn from a generator seeded with the seed itself) are independent streams.
    Its state (generators and current permutations) goes into checkpoints.
    """

    def __init__(self, seeds: list[int], n: int, batch_size: int, device: torch.device):
        if batch_size > n:
            raise ConfigError(
                f"Invalid config: batch_size={batch_size}. A step draws its batch from the {n} "
                "training examples: use a smaller batch_size."
            )
        self.generators = [torch.Generator().manual_seed(data_seed(seed)) for seed in seeds]
        self.n, self.batch_size, self.device = n, batch_size, device
        self.steps_per_epoch = n // batch_size
        self.order: torch.Tensor | None = None

    def batch(self, step: int) -> torch.Tensor:
        """Indices (members, batch_size) of the mini-batches of training step `step`."""
        position = step % self.steps_per_epoch
        if position == 0 or self.order is None:
            self.order = torch.stack([torch.randperm(self.n, generator=g) for g in self.generators])
            self.order = self.order.to(self.device)
        start = position * self.batch_size
        return self.order[:, start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "generators": [g.get_state() for g in self.generators],
            "order": None if self.order is None else self.order.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, g_state in zip(self.generators, state["generators"], strict=True):
            g.set_state(g_state)
        self.order = None if state["order"] is None else state["order"].to(self.device)


def batch_of(
    index: torch.Tensor, x_train: torch.Tensor, y_train: torch.Tensor, input_mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network input (members, batch, 784) and labels (members * batch,) of `index`."""
    flat = index.reshape(-1)
    x = to_input(x_train.index_select(0, flat), input_mode).view(*index.shape, x_train.shape[1])
    return x, y_train.index_select(0, flat)
