"""Data-parallel training with torchrun: 2 gloo processes on the CPU match 1 process.

Each process uses one thread: two processes each spinning two threads on two cores crawl.

Two processes sum each gradient in another order than one process does, so their weights differ
by float rounding. How far that grows depends on the learning rate, not on lenet5: at the default
recipe's peak (0.05) training is chaotic enough that any rounding difference (another CPU's
kernels, another thread count) grows to 1e-4..1e-3 within two epochs, while at 0.01 it stays at
float32's own level (2e-8 over two epochs, 1 thread against 2, on torch's kernels). So these runs
use --lr 0.01, and ATOL (1e-5) sits 500x above that rounding and 1000x below what a real fault
gives (a lost or doubled shard's gradient moves weights by ~1e-2).
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import DATA, Crash, crash_after_epoch_1
from lenet5.checkpoint import load
from lenet5.config import from_recipe
from lenet5.training import STOP_CHECK_EVERY, fit

LR = 0.01
ATOL = 1e-5
ARGS = ["--data-dir", str(DATA), "--limit", "4000", "--val-size", "500", "--epochs", "2", "--lr", str(LR),
        "--threads", "1", "--deterministic", "--no-progress", "--no-test"]


def env_one_thread():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(nproc, out, name, *extra, timeout=180):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "lenet5", "train", *ARGS, "--out-dir", str(out), "--name", name, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env_one_thread(), timeout=timeout)


def single_process_weights(out, mnist, name="one", **kw):
    cfg = from_recipe("default", data_dir=str(DATA), out_dir=str(out), name=name, limit=4000,
                      val_size=500, epochs=2, lr=LR, deterministic=True, progress=False, **kw)
    result = fit(cfg, mnist, test=False)
    return load(out / name / "last.pt")["model"], result


def assert_close(a, b, atol=ATOL):
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())


def test_two_processes_match_one(tmp_path, mnist):
    torch.set_num_threads(1)
    try:
        ref, one = single_process_weights(tmp_path, mnist)
    finally:
        torch.set_num_threads(2)
    proc = torchrun(2, tmp_path, "two")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # only rank 0 prints the epoch lines and writes the run folder
    assert proc.stdout.count("epoch  2/2") == 1
    run = tmp_path / "two"
    assert (run / "best.pt").exists() and len((run / "metrics.csv").read_text().splitlines()) == 3
    assert_close(ref, load(run / "last.pt")["model"])
    two_val = float((run / "metrics.csv").read_text().splitlines()[-1].split(",")[4])
    assert abs(two_val - one["history"][-1]["val_acc"]) <= 0.004


def test_resume_under_torchrun(tmp_path, mnist):
    ref, _ = single_process_weights(tmp_path, mnist)
    cfg = from_recipe("default", data_dir=str(DATA), out_dir=str(tmp_path), name="cut", limit=4000,
                      val_size=500, epochs=2, lr=LR, deterministic=True, progress=False)
    with pytest.raises(Crash):
        fit(cfg, mnist, on_epoch=crash_after_epoch_1, test=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lenet5", "train", "--resume", str(tmp_path / "cut"), "--threads", "1",
           "--no-progress", "--no-test"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env_one_thread(), timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch  2/2" in proc.stdout and "epoch  1/2" not in proc.stdout
    assert_close(ref, load(tmp_path / "cut" / "last.pt")["model"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank, port):
    return {**env_one_thread(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def test_missing_peer_times_out_with_a_clear_message(tmp_path):
    cmd = [sys.executable, "-m", "lenet5", "train", *ARGS, "--out-dir", str(tmp_path),
           "--dist-timeout", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=rank_env(0, free_port()), timeout=120)
    assert proc.returncode == 1
    assert "rank 0: could not join the 2-process job within --dist-timeout 3s" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failing_rank_stops_the_job(tmp_path):
    """Rank 1 finds a damaged data file and exits; rank 0 stops with a clear message, no hang."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (DATA / "MNIST" / "raw").glob("*.gz"):
        (broken / f.name).write_bytes(f.read_bytes() if "t10k-labels" not in f.name else b"\x1f\x8b")
    port = free_port()
    base = [sys.executable, "-m", "lenet5", "train", *ARGS, "--out-dir", str(tmp_path),
            "--dist-timeout", "30"]
    rank0 = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=rank_env(0, port))
    rank1 = subprocess.run(base + ["--data-dir", str(broken)], capture_output=True, text=True,
                           timeout=120, env=rank_env(1, port))
    _, err0 = rank0.communicate(timeout=120)
    assert rank1.returncode == 1 and "t10k-labels-idx1-ubyte.gz" in rank1.stderr
    assert rank0.returncode == 1, err0[-2000:]
    assert "rank 0: lost contact with the other processes" in err0 and "Traceback" not in err0


def test_ctrl_c_under_torchrun_saves_mid_epoch_and_says_so_once(tmp_path):
    """Ctrl-C reaches torchrun and both processes, each at its own moment (and torchrun passes it
    on again): they agree to stop at the same step boundary, rank 0 writes last.pt mid-epoch with
    the job's sums and prints the resume line once; no process reports an error."""
    import signal

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lenet5", "train", "--data-dir", str(DATA), "--limit", "20000", "--val-size", "1000",
           "--epochs", "30", "--threads", "1", "--no-progress", "--no-test", "--out-dir", str(tmp_path),
           "--name", "c"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_one_thread(), start_new_session=True)
    for line in proc.stdout:  # the first epoch line, then Ctrl-C to the whole process group
        if line.startswith("epoch  1/30"):
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.startswith("lenet5:")]
    assert lines == [f"lenet5: interrupted; progress saved, continue with: lenet5 train --resume {tmp_path / 'c'}"], err[-3000:]
    last = load(tmp_path / "c" / "last.pt")
    assert last["epoch"] >= 1 and last["config"]["epochs"] == 30
    # both stopped at a step where they compare notes, and the epoch's sums so far are both's
    assert last["step"] % STOP_CHECK_EVERY == 0
    assert last["running"] is None or last["running"]["seen"] == last["step"] * 128
