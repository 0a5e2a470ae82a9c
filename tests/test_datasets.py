"""--dataset fashion-mnist | kmnist: the same IDX reader, layout and checks as MNIST, on generated
files (small, their checksums patched into the table as the published ones), never the network."""

import dataclasses
import gzip
import hashlib
import json
import re

import numpy as np
import pytest
import torch

from conftest import idx_bytes, write_gz
from lenet5 import datasets
from lenet5.cli import main
from lenet5.config import from_recipe
from lenet5.data import download, find_file, load_dataset, verify
from lenet5.errors import ConfigError, DataError

COUNTS = (600, 200)  # training and test images in the generated sets


def make_set(root, monkeypatch, name="fashion-mnist", seed=0):
    """A small set in torchvision's layout under `root`, the table patched to know its files."""
    spec = datasets.DATASETS[name]
    raw = root / spec.folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    checksums = {}
    for file, (magic, shape) in dataclasses.replace(spec, counts=COUNTS).files().items():
        if magic == datasets.IMAGES:  # blobs of ink whose place depends on the label: learnable
            array = (rng.random(shape) > 0.9).astype(np.uint8) * 255
        else:
            array = rng.integers(0, 10, shape, dtype=np.uint8)
        path = write_gz(raw / f"{file}.gz", idx_bytes(array, magic))
        data = path.read_bytes()
        checksums[file] = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    patched = dataclasses.replace(spec, counts=COUNTS, checksums=checksums)
    monkeypatch.setitem(datasets.DATASETS, name, patched)
    return raw


def test_the_table_holds_published_checksums_for_every_file():
    for spec in datasets.DATASETS.values():
        assert set(spec.checksums) == set(datasets.NAMES) and len(spec.classes) == 10
        for digests in spec.checksums.values():
            assert re.fullmatch("[0-9a-f]{32}", digests["md5"])
            if spec.checked == "download":
                assert re.fullmatch("[0-9a-f]{64}", digests["sha256"])
    assert datasets.DATASETS["fashion-mnist"].folder == "FashionMNIST"
    assert datasets.DATASETS["kmnist"].folder == "KMNIST"


@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_a_generated_set_loads_from_the_torchvision_layout(tmp_path, monkeypatch, name):
    make_set(tmp_path, monkeypatch, name)
    data = load_dataset(name, tmp_path, download_missing=False)
    assert data.dataset == name and data.train_images.shape == (600, 28, 28)
    assert data.test_labels.shape == (200,) and data.test_labels.dtype == torch.int64
    assert find_file(tmp_path, "t10k-images-idx3-ubyte", name).parent.parent.name == datasets.DATASETS[name].folder


def test_bad_and_missing_files_are_one_line_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    raw = make_set(tmp_path, monkeypatch)
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # still a label file, silently wrong
    write_gz(labels, bytes(content))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 \w+ does not match the "
                       r"published Fashion-MNIST file .*delete it and download again") as e:
        load_dataset("fashion-mnist", tmp_path, download_missing=False)
    assert "\n" not in str(e.value)

    labels.unlink()  # unpacked: no published checksum to check it against
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: Fashion-MNIST's published checksums "
                       r"are of its \.gz files.*put t10k-labels-idx1-ubyte\.gz, as downloaded, in"):
        verify(raw / "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte", "fashion-mnist")

    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"Fashion-MNIST files not found under .*missing "
                       r"t10k-labels-idx1-ubyte.*put the four \*-ubyte\.gz files in .*FashionMNIST/raw/"):
        load_dataset("fashion-mnist", tmp_path, download_missing=False)


def test_either_published_checksum_verifies_and_downloads_land_in_the_sets_folder(tmp_path, monkeypatch):
    raw = make_set(tmp_path / "served", monkeypatch, "kmnist")
    spec = datasets.DATASETS["kmnist"]
    name = "t10k-labels-idx1-ubyte"
    only_md5 = {**spec.checksums, name: {"sha256": "0" * 64, "md5": spec.checksums[name]["md5"]}}
    monkeypatch.setitem(datasets.DATASETS, "kmnist", dataclasses.replace(spec, checksums=only_md5))

    def fetch(url, dest, progress):
        assert url == f"{spec.mirrors[0]}{name}.gz"
        dest.write_bytes((raw / f"{name}.gz").read_bytes())

    download(tmp_path / "root", [name], fetch=fetch, show_progress=False, dataset="kmnist")
    assert (tmp_path / "root" / "KMNIST" / "raw" / f"{name}.gz").is_file()

    def offline(url, dest, progress):
        raise OSError("network unreachable")

    with pytest.raises(DataError, match=r"could not download t10k-images-idx3-ubyte\.gz .*copy the four "
                       r"KMNIST \*-ubyte\.gz files into .*KMNIST/raw/"):
        download(tmp_path / "root", ["t10k-images-idx3-ubyte"], fetch=offline, retries=1,
                 show_progress=False, dataset="kmnist")


def test_another_set_brings_its_normalisation_and_no_non_digits_unless_given():
    cfg = from_recipe("default", dataset="fashion-mnist")
    assert (cfg.mean, cfg.std, cfg.outliers) == (0.2860, 0.3530, 0.0)
    assert from_recipe("default", dataset="kmnist", mean=0.5, std=0.25).mean == 0.5
    mnist = from_recipe("default")
    assert (mnist.dataset, mnist.mean, mnist.outliers) == ("mnist", 0.1307, 0.25)  # defaults stay MNIST
    with pytest.raises(ConfigError, match="--outliers 0.25 with --dataset kmnist: .*use --outliers 0"):
        from_recipe("default", dataset="kmnist", outliers=0.25)
    with pytest.raises(ConfigError, match="--dataset 'emnist': choose one of mnist, fashion-mnist, kmnist"):
        from_recipe("default", dataset="emnist")


def test_train_dry_run_on_fashion_then_evaluate_and_predict_use_the_checkpoints_set(
        tmp_path, monkeypatch, capsys):
    make_set(tmp_path / "data", monkeypatch)
    common = ["--data-dir", str(tmp_path / "data")]
    assert main(["train", "--dataset", "fashion-mnist", "--dry-run", "--out-dir", str(tmp_path / "runs"),
                 "--name", "f", "--val-size", "100", "--no-progress", "--epochs", "2", *common]) == 0
    run = tmp_path / "runs" / "f"
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["config"]["dataset"] == "fashion-mnist" and saved["config"]["outliers"] == 0.0
    assert saved["normalize"] == {"mean": 0.2860, "std": 0.3530}
    assert saved["classes"][0] == "T-shirt/top" and saved["classes"][9] == "Ankle boot"
    assert json.loads((run / "config.json").read_text())["dataset"] == "fashion-mnist"
    capsys.readouterr()

    assert main(["evaluate", str(run), "--json", *common]) == 0  # no --dataset: the checkpoint's
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 200 and metrics["dataset"] == "fashion-mnist"

    assert main(["predict", "--index", "3", str(run), *common]) == 0
    line = capsys.readouterr().out
    names = "|".join(re.escape(c) for c in datasets.DATASETS["fashion-mnist"].classes)
    assert re.fullmatch(rf"test image 3: true label \d \(({names})\), \d ({names}) \(.*%\)(   <- wrong)?\n", line)

    picture = tmp_path / "shirt.png"
    picture.write_bytes(b"")  # never read: refused first
    assert main(["predict", str(picture), "--checkpoint", str(run)]) == 1
    err = capsys.readouterr().err
    assert "trained on Fashion-MNIST" in err and "--index N" in err and err.count("\n") == 1
