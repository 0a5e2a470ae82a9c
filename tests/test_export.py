"""ONNX and TorchScript exports: one file each, dynamic batch, the same answers as PyTorch on MNIST."""

import json

import onnx
import pytest
import torch

from conftest import DATA
import lenet5
from lenet5 import export
from lenet5.checkpoint import load_model, normalization
from lenet5.cli import main
from lenet5.config import from_recipe
from lenet5.data import normalize
from lenet5.model import LeNet5
from lenet5.training import fit
from lenet5.data import MEAN as MNIST_MEAN, STD as MNIST_STD

MEAN, STD = 0.5, 0.25  # not MNIST's: an export that ignored the checkpoint's constants would show it


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist):
    """A briefly trained run (~95 %: clear winners, no near-ties) normalised with (MEAN, STD)."""
    out = tmp_path_factory.mktemp("export")
    cfg = from_recipe("default", out_dir=str(out), name="r", limit=12000, val_size=1000, epochs=2,
                      mean=MEAN, std=STD, progress=False)
    fit(cfg, mnist, test=False)
    return out / "r"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_verifies_on_the_whole_test_set(run, fmt, capsys):
    out = run / f"model-{fmt}{export.FORMATS[fmt]}"
    code = main(["export", str(run), "--format", fmt, "--out", str(out), "--verify", "--json",
                 "--data-dir", str(DATA)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    check = result["verify"]
    assert check["count"] == 10000 and check["identical"] == 10000 and check["ok"]
    assert check["max_abs_diff"] < 1e-4
    assert check["metadata"]["mean"] == str(MEAN) and check["metadata"]["std"] == str(STD)
    # one self-contained file: no side file for the weights beside it
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(f"model-{fmt}")) == [out.name]
    assert out.stat().st_size > 4 * 44_426  # the float32 weights are inside


def test_onnx_file_has_a_dynamic_batch_uint8_input_and_records_its_opset(run):
    path = export.export(lenet5.load(run / "best.pt"), "onnx", run / "dyn.onnx")["path"]
    proto = onnx.load(path)
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "pixels" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [28, 28]
    meta = {p.key: p.value for p in proto.metadata_props}
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert meta["opset"] == str(opset) and opset >= 17
    assert float(meta["mean"]) == MEAN and float(meta["std"]) == STD


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_normalisation_travels_inside_the_export(run, fmt, mnist):
    model, mean, std = _model(run)
    path = export.export(lenet5.load(run / "best.pt"), fmt, run / f"norm{export.FORMATS[fmt]}")["path"]
    infer, _ = export.load(path)
    for batch in (1, 3, 17):  # any batch size works
        pixels = mnist.test_images[:batch]
        got = infer(pixels.numpy())
        with torch.no_grad():
            right = model(normalize(pixels, MEAN, STD))
            wrong = model(normalize(pixels, MNIST_MEAN, MNIST_STD))
        assert got.shape == (batch, 10)
        assert torch.allclose(got, right, atol=1e-4)
        assert not torch.allclose(got, wrong, atol=1e-2)


def test_verify_notices_a_different_model(run, mnist):
    model, mean, std = _model(run)
    path = export.export(lenet5.load(run / "best.pt"), "torchscript", run / "other.torchscript.pt")["path"]
    check = export.verify(path, LeNet5(), mnist.test_images[:2000], mean, std)
    assert not check["ok"] and check["identical"] < 2000 and check["max_abs_diff"] > 0.01


def test_unreadable_files_and_unwritable_places_are_one_line_errors(run, tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(export.ExportError, match="junk.onnx: not a readable ONNX model"):
        export.load(junk)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["export", str(run), "--format", "torchscript", "--out", str(blocker / "x.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lenet5: error:") and "cannot write" in err and len(err.splitlines()) == 1


def test_default_output_sits_beside_the_checkpoint(run, capsys):
    assert main(["export", str(run / "best.pt"), "--format", "torchscript"]) == 0
    assert (run / "best.torchscript.pt").is_file()
    assert "wrote" in capsys.readouterr().out


def _model(run):
    model, obj = load_model(run / "best.pt")
    return (model, *normalization(obj))


def test_an_export_never_overwrites_a_checkpoint(run, capsys):
    best, last = run / "best.pt", run / "last.pt"
    before = best.read_bytes(), last.read_bytes()
    for out, message in ((best, "is the checkpoint being exported"), (last, "is a PyTorch checkpoint")):
        assert main(["export", str(best), "--format", "torchscript", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"lenet5: error: --out {out}: {message}" + (
            "; writing there would destroy it: choose another path" if out == best else
            "; an export would replace it: choose another path"), err
    assert (best.read_bytes(), last.read_bytes()) == before
    again = run / "again.torchscript.pt"
    for _ in range(2):  # an earlier export is replaced without fuss
        assert main(["export", str(best), "--format", "torchscript", "--out", str(again)]) == 0


@pytest.mark.parametrize("fmt, kind", [("onnx", "ONNX model"), ("torchscript", "TorchScript model")])
def test_an_export_given_as_a_checkpoint_is_named_for_what_it_is(run, tmp_path, fmt, kind):
    from lenet5.checkpoint import load
    from lenet5.errors import CheckpointError

    path = export.export(lenet5.load(run / "best.pt"), fmt, tmp_path / f"m{export.FORMATS[fmt]}")["path"]
    with pytest.raises(CheckpointError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: is a {kind} (an export") and "pickled" not in str(e.value)
    assert "give the checkpoint it was exported from" in str(e.value)
