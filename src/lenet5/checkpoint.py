"""Checkpoints on disk: atomic save, safe load, and the formats we read.

A checkpoint holds plain types and tensors only, so it loads with `torch.load(weights_only=True)`:
a file that carries a pickled Python object is refused and its code never runs.

Formats read:
- ours: {"format": "lenet5", "model": state_dict, "config": dict, "normalize": {...}, ...}
- a plain state_dict as the seed's `torch.save(model.state_dict(), 'mnist_lenet5.pth')` writes it
  (also with a "module." prefix, as DistributedDataParallel's state_dict has).
- a safetensors file (`lenet5 export --format safetensors`, or any with LeNet5's tensor names): the
  weights, with the normalisation in its metadata ("mean", "std"; MNIST's when absent). Read as the
  dict our own format is, so every command takes one. It holds tensors and strings only, by design.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import warnings
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from . import files
from .errors import CheckpointError, clip, short
from .model import LeNet5
from .rundir import BEST, LAST, WEIGHTS

FORMAT = "lenet5"
VERSION = 1
# The dtypes a checkpoint's weights may have; they are converted to float32 on load.
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def portable(obj):
    """`obj` with every tensor on the CPU in the standard layout: a file written on a GPU, or from
    a channels-last model, then loads anywhere, even with the seed's bare `torch.load`."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", memory_format=torch.contiguous_format)
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(portable(v) for v in obj)
    return obj


def serialise(obj) -> bytes:
    """The bytes torch.save writes for `obj`, its tensors made portable first."""
    buffer = io.BytesIO()
    torch.save(portable(obj), buffer)
    return buffer.getvalue()


def write(data: bytes, *paths: str | os.PathLike) -> None:
    """`data` to each path atomically, flushed to disk before it is moved into place."""
    for path in paths:
        files.write_bytes(path, data)


def save(obj, *paths: str | os.PathLike) -> None:
    """torch.save `obj` to each path atomically, serialised once however many paths."""
    write(serialise(obj), *paths)


class Writer:
    """Saves checkpoints while training goes on: each is serialised at once, on the caller's thread
    (so it holds the state as it is now), and written and flushed to disk on one background thread,
    in order. `wait()` returns when everything handed over is on disk, raising the first failure.

    After a failure nothing more is written, so the files on disk stay the set a resume can trust
    (a metrics.csv queued after a failed last.pt must not claim that epoch). `failure` is set by the
    background thread the moment a write fails: training checks it at every step, and stops there
    instead of epochs later.
    """

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lenet5-checkpoints")
        self._pending: list[Future] = []
        self.failure: BaseException | None = None
        self._raised = False

    def save(self, obj, *paths: str | os.PathLike) -> None:
        self.write(serialise(obj), *paths)

    def write(self, data: bytes, *paths: str | os.PathLike) -> None:
        """`data` (a file's bytes) to each path, in turn with the checkpoints."""
        self._pending.append(self._pool.submit(self._write, data, paths))

    def _write(self, data: bytes, paths) -> None:
        if self.failure is not None:
            return
        try:
            write(data, *paths)
        except BaseException as e:
            self.failure = e

    def wait(self) -> None:
        """Block until everything handed over is on disk; raise the first failure (once)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        if self.failure is not None and not self._raised:
            self._raised = True  # reported once: a `finally` that closes must not hide it again
            raise self.failure

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def load(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely (weights_only); never runs code stored in it."""
    path = Path(path)
    if not path.is_file():
        if path.exists() and not path.is_dir():  # /dev/null, a FIFO: reading it could never end
            raise CheckpointError(
                f"{path}: not a regular file (a device, a pipe or a socket); "
                "give a checkpoint file (.pt, .pth or .safetensors)"
            )
        raise CheckpointError(f"{path}: no such checkpoint file")
    if is_safetensors(path):
        return _load_safetensors(path)
    export = _export_kind(path)
    if export:
        raise CheckpointError(
            f"{path}: is a {export} (an export: lenet5 writes it but does not read it back); "
            "give the checkpoint it was exported from, e.g. runs/NAME/best.pt"
        )
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 249" for noise: the error says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise _refusal(path, e) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint or state_dict")
    return obj


def _refusal(path: Path, e: Exception) -> CheckpointError:
    """Why torch.load could not read `path`, said for a person: a pickle, or not a checkpoint."""
    first = " ".join(str(e).split())
    if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in first:  # a class or function named
        why = next((part for part in first.split(". ") if "GLOBAL" in part), "unsupported content")
        return CheckpointError(
            f"{path}: refused: it holds pickled Python objects, not just weights "
            f"({clip(why, 100)}); only load checkpoints you trust, and re-save them as a plain "
            "state_dict"
        )
    if path.suffix.lower() == ".onnx":
        return CheckpointError(
            f"{path}: not a lenet5 checkpoint (an ONNX export is for onnxruntime; "
            "give a .pt, .pth or .safetensors checkpoint)"
        )
    if isinstance(e, pickle.UnpicklingError) or not zipfile.is_zipfile(path):
        return CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (unreadable bytes: neither a "
            "PyTorch file nor safetensors); give a .pt, .pth or .safetensors checkpoint"
        )
    return CheckpointError(
        f"{path}: not a readable PyTorch checkpoint, damaged or cut short "
        f"({clip(f'{type(e).__name__}: {first}', 120)})"
    )


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether `path` opens as a safetensors file does: the length of a JSON header (8 bytes, little
    endian) that fits in the file, then the header's opening brace."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8


def _load_safetensors(path: Path) -> dict:
    """A safetensors file as our format's dict: its tensors the model, (mean, std) from its metadata.
    The names are checked before any tensor is read, so another model's large file costs nothing."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CheckpointError(
            f"{path}: is a safetensors file; reading it needs the safetensors "
            "package: pip install safetensors"
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            _check_names(_unprefixed(dict.fromkeys(f.keys())), path)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({clip(f'{type(e).__name__}: {e}', 160)})"
        ) from None
    obj = {"format": FORMAT, "model": state, "metadata": dict(meta)}
    if "mean" in meta or "std" in meta:
        obj["normalize"] = {"mean": meta.get("mean"), "std": meta.get("std")}
    return obj


def _export_kind(path: Path) -> str | None:
    """'TorchScript model' or 'ONNX model' when `path` is one of the files `lenet5 export` writes."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:  # TorchScript keeps its code beside the weights
                scripted = any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
            return "TorchScript model" if scripted else None
        with open(path, "rb") as f:
            head = f.read(1)
    except Exception:  # a damaged archive: torch.load says what is wrong with it
        return None
    # An ONNX model is a protobuf opening with its IR version (field 1, a varint: byte 0x08); a
    # PyTorch file is a zip archive or a pickle (byte 0x80).
    return "ONNX model" if head == b"\x08" else None


def model_state(obj: dict, path: str | os.PathLike = "checkpoint") -> dict:
    """The LeNet5 state_dict inside a loaded checkpoint of any supported format."""
    state = obj.get("model") if obj.get("format") == FORMAT else obj
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: has no model weights")
    state = _unprefixed(state)
    expected = _check_names(state, path)
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: {key} has shape {shape}, LeNet5 needs {tuple(ref.shape)}")
        if value.is_complex() or value.layout != torch.strided:
            raise CheckpointError(
                f"{path}: {key} is a {value.dtype} {value.layout} tensor, LeNet5 needs plain real numbers"
            )
        if value.dtype not in WEIGHT_DTYPES:  # e.g. float32 bytes relabelled int32: garbage numbers
            raise CheckpointError(
                f"{path}: {key} holds {str(value.dtype).removeprefix('torch.')} "
                "numbers; LeNet5's weights are float32 (float16, bfloat16 and "
                "float64 are converted): re-save it from the model's state_dict"
            )
    weights = {k: state[k].float() for k in expected}
    for key, value in weights.items():
        # A run that diverged saves NaN; a model holding it answers every picture with NaN.
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{path}: {key} holds NaN or infinite values (the run that wrote it "
                "diverged); use an earlier checkpoint or train again"
            )
    return weights


def _unprefixed(state: dict) -> dict:
    """`state` without the prefix DistributedDataParallel ("module.") or torch.compile
    ("_orig_mod.") puts before every name."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _check_names(state: dict, path) -> dict:
    """LeNet5's own state_dict, once `state` is known to hold its names and no others."""
    expected = LeNet5().state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(map(str, set(state) - set(expected)))
    if missing or extra:
        detail = f"missing {', '.join(missing[:4])}" if missing else f"unexpected {', '.join(extra[:4])}"
        raise CheckpointError(f"{path}: not a LeNet5 checkpoint ({detail})")
    return expected


def normalization(obj: dict, path: str | os.PathLike = "checkpoint") -> tuple[float, float]:
    """The (mean, std) the model was trained with; the seed's files carry none and used MNIST's."""
    from .data import MEAN, STD

    if obj.get("format") != FORMAT or obj.get("normalize") is None:
        return MEAN, STD
    norm = obj["normalize"]
    try:
        mean, std = float(norm["mean"]), float(norm["std"])
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, RuntimeError):  # no number
        raise CheckpointError(
            f"{path}: its normalize entry needs two numbers, mean and std "
            f"(it holds {short(norm, 80)}); re-save it with them"
        ) from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise CheckpointError(
            f"{path}: its normalize entry has mean {mean} and std {std}; both must "
            "be finite and std above zero (MNIST's are 0.1307 and 0.3081)"
        )
    return mean, std


def dataset_of(obj: dict) -> tuple[str, tuple[str, ...]]:
    """(the set a checkpoint's model was trained on, its ten class names): the run's --dataset, or a
    safetensors export's metadata; MNIST for one that names none (the seed's files, a plain
    state_dict, a run from before --dataset)."""
    from .datasets import DATASETS, DIGITS

    config, meta = obj.get("config"), obj.get("metadata")
    name = (config.get("dataset") if isinstance(config, dict) else None) or (
        meta.get("dataset") if isinstance(meta, dict) else None
    )
    name = name if isinstance(name, str) and name else DIGITS
    classes = obj.get("classes")
    if not (isinstance(classes, list) and len(classes) == 10 and all(isinstance(c, str) for c in classes)):
        classes = DATASETS[name].classes if name in DATASETS else DATASETS[DIGITS].classes
    return name, tuple(classes)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[LeNet5, dict]:
    """A ready LeNet5 (eval mode) and the loaded checkpoint dict."""
    obj = load(path)
    model = LeNet5()
    model.load_state_dict(model_state(obj, path))
    normalization(obj, path)  # refused here, naming the file, rather than at the first prediction
    return model.to(device).eval(), obj


def resolve(
    path: str | os.PathLike | None, out_dir: str = "runs", which: str = BEST, shipped: bool = False
) -> Path:
    """A checkpoint path from what the user gave: a file, a run folder, or nothing (the newest run;
    with `shipped`, the weights that ship with lenet5 when there is none: see `is_shipped`)."""
    if path:
        p = Path(path)
        if p.is_dir():
            names = list(dict.fromkeys((which, BEST, LAST, WEIGHTS)))  # in order, once
            for name in names:
                if (p / name).is_file():
                    return p / name
            raise CheckpointError(f"{p}/: holds no checkpoint ({', '.join(names[:-1])} or {names[-1]})")
        if not p.exists():
            raise CheckpointError(f"{p}: no such checkpoint file")
        return p
    runs = sorted(Path(out_dir).glob(f"*/{which}"), key=lambda f: f.stat().st_mtime)
    if runs:
        return runs[-1]
    if shipped:
        from .weights import shipped as shipped_weights

        return shipped_weights()
    raise CheckpointError(
        f"no checkpoint given and none found in {out_dir}/*/{which}; "
        "train one with `lenet5 train` or pass a checkpoint path"
    )


def is_shipped(path: Path) -> bool:
    """Whether `path` is the weights that ship with lenet5."""
    from .weights import HERE

    return Path(path).resolve().parent == HERE.resolve()
