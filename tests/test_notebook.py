"""notebooks/tour.ipynb: run headless in a kernel from this Python, every cell, outputs checked."""

import re

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat")  # the `notebook` extra; part of `make test`'s dev install
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TOUR = ROOT / "notebooks" / "tour.ipynb"


def texts(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_the_tour_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    nb = nbformat.read(TOUR, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs for c in code), "store the notebook without outputs"
    # a small run, as CI wants it; the kernel inherits this environment (and PYTHONPATH)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("LENET5_TOUR_LIMIT", "2000")
    monkeypatch.setenv("LENET5_TOUR_EPOCHS", "1")
    monkeypatch.setenv("LENET5_TOUR_OUT", str(tmp_path))
    # started in notebooks/, as Jupyter starts a notebook in its own folder
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(TOUR.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    out = "\n".join(texts(c) for c in code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert "MNIST from " + str(ROOT / "data") in out
    assert re.search(r"epoch 1: train loss \d\.\d{4}, validation accuracy \d+\.\d\d%", out)
    accuracy = float(re.search(r"test accuracy (\d+\.\d\d)% on 10,000 MNIST test images", out)[1])
    assert accuracy > 30  # 2,000 images, one epoch: well above chance (10 %), far from the full run
    assert re.search(r"my-digit\.png: read as \d \(\d+\.\d%\) by this run; the digit is a 7", out)
    assert "the shipped weights read it as 7" in out
    assert "'conv1': (1, 6, 24, 24), 'conv2': (1, 16, 8, 8)" in out
    images = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(images) == 3  # curves and confusion; the picture; the feature maps
    (run,) = tmp_path.iterdir()  # the run went where it was told, not into the repository
    assert {"best.pt", "curves.png", "confusion.png", "my-digit.png", "activations.png"} <= {
        p.name for p in run.iterdir()}


def test_the_tour_finds_the_data_from_the_repository_root(monkeypatch):
    """Its set-up cell run from the root, in this process (starting a second kernel costs seconds)."""
    nb = nbformat.read(TOUR, as_version=4)
    setup = next(c for c in nb.cells if c.cell_type == "code")
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(setup.source, "tour setup", "exec"), namespace)
    assert namespace["ROOT"] == ROOT and namespace["DATA"] == ROOT / "data"
    assert namespace["OUT"] == ROOT / "runs" or "LENET5_TOUR_OUT" in __import__("os").environ
