"""The native kernels' build cache and the choice of compute path (fast/native.py, fast/choose.py).

Damaged or planted libraries are loaded in a fresh process, as a user's next run would: a
library this process had mapped could not be truncated safely under it.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lenet5.fast import choose as compute, native as kernels
from lenet5.cli import main
from lenet5.model import LeNet5
from lenet5.step import TrainStep

CL = torch.channels_last

# a fresh process: load the kernels from LENET5_CACHE, run a forward pass, say what it loaded
LOAD_AND_RUN = """
import torch
from lenet5.data import normalize
from lenet5.fast import native as kernels
from lenet5.fast.forward import Forward
from lenet5.model import LeNet5
k = kernels.load()
print(kernels.status())
if k is not None:
    m = LeNet5()
    px = torch.randint(0, 256, (20, 28, 28), dtype=torch.uint8)
    got = torch.from_numpy(Forward(m, 0.1307, 0.3081, k)(px.numpy())[0])
    assert torch.allclose(got, m(normalize(px, 0.1307, 0.3081)), atol=1e-4)
    print(k.path)
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LENET5_CACHE", str(folder))
    kernels.forget()
    yield folder
    kernels.forget()


def fresh_process(cache_folder):
    env = {**os.environ, "LENET5_CACHE": str(cache_folder)}
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_RUN], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # no SIGBUS, no traceback
    return proc.stdout.splitlines()


def test_kernels_build_once_into_the_cache_with_their_digest(cache):
    k = kernels.load()
    assert k is not None, kernels.status()
    names = sorted(p.name for p in cache.iterdir())
    assert names == sorted([k.path.name, k.path.with_suffix(".sha256").name])  # no temporary left
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    stamp = k.path.stat().st_mtime_ns
    kernels.forget()
    assert kernels.load().path == k.path
    assert k.path.stat().st_mtime_ns == stamp  # loaded, not rebuilt


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache folder with a good library built in it, once for the tests that damage a copy."""
    folder = tmp_path_factory.mktemp("built") / "cache"
    lines = fresh_process(folder)
    return folder, os.path.basename(lines[-1])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "planted"])
def test_a_damaged_or_planted_library_is_rebuilt_not_run(cache, built, tmp_path, damage):
    shutil.copytree(built[0], cache)
    cache.chmod(0o700)
    so = cache / built[1]
    good = so.read_bytes()
    if damage == "truncated":
        so.write_bytes(good[:20000])
    elif damage == "garbage":
        so.write_bytes(os.urandom(len(good)))
    else:  # a library of someone else's whose constructor would run on load
        marker = tmp_path / "constructor-ran"
        src = tmp_path / "evil.c"
        src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                       f'{{ fopen("{marker}", "w"); }}\n')
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    lines = fresh_process(cache)
    assert "no OpenMP" not in lines[0] and lines[0].startswith("native kernels")
    assert so.read_bytes() == good  # rebuilt, with OpenMP, as before
    if damage == "planted":
        assert not (tmp_path / "constructor-ran").exists()


def test_a_cache_folder_others_can_write_to_is_refused(cache):
    cache.mkdir(mode=0o777)
    cache.chmod(0o777)
    assert kernels.load() is None
    assert "can be written by other users" in kernels.status()
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("env, why", [({"LENET5_NATIVE": "0"}, "LENET5_NATIVE=0"),
                                      ({"CXX": "false"}, "the build failed"),
                                      ({"LENET5_ISA": "x86-64-v9"}, "is not one of")])
def test_without_kernels_training_falls_back_to_torch_and_says_why(cache, monkeypatch, mnist, env, why):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert kernels.load() is None
    assert why in kernels.status()
    assert not cache.exists() or list(cache.iterdir()) == []  # a failed build leaves nothing behind
    model = LeNet5().to(memory_format=CL)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = TrainStep(model, sgd)
    assert step.path.name == "written-out" and why in step.path.why
    x = mnist.train_images[:64].float().div(255).unsqueeze(1).contiguous(memory_format=CL)
    y = mnist.train_labels[:64]
    losses = []
    for _ in range(5):
        step.reset()
        step(x, y, 64)
        losses.append(step.loss_sum.item())
    assert losses[-1] < losses[0]


def test_the_path_follows_what_was_measured_and_the_switch_overrides_it(cache, monkeypatch):
    model = LeNet5().to(memory_format=CL)
    cpu = torch.device("cpu")
    k = kernels.load()
    assert k is not None
    measured = compute.measured(k)  # measured once, kept beside the library
    key = f"torch {torch.__version__}, {k.threads()} threads"
    assert json.loads(kernels.decisions_file(k).read_text())[key] == measured
    # as if this CPU's torch kernels had measured faster for training, and slower for inference
    slow = {"train": {"native_ms": 2.0, "torch_ms": 1.0}, "infer": {"native_ms": 1.0, "torch_ms": 3.0}}
    kernels.write_decisions(k, {key: slow})
    train = compute.for_training(model, cpu)
    assert train.name == "written-out" and "measured no faster (0.50x)" in train.why
    assert compute.for_inference(model).name == "native"
    monkeypatch.setenv("LENET5_NATIVE", "1")
    assert compute.for_training(model, cpu).name == "native"
    monkeypatch.setenv("LENET5_NATIVE", "0")
    kernels.forget()
    assert compute.for_training(model, cpu).name == "written-out"
    assert compute.for_training(model, cpu, label_smoothing=0.1).name == "autograd"
    assert compute.for_training(LeNet5(), cpu).name == "autograd"  # NCHW


def test_info_names_the_cpu_and_times_every_path(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu"] and info["torch"] == torch.__version__ and info["threads"] >= 1
    assert info["isa_level"] in [*kernels.levels(), "native"]
    paths = [r["path"] for r in info["paths"]]
    assert paths.count("native") == len(kernels.levels())
    assert paths[-2:] == ["written-out", "autograd"]
    assert all(r["train_ms"] > 0 and r["infer_ms"] > 0 for r in info["paths"])
    assert info["train_path"].split()[0] in ("native", "written-out")
