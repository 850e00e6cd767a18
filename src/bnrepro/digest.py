"""The checksum of a file: md5 for the datasets' published checksums, sha256 for the downloads
bnrepro pins. Read in blocks of a MiB, so a large file is never held in memory whole."""

import hashlib
import os


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """The hex digest of the file at `path` by `algorithm` ("md5", "sha256", ...)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
