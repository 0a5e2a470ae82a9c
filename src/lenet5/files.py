"""Writing files safely: every file lenet5 writes goes through here.

A file is written to a temporary name beside its destination, flushed to disk and then moved into
place with `os.replace`: a crash, a full disk or Ctrl-C leaves the old file or the new one, never
half of either, and never a stray temporary (stale ones a killed process left are swept by
`clean_temporaries`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None):
    """A temporary path beside `path`, moved into place only if the block succeeds.

    The block writes the file (and may flush it itself); it is fsynced here before the rename.
    The new file gets `mode`, else the usual permissions (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """`data` to `path` atomically, on disk before it is moved into place."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer left in `folder` (`.NAME.xxxx.tmp`); return them."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
