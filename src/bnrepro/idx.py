"""The idx file format that MNIST and Fashion-MNIST ship in: read, write, and verify.

An idx file is a 4-byte magic number (two zero bytes, a type code, a dimension count), one
big-endian uint32 per dimension, then the values in C order. Its header fixes its exact length,
so a half-written or truncated file is reported as truncated, before any md5 is computed,
instead of as a mysterious checksum mismatch.

This module knows the format only: which files a dataset has, where they live and how they are
obtained belong to ``bnrepro.data`` and ``bnrepro.fetch``. Its errors state the problem; callers
add the fix that fits where the file came from.
"""

from __future__ import annotations

import os
import pathlib
import struct

import numpy as np

from bnrepro.atomic import atomic_write_bytes
from bnrepro.digest import file_digest
from bnrepro.errors import BnreproError


class IdxFileError(BnreproError):
    """An idx file is malformed, truncated, or not the expected file; the message says which."""


_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def idx_layout(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse an idx header and check the file's length against it.

    Returns (dtype, dims, header size). Raises IdxFileError for a bad header, a truncated file or
    trailing bytes.
    """
    path = pathlib.Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
            raise IdxFileError(
                f"{path} is not an idx file: its first bytes {magic.hex() or '(none)'} are not a "
                "valid idx magic number (0x0000, a type code, a dimension count)."
            )
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        header_size = 4 + 4 * ndim
        raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise IdxFileError(
            f"{path} is truncated: it ends inside its idx header ({size} bytes, header needs "
            f"{header_size})."
        )
    dims = struct.unpack(f">{ndim}I", raw_dims)
    expected = header_size + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if size < expected:
        raise IdxFileError(
            f"{path} is truncated: its header declares shape {dims}, i.e. {expected} bytes, but "
            f"the file holds only {size}."
        )
    if size > expected:
        raise IdxFileError(
            f"{path} is corrupt: its header declares shape {dims}, i.e. {expected} bytes, but the "
            f"file holds {size} ({size - expected} bytes too many)."
        )
    return dtype, dims, header_size


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file into a writable native-endian array, checking its length first."""
    dtype, dims, header_size = idx_layout(path)
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
    atomic_write_bytes(path, _idx_bytes(array))


def verify_idx_file(path: str | os.PathLike, expected_md5: str) -> None:
    """Raise IdxFileError unless ``path`` is a whole idx file whose md5 is ``expected_md5``."""
    idx_layout(path)
    actual = file_digest(path, "md5")
    if actual != expected_md5:
        raise IdxFileError(
            f"{path} has md5 {actual}, expected {expected_md5}: the file is corrupt or is not the "
            "standard one."
        )
