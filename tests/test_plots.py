"""The run's pictures, `lenet5 plot`, `lenet5 show --activations` and `lenet5 summary`: each figure
is checked for what it shows (the data, the labels), not only for being a PNG."""

import csv
import json
import re
import shutil

import pytest
import torch
import torch.nn as nn

from conftest import DATA
from lenet5 import LeNet5, plots
from lenet5.checkpoint import load_model, normalization
from lenet5.cli import main
from lenet5.rundir import PLOTS as RUN_PLOTS
from lenet5.data import normalize
from lenet5.summary import format_layers, layers


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved, by file name, kept open for inspection (and still written)."""
    saved = {}

    def keep(fig, out):
        saved[str(out).rsplit("/", 1)[-1]] = fig
        fig.canvas.draw()  # lay it out as saving does, then save a copy
        fig.savefig(out)
        return out.__class__(out)

    monkeypatch.setattr(plots, "_save", keep)
    yield saved
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def run(small_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(small_run, dest)
    return dest


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")) if t.get_text()]


def test_plot_run_draws_every_figure_from_the_run_files(run, mnist, figures, capsys):
    assert main(["plot", str(run), "--data-dir", str(DATA), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"saved {run / name}" for name in RUN_PLOTS]
    for name in RUN_PLOTS:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # curves: the lines are metrics.csv's columns; lr on its own axis; axes labelled
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    fig = figures["curves.png"]
    lines = {(ax.get_ylabel(), line.get_label()): list(line.get_ydata())
             for ax in fig.axes for line in ax.get_lines()}
    assert lines[("loss (cross-entropy)", "train")] == pytest.approx([float(r["train_loss"]) for r in rows])
    assert lines[("loss (cross-entropy)", "validation")] == pytest.approx([float(r["val_loss"]) for r in rows])
    assert lines[("accuracy (%)", "validation")] == pytest.approx([100 * float(r["val_acc"]) for r in rows])
    assert lines[("learning rate (end of epoch)", "learning rate")] == pytest.approx([float(r["lr"]) for r in rows])
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes[:2])

    # confusion: the model's confusion matrix on the test set, cell by cell
    model, obj = load_model(run / "best.pt")
    probs = torch.softmax(model(normalize(mnist.test_images, *normalization(obj))), 1).detach()
    pred = probs.argmax(1)
    confusion = torch.bincount(mnist.test_labels * 10 + pred, minlength=100).reshape(10, 10)
    fig = figures["confusion.png"]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted digit" and ax.get_ylabel() == "true digit"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert cells == {(t, p): int(confusion[t, p]) for t in range(10) for p in range(10) if confusion[t, p]}

    # mistakes: the wrong ones, most confident first, titled "#index: true → predicted (p%)"
    wrong = (pred != mnist.test_labels).nonzero().flatten()
    titles = [a.get_title() for a in figures["mistakes.png"].axes if a.get_title()]
    assert len(titles) == min(48, len(wrong))
    first = wrong[probs[wrong].max(1).values.argmax()]
    assert titles[0] == (f"#{int(first)}: {int(mnist.test_labels[first])} → {int(pred[first])} "
                         f"({100 * float(probs[first].max()):.0f}%)")
    assert f"{len(wrong)} of 10000 test digits wrong" in " ".join(texts(figures["mistakes.png"]))

    # predictions: 32 digits, red exactly where the prediction is wrong
    shown = [a for a in figures["predictions.png"].axes if a.get_title()]
    assert len(shown) == 32
    for a in shown:
        is_wrong = "≠" in a.get_title()
        assert (a.title.get_color() == "firebrick") == is_wrong

    # filters: the six conv1 kernels, as they are in the checkpoint
    images = [a.get_images()[0].get_array() for a in figures["filters.png"].axes if a.get_images()]
    assert len(images) == 6
    for k, im in enumerate(images):
        assert torch.allclose(torch.as_tensor(im.data), model.conv1.weight[k, 0].detach())


def test_plot_without_metrics_csv_still_draws_the_rest(run, capsys):
    (run / "metrics.csv").unlink()
    assert main(["plot", str(run / "best.pt"), "--data-dir", str(DATA), "--out", str(run / "p")]) == 0
    assert sorted(p.name for p in (run / "p").iterdir()) == sorted(set(RUN_PLOTS) - {"curves.png"})


def test_show_activations_draws_the_feature_maps_of_that_digit(run, mnist, figures, tmp_path, capsys):
    out = tmp_path / "act.png"
    assert main(["show", str(run), "--index", "7", "--activations", "--out", str(out),
                 "--data-dir", str(DATA)]) == 0
    assert capsys.readouterr().out.strip() == f"saved {out}" and out.exists()
    fig = figures["act.png"]
    model, obj = load_model(run / "best.pt")
    x = normalize(mnist.test_images[7:8], *normalization(obj))
    c1 = torch.relu(model.conv1(x))[0].detach()
    c2 = torch.relu(model.conv2(model.pool(torch.relu(model.conv1(x)))))[0].detach()
    shown = [(a.get_title(), torch.as_tensor(a.get_images()[0].get_array().data))
             for sub in fig.subfigs for a in sub.axes if a.get_images()]
    assert shown[0][0] == "input, 28×28" and torch.equal(shown[0][1], mnist.test_images[7].to(shown[0][1].dtype))
    conv1 = [t for t in texts(fig) if t.startswith("conv1 + ReLU: 6 feature maps, 24×24")]
    conv2 = [t for t in texts(fig) if t.startswith("conv2 + ReLU: 16 feature maps, 8×8")]
    assert conv1 and conv2
    assert [k for k, _ in shown[1:]] == [f"map {k}" for k in range(6)] + [f"map {k}" for k in range(16)]
    maps = [v for _, v in shown[1:]]
    assert len(maps) == 22
    assert all(torch.allclose(maps[k], c1[k], atol=1e-5) for k in range(6))
    assert all(torch.allclose(maps[6 + k], c2[k], atol=1e-5) for k in range(16))
    label = int(mnist.test_labels[7])
    assert any(re.match(rf"test image 7: true label {label}, read as (\d|not a digit)", t) for t in texts(fig))


def test_show_reads_your_own_picture_too(run, mnist, figures, tmp_path, capsys):
    """--image: the activations of a photo-like picture, drawn from the 28x28 input made of it."""
    import numpy as np
    from people import render

    from lenet5.images import load_digit

    photo = tmp_path / "my-seven.jpg"
    photo.write_bytes(render(mnist.test_images[0].numpy(), np.random.default_rng(0)))
    seen = load_digit(photo)
    out = tmp_path / "act.png"
    assert main(["show", str(run), "--image", str(photo), "--activations", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"saved {out}"
    fig = figures["act.png"]
    shown = [torch.as_tensor(a.get_images()[0].get_array().data) for sub in fig.subfigs for a in sub.axes
             if a.get_images()]
    assert torch.equal(shown[0], seen.to(shown[0].dtype))
    assert any(re.match(rf"{re.escape(str(photo))}: read as (\d \(|not a digit)", t) for t in texts(fig))
    # without --activations: the input as the model sees it, named after the picture
    assert main(["show", "--image", str(photo), "--out", str(tmp_path / "in.png")]) == 0
    assert "in.png" in figures


def test_show_takes_an_index_or_an_image_not_both(tmp_path, capsys):
    assert main(["show", "--index", "3", "--image", "x.png"]) == 1
    assert "give --index N (a test image) or --image FILE (your own), not both" in capsys.readouterr().err


def test_summary_is_measured_from_the_model():
    rows = layers(LeNet5())
    assert [(r["name"], r["shape"]) for r in rows] == [
        ("conv1", (6, 24, 24)), ("pool", (6, 12, 12)), ("conv2", (16, 8, 8)), ("pool", (16, 4, 4)),
        ("fc1", (120,)), ("fc2", (84,)), ("fc3", (10,))]
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in LeNet5().parameters()) == 44_426
    assert rows[0]["macs"] == 6 * 24 * 24 * 5 * 5 and rows[4]["macs"] == 256 * 120

    wider = LeNet5()  # another shape gives other numbers: nothing is written down
    wider.conv1 = nn.Conv2d(1, 8, 5)
    wider.conv2 = nn.Conv2d(8, 16, 5)
    w = layers(wider)
    assert w[0]["shape"] == (8, 24, 24) and w[0]["params"] == 8 * 26 and w[2]["macs"] == 16 * 8 * 8 * 8 * 25
    assert sum(r["params"] for r in w) == sum(p.numel() for p in wider.parameters())

    text = format_layers(rows)
    assert "44,426" in text and "281,640" in text


def test_summary_command(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    for name in ("conv1", "pool", "conv2", "fc1", "fc2", "fc3"):
        assert re.search(rf"^{name}\s", out, re.M), name
    assert re.search(r"^total\s+44,426\s+281,640$", out, re.M)
    assert main(["summary", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["total_params"] == 44_426 and len(table["layers"]) == 7
