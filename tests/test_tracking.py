"""The wandb mirror, run for real in offline mode and read back from the file wandb wrote."""

import csv
import hashlib
import json
import struct
import sys
from pathlib import Path

import pytest

from conftest import DATA
from lenet5.cli import main
from lenet5.config import from_recipe
from lenet5.rundir import PLOTS as RUN_PLOTS
from lenet5.rundir import RunDir
from lenet5.tracking import WandbTracker, start_wandb

wandb = pytest.importorskip("wandb")  # the `wandb` extra; part of `make test`'s dev install


def records(run_dir: Path) -> list:
    """The records of an offline run's .wandb file (a LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    wandb.teardown()  # stops wandb's service process, which writes the file: all of it is on disk
    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # no room for a record header: the rest of the block is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            r = pb.Record()
            r.ParseFromString(pending)
            out.append(r)
            pending = b""
    return out


def of_kind(recs, kind):
    return [getattr(r, kind) for r in recs if r.WhichOneof("record_type") == kind]


def items(updates) -> dict:
    """{key: value} of history items or summary updates (wandb writes "a/b" keys either way)."""
    return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}


@pytest.fixture
def no_account(tmp_path, monkeypatch):
    """No key anywhere wandb would look, no WANDB_MODE: a person who never signed up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_train_wandb_without_an_account_logs_offline_everything_the_run_folder_has(no_account, capsys):
    code = main(["train", "--data-dir", str(DATA), "--out-dir", "runs", "--name", "w", "--limit", "2000",
                 "--val-size", "500", "--epochs", "2", "--no-progress", "--wandb", "--wandb-project", "digits",
                 "--wandb-name", "first try", "--wandb-tags", "lenet", "cpu"])
    assert code == 0
    err = capsys.readouterr().err
    (offline,) = (no_account / "runs" / "w" / "wandb").glob("offline-run-*")
    said = [line for line in err.splitlines() if line.startswith("lenet5: wandb:")]
    assert said == [f"lenet5: wandb: offline (no W&B API key): logging to {offline.resolve()}; "
                    f"upload later with: wandb sync {offline.resolve()}"]
    run = no_account / "runs" / "w"
    assert (run / "metrics.csv").exists() and (run / "config.json").exists()  # always written
    assert all((run / name).exists() for name in RUN_PLOTS)  # drawn when training ends
    recs = records(offline)

    (info,) = of_kind(recs, "run")
    assert info.project == "digits" and info.display_name == "first try" and list(info.tags) == ["lenet", "cpu"]
    config = {u.key: json.loads(u.value_json) for u in info.config.update if u.key != "_wandb"}
    assert config == {k: v for k, v in json.loads((run / "config.json").read_text()).items() if k != "run_id"}

    rows = list(csv.DictReader(open(run / "metrics.csv")))
    history = [items(h.item) for h in of_kind(recs, "history")]
    epochs = [h for h in history if "train_loss" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    for h, row in zip(epochs, rows):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert h[key] == pytest.approx(float(row[key])), key

    logged = {k.split("/")[1] for h in history for k in h if k.startswith("plots/") and k.endswith("/path")}
    assert logged == {Path(p).stem for p in RUN_PLOTS}
    assert len(list((offline / "files" / "media" / "images" / "plots").glob("*.png"))) == len(RUN_PLOTS)

    (art,) = of_kind(recs, "artifact")
    assert art.name == "lenet5-w" and art.type == "model" and "best" in art.aliases
    files = {c.path: c.digest for c in art.manifest.contents}
    assert set(files) == {"best.pt", "config.json", "metrics.csv"}
    import base64

    md5 = base64.b64encode(hashlib.md5((run / "best.pt").read_bytes()).digest()).decode()
    assert files["best.pt"] == md5  # the very file in the run folder

    summary = {k: v for s in of_kind(recs, "summary") for k, v in items(s.update).items()}
    test = json.loads((run / "test_metrics.json").read_text())
    assert summary["test/accuracy"] == test["accuracy"] and summary["best/epoch"] in (1, 2)
    assert [e.exit_code for e in of_kind(recs, "exit")] == [0]


def test_wandb_mode_is_honoured(no_account, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = RunDir(no_account / "runs" / "d")
    run.path.mkdir(parents=True)
    tracker = start_wandb(from_recipe("default", wandb=True), run)
    tracker.log_epoch({"epoch": 1, "lr": 0.1})
    tracker.finish(run, {"epoch": 1})
    assert not (no_account / "runs" / "d" / "wandb").exists() and not (no_account / "wandb").exists()


def test_an_unreachable_server_falls_back_to_offline_quickly(no_account, monkeypatch, capsys):
    """A key but no W&B server: wandb's own wait is 90 s; ours is bounded, then offline."""
    import lenet5.tracking

    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(lenet5.tracking, "INIT_TIMEOUT_S", 2.0)
    run = RunDir(no_account / "runs" / "u")
    run.path.mkdir(parents=True)
    tracker = start_wandb(from_recipe("default", wandb=True), run)
    tracker.log_epoch({"epoch": 1, "lr": 0.1})
    tracker.finish(run, {"epoch": 1})
    err = capsys.readouterr().err
    assert "lenet5: wandb: offline (W&B online failed" in err and "wandb sync" in err
    (offline,) = (no_account / "runs" / "u" / "wandb").glob("offline-run-*")
    assert [e.exit_code for e in of_kind(records(offline), "exit")] == [0]


def test_a_run_that_raises_is_marked_failed(no_account, capsys):
    run = RunDir(no_account / "runs" / "f")
    run.path.mkdir(parents=True)
    tracker = start_wandb(from_recipe("default", wandb=True), run)
    try:
        raise RuntimeError("the loss became NaN")
    except RuntimeError:
        tracker.finish(run, {})  # as fit's `finally` calls it while the error goes up
    (offline,) = (no_account / "runs" / "f" / "wandb").glob("offline-run-*")
    assert [e.exit_code for e in of_kind(records(offline), "exit")] == [1]


def test_a_wandb_failure_mid_run_is_one_line_and_training_goes_on(tmp_path, capsys):
    class Broken:
        def log(self, *a, **k):
            raise ConnectionError("socket closed")

        def finish(self, *a, **k):
            pass

    tracker = WandbTracker(wandb, Broken())
    tracker.log_epoch({"epoch": 1})
    tracker.log_epoch({"epoch": 2})  # stays quiet once stopped
    tracker.finish(RunDir(tmp_path), {})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ConnectionError: socket closed" in err[0] and "training goes on" in err[0]


def test_missing_wandb_package_is_a_clear_error(tmp_path, monkeypatch):
    from lenet5.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'lenet5\[wandb\]'"):
        start_wandb(from_recipe("default", wandb=True), RunDir(tmp_path))


def test_resume_continues_the_online_wandb_run(no_account, monkeypatch, capsys):
    """Online, a resumed run folder goes on in the wandb run it started (no W&B server here, so
    wandb.init itself is stood in for; the decision is ours). Offline, it is a new run."""
    calls = []

    class Online:
        id, url = "abc123", "https://wandb.example/run/abc123"

        def define_metric(self, *a, **k):
            pass

    def init(**kw):
        calls.append(kw)
        return Online()

    real_init = wandb.init
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setattr(wandb, "init", init)
    run = RunDir(no_account / "runs" / "r")
    run.path.mkdir(parents=True)
    start_wandb(from_recipe("default", wandb=True), run)
    assert "id" not in calls[0] and json.loads((run.path / "wandb.json").read_text())["id"] == "abc123"
    start_wandb(from_recipe("default", wandb=True), run)  # as `lenet5 train --resume ... --wandb`
    assert calls[1]["id"] == "abc123" and calls[1]["resume"] == "allow"
    (run.path / "wandb.json").write_text("{not json")  # damaged: a new run, not a traceback
    start_wandb(from_recipe("default", wandb=True), run)
    assert "id" not in calls[2]

    monkeypatch.setattr(wandb, "init", real_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    (run.path / "wandb.json").write_text('{"id": "abc123"}')
    tracker = start_wandb(from_recipe("default", wandb=True), run)
    assert tracker.wb_run.id != "abc123"
    tracker.finish(run, {})


def test_a_server_that_never_answers_is_given_up_on_in_time(no_account, monkeypatch, capsys):
    """A W&B server that takes the connection and never answers (127.0.0.1 here): the online start
    is given up at INIT_TIMEOUT_S, however wandb itself waits, and the run goes on offline."""
    import socket
    import threading
    import time

    import lenet5.tracking

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []

    def take():  # accept every connection, answer none
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=take, daemon=True).start()
    calls, real_init = [], wandb.init

    def noting(**kw):
        calls.append((time.monotonic(), kw["settings"].mode))
        if kw["settings"].mode == "online":  # wandb's own timeout, long: ours must hold anyway
            kw["settings"].init_timeout = 3
        return real_init(**kw)

    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(lenet5.tracking, "INIT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(wandb, "init", noting)
    run = RunDir(no_account / "runs" / "h")
    run.path.mkdir(parents=True)
    try:
        result = []
        starting = threading.Thread(target=lambda: result.append(
            start_wandb(from_recipe("default", wandb=True), run)), daemon=True)
        t0 = time.monotonic()
        starting.start()
        starting.join(20)
        assert not starting.is_alive(), "the tracker's start waited on the server"
        assert [mode for _, mode in calls] == ["online", "offline"]
        assert calls[1][0] - t0 < 0.5 + 1.0  # the online wait: INIT_TIMEOUT_S, and no more
        result[0].finish(run, {"epoch": 1})
    finally:
        server.close()
        for conn in held:
            conn.close()
    err = capsys.readouterr().err
    assert "lenet5: wandb: offline (W&B online failed: TimeoutError)" in err and "Traceback" not in err
    (offline,) = (no_account / "runs" / "h" / "wandb").glob("offline-run-*")
    assert [e.exit_code for e in of_kind(records(offline), "exit")] == [0]
