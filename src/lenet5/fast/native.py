"""The native CPU kernels (convs.cpp): built for an x86-64 level, verified, cached, loaded.

convs.cpp puts one image in each lane of the target's native vector, so the build fixes the lane
count: x86-64-v2 (SSE4.2) 4 lanes, x86-64-v3 (AVX2 + FMA) 8, x86-64-v4 (AVX-512) 16. On x86-64
the library is built for a named level, by default the highest this CPU runs (`LENET5_ISA` picks
another; an AVX-512 machine builds, tests and times all three); elsewhere (aarch64: NEON, 4 lanes)
for the machine's own CPU. OpenMP spreads the work over torch's thread count; a compiler without
it builds a single-threaded library, and says so.

The cache (`cache_dir()`) is trusted only as far as it can be: a folder that another user owns or
may write to is refused; each library is written atomically (flushed, then renamed) with its
SHA-256 beside it, and checked against it before every load, so a truncated, corrupted or swapped
file is rebuilt instead of run. Whenever the kernels cannot be had, `status()` says why in one
line and training uses torch's kernels: slower, not wrong.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import files

SOURCE = Path(__file__).with_name("convs.cpp")
BASE_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17"]
OPENMP = "-fopenmp"

# x86-64 levels: what /proc/cpuinfo must list for this CPU to run each one
X86_LEVELS = {
    "x86-64-v2": {"sse4_2", "popcnt", "ssse3"},
    "x86-64-v3": {"avx2", "fma", "bmi2", "f16c", "movbe"},
    "x86-64-v4": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
}
NATIVE = "native"  # the level name off x86-64: the compiler's -march=native, or its default


@dataclass
class Kernels:
    """A loaded library: its two entry points with their C signatures, its lanes and level."""

    lib: ctypes.CDLL
    path: Path
    level: str
    openmp: bool
    lanes: int = 0
    pid: int = 0  # the process that loaded it: a forked child runs it on one thread

    def __post_init__(self):
        p, i = ctypes.c_void_p, ctypes.c_int
        self.lib.convs_lanes.argtypes, self.lib.convs_lanes.restype = [], i
        self.lib.convs_forward.argtypes = [p, i, p, p, p, p, p, p, p, p, p, p, i]
        self.lib.convs_forward.restype = None
        self.lib.convs_backward.argtypes = [p, i, p, p, p, p, p, p, p, p, p, p, p, p, p, i]
        self.lib.convs_backward.restype = None
        self.lib.warp_images.argtypes, self.lib.warp_images.restype = [p, i, p, p, i], None
        self.lib.take_images.argtypes, self.lib.take_images.restype = [p, p, i, p, p, i], None
        self.lib.take_normalized.restype = None
        self.lib.take_normalized.argtypes = [p, p, i, p, ctypes.c_float, ctypes.c_float, p, i]
        f = ctypes.c_float
        self.lib.lenet_read.argtypes, self.lib.lenet_read.restype = [p, p, i, f, f, p, p, p, i], None
        self.lib.lenet_packed_size.argtypes, self.lib.lenet_packed_size.restype = [], i
        self.lanes, self.pid = self.lib.convs_lanes(), os.getpid()

    def threads(self) -> int:
        """torch's thread count, except in a process forked after the library was loaded (GNU
        OpenMP's threads do not survive a fork)."""
        return torch.get_num_threads() if (self.openmp and os.getpid() == self.pid) else 1

    def forward(self, *pointers_and_n) -> None:
        self.lib.convs_forward(*pointers_and_n, self.threads())

    def backward(self, *pointers_and_n) -> None:
        self.lib.convs_backward(*pointers_and_n, self.threads())

    def warp(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """data.warp on the CPU: uint8 (B, 28, 28) and float (B, 36) -> float (B, 28, 28)."""
        images, params = images.contiguous(), params.float().contiguous()
        out = torch.empty(images.shape, dtype=torch.float32)
        self.lib.warp_images(
            images.data_ptr(), len(images), params.data_ptr(), out.data_ptr(), self.threads()
        )
        return out

    def take(
        self,
        images: torch.Tensor,
        idx: torch.Tensor,
        offsets: torch.Tensor | None,
        norm: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """data.take on the CPU: uint8 (N, 28, 28) images, int64 (B,) indices and (B, 2) shifts or
        None -> uint8 (B, 28, 28), or with `norm` = (mean, std) normalised float (B, 1, 28, 28)."""
        idx = idx.to(torch.int64).contiguous()
        if offsets is not None:
            offsets = offsets.to(torch.int64).contiguous()
        shifts, n = (None if offsets is None else offsets.data_ptr()), idx.shape[0]
        if norm is None:
            out = torch.empty((n, 28, 28), dtype=torch.uint8)
            if n:
                self.lib.take_images(
                    images.data_ptr(), idx.data_ptr(), n, shifts, out.data_ptr(), self.threads()
                )
            return out
        # the constants as data.normalize hands them to torch: float32 scalars of these doubles
        sub, mul = 255.0 * norm[0], 1.0 / (255.0 * norm[1])
        out = torch.empty((n, 1, 28, 28), dtype=torch.float32)
        if n:
            self.lib.take_normalized(
                images.data_ptr(), idx.data_ptr(), n, shifts, sub, mul, out.data_ptr(), self.threads()
            )
        return out

    def describe(self) -> str:
        omp = "" if self.openmp else ", no OpenMP: one thread"
        return f"{self.level}, {self.lanes} images per vector{omp}"


_loaded: dict[str, Kernels | None] = {}
_why: dict[str, str] = {}


def cache_dir() -> Path:
    """$LENET5_CACHE, else $XDG_CACHE_HOME/lenet5, else ~/.cache/lenet5."""
    if os.environ.get("LENET5_CACHE"):
        return Path(os.environ["LENET5_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lenet5"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags, read once: `load()` runs before every training batch."""
    try:  # Linux: the flags line lists the CPU's instruction sets
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def levels() -> list[str]:
    """The levels this CPU runs, lowest first (off x86-64: just `native`)."""
    if not is_x86():
        return [NATIVE]
    flags = cpu_flags()
    if not flags:  # no /proc/cpuinfo (macOS): the compiler's own view of this CPU
        return [NATIVE]
    return [name for name, need in X86_LEVELS.items() if need <= flags]


def default_level() -> str:
    """$LENET5_ISA, else the highest level this CPU runs."""
    chosen = os.environ.get("LENET5_ISA", "").strip()
    if chosen:
        return chosen
    runs = levels()
    return runs[-1] if runs else NATIVE


def compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def load(level: str | None = None) -> Kernels | None:
    """The kernels for `level` (default: `default_level()`), built on first use; None where they
    cannot be had, with the reason in `status()`. `LENET5_NATIVE=0` turns them off."""
    if _switched_off():
        return None
    if level is None and "" in _loaded:  # the default, asked for before every training batch
        return _loaded[""]
    given, level = level, level or default_level()
    if level not in _loaded:
        _loaded[level], _why[level] = _load(level)
    if given is None:
        _loaded[""] = _loaded[level]
    return _loaded[level]


def status(level: str | None = None) -> str:
    """One line: which kernels `load(level)` gives, or why there are none."""
    if _switched_off():
        return "native kernels off (LENET5_NATIVE=0)"
    level = level or default_level()
    kernels = load(level)
    return f"native kernels {kernels.describe()}" if kernels else _why[level]


def forget() -> None:
    """Drop what this process loaded or concluded, so the next `load()` looks again (the
    environment may have changed: LENET5_NATIVE, LENET5_CACHE, CXX)."""
    _loaded.clear()
    _why.clear()


def _switched_off() -> bool:
    return os.environ.get("LENET5_NATIVE", "").strip() == "0"


def _load(level: str) -> tuple[Kernels | None, str]:
    if level not in X86_LEVELS and level != NATIVE:
        return None, (
            f"native kernels off: LENET5_ISA={level} is not one of {', '.join([*X86_LEVELS, NATIVE])}"
        )
    if level in X86_LEVELS and not is_x86():
        return None, f"native kernels off: {level} is an x86-64 level and this CPU is {platform.machine()}"
    if level in X86_LEVELS and cpu_flags() and level not in levels():
        return (
            None,
            f"native kernels off: this CPU cannot run {level} code (it runs {', '.join(levels()) or 'none'})",
        )
    cxx = compiler()
    if cxx is None:
        return None, "native kernels off: no C++ compiler (c++, g++ or clang++; or set CXX)"
    folder = cache_dir()
    problem = _unsafe(folder)
    if problem:
        return None, f"native kernels off: {problem}"
    march = [f"-march={level}"] if level in X86_LEVELS else ["-march=native"]
    tries = [(BASE_FLAGS + march + [OPENMP], True), (BASE_FLAGS + march, False)]
    if level == NATIVE:  # a compiler that knows no -march=native builds for its default target
        tries += [(BASE_FLAGS + [OPENMP], True), (BASE_FLAGS, False)]
    errors = []
    for flags, openmp in tries:
        try:
            path = _build(cxx, flags, folder)
            return Kernels(ctypes.CDLL(str(path)), path, level, openmp), ""
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(_first_line(e))
    return None, f"native kernels off: the build failed ({errors[-1]})"


def _unsafe(folder: Path) -> str:
    """Why `folder` cannot be trusted to hold code this process will run ('' if it can)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = folder.stat()
    except OSError as e:
        return f"cannot use the cache folder {folder} ({_first_line(e)}); set LENET5_CACHE"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"the cache folder {folder} belongs to another user; set LENET5_CACHE to a folder of your own"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"the cache folder {folder} can be written by other users (mode "
            f"{stat.S_IMODE(st.st_mode):o}); `chmod go-w {folder}` or set LENET5_CACHE"
        )
    if not os.access(folder, os.W_OK):
        return f"the cache folder {folder} is not writable; set LENET5_CACHE"
    return ""


def _build(cxx: str, flags: list[str], folder: Path) -> Path:
    """The library for these flags: from the cache if it matches its recorded SHA-256, else built
    anew (atomically, the digest written after it). Raises OSError or SubprocessError."""
    parts = [SOURCE.read_bytes(), cxx.encode(), " ".join(flags).encode(), platform.machine().encode()]
    if "-march=native" in flags:  # then the code depends on this very CPU
        parts.append(" ".join(sorted(cpu_flags())).encode())
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    path = folder / f"convs-{key}.so"
    digest_file = path.with_suffix(".sha256")
    if _verified(path, digest_file):
        return path
    with files.atomic_path(path, mode=0o700) as tmp:
        subprocess.run(
            [cxx, *flags, "-o", str(tmp), str(SOURCE)], check=True, capture_output=True, timeout=300
        )
        digest = _sha256(tmp)
    files.write_text(digest_file, digest + "\n")
    return path


def _verified(path: Path, digest_file: Path) -> bool:
    """Whether `path` is ours, writable by us alone, and has the SHA-256 recorded beside it."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return False
        return digest_file.read_text().strip() == _sha256(path)
    except OSError:
        return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decisions_file(kernels: Kernels) -> Path:
    """Where the measured choice between these kernels and torch's is kept, beside the library."""
    return kernels.path.with_suffix(".json")


def read_decisions(kernels: Kernels) -> dict:
    try:
        data = json.loads(decisions_file(kernels).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_decisions(kernels: Kernels, data: dict) -> None:
    try:
        files.write_text(decisions_file(kernels), json.dumps(data, indent=1) + "\n")
    except OSError:
        pass  # only a cache: measured again next time


def _first_line(e: BaseException) -> str:
    text = getattr(e, "stderr", None) or str(e)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:160]
