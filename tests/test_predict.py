"""`lenet5 predict FILE...`: people's pictures, read in batches, each failure on its own line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pathlib import Path

import lenet5
from lenet5.checkpoint import load_model, normalization
from lenet5.cli import main
from lenet5.predict import classify, find_images, predict_files
from people import render


def test_rendered_digits_are_read_about_as_well_as_mnist_itself(small_run, mnist, tmp_path):
    """MNIST test digits handed over as people do (dark on light, scaled up, off-centre, JPEG,
    some framed): accuracy close to the model's on the same digits as MNIST gives them."""
    rng = np.random.default_rng(1)
    idx = rng.choice(len(mnist.test_images), 200, replace=False)
    for n, i in enumerate(idx):
        (tmp_path / f"{n:03d}.jpg").write_bytes(render(mnist.test_images[i].numpy(), rng, frame=n % 4 == 0))
    model, obj = load_model(small_run / "best.pt")
    mean, std = normalization(obj)
    files, problems = find_images([str(tmp_path)])
    assert len(files) == 200 and not problems
    results = predict_files(lenet5.load(small_run / "best.pt"), files, batch_size=64)
    labels = mnist.test_labels[idx]
    rendered = np.mean([r["prediction"] == int(y) for r, y in zip(results, labels)])
    plain = (classify(model, mnist.test_images[idx], mean, std).argmax(1) == labels).double().mean().item()
    assert plain > 0.9
    assert rendered >= plain - 0.02, (rendered, plain)


def write(path, img, fmt="PNG"):
    img.save(path, fmt)
    return path


@pytest.fixture
def pictures(tmp_path, mnist):
    """A folder of good and bad pictures, as a person's folder might be."""
    d = tmp_path / "pics"
    d.mkdir()
    rng = np.random.default_rng(0)
    (d / "a_seven.jpg").write_bytes(render(mnist.test_images[0].numpy(), rng))  # a 7
    (d / "b_two.png").write_bytes(render(mnist.test_images[1].numpy(), rng, "PNG"))  # a 2
    (d / "c_empty.png").write_bytes(b"")
    write(d / "d_blank.png", Image.new("L", (64, 64), 255))
    (d / "e_text.gif").write_text("not a picture")
    (d / "notes.txt").write_text("ignored: not an image file name")
    return d


def test_find_images_expands_folders_and_globs_once_each(pictures):
    files, problems = find_images([str(pictures), str(pictures / "*.jpg"), str(pictures / "*.zzz"),
                                   str(pictures / "missing.png")])
    names = [f.name for f in files]
    assert names == ["a_seven.jpg", "b_two.png", "c_empty.png", "d_blank.png", "e_text.gif", "missing.png"]
    assert problems == [(str(pictures / "*.zzz"), f"{pictures / '*.zzz'}: no files match")]


def test_predict_files_goes_on_past_bad_files_in_batches(small_run, pictures):
    model, obj = load_model(small_run / "best.pt")
    files, _ = find_images([str(pictures)])
    results = predict_files(lenet5.load(small_run / "best.pt"), files, batch_size=2)
    assert [r["file"] for r in results] == [str(f) for f in files]
    assert [r.get("prediction") for r in results[:2]] == [7, 2]
    assert results[0]["input"].shape == (28, 28) and len(results[0]["top3"]) == 3
    errors = {r["file"].rsplit("/", 1)[1]: r["error"] for r in results if "error" in r}
    assert set(errors) == {"c_empty.png", "e_text.gif"}
    assert "file is empty" in errors["c_empty.png"]
    blank = results[[Path(r["file"]).name for r in results].index("d_blank.png")]
    assert blank["is_digit"] is False and blank["reason"] == "no ink"  # an answer, not an error


def test_cli_prints_each_file_and_each_failure_on_one_line(small_run, pictures, capsys):
    code = main(["predict", str(pictures), str(pictures / "nope.png"), "--checkpoint", str(small_run)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{pictures / 'a_seven.jpg'}: 7 (") and "top 3: 7 " in lines[0]
    assert lines[1].startswith(f"{pictures / 'b_two.png'}: 2 (")
    assert lines[2] == f"{pictures / 'd_blank.png'}: no digit (no ink)"
    errors = err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("lenet5: ") for e in errors)
    assert "nope.png: no such file" in err and "Traceback" not in err
    assert errors[-1] == "lenet5: 3 of 6 inputs could not be read"


def test_cli_json_show_input_and_positional_checkpoint(small_run, pictures, tmp_path, capsys):
    seven = pictures / "a_seven.jpg"
    shown = tmp_path / "seen"
    assert main(["predict", str(small_run), str(seven), "--json", "--show-input", str(shown)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"] == str(small_run / "best.pt")
    (r,) = out["results"]
    assert r["file"] == str(seven) and r["prediction"] == 7 and r["top3"][0] == [7, r["probability"]]
    assert sum(p for _, p in r["top3"]) <= 1.0 + 1e-6
    saved = Image.open(r["input_png"])
    assert r["input_png"] == str(shown / "a_seven-input.png") and saved.size == (224, 224)
    from lenet5.images import load_digit

    seen = torch.from_numpy(np.array(saved.resize((28, 28), Image.NEAREST)))
    assert torch.equal(seen, load_digit(seven))


def test_cli_refuses_to_write_inputs_over_the_pictures(small_run, pictures, capsys):
    assert main(["predict", str(pictures), "--checkpoint", str(small_run), "--show-input", str(pictures)]) == 1
    assert "choose another" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["predict"], "give picture files"),
    (["predict", "--index", "0", "digit.png"], "digit.png: --index reads MNIST test images"),
    (["predict", "a.pt", "b.pth", "x.png"], "two checkpoints given"),
])
def test_predict_argument_mistakes_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lenet5: error:") and len(err.splitlines()) == 1 and message in err, err


def test_a_thousand_files_in_batches(small_run, tmp_path, mnist, capsys):
    """Many files: each once, in order, in batches; the model is run once per batch."""
    d = tmp_path / "many"
    d.mkdir()
    for i in range(1000):
        Image.fromarray(255 - mnist.test_images[i].numpy()).save(d / f"{i:04d}.png")
    reader, calls = lenet5.load(small_run / "best.pt"), []
    forward = reader.forward
    reader.forward = lambda pixels, **k: calls.append(len(pixels)) or forward(pixels, **k)
    files, _ = find_images([str(d)])
    results = predict_files(reader, files, batch_size=256)
    assert calls == [256, 256, 256, 232]
    accuracy = np.mean([r["prediction"] == int(y) for r, y in zip(results, mnist.test_labels[:1000])])
    assert accuracy > 0.9


def test_a_tiny_picture_is_one_line_and_the_others_are_read(small_run, pictures, tmp_path, capsys):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(tiny)
    seven = pictures / "a_seven.jpg"
    assert main(["predict", str(seven), str(tiny), "--checkpoint", str(small_run)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{seven}: 7 (") and not err
    assert out.strip().splitlines()[1] == f"{tiny}: no digit (only a speck of ink)"
