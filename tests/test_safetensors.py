"""safetensors: `lenet5 export --format safetensors` and every command loading what it wrote."""

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA
from lenet5 import export
from lenet5.checkpoint import is_safetensors, load, load_model, normalization
from lenet5.cli import main
from lenet5.errors import CheckpointError
from lenet5.model import LeNet5
from lenet5.weights import shipped

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save, save_file  # noqa: E402

MEAN, STD = 0.5, 0.25  # not MNIST's: a loader that ignored the metadata would use 0.1307, 0.3081


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The shipped weights as a lenet5 checkpoint normalised with (MEAN, STD)."""
    state = load_model(shipped())[0].state_dict()
    path = tmp_path_factory.mktemp("st") / "best.pt"
    torch.save({"format": "lenet5", "model": state, "normalize": {"mean": MEAN, "std": STD}}, path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint):
    out = checkpoint.with_name("best.safetensors")
    assert main(["export", str(checkpoint), "--format", "safetensors"]) == 0  # beside it by default
    return out


def test_round_trip_keeps_weights_normalisation_and_predictions(checkpoint, exported, mnist):
    import lenet5

    original, obj = load_model(checkpoint)
    model, loaded = load_model(exported)
    for (name, a), (other, b) in zip(original.state_dict().items(), model.state_dict().items()):
        assert name == other and torch.equal(a, b), name
    assert normalization(loaded) == (MEAN, STD)
    images = mnist.test_images[:1000]
    want = lenet5.load(checkpoint).probabilities(images)
    got = lenet5.load(exported).probabilities(images)
    assert torch.equal(got, want)
    # and a reader that used MNIST's constants instead would not have matched
    assert not torch.allclose(lenet5.Reader(model, 0.1307, 0.3081, "").probabilities(images), want)


def test_metadata_says_what_the_file_is(checkpoint, exported):
    with safe_open(str(exported), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["model"] == "LeNet5"
    assert meta["producer"] == f"lenet5 {__import__('lenet5').__version__}"
    assert float(meta["mean"]) == MEAN and float(meta["std"]) == STD
    assert meta["source"] == str(checkpoint)
    # nothing but the weights: anyone with safetensors and the LeNet5 class can use it
    plain = LeNet5()
    plain.load_state_dict(load_file(str(exported)))  # strict: every name and shape matches


def test_every_command_takes_a_safetensors_file(checkpoint, exported, mnist, capsys):
    import lenet5

    assert main(["predict", str(exported), "--index", "0", "--index", "7", "--json",
                 "--data-dir", str(DATA)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    want = lenet5.load(checkpoint).predict(mnist.test_images[[0, 7]])
    assert [r["prediction"] for r in results] == [p.digit for p in want]
    assert [r["probability"] for r in results] == pytest.approx([p.probability for p in want], abs=1e-6)
    # what `lenet5 export --verify` runs: the file against the checkpoint's model, normalising outside
    check = export.verify(exported, load_model(checkpoint)[0], mnist.test_images[:2000], MEAN, STD)
    assert check["ok"] and check["identical"] == 2000 and check["max_abs_diff"] == 0.0
    assert check["metadata"]["model"] == "LeNet5"


def test_a_plain_state_dict_in_safetensors_loads_with_mnist_constants(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({f"module.{k}": v for k, v in LeNet5().state_dict().items()}, str(path))  # as DDP names them
    model, obj = load_model(path)
    assert normalization(obj) == (0.1307, 0.3081)


def test_a_header_opening_like_onnx_is_still_read_as_safetensors(tmp_path):
    """safetensors opens with its header's length: a length ending in byte 0x08 must not be taken
    for an ONNX model (whose first byte is 0x08)."""
    state = LeNet5().state_dict()
    for pad in range(0, 400, 8):
        path = tmp_path / f"p{pad}.safetensors"
        save_file(state, str(path), metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x08:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x08")
    assert is_safetensors(path)
    load_model(path)


def _wrong_shape():
    state = LeNet5().state_dict()
    state["fc3.weight"] = torch.zeros(5, 84)
    return state


@pytest.mark.parametrize("tensors, metadata, message", [
    ("another model", None, "not a LeNet5 checkpoint (missing conv1.bias"),
    ("wrong shape", None, "fc3.weight has shape (5, 84), LeNet5 needs (10, 84)"),
    ("lenet5", {"mean": "0.5", "std": "zero"}, "its normalize entry needs two numbers"),
])
def test_a_safetensors_file_that_is_not_a_lenet5_is_refused(tmp_path, capsys, tensors, metadata, message):
    tensors = {"another model": lambda: {"encoder.weight": torch.zeros(3, 3)}, "wrong shape": _wrong_shape,
               "lenet5": lambda: LeNet5().state_dict()}[tensors]()
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(path)
    assert main(["evaluate", str(path), "--data-dir", str(DATA)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lenet5: error: {path}: ") and len(err.splitlines()) == 1


def test_damaged_and_other_files_are_one_clear_line(tmp_path, exported):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(exported.read_bytes()[:-1000])  # the header whole, the weights cut short
    with pytest.raises(CheckpointError, match=r"cut.safetensors: not a readable safetensors file \("):
        load(cut)
    png = tmp_path / "digit.safetensors"  # named like one, but a picture
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match=r"digit.safetensors: not a readable PyTorch checkpoint"):
        load(png)


def test_export_formats_list_safetensors():
    assert export.FORMATS["safetensors"] == ".safetensors"
    assert export.default_path("runs/x/best.pt", "safetensors").name == "best.safetensors"


STATE = LeNet5().state_dict()


@st.composite
def safetensors_files(draw) -> bytes:
    """A LeNet5 safetensors file with its tensors or metadata edited, and then maybe damaged (the
    header, where the names, shapes and offsets are, most often)."""
    state = {k: v.clone() for k, v in STATE.items()}
    for _ in range(draw(st.integers(0, 2))):
        if not state:
            break
        key = draw(st.sampled_from(sorted(state)))
        edit = draw(st.sampled_from(["value", "dtype", "shape", "drop"]))
        if edit == "value" and state[key].is_floating_point() and state[key].numel():
            state[key].view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), 1e38]))
        elif edit == "dtype":
            state[key] = state[key].to(draw(st.sampled_from([torch.float16, torch.bfloat16, torch.int64,
                                                              torch.bool, torch.float64])))
        elif edit == "shape":
            state[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
        else:
            del state[key]
    meta = draw(st.dictionaries(st.sampled_from(["mean", "std", "format"]), st.text(max_size=6)))
    data = bytearray(save(state, metadata=meta))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, min(len(data) - 1, draw(st.sampled_from([16, 800, len(data)])))))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        if not data:
            break
    return bytes(data)


# half the profile's count (150 by default, 1,700 with HYPOTHESIS_PROFILE=thorough): each is cheap
@settings(max_examples=settings().max_examples // 2,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=safetensors_files())
def test_any_safetensors_file_gives_a_model_or_a_checkpoint_error(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzz.safetensors"
    path.write_bytes(content)
    try:
        model, obj = load_model(path)
        mean, std = normalization(obj, path)
    except CheckpointError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e), repr(e)
        return
    assert std > 0 and math.isfinite(mean) and math.isfinite(std)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
