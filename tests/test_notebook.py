"""notebooks/lesson.ipynb: run headless in a kernel from a folder outside the repository, every cell,
its outputs checked; and the stored copy: executed in order, its pictures saved, so it reads on GitHub."""

import re
from pathlib import Path

import pytest

from conftest import DATA, ROOT

nbformat = pytest.importorskip("nbformat")  # the `notebook` extra; part of `make test`'s dev install
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

LESSON = ROOT / "notebooks" / "lesson.ipynb"


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def texts(cells) -> str:
    return "\n".join(o.get("text", "") for c in cells for o in c.outputs if o.output_type == "stream")


def pictures(cells) -> int:
    return sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)


def test_the_stored_lesson_reads_on_github_with_its_outputs():
    nb = nbformat.read(LESSON, as_version=4)
    nbformat.validate(nb)
    code = code_cells(nb)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom, once"
    assert all(c.outputs for c in code) and not any(o.output_type == "error" for c in code for o in c.outputs)
    assert pictures(code) >= 6
    assert LESSON.stat().st_size < 1.5 * 2**20
    out = texts(code)
    accuracy = float(re.search(r"test accuracy (\d+\.\d\d)% on 10,000 test images", out)[1])
    assert accuracy > 97  # a real run on all the data, not the tests' small one
    source = "\n".join(c.source for c in nb.cells)
    assert "pyproject" not in source and "data/MNIST" not in source  # no path into a repository


def test_the_lesson_runs_anywhere_and_shows_what_it_says(tmp_path, monkeypatch):
    nb = nbformat.read(LESSON, as_version=4)
    # a small run, as CI wants it; the kernel inherits this environment (and PYTHONPATH)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook's pictures are inline ones
    monkeypatch.setenv("LENET5_DATA", str(DATA))  # lenet5's own lookup: no ./data where it runs
    monkeypatch.setenv("LENET5_LESSON_LIMIT", "2000")
    monkeypatch.setenv("LENET5_LESSON_EPOCHS", "1")
    monkeypatch.setenv("LENET5_LESSON_OUT", str(tmp_path / "out"))
    elsewhere = tmp_path / "elsewhere"  # started outside the repository, as an installed lenet5 is
    elsewhere.mkdir()
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(elsewhere)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    code = code_cells(nb)
    out = texts(code)
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert "MNIST from " + str(DATA).replace(str(Path.home()), "~", 1) in out
    assert re.search(r"conv1: 6 filters 5x5 +\(1, 6, 24, 24\) +156 parameters", out)
    assert re.search(r"flatten +\(1, 256\)", out) and re.search(r"fc3: the ten scores +\(1, 10\) +850", out)
    assert re.search(r"total +44,426 parameters", out)
    assert re.search(r"epoch 1: train loss \d\.\d{4}, validation accuracy \d+\.\d\d%", out)
    assert re.search(r"test accuracy \d+\.\d\d% on 10,000 test images", out)
    assert re.search(r"my-seven\.png: this run reads Prediction\(.*\); the shipped weights read Prediction\(7, ", out)
    assert re.search(r"letter A +shipped +is_digit False, reason 'unlike any digit'", out)
    assert re.search(r"blank page +this run +is_digit False, reason 'no ink'", out)
    assert pictures(code) >= 6
    (run,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]  # the run went where it was told
    assert {"best.pt", "config.json", "metrics.csv", "curves.png"} <= {p.name for p in run.iterdir()}
    assert (tmp_path / "out" / "my-seven.png").is_file() and not any(elsewhere.iterdir())
