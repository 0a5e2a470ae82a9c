"""ONNX, TorchScript, safetensors and web export of a checkpoint, and its check against PyTorch.

The exported ONNX and TorchScript models take what MNIST files and `lenet5.images.load_digit` give,
uint8 pixels (N, 28, 28) with white ink on black, and return logits (N, 10). The scaling to [0, 1]
and the checkpoint's (mean, std) normalisation happen inside the graph, so a consumer cannot get them
wrong; the constants are also written to the file's metadata for whoever reads it. The batch
dimension is dynamic. onnx, onnxscript and onnxruntime (the `onnx` extra) are imported inside the
functions.

A safetensors file holds the weights only (LeNet5's state_dict: no code, nothing pickled), with the
normalisation and a few facts in its string metadata; every lenet5 command loads it as a checkpoint
(checkpoint.py), and anyone else with `safetensors.torch.load_file` and the LeNet5 class.

A web export is a folder: the drawing page of `lenet5 serve`, its files copied unchanged, plus
static/model.js holding the weights, so the page reads digits with its own script (reader.js)
and no server, opened from disk or put on any static host. It is the same page, not a second
copy: the served page's static/model.js is a stub that tells it to ask the server instead. The
folder is built beside its destination and renamed into place (files.atomic_folder). Its forward
pass runs in a browser, so `verify` cannot run it; tests/test_web_static.py checks it there.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import normalize
from .errors import Lenet5Error
from .files import atomic_folder, atomic_path

# -> suffix; "web" is a folder
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors", "web": "-web"}
METADATA_FILE = "lenet5.json"  # TorchScript: the metadata travels as this extra file in the archive
TOLERANCE = 1e-3  # a larger |logit difference| than this fails verification, even with equal predictions


class ExportError(Lenet5Error):
    """An export cannot be written, read or verified."""


class Pixels(torch.nn.Module):
    """LeNet5 taking uint8 pixels (N, 28, 28): normalises them as the checkpoint was trained."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # pixels: (N, 28, 28) uint8
        x = (pixels.float() / 255.0 - self.mean) / self.std  # the same arithmetic as data.normalize
        return self.model(x.unsqueeze(1))  # (N, 10) logits


def metadata(mean: float, std: float, source: str = "", calibration=None) -> dict[str, str]:
    """What the export says about itself; string values, as ONNX metadata needs them. The
    reader's calibration travels here: probabilities are softmax(logits / temperature), and a top
    probability under threshold means "not a digit" (reader.py)."""
    from .reader import Calibration

    cal = calibration or Calibration()
    return {
        "producer": f"lenet5 {__version__}",
        "source": source,
        "input": "pixels: uint8 (N, 28, 28), white ink on black as in MNIST; normalised inside",
        "output": "logits: float32 (N, 10) for digits 0-9; softmax(logits / temperature) gives "
        "calibrated probabilities, and a top probability under threshold means not a digit",
        "mean": repr(float(mean)),
        "std": repr(float(std)),
        "temperature": repr(float(cal.temperature)),
        "threshold": repr(float(cal.threshold)),
        "calibration": cal.fitted,
    }


def safetensors_metadata(mean: float, std: float, source: str = "", calibration=None) -> dict[str, str]:
    """What a safetensors export says about itself. "format": "pt" as Hugging Face's tools write
    and check it (PyTorch tensors); the model's input is normalised outside, so the constants here
    are the ones to use."""
    return {
        **metadata(mean, std, source, calibration),
        "format": "pt",
        "model": "LeNet5",
        "input": "float32 (N, 1, 28, 28): MNIST-style pixels / 255, then (x - mean) / std",
    }


def default_path(checkpoint: str | os.PathLike, fmt: str) -> Path:
    """runs/x/best.pt -> runs/x/best.onnx, best.torchscript.pt, best.safetensors or best-web/."""
    p = Path(checkpoint)
    return p.with_name(p.stem + FORMATS[fmt])


def export(reader, fmt: str, out: str | os.PathLike, source: str = "", force: bool = False) -> dict:
    """Write `reader`'s model (reader.py) as one self-contained file, its normalisation and
    calibration with it; return what was written. A file at `out` that is not an export is
    replaced only with `force`."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    model, mean, std, cal = reader.model, reader.mean, reader.std, reader.calibration
    if fmt == "web":
        return export_web(model, mean, std, out, source, cal)
    _check_out(out, source, force)
    wrapped = Pixels(model.cpu().eval(), mean, std).eval()
    meta = (
        safetensors_metadata(mean, std, source, cal)
        if fmt == "safetensors"
        else metadata(mean, std, source, cal)
    )
    if reader.dataset != "mnist":  # which set it reads, so that the export loads as that set's
        meta = {**meta, "dataset": reader.dataset, "classes": ", ".join(reader.classes)}
    write = {"onnx": _write_onnx, "torchscript": _write_torchscript, "safetensors": _write_safetensors}[fmt]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            opset = write(wrapped, tmp, meta)
    except OSError as e:
        raise ExportError(f"{out}: cannot write ({e.strerror or e})") from None
    info = {"path": str(out), "format": fmt, "bytes": out.stat().st_size, **meta}
    if opset is not None:
        info["opset"] = opset
    return info


# The web export's files: where each goes in the folder <- where it is in lenet5/web/static.
WEB_PAGE = {
    "index.html": "index.html",
    "favicon.ico": "favicon.ico",
    "static/app.js": "app.js",
    "static/reader.js": "reader.js",
    "static/style.css": "style.css",
}
WEB_MODEL = "static/model.js"  # written from the checkpoint; the served page has a stub there


def export_web(
    model: torch.nn.Module,
    mean: float,
    std: float,
    out: str | os.PathLike,
    source: str = "",
    calibration=None,
) -> dict:
    """Write the serverless page for `model` into the folder `out`; return what was written."""
    from .reader import Calibration
    from .web import STATIC, describe

    out = Path(out)
    _check_web_out(out)
    name, accuracy = describe(source) if source else ("LeNet5", None)
    calibration = calibration or Calibration()
    script = model_script(model, mean, std, name, accuracy, calibration)
    try:
        with atomic_folder(out, replaceable=is_web_export) as tmp:
            (tmp / "static").mkdir()
            for dest, src in WEB_PAGE.items():
                (tmp / dest).write_bytes((STATIC / src).read_bytes())
            (tmp / WEB_MODEL).write_text(script, encoding="utf-8")
    except OSError as e:
        raise ExportError(f"{out}: cannot write ({e.strerror or e})") from None
    files = {f: (out / f).stat().st_size for f in [*WEB_PAGE, WEB_MODEL]}
    return {
        "path": str(out),
        "format": "web",
        "files": files,
        "bytes": sum(files.values()),
        "name": name,
        "test_accuracy": accuracy,
        **metadata(mean, std, source, calibration),
    }


def model_script(
    model: torch.nn.Module, mean: float, std: float, name: str, accuracy: float | None, calibration=None
) -> str:
    """static/model.js: `window.LENET5_MODEL = {...}`, the spec reader.js's loadModel takes.

    The weights are LeNet5's state_dict as little-endian float32, one tensor after another in
    `layout` order, base64: 178 KB of numbers as 237 KB of text, which a page parses in a moment.
    """
    import base64

    from .checkpoint import portable

    tensors = portable(model.state_dict())
    layout = [[k, list(v.shape)] for k, v in tensors.items()]
    weights = b"".join(v.numpy().astype("<f4").tobytes() for v in tensors.values())
    from .reader import Calibration

    cal = calibration or Calibration()
    spec = {
        "name": name,
        "test_accuracy": accuracy,
        "mean": float(mean),
        "std": float(std),
        "temperature": cal.temperature,
        "threshold": cal.threshold,
        "layout": layout,
        "weights": base64.b64encode(weights).decode("ascii"),
    }
    return (
        "// LeNet-5 for lenet5's page, written by `lenet5 export --format web`; reader.js reads it.\n"
        f"// {name}: float32 weights, little-endian, base64, one tensor after another in layout order.\n"
        f"window.LENET5_MODEL = {json.dumps(spec, separators=(',', ':'))};\n"
    )


def is_web_export(folder: Path) -> bool:
    """Whether `folder` holds a web export's files and nothing else (so replacing it loses nothing)."""
    ours = {*WEB_PAGE, WEB_MODEL}
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    dirs = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir()}
    return WEB_MODEL in found and found <= ours and dirs <= {"static"}


def _check_web_out(out: Path) -> None:
    """Refuse a file, or a folder that holds anything but an earlier web export."""
    if out.is_dir() and any(out.iterdir()) and not is_web_export(out):
        raise ExportError(
            f"--out {out}: is a folder with other files in it; a web export replaces "
            "only an earlier one: give a new or empty folder"
        )
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; a web export is a folder: give a folder name")


def _check_out(out: Path, source: str, force: bool = False) -> None:
    """Refuse to write over a checkpoint, over anything but a regular file, and (unless `force`)
    over any other file that is not an export: an earlier export at `out` may be replaced."""
    try:
        info = out.stat()
    except OSError:  # nothing there (or unreachable): writing says what is wrong with the path
        return
    if stat.S_ISDIR(info.st_mode):
        raise ExportError(f"--out {out}: is a folder; give a file name")
    if not stat.S_ISREG(info.st_mode):  # /dev/full, a FIFO: never read, never replaced
        raise ExportError(
            f"--out {out}: is not a regular file (a device, a pipe or a socket); give a file name"
        )
    if source and Path(source).exists() and out.samefile(source):
        raise ExportError(
            f"--out {out}: is the checkpoint being exported; writing there would destroy "
            "it: choose another path"
        )
    kind = _kind_of(out)
    if kind == "checkpoint":  # not even with --force: an export never overwrites a checkpoint
        raise ExportError(
            f"--out {out}: is a PyTorch checkpoint; an export would replace it: choose another path"
        )
    if kind == "export" or force:
        return
    raise ExportError(
        f"--out {out}: exists and is not a model export; an export would replace it: "
        "choose another path, or add --force to replace it"
    )


def _kind_of(path: Path) -> str | None:
    """'export' (ONNX, TorchScript or safetensors), 'checkpoint' (torch.save's) or None (anything
    else, or unreadable) for an existing regular file."""
    from .checkpoint import is_safetensors

    try:
        if is_safetensors(path):
            return "export"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            # torch.save's archive holds data.pkl; a TorchScript archive holds its code as well.
            if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
                return "export"
            return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else None
        with open(path, "rb") as f:
            head = f.read(1)
    except (OSError, zipfile.BadZipFile):
        return None
    # a pickle (torch.save before PyTorch 1.6) opens with 0x80; an ONNX model with its IR version
    # (protobuf field 1, a varint: 0x08)
    return {b"\x80": "checkpoint", b"\x08": "export"}.get(head)


def _need_onnx(runtime: bool = False):
    try:
        import onnx

        if runtime:
            import onnxruntime

            return onnx, onnxruntime
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError as e:
        raise ExportError(f"ONNX needs {e.name}: pip install 'lenet5[onnx]'") from None
    return onnx, None


def _write_onnx(wrapped: Pixels, path: Path, meta: dict[str, str]) -> int:
    onnx, _ = _need_onnx()
    example = torch.zeros(2, 28, 28, dtype=torch.uint8)
    # The exporter logs notes about optional torchvision ops and warns about its own internals;
    # neither concerns this model, and library code does not print.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=["pixels"],
                output_names=["logits"],
                dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}},
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    # Through the onnx package so the metadata goes in; external_data=False keeps the weights
    # inside the one file (torch's own save would write them to a side file).
    assert program is not None  # dynamo=True: always a program
    proto = program.model_proto
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    onnx.helper.set_model_props(proto, {**meta, "opset": str(opset)})
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    return opset


def _write_torchscript(wrapped: Pixels, path: Path, meta: dict[str, str]) -> None:
    # torch marks TorchScript deprecated in favour of torch.export, but it is still what libtorch
    # (C++) and older runtimes load; the warning would only tell the user what they chose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(wrapped)  # scripted, not traced: no example batch baked in
    scripted.save(str(path), _extra_files={METADATA_FILE: json.dumps(meta)})


def _write_safetensors(wrapped: Pixels, path: Path, meta: dict[str, str]) -> None:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(
            "safetensors export needs the safetensors package: pip install safetensors"
        ) from None
    from .checkpoint import portable

    save_file(portable(wrapped.model.state_dict()), str(path), metadata=meta)


def load(path: str | os.PathLike):
    """(run, metadata): run(uint8 array (N, 28, 28)) -> float32 logits (N, 10) as a tensor."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    from .checkpoint import is_safetensors

    if is_safetensors(path):  # weights: the model is LeNet5, the normalisation from the metadata
        from .checkpoint import load_model, normalization

        model, obj = load_model(path)
        mean, std = normalization(obj, path)

        @torch.no_grad()
        def run_weights(pixels) -> torch.Tensor:
            return model(normalize(torch.as_tensor(np.asarray(pixels, np.uint8)), mean, std))

        return run_weights, obj["metadata"]
    if not zipfile.is_zipfile(path):  # a TorchScript archive is a zip file; ONNX is a protobuf
        onnx, ort = _need_onnx(runtime=True)
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnx and onnxruntime raise their own kinds for a damaged file
            raise ExportError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None

        def run_onnx(pixels) -> torch.Tensor:
            return torch.from_numpy(session.run(["logits"], {"pixels": np.asarray(pixels, np.uint8)})[0])

        return run_onnx, meta
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    except Exception as e:  # torch.jit raises RuntimeError or others for a file that is not an archive
        raise ExportError(
            f"{path}: not a readable TorchScript model ({str(e).splitlines()[0][:160]})"
        ) from None
    meta = json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}

    @torch.no_grad()
    def run_scripted(pixels) -> torch.Tensor:
        return scripted(torch.as_tensor(np.asarray(pixels, np.uint8))).float()

    return run_scripted, meta


@torch.no_grad()
def verify(
    path: str | os.PathLike,
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: float,
    std: float,
    batch_size: int = 4096,
) -> dict:
    """Run the export and the PyTorch model on `images` (uint8 (N, 28, 28)); compare the logits.

    The reference normalises outside the model with `data.normalize`, as training and evaluation
    do, so the check covers the constants inside the export too. The batches (4096, 4096, 1808 for
    the test set) also exercise the dynamic batch dimension.
    """
    run, meta = load(path)
    model = model.cpu().eval()
    identical, max_diff = 0, 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        ref = model(normalize(batch, mean, std))
        got = run(batch.numpy())
        if got.shape != ref.shape:
            raise ExportError(f"{path}: returned shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        identical += int((got.argmax(1) == ref.argmax(1)).sum())
        max_diff = max(max_diff, float((got - ref).abs().max()))
    return {
        "count": len(images),
        "identical": identical,
        "max_abs_diff": max_diff,
        "ok": identical == len(images) and max_diff <= TOLERANCE,
        "metadata": meta,
    }
