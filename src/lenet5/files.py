"""Writing files safely: every file lenet5 writes goes through here.

A file is written to a temporary name beside its destination, flushed to disk and then moved into
place with `os.replace`: a crash, a full disk or Ctrl-C leaves the old file or the new one, never
half of either, and never a stray temporary (stale ones a killed process left are swept by
`clean_temporaries`). A failure names the destination, not the temporary nobody asked for.

Test seam: with LENET5_KILL_AT=EVENT:NAME[#N] in the environment, the process kills itself with
SIGKILL (no cleanup, no `finally`, as a power cut or `kill -9` would) the N-th time (default the
first) it writes a file called NAME: EVENT `before` with the temporary written and flushed but not
yet moved into place, `after` once it is. The crash tests use it to stop a real `lenet5 train` at
exact points; unset, it costs one dictionary lookup per file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import signal
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"
KILL_AT = "LENET5_KILL_AT"  # the test seam above


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None):
    """A temporary path beside `path`, moved into place only if the block succeeds.

    The block writes the file (and may flush it itself); it is fsynced here before the rename.
    The new file gets `mode`, else the usual permissions (0666 less the umask), not mkstemp's 0600.
    An OSError writing it (full disk, read-only folder) is raised naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise _naming(e, path) from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            _fsync(tmp)
        except OSError as e:
            if e.filename not in (None, tmp):  # about another file the block used: as it is
                raise
            raise _naming(e, path) from None
        _kill_point("before", path)
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _naming(e, path) from None
        _kill_point("after", path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """`data` to `path` atomically, on disk before it is moved into place."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, replaceable=lambda old: False):
    """A temporary folder beside `path`, moved into place only if the block succeeds.

    The block fills the folder; its files are fsynced here, then it is renamed to `path`. An
    existing folder at `path` is replaced only when `replaceable(path)` says so (e.g. an earlier
    export of the same kind) or it is empty; it is moved aside first and removed after, so a crash
    between the two renames leaves the old folder beside `path` under a temporary name, never a
    mix of old and new files. What a killed writer left beside `path` is swept first. An OSError is
    raised naming `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    except OSError as e:
        raise _naming(e, path) from None
    old = None
    try:
        try:
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is 0700: a page folder is for sharing
            for f in tmp.rglob("*"):
                if f.is_file():
                    _fsync(str(f))
            _kill_point("before", path)
            if path.exists() and not path.is_dir():
                raise FileExistsError(errno.EEXIST, "is a file", str(path))
            if path.is_dir() and any(path.iterdir()):
                if not replaceable(path):
                    raise FileExistsError(errno.ENOTEMPTY, "is a folder that is not empty", str(path))
                old = Path(f"{tmp}.old")
                os.replace(path, old)
            elif path.is_dir():
                path.rmdir()
            try:
                os.replace(tmp, path)
            except OSError:
                if old is not None:  # the new one could not go in: the old one goes back
                    os.replace(old, path)
                    old = None
                raise
        except OSError as e:
            if e.filename not in (None, str(tmp)):
                raise
            raise _naming(e, path) from None
        _kill_point("after", path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries a killed writer left in `folder` (`.NAME.xxxx.tmp`); return them."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no room: the disk, or a quota
DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}  # not allowed: permissions, a read-only mount


def what_to_do(e: OSError, where: str = "--out-dir") -> str:
    """The fix for a failed write, by its cause: room to make, or permission to get."""
    if e.errno in FULL:
        return f"make room there, or choose another {where}"
    if e.errno in DENIED:
        return f"writing there is not allowed: check its permissions, or choose another {where}"
    return f"check that it can be written, or choose another {where}"


def _naming(e: OSError, path: Path) -> OSError:
    """`e` as the same kind of OSError (errno chooses the subclass), about `path`."""
    if e.errno is None:
        return e
    return OSError(e.errno, e.strerror, str(path))


_kills_seen: dict[str, int] = {}


def _kill_point(event: str, path: Path) -> None:
    spec = os.environ.get(KILL_AT)
    if not spec:
        return
    point, _, nth = spec.partition("#")
    if point != f"{event}:{path.name}":
        return
    _kills_seen[point] = _kills_seen.get(point, 0) + 1
    if _kills_seen[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
