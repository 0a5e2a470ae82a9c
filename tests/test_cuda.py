"""The CUDA path, where torch sees a GPU: `bash bench/gpu_check.sh` runs these there.

Skipped, with the reason said, on a machine without one (CI has none); everything else in the
suite runs the same code on the CPU.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import DATA, Crash, crash_after_epoch_1
from lenet5.checkpoint import load, load_model
from lenet5.config import from_recipe
from lenet5.metrics import evaluate, predict_logits
from lenet5.training import fit
from lenet5.data import MEAN, STD

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

QUICK = dict(limit=12000, val_size=1000, epochs=2, progress=False)
CUDA = torch.device("cuda")


def tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors(v)


@pytest.fixture(scope="module")
def gpu_run(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    result = fit(from_recipe("default", device="cuda", out_dir=str(out), name="gpu", **QUICK), mnist)
    return out / "gpu", result


def test_trains_on_the_gpu_and_reads_the_same_as_the_cpu(gpu_run, mnist):
    run, result = gpu_run
    assert result["device"].startswith("cuda") and result["epochs_run"] == 2
    images, labels = mnist.test_images[:2000], mnist.test_labels[:2000]
    gpu, _ = load_model(run / "best.pt", CUDA)
    cpu, _ = load_model(run / "best.pt", "cpu")
    on_gpu = predict_logits(gpu, images, MEAN, STD, 1024, CUDA)
    on_cpu = predict_logits(cpu, images, MEAN, STD)
    assert on_gpu.device.type == "cuda"
    # On CUDA the convolutions and matmuls run in TF32 (10-bit mantissa): logits agree to ~1e-2,
    # so a near tie between two digits may read differently, two images in a thousand at most
    assert torch.allclose(on_gpu.cpu(), on_cpu, rtol=1e-2, atol=5e-2)
    assert (on_gpu.argmax(1).cpu() == on_cpu.argmax(1)).float().mean() >= 0.998
    assert evaluate(gpu, images, labels, MEAN, STD, 1024, CUDA)["accuracy"] > 0.9


def test_files_written_on_the_gpu_load_on_a_cpu_only_machine(gpu_run):
    """Every tensor saved is a CPU tensor: the seed's bare torch.load works without a GPU."""
    run, _ = gpu_run
    for name in ("best.pt", "last.pt", "mnist_lenet5.pth"):
        saved = list(tensors(torch.load(run / name, weights_only=True)))  # no map_location
        assert saved and all(t.device.type == "cpu" for t in saved), name


def test_resume_on_the_gpu_continues_the_run(tmp_path, mnist):
    def cfg(name):  # plain steps: the recorded ones have their own test below
        return from_recipe("default", name=name, device="cuda", out_dir=str(tmp_path),
                           deterministic=True, cuda_graphs=False, **QUICK)

    fit(cfg("full"), mnist)
    with pytest.raises(Crash):
        fit(cfg("part"), mnist, on_epoch=crash_after_epoch_1)
    resumed = fit(cfg("part"), mnist, resume=tmp_path / "part" / "last.pt")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    a, b = load(tmp_path / "full" / "last.pt")["model"], load(tmp_path / "part" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


def graph_cfg(tmp_path, recipe, name, graphs, **kw):
    # 10,960 training images: 85 full batches of 128 and a short one of 80, which runs eagerly
    return from_recipe(recipe, device="cuda", out_dir=str(tmp_path), name=name, cuda_graphs=graphs,
                       deterministic=True, **{**QUICK, "limit": 11960, "batch_size": 128, **kw})


def max_difference(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("recipe", ["default", "seed"])
def test_cuda_graphs_train_as_the_plain_steps_do(tmp_path, mnist, recipe):
    """Plain CUDA steps and replays do the same arithmetic (lr and momentum read from device
    tensors): with deterministic kernels the runs agree, where float-valued lr would let the
    default recipe's high learning rate amplify last-bit differences into different weights."""
    plain = fit(graph_cfg(tmp_path, recipe, "plain", False), mnist)
    graphs = fit(graph_cfg(tmp_path, recipe, "graphs", True), mnist)
    a, b = load(tmp_path / "plain" / "last.pt")["model"], load(tmp_path / "graphs" / "last.pt")["model"]
    print(f"{recipe}: largest weight difference, plain steps against graphs: {max_difference(a, b):.3g}")
    assert max_difference(a, b) < 1e-5
    assert graphs["history"][1]["train_loss"] < graphs["history"][0]["train_loss"]  # it learns
    for e, g in zip(plain["history"], graphs["history"]):
        assert e["train_loss"] == pytest.approx(g["train_loss"], abs=1e-5)
        assert e["train_acc"] == pytest.approx(g["train_acc"], abs=1e-4)  # the sums count every step
        assert e["val_acc"] == pytest.approx(g["val_acc"], abs=2e-3)


def test_cuda_graphs_resume(tmp_path, mnist):
    fit(graph_cfg(tmp_path, "default", "full", True), mnist)
    with pytest.raises(Crash):
        fit(graph_cfg(tmp_path, "default", "part", True), mnist, on_epoch=crash_after_epoch_1)
    resumed = fit(graph_cfg(tmp_path, "default", "part", True), mnist,
                  resume=tmp_path / "part" / "last.pt")
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    a, b = load(tmp_path / "full" / "last.pt")["model"], load(tmp_path / "part" / "last.pt")["model"]
    print(f"largest weight difference, resumed against unbroken: {max_difference(a, b):.3g}")
    assert max_difference(a, b) < 1e-5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs a GPU for each process")
def test_torchrun_over_nccl_matches_one_process(tmp_path, mnist):
    args = ["--data-dir", str(DATA), "--limit", "4000", "--val-size", "500", "--epochs", "2",
            "--deterministic", "--no-progress", "--no-test", "--out-dir", str(tmp_path)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "lenet5", "train",
           "--device", "cuda", *args, "--name", "two"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    fit(from_recipe("default", device="cuda", data_dir=str(DATA), out_dir=str(tmp_path), name="one",
                    limit=4000, val_size=500, epochs=2, deterministic=True, progress=False), mnist)
    a, b = load(tmp_path / "one" / "last.pt")["model"], load(tmp_path / "two" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), (k, (a[k] - b[k]).abs().max())
