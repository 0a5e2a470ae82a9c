"""The why view: integrated gradients whose parts add up to the logit's rise from the blank picture,
equal to the same computed one picture and one digit at a time, and `lenet5 predict --explain`
saving them beside the run (never into the current folder)."""

import json
import shutil

import numpy as np
import pytest
import torch

import lenet5
from conftest import DATA
from lenet5 import plots
from lenet5.cli import main
from lenet5.explain import STEPS, explain, integrated_gradients
from lenet5.weights import shipped


@pytest.fixture(scope="module")
def reader():
    return lenet5.load()


def test_the_parts_add_up_to_the_logits_rise_from_the_blank_picture(reader, mnist):
    """Completeness: a map's sum is logit(input) - logit(blank), within the path's Riemann sum (a
    median of 2 % at STEPS), and closer with more steps: within 1 % at 256."""
    errors = []
    for i in range(12):
        why = explain(reader, mnist.test_images[i].numpy())
        assert [m.digit for m in why.maps] == [d for d, _ in why.reading.top3]
        errors += [abs(m.total - m.rise) / max(abs(m.rise), 1.0) for m in why.maps]
    assert np.median(errors) < 0.03 and max(errors) < 0.25, (np.median(errors), max(errors))
    for i in range(3):
        why = explain(reader, mnist.test_images[i].numpy(), steps=256)
        for m in why.maps:
            assert m.total == pytest.approx(m.rise, rel=0.01, abs=0.01), (i, m.digit)
    z = reader.logits(np.stack([mnist.test_images[0].numpy(), np.zeros((28, 28), np.uint8)]))
    assert why.maps[0].logit != 0 and all(  # the ends of the path are the reader's own logits
        (m.logit, m.blank) == pytest.approx((float(z[0, m.digit]), float(z[1, m.digit])), abs=1e-4)
        for m in explain(reader, mnist.test_images[0].numpy()).maps
    )


def test_one_batch_equals_one_picture_and_one_digit_at_a_time(reader, mnist):
    """The batched path (every digit's copy of every step in one forward and backward) against the
    definition, written out: a gradient per step and per digit, averaged, times (x - blank)."""
    image = mnist.test_images[8]
    digits = [5, 6, 8]
    maps, _, _ = integrated_gradients(reader.model, image, digits, reader.mean, reader.std, steps=8)
    x = (image.float() / 255 - reader.mean) / reader.std
    blank = (torch.zeros_like(x) - reader.mean) / reader.std
    for k, d in enumerate(digits):
        total = torch.zeros_like(x)
        for s in range(8):
            point = (blank + (s + 0.5) / 8 * (x - blank)).reshape(1, 1, 28, 28).requires_grad_()
            (g,) = torch.autograd.grad(reader.model(point)[0, d], point)
            total += g[0, 0]
        assert torch.allclose(maps[k], (x - blank) * total / 8, atol=1e-5)


def test_the_reader_explains_any_picture_it_reads(reader, mnist):
    why = reader.explain(mnist.test_images[0])
    assert repr(why) == "Explanation(Prediction(7, >99.9 %); maps for 7, 1, 2)"
    seven = why.maps[0]
    assert seven.total > 0 and seven.pixels.shape == (28, 28) and seven.pixels.dtype == np.float32
    assert not seven.pixels[why.input == 0].any()  # no ink, no part: there the input is the blank picture
    shape = why.to_dict()
    assert shape["method"] == f"integrated gradients from the blank picture, {STEPS} steps"
    assert [len(d["map"]) for d in shape["digits"]] == [28] * 3
    with pytest.raises(lenet5.errors.Lenet5Error, match="one picture at a time"):
        reader.explain(mnist.test_images[:2])


@pytest.fixture
def run(tmp_path):
    """A run folder holding the shipped weights (as a plain state_dict), not in their own folder."""
    folder = tmp_path / "runs" / "mine"
    folder.mkdir(parents=True)
    shutil.copy(shipped(), folder / "best.pt")
    return folder


def test_predict_explain_saves_beside_the_run_what_the_reader_explains(run, mnist, tmp_path, monkeypatch, capsys):
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out: drawn.setdefault(out.name, fig) and out)
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--index", "8", "--explain", "--data-dir", str(DATA), "--out-dir", "runs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test image 8: true label 5, 5 (") and "top 3: 5 " in out
    assert f"saved why each was read so in {run.relative_to(tmp_path)}/explain/" in out
    fig = drawn["test-8-explain.png"]
    why = lenet5.load(run).explain(mnist.test_images[8])
    shown = [a.get_images()[0].get_array().data for a in fig.axes if a.get_images()]
    assert np.array_equal(shown[0], mnist.test_images[8].numpy())
    for m, image in zip(why.maps, shown[1:4], strict=True):
        assert np.allclose(image, m.pixels, atol=1e-6)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[1].startswith("read: 5 (") and titles[2].startswith("runner-up: 6 (")

    # a picture right after --explain is read, not taken for the folder; --json names the file
    picture = tmp_path / "five.png"
    from PIL import Image

    Image.fromarray(255 - mnist.test_images[8].numpy()).resize((112, 112)).save(picture)
    assert main(["predict", "--explain", str(picture), str(run), "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["prediction"] == 5 and r["explain_png"] == str(run / "explain" / "five-explain.png")
    assert "five-explain.png" in drawn


def test_predict_explain_with_the_shipped_weights_needs_a_folder(mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--index", "0", "--explain", "--data-dir", str(DATA)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("lenet5: error: no run in runs/ to save the why views in (the shipped weights have "
                   "none); say where: --explain=DIR")
    assert main(["predict", "--index", "0", "--number", "--explain=w", "--data-dir", str(DATA)]) == 1
    assert list(tmp_path.iterdir()) == []
    assert main(["predict", "--index", "0", "--explain=why", "--data-dir", str(DATA)]) == 0
    assert [p.name for p in (tmp_path / "why").iterdir()] == ["test-0-explain.png"]
