"""Where lenet5 runs: versions, CPU and ISA level, compiler, threads, command line, git commit.

What `lenet5 info` prints and what every run folder keeps as env.json.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

from . import __version__
from .fast import native as kernels


def describe(device: torch.device | str = "cpu") -> dict:
    device = torch.device(device)
    info = {
        "lenet5": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "device": str(device),
        "cpu": kernels.cpu_model(),
        "isa_levels": kernels.levels(),
        "isa_level": kernels.default_level(),
        "compiler": compiler_version(),
        "threads": torch.get_num_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def compiler_version() -> str | None:
    cxx = kernels.compiler()
    if cxx is None:
        return None
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=20).stdout
        return out.splitlines()[0].strip() if out.strip() else cxx
    except (OSError, subprocess.SubprocessError):
        return cxx


def git_commit() -> str | None:
    """The commit of the checkout lenet5 runs from, if it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2:
        return None
    top, commit = lines  # a checkout of lenet5 itself, not some repository it is installed in
    return commit if (Path(top) / "src" / "lenet5").resolve() == here else None
