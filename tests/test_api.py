"""The Python API: lenet5.load() / Reader.predict on every kind of input, train() and evaluate()."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import lenet5
from lenet5.errors import Lenet5Error
from lenet5.weights import card, shipped


def test_the_shipped_weights_load_match_their_card_and_score(mnist):
    info = card()
    path = shipped()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    assert torch.load(path, weights_only=True).keys() == lenet5.LeNet5().state_dict().keys()
    metrics = lenet5.evaluate()
    assert metrics["accuracy"] >= 0.993
    assert metrics["accuracy"] == pytest.approx(info["test_accuracy"], abs=1e-4)


def test_predict_reads_every_kind_of_input(mnist, tmp_path):
    reader = lenet5.load()
    images, labels = mnist.test_images[:8], mnist.test_labels[:8].tolist()
    expected = [p.digit for p in reader.predict(images)]  # a uint8 tensor (N, 28, 28)
    assert expected == labels
    one = reader.predict(images[0])
    assert isinstance(one, lenet5.Prediction) and one.digit == labels[0]
    assert len(one.probabilities) == 10 and sum(one.probabilities) == pytest.approx(1, abs=1e-5)
    assert one.probability == max(one.probabilities)
    assert [p.digit for p in reader.predict(images.numpy())] == labels  # numpy uint8
    assert [p.digit for p in reader.predict(images.float().numpy() / 255)] == labels  # floats in [0, 1]
    assert reader.predict(images[0].numpy().astype(np.float64)).digit == labels[0]  # floats 0-255
    # pictures: dark ink on light paper, larger than 28x28, as files, PIL images and arrays
    paper = Image.fromarray(255 - images[0].numpy()).resize((140, 140), Image.BICUBIC)
    paper.save(tmp_path / "seven.png")
    assert reader.predict(str(tmp_path / "seven.png")).digit == labels[0]
    assert reader.predict(tmp_path / "seven.png").digit == labels[0]
    assert reader.predict(paper).digit == labels[0]
    assert reader.predict(np.asarray(paper)).digit == labels[0]
    assert reader.predict(np.stack([np.asarray(paper)] * 3, axis=2)).digit == labels[0]  # RGB
    assert [p.digit for p in reader.predict([tmp_path / "seven.png", paper])] == [labels[0]] * 2


@pytest.mark.parametrize("bad, said", [([], "empty list"), (object(), "cannot read a object"),
                                       (np.zeros((5, 5, 7)), r"shape \(5, 5, 7\)"),
                                       (np.full((28, 28), np.nan), "NaN"),
                                       ("/no/such/file.png", "no/such/file.png")])
def test_predict_refuses_what_it_cannot_read_with_the_projects_error(bad, said):
    with pytest.raises(Lenet5Error, match=said):
        lenet5.load().predict(bad)


def test_load_a_run_and_train_and_evaluate_from_python(tmp_path, mnist):
    summary = lenet5.train(epochs=1, limit=2000, val_size=500, out_dir=str(tmp_path), name="py", data=mnist)
    assert summary["history"][0]["epoch"] == 1
    reader = lenet5.load(tmp_path / "py")
    assert reader.source.endswith("best.pt")
    assert lenet5.evaluate(tmp_path / "py", data_dir="data")["count"] == 10000
