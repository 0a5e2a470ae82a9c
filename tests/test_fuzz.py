"""Generated and damaged inputs for the readers of outside files: pictures (as a digit and as a
number), IDX files, checkpoints and config files. Each case gives a result or the project's own
error (never another exception, which would be a traceback in the CLI and a 500 from the server),
and stays within a memory bound.

The number of cases is the Hypothesis profile's (tests/conftest.py): a few hundred per property
by default, 3,400 with HYPOTHESIS_PROFILE=thorough (over 10,000 for the three).
"""

import dataclasses
import gzip
import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import DATA, idx_bytes, peak_memory
from lenet5 import LeNet5
from lenet5.checkpoint import load_model, normalization, serialise
from lenet5.config import Config, from_recipe, read_file
from lenet5.data import FILES, parse_idx, verify
from lenet5.errors import Lenet5Error
from lenet5.images import FORMATS, load_digit

# Per case, counting everything the process touches (Pillow's and torch's buffers too). The inputs
# here are at most a few hundred KB and 64x64 pixels; what a damaged header claims beyond what the
# file holds must not be allocated and filled. 64 MB leaves room for the allocator's slack and is
# a fraction of what the faults cost (hundreds of MB to GB).
MEMORY_BOUND = 64 << 20

MODES = ("L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F")


def _encodable() -> list[tuple[str, str]]:
    """The (format, mode) pairs Pillow can write, so every generated picture is a real file."""
    pairs = []
    for fmt in FORMATS:
        for mode in MODES:
            try:
                Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
                pairs.append((fmt, mode))
            except (OSError, ValueError, KeyError):
                pass
    return pairs


ENCODABLE = _encodable()


@st.composite
def pictures(draw) -> bytes:
    """A small picture file: paper, some rectangles of ink, maybe noise, in any mode and format."""
    fmt, mode = draw(st.sampled_from(ENCODABLE))
    h, w = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    a = np.full((h, w), draw(st.floats(0, 1)), np.float64)
    for _ in range(draw(st.integers(0, 6))):
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0, h)), draw(st.integers(x0, w))
        a[y0:y1, x0:x1] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        seed = draw(st.integers(0, 2**32 - 1))
        a = a + np.random.default_rng(seed).normal(0, draw(st.floats(0, 0.5)), a.shape)
    a = np.clip(a, 0, 1)
    if mode == "F":
        a = a.astype(np.float32) * draw(st.sampled_from([1.0, 255.0, 65535.0, 1e30]))
        for _ in range(draw(st.integers(0, 3))):  # float files may hold anything
            a[draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = draw(
                st.sampled_from([np.inf, -np.inf, np.nan, -1.0, 3e38]))
        img = Image.fromarray(a, "F")
    elif mode in ("I;16", "I"):
        peak = draw(st.sampled_from([255, 4095, 65535]))
        img = Image.fromarray((a * peak).astype(np.uint16)).convert(mode) if mode == "I" else \
            Image.fromarray((a * peak).astype(np.uint16))
    else:
        gray = Image.fromarray((a * 255).astype(np.uint8), "L")
        if mode in ("RGBA", "LA"):  # some transparency too
            alpha = Image.fromarray((np.random.default_rng(h * w).random((h, w)) * 255).astype(np.uint8))
            img = Image.merge(mode, [gray] * (len(mode) - 1) + [alpha])
        else:
            img = gray.convert(mode)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


@st.composite
def damaged(draw, files) -> bytes:
    """A file from `files`, damaged: bytes flipped, overwritten, cut short or inserted."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        how = draw(st.sampled_from(["flip", "overwrite", "cut", "insert", "header"]))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "overwrite":
            data[at:at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif how == "cut":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first bytes hold sizes and counts: make them huge or zero
            at = draw(st.integers(0, min(len(data), 64)))
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff"]))
    return bytes(data)


def _result_or_our_error(read):
    """Run `read()`: its result, or None for a project error; anything else fails the test."""
    with peak_memory() as used:
        try:
            result = read()
        except Lenet5Error as e:
            assert str(e) and "\n" not in str(e), repr(e)
            result = None
    assert used["bytes"] < MEMORY_BOUND, used
    return result


@given(st.one_of(pictures(), damaged(pictures())))
def test_any_picture_gives_a_digit_or_an_image_error(data):
    digit = _result_or_our_error(lambda: load_digit(data, "fuzz.png"))
    if digit is not None:
        assert digit.dtype == torch.uint8 and digit.shape == (28, 28)


_READER = []


def _shipped_reader(lenet5):
    if not _READER:
        _READER.append(lenet5.load())
    return _READER[0]


@given(st.one_of(pictures(), damaged(pictures())))
def test_any_picture_gives_a_number_or_an_image_error(data):
    from lenet5.numbers import load_number

    import lenet5

    number = _result_or_our_error(lambda: load_number(data, _shipped_reader(lenet5), "fuzz.png"))
    if number is not None:
        assert all(c.isdigit() or c == "?" for c in number.number)
        assert len(number.number) == len(number.digits) and number.readable == ("?" not in number.number)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


LABELS = (DATA / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").read_bytes()  # 4.5 KB


@st.composite
def idx_files(draw) -> tuple[str, bytes]:
    """(MNIST name, file content): the real labels file damaged, or a made-up header and data."""
    name = draw(st.sampled_from(sorted(FILES)))
    if draw(st.booleans()):
        return "t10k-labels-idx1-ubyte", draw(damaged(st.just(LABELS)))
    magic, shape, _ = FILES[name]
    magic = draw(st.sampled_from([magic, 2049, 2051, 0, 0x0803FFFF]))
    dims = draw(st.sampled_from([shape, (0,) * len(shape), (2**32 - 1,) * len(shape)]))
    ndim = magic & 0xFF if magic & 0xFF <= 4 else len(shape)
    dims = (tuple(dims) + (1,) * 4)[:ndim]
    content = struct.pack(f">I{ndim}I", magic, *dims) + draw(st.binary(max_size=256))
    if draw(st.booleans()):
        content = gzip.compress(content, compresslevel=1)
    return name, draw(damaged(st.just(content))) if draw(st.booleans()) else content


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=idx_files(), small=st.one_of(st.none(), damaged(st.just(idx_bytes(np.arange(24).reshape(2, 3, 4))))))
def test_any_idx_file_gives_an_array_or_a_data_error(folder, case, small):
    name, content = case
    path = folder / f"{name}.gz"
    path.write_bytes(content)
    array = _result_or_our_error(lambda: verify(path, name))
    if array is not None:  # only the real file itself passes its MD5
        assert array.shape == FILES[name][1]
    if small is not None:
        array = _result_or_our_error(lambda: parse_idx(small, "small", 2051, (2, 3, 4)))
        assert array is None or array.shape == (2, 3, 4)


STATE = LeNet5().state_dict()
SPECIAL = [np.nan, np.inf, -np.inf, 1e38, 0.0]


@st.composite
def checkpoints(draw) -> bytes:
    """A checkpoint with its parts edited: weights, dtypes, shapes, keys, the normalize entry."""
    state = {k: v.clone() for k, v in STATE.items()}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(state)))
        edit = draw(st.sampled_from(["value", "dtype", "shape", "drop", "type"]))
        tensor = isinstance(state[key], torch.Tensor) and state[key].is_floating_point() and state[key].numel()
        if edit in ("value", "dtype") and not tensor:  # already replaced by an earlier edit
            continue
        if edit == "value":
            state[key].view(-1)[draw(st.integers(0, state[key].numel() - 1))] = draw(st.sampled_from(SPECIAL))
        elif edit == "dtype":
            state[key] = state[key].to(draw(st.sampled_from(
                [torch.float16, torch.float64, torch.int64, torch.bool, torch.complex64, torch.bfloat16])))
        elif edit == "shape":
            state[key] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
        elif edit == "drop":
            del state[key]
        else:
            state[key] = draw(st.sampled_from([None, 1.5, "weights", [1, 2], {"a": 1}]))
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**30),
                        st.text(max_size=5), st.none(), st.lists(st.floats(), max_size=2))
    norm = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["mean", "std", "other"]), numbers),
                          numbers))
    obj = draw(st.sampled_from([
        {"format": "lenet5", "model": state, "normalize": norm, "config": {}},
        {"format": "lenet5", "model": state},
        {"format": "lenet5", "normalize": norm},
        state,
        {f"module.{k}": v for k, v in state.items()},
        [1, 2, 3],
    ]))
    return serialise(obj)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(content=st.one_of(checkpoints(), damaged(checkpoints())))
def test_any_checkpoint_gives_a_model_or_a_checkpoint_error(folder, content):
    path = folder / "fuzz.pt"
    path.write_bytes(content)

    def read():
        model, obj = load_model(path)
        return model, normalization(obj, path)

    result = _result_or_our_error(read)
    if result is not None:
        model, (mean, std) = result
        assert std > 0 and np.isfinite(mean) and np.isfinite(std)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


CONFIG_TEXT = ("recipe: fast\nepochs: 3\nlr: 0.02\nwarmup: 0.2\nseed: 7\nlabel_smoothing: 0.1\n"
               "wandb_tags: [a, b]\nname: try\n")
KEYS = sorted(f.name for f in dataclasses.fields(Config))
VALUES = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=20), st.booleans(), st.none(),
                   st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=4))


@st.composite
def config_files(draw) -> tuple[str, bytes]:
    """(suffix, content): a YAML config damaged, a JSON config of generated values, or YAML with
    anchors and aliases, nesting, tags, odd encodings."""
    kind = draw(st.sampled_from(["damaged", "json", "yaml-tricks"]))
    if kind == "damaged":
        return ".yaml", draw(damaged(st.just(CONFIG_TEXT.encode())))
    if kind == "json":
        values = draw(st.dictionaries(st.sampled_from(KEYS + ["other"]), VALUES, max_size=6))
        return ".json", json.dumps(values).encode()
    trick = draw(st.sampled_from([
        "a: &x [1, 2]\nepochs: *x\n", "epochs: !!python/object:os.system [ls]\n", "lr: !!float nan\n",
        "epochs: " + "[" * 200 + "]" * 200 + "\n", "? [1, 2]\n: 3\n", "<<: {epochs: 3}\n",
        "epochs: 0x10\n", "seed: 1e20\n", "seed: 100000000000000000000000\n", "name: \"a\\0b\"\n",
        "\ufeffepochs: 3\n", "lr: .inf\n", "warmup: -.5\n", "1: 2\n", "null: 3\n", "[epochs]: 3\n"]))
    return ".yaml", trick.encode("utf-8") if draw(st.booleans()) else trick.encode("utf-16")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=config_files())
def test_any_config_file_gives_a_config_or_a_config_error(folder, case):
    suffix, content = case
    path = folder / f"fuzz{suffix}"
    path.write_bytes(content)

    def read():
        values = read_file(path)
        recipe = values.pop("recipe", "default")
        return from_recipe(recipe if isinstance(recipe, str) else repr(recipe), **values)

    cfg = _result_or_our_error(read)
    if cfg is not None:
        assert cfg.epochs >= 1 and 0 < cfg.lr < float("inf") and 0 <= cfg.warmup < 1
