"""Atomic file writes: readers, and a run killed at any moment, see the old file or the new one.

Every file bnrepro writes (run.json, config.yaml, checkpoints, model weights, dataset files,
figures and result tables) goes through `atomic_open`: the content is written to a temporary
file beside the target, flushed and synced to disk, then renamed over the target. On any error,
a full disk or a signal included, the temporary file is removed and the target is untouched;
an OSError names the target (its `filename`), so a message can say which file was not written.
"""

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _fsync_directory(directory: Path) -> None:
    """Makes a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _names_the_temporary(filename: Any, path: Path) -> bool:
    """Whether an error's `filename` is no file, the folder, or a temporary file of `path`:
    the error is then about writing `path`."""
    name = str(filename or "")
    return name in ("", str(path.parent)) or name.startswith(str(path.parent / f".{path.name}."))


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """A file object (mode "w" or "wb") whose content replaces `path` only when the block ends
    without an error; the file gets the usual permissions (0666 less the umask)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and _names_the_temporary(error.filename, path):
            error.filename = str(path)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` with '\\n' line endings on every platform."""
    with atomic_open(path, "w", newline="") as f:
        f.write(text)


def json_text(data: dict[str, Any]) -> str:
    """The text of every JSON file bnrepro writes: indented, keys sorted, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    atomic_write_text(path, json_text(data))
