"""Checkpoints: atomic save, safe load, the formats we read, and refusal of pickled payloads."""

import os

import pytest
import torch

from lenet5 import LeNet5
from lenet5.checkpoint import Writer, load, load_model, model_state, normalization, save
from lenet5.errors import CheckpointError


def test_round_trip_keeps_weights(tmp_path):
    model = LeNet5()
    save({"format": "lenet5", "model": model.state_dict(), "normalize": {"mean": 0.5, "std": 0.25}},
         tmp_path / "c.pt")
    loaded, obj = load_model(tmp_path / "c.pt")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert normalization(obj) == (0.5, 0.25)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_saved_tensors_are_portable(tmp_path):
    """A channels-last (or GPU) model is saved as plain CPU tensors in the standard layout."""
    model = LeNet5().to(memory_format=torch.channels_last)
    assert not model.conv2.weight.is_contiguous()
    save({"model": model.state_dict(), "nested": [(model.fc1.bias,)]}, tmp_path / "c.pt")
    obj = torch.load(tmp_path / "c.pt", weights_only=True)
    tensors = [*obj["model"].values(), obj["nested"][0][0]]
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors)
    assert torch.equal(obj["model"]["conv2.weight"], model.conv2.weight)


def test_plain_and_ddp_state_dicts_load(tmp_path):
    sd = LeNet5().state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "ddp.pth")
    for name in ("plain.pth", "ddp.pth"):
        model, obj = load_model(tmp_path / name)
        assert torch.equal(model.fc3.bias, sd["fc3.bias"])
        assert normalization(obj) == (0.1307, 0.3081)  # the seed trained with MNIST's statistics


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_MARK']}",))


def test_pickled_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    torch.save({"model": LeNet5().state_dict(), "extra": Payload()}, tmp_path / "evil.pt")
    assert not mark.exists()
    with pytest.raises(CheckpointError, match="evil.pt: refused: it holds pickled Python objects"):
        load(tmp_path / "evil.pt")
    assert not mark.exists()


def test_not_a_checkpoint_and_wrong_shapes(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
        load(tmp_path / "junk.pt")
    sd = LeNet5().state_dict()
    sd["fc3.weight"] = torch.zeros(5, 84)
    with pytest.raises(CheckpointError, match=r"fc3.weight has shape \(5, 84\)"):
        model_state(sd, "x.pt")
    with pytest.raises(CheckpointError, match="not a LeNet5 checkpoint"):
        model_state({"weight": torch.zeros(1)}, "x.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "missing.pt")


def test_interrupted_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save({"a": torch.ones(1)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save({"a": torch.zeros(1)}, path)
    assert torch.equal(load(path)["a"], torch.ones(1))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_writer_saves_in_order_in_the_background_and_reports_failures(tmp_path):
    writer = Writer()
    for i in range(5):
        writer.save({"i": torch.tensor(i)}, tmp_path / "a.pt", tmp_path / "b.pt")
    writer.wait()
    for name in ("a.pt", "b.pt"):
        assert torch.load(tmp_path / name, weights_only=True)["i"].item() == 4  # the last one, whole
    (tmp_path / "file").write_text("")
    writer.save({"i": torch.tensor(5)}, tmp_path / "file" / "c.pt")  # a folder that cannot be made
    with pytest.raises(OSError):
        writer.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_writer_stops_at_its_first_failure_and_names_the_file(tmp_path):
    """A failed write (here: a folder that cannot be made) ends the writing: what was queued after
    it (a metrics table claiming that epoch) is not written, and the error names the destination."""
    (tmp_path / "file").write_text("")
    writer = Writer()
    writer.save({"i": torch.tensor(1)}, tmp_path / "file" / "last.pt")
    writer.write(b"epoch\n1\n", tmp_path / "metrics.csv")
    with pytest.raises(OSError) as info:
        writer.wait()
    assert info.value.filename == str(tmp_path / "file")  # mkdir of the folder failed: that folder
    assert isinstance(writer.failure, OSError)
    assert not (tmp_path / "metrics.csv").exists()
    writer.close()  # reported once: a `finally` that closes does not raise it over a clearer error


@pytest.mark.parametrize("norm, message", [
    ({"mean": 0.1307}, "normalize entry needs two numbers"),  # was a KeyError
    ({"mean": 0.1307, "std": 0.0}, "std above zero"),  # was a ZeroDivisionError at the first prediction
    ({"mean": 0.1307, "std": -1.0}, "std above zero"),
    ({"mean": float("nan"), "std": 0.3}, "must be finite"),
    ({"mean": 0.1, "std": float("inf")}, "must be finite"),
    ({"mean": "a lot", "std": 0.3}, "normalize entry needs two numbers"),
    ([0.1307, 0.3081], "normalize entry needs two numbers"),
    ({"mean": torch.ones(2), "std": 0.3}, "normalize entry needs two numbers"),
])
def test_a_broken_normalize_entry_is_refused_naming_the_file(tmp_path, norm, message):
    save({"format": "lenet5", "model": LeNet5().state_dict(), "normalize": norm}, tmp_path / "n.pt")
    with pytest.raises(CheckpointError, match=message) as e:
        load_model(tmp_path / "n.pt")
    assert str(e.value).startswith(f"{tmp_path / 'n.pt'}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_infinity_are_refused(tmp_path, bad, capsys):
    from lenet5.cli import main

    sd = LeNet5().state_dict()
    sd["conv2.weight"][0, 0, 0, 0] = bad
    save({"format": "lenet5", "model": sd, "normalize": {"mean": 0.1307, "std": 0.3081}}, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="d.pt: conv2.weight holds NaN or infinite values"):
        load_model(tmp_path / "d.pt")
    from conftest import DATA

    argv = ["predict", "--index", "0", "--checkpoint", str(tmp_path / "d.pt"), "--data-dir", str(DATA)]
    assert main(argv) == 1  # was "8 (nan%)" and exit 0
    out, err = capsys.readouterr()
    assert out == "" and "NaN" in err and len(err.strip().splitlines()) == 1


def test_a_folder_without_checkpoints_names_each_file_once(tmp_path):
    from lenet5.checkpoint import resolve

    with pytest.raises(CheckpointError) as e:
        resolve(tmp_path, which="last.pt")
    assert str(e.value) == f"{tmp_path}/: holds no checkpoint (last.pt, best.pt or mnist_lenet5.pth)"
