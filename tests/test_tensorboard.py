"""TensorBoard (`--tensorboard`): a real run's event files read back with TensorBoard's own reader."""

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from conftest import DATA
from lenet5.cli import main
from lenet5.config import from_recipe
from lenet5.rundir import PLOTS as RUN_PLOTS
from lenet5.rundir import RunDir
from lenet5.tracking import TensorBoardTracker, start_tensorboard

pytest.importorskip("tensorboard")  # the `tensorboard` extra; part of `make test`'s dev install


def events(folder: Path):
    """TensorBoard's view of the event files in `folder`: every scalar, image and the graph."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_train_tensorboard_logs_each_epoch_and_the_graph(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--data-dir", str(DATA), "--out-dir", "runs", "--name", "t", "--limit", "1000",
                 "--val-size", "200", "--epochs", "2", "--no-progress", "--tensorboard", "--no-test"])
    assert code == 0
    run = tmp_path / "runs" / "t"
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lenet5: tensorboard:")]
    assert said == [f"lenet5: tensorboard: logging to {Path('runs/t/tensorboard')}; "
                    f"view with: tensorboard --logdir runs"]
    acc = events(run / "tensorboard")

    # every metrics.csv column, against the epoch, with the file's values
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
        logged = scalars(acc, key)
        assert [step for step, _ in logged] == [1, 2], key
        assert [v for _, v in logged] == pytest.approx([float(r[key]) for r in rows], rel=1e-6), key
    # the model graph, layer by layer
    graph = acc.Graph()
    ops = " ".join(node.name for node in graph.node)
    for layer in ("conv1", "conv2", "fc1", "fc2", "fc3"):
        assert layer in ops
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"tensorboard": true' in text and '"limit": 1000' in text


def test_the_end_of_a_run_adds_its_test_metrics_and_plots(tmp_path):
    from PIL import Image

    run = RunDir(tmp_path / "p")
    run.path.mkdir()
    tracker = start_tensorboard(from_recipe("default", tensorboard=True), run)
    tracker.log_epoch({"epoch": 3, "train_loss": 0.1})
    sizes = {}
    for i, name in enumerate(RUN_PLOTS):  # stand-ins for the run's PNGs, each its own size
        Image.new("RGBA", (40 + i, 30 + 2 * i), (255, 0, 0, 255)).save(run.path / name)
        sizes[f"plots/{Path(name).stem}"] = (40 + i, 30 + 2 * i)
    run.test_metrics.write_text(json.dumps({"accuracy": 0.9713, "loss": 0.0912}))
    tracker.finish(run, {"epoch": 3})
    acc = events(run.tensorboard)
    assert scalars(acc, "test/accuracy") == [(3, pytest.approx(0.9713))]
    assert scalars(acc, "test/loss") == [(3, pytest.approx(0.0912))]
    assert set(acc.Tags()["images"]) == set(sizes)
    for tag, size in sizes.items():
        (image,) = acc.Images(tag)
        assert (image.width, image.height) == size and image.step == 3
        with Image.open(io.BytesIO(image.encoded_image_string)) as png:
            assert png.getpixel((0, 0))[:3] == (255, 0, 0)


def test_a_resumed_run_draws_each_epoch_once(tmp_path, capsys):
    """An earlier process logged epochs 1-2 but its last.pt holds epoch 1: TensorBoard drops its
    epoch 2 when the resumed run logs epoch 2 again."""
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    cfg = from_recipe("default", tensorboard=True)
    first = start_tensorboard(cfg, run)
    for epoch, loss in ((1, 0.5), (2, 0.4)):
        first.log_epoch({"epoch": epoch, "train_loss": loss, "val_loss": float("nan")})
    first.finish(run, {})
    run.write_metrics([{"epoch": 1, "train_loss": 0.5}])  # what a resume keeps: last.pt's epochs
    again = start_tensorboard(cfg, run)
    again.log_epoch({"epoch": 2, "train_loss": 0.3})
    again.finish(run, {})
    acc = events(run.tensorboard)
    assert scalars(acc, "train_loss") == [(1, 0.5), (2, pytest.approx(0.3))]
    assert "val_loss" not in acc.Tags()["scalars"]  # NaN (no validation split) is not drawn


def test_overwrite_clears_the_old_events(tmp_path):
    run = RunDir(tmp_path / "o")
    run.tensorboard.mkdir(parents=True)
    (run.tensorboard / "events.out.tfevents.1.host").write_bytes(b"old")
    run.clear()
    assert list(run.tensorboard.iterdir()) == []


def test_a_tensorboard_failure_mid_run_is_one_line_and_training_goes_on(tmp_path, mnist, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from lenet5.training import fit

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    cfg = from_recipe("default", out_dir=str(tmp_path), name="f", limit=1000, val_size=200, epochs=2,
                      progress=False, tensorboard=True)
    result = fit(cfg, mnist)
    assert result["epochs_run"] == 2 and len(result["history"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "tensorboard" in line]
    assert len(err) == 2 and err[1].startswith("lenet5: tensorboard: logging an epoch failed (OSError")
    assert "training goes on" in err[1]


def test_a_broken_writer_stays_quiet_once_stopped(tmp_path, capsys):
    class Broken:
        def add_scalar(self, *a, **k):
            raise RuntimeError("writer thread died")

        def close(self):
            pass

    tracker = TensorBoardTracker(Broken())
    tracker.log_epoch({"epoch": 1, "train_loss": 1.0})
    tracker.log_epoch({"epoch": 2, "train_loss": 0.9})
    tracker.finish(RunDir(tmp_path), {})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError: writer thread died" in err[0]


def test_missing_tensorboard_package_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    code = main(["train", "--data-dir", str(DATA), "--out-dir", str(tmp_path), "--name", "m",
                 "--limit", "2000", "--val-size", "500", "--epochs", "1", "--no-progress", "--tensorboard"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err == ("lenet5: error: --tensorboard needs the tensorboard package: "
                   "pip install 'lenet5[tensorboard]'")
    assert not (tmp_path / "m" / "last.pt").exists()


def test_a_writer_thread_that_dies_prints_no_traceback(tmp_path, capsys, monkeypatch):
    """The event files' folder becomes unwritable mid-run (made read-only, a full disk): the writer
    thread dies re-raising the error; one line says so, and no thread traceback follows it."""
    import threading

    reported = []  # what would be printed as "Exception in thread ..." and its traceback
    monkeypatch.setattr(threading, "excepthook", reported.append)
    run = RunDir(tmp_path / "ro")
    run.path.mkdir()
    tracker = start_tensorboard(from_recipe("default", tensorboard=True), run)
    writer = tracker.writer.file_writer.event_writer._async_writer  # tensorboard's own, inside

    def denied(data):
        raise PermissionError(13, "Permission denied", str(run.tensorboard / "events"))

    writer._writer.write = denied
    tracker.log_epoch({"epoch": 1, "train_loss": 1.0})
    tracker.log_epoch({"epoch": 2, "train_loss": 0.9})
    tracker.finish(run, {})
    writer._worker.join(10)  # its end, and whatever it printed, are over
    err = capsys.readouterr().err
    assert not reported and "Traceback" not in err, (reported, err)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("lenet5: tensorboard: logging an epoch failed "
                                                   "(PermissionError"), lines
