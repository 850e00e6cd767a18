"""MNIST and Fashion-MNIST: what the files are, and loading them once they are verified.

Each dataset lives in torchvision's layout, ``<root>/MNIST/raw`` and ``<root>/FashionMNIST/raw``,
as the four uncompressed idx files, so ``torchvision.datasets.MNIST(root)`` and
``FashionMNIST(root)`` read the same files. Loading checks every file's idx length and its
published md5 before reading it, so a run never trains on a truncated or substituted file.

Loading never fetches anything: a training run must not start a download or a package manager
halfway through its setup. Missing files are an error that names them and the fix, ``make data``,
which runs ``bnrepro.fetch``.
"""

from __future__ import annotations

import os
import pathlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from bnrepro.errors import BnreproError
from bnrepro.idx import IdxFileError, read_idx, verify_idx_file


class DataError(BnreproError):
    """A data file is missing, corrupt or unobtainable; the message says which and how to fix it."""


MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

FASHION_MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

# Both datasets use the same four file names.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_URL = "http://yann.lecun.com/exdb/mnist"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"


@dataclass(frozen=True)
class IdxDataset:
    """What differs between the idx-file datasets; verifying and loading are shared."""

    name: str  # the name on the command line and in configs
    title: str  # the name in messages
    folder: str  # the torchvision.datasets class name, which is also its folder under root
    home: str  # where a person can get the files by hand

    def raw_dir(self, root: str | os.PathLike) -> pathlib.Path:
        return pathlib.Path(root) / self.folder / "raw"


MNIST = IdxDataset(name="mnist", title="MNIST", folder="MNIST", home=MNIST_URL)
FASHION_MNIST = IdxDataset(
    name="fashion_mnist", title="Fashion-MNIST", folder="FashionMNIST", home=FASHION_MNIST_URL
)

DATASETS: dict[str, IdxDataset] = {dataset.name: dataset for dataset in (MNIST, FASHION_MNIST)}
DATASET_NAMES = tuple(DATASETS)


def dataset_named(name: str) -> IdxDataset:
    """The dataset called ``name`` ('mnist' or 'fashion_mnist'); ValueError for any other."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASET_NAMES)}, got {name!r}")
    return DATASETS[name]


def fetch_command(dataset: IdxDataset, root: str | os.PathLike) -> str:
    """The commands that fetch ``dataset`` into ``root``, for the fix in an error message."""
    return (
        f"`make data` (or `.venv/bin/python -m bnrepro.fetch --root {shlex.quote(str(root))} "
        f"--dataset {dataset.name}`)"
    )


def _bad_file_error(problem: str, dataset: IdxDataset, root: str | os.PathLike) -> DataError:
    """``problem`` (what is wrong with which file) followed by the fix."""
    return DataError(
        f"{problem} The file was left untouched. Fix: delete it and run "
        f"{fetch_command(dataset, root)} to fetch it again."
    )


def verify_present_files(
    dataset: IdxDataset, root: str | os.PathLike, md5: Mapping[str, str]
) -> list[str]:
    """Verify each file named by ``md5`` that is present in the raw dir; return the missing names.

    A present file that is corrupt or truncated raises DataError naming it and the fix; nothing
    is written, moved or deleted.
    """
    raw_dir = dataset.raw_dir(root)
    missing = []
    for name, expected in md5.items():
        path = raw_dir / name
        if not path.exists():
            missing.append(name)
            continue
        try:
            verify_idx_file(path, expected)
        except IdxFileError as error:
            raise _bad_file_error(str(error), dataset, root) from error
    return missing


def load_idx_dataset(
    dataset: IdxDataset, root: str | os.PathLike, split: str, *, md5: Mapping[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of ``split``, once every file is verified.

    Raises DataError, naming the files, the directory and the fix, if any file named by ``md5``
    is missing; nothing is fetched.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    raw_dir = dataset.raw_dir(root)
    missing = verify_present_files(dataset, root, md5)
    if missing:
        raise DataError(
            f"{dataset.title} file(s) {', '.join(missing)} not found in {raw_dir}. Loading reads "
            f"local files only and never downloads. Fix: run {fetch_command(dataset, root)} to "
            f"fetch and verify them, or place the uncompressed idx files from {dataset.home} "
            f"({', '.join(md5)}) in {raw_dir} by hand."
        )
    images_name, labels_name = SPLIT_FILES[split]
    try:
        images = read_idx(raw_dir / images_name)
        labels = read_idx(raw_dir / labels_name)
    except IdxFileError as error:
        raise _bad_file_error(str(error), dataset, root) from error
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _bad_file_error(
            f"{raw_dir / images_name} holds {images.dtype} {images.shape}, expected uint8 "
            "(N, 28, 28).",
            dataset,
            root,
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise _bad_file_error(
            f"{raw_dir / labels_name} holds {labels.shape} labels for {len(images)} images.",
            dataset,
            root,
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_mnist(root: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) for split 'train' or 'test'.

    The standard splits hold 60,000 and 10,000 examples. The four files in root/MNIST/raw are
    verified against ``MNIST_MD5`` first, then read directly with numpy.
    """
    return load_idx_dataset(MNIST, root, split, md5=MNIST_MD5)


def load_fashion_mnist(root: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Like load_mnist, for Fashion-MNIST (60,000 train and 10,000 test images, 10 classes)."""
    return load_idx_dataset(FASHION_MNIST, root, split, md5=FASHION_MNIST_MD5)


def load_dataset(
    name: str, root: str | os.PathLike, split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """load_mnist or load_fashion_mnist, by ``name`` ('mnist' or 'fashion_mnist')."""
    load = load_mnist if dataset_named(name) is MNIST else load_fashion_mnist
    return load(root, split)


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "FASHION_MNIST",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "MNIST",
    "MNIST_MD5",
    "MNIST_URL",
    "SPLIT_FILES",
    "DataError",
    "IdxDataset",
    "dataset_named",
    "fetch_command",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "verify_present_files",
]
