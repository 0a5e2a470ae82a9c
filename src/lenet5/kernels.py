"""The native CPU kernels (convs.cpp): built once per machine with the C++ compiler, then loaded.

The library is compiled for this CPU (-march=native) into a cache folder, under a name made from
the source, the compiler, the flags and the CPU's features, so an edit, another compiler or a
different machine sharing the folder each get their own build. It is written to a temporary file
and moved into place, so a build cut short never leaves half a library. OpenMP spreads the work
over torch's thread count; a compiler without OpenMP (Apple's clang) builds it single-threaded,
and one without -march=native for a generic CPU of its architecture.
Where there is no compiler or the build fails, `load()` returns None and training uses torch's
kernels: slower, not wrong. `LENET5_NATIVE=0` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("convs.cpp")
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=c++17"]
OPENMP = "-fopenmp"

_lib: ctypes.CDLL | None = None
_tried = False
_pid = 0  # the process that loaded the library: a forked child runs it on one thread


def cache_dir() -> Path:
    """$LENET5_CACHE, else $XDG_CACHE_HOME/lenet5, else ~/.cache/lenet5."""
    if os.environ.get("LENET5_CACHE"):
        return Path(os.environ["LENET5_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet5"


def _cpu_features() -> str:
    try:  # Linux: the flags line says which vector instructions -march=native may use
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def load() -> ctypes.CDLL | None:
    """The kernels, built on first use; None where they cannot be (no compiler, a failed build)."""
    global _lib, _tried, _pid
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("LENET5_NATIVE", "1") == "0":
        return None
    cxx = compiler()
    if cxx is None:
        return None
    generic = [f for f in FLAGS if f != "-march=native"]  # a compiler that knows no "native"
    for flags in (FLAGS + [OPENMP], FLAGS, generic):
        lib = _build(cxx, flags)
        if lib is not None:
            for name in ("convs_forward", "convs_backward"):
                getattr(lib, name).restype = None
            _lib, _pid = lib, os.getpid()
            return lib
    return None


def threads() -> int:
    """The kernels' thread count: torch's, except in a process forked after they ran (GNU
    OpenMP's threads do not survive a fork)."""
    return torch.get_num_threads() if os.getpid() == _pid else 1


def _build(cxx: str, flags: list[str]) -> ctypes.CDLL | None:
    """The library built with these flags (once; then from the cache), or None if that fails."""
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), cxx.encode(), " ".join(flags).encode(),
                                     platform.machine().encode(), _cpu_features().encode()]))
    path = cache_dir() / f"convs-{key.hexdigest()[:16]}.so"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
            os.close(fd)
            try:
                subprocess.run([cxx, *flags, "-o", tmp, str(SOURCE)], check=True,
                               capture_output=True, timeout=300)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError):
        return None
