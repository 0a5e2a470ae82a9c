"""Bad inputs and faults from outside: each is refused or survived in one clear line, quickly and
within a small memory bound, and never costs the user a file.

Config values and files, run folders a resume is pointed at, export destinations, checkpoints and
pictures that are not what they claim to be, a thread count beyond the machine, write failures,
and trackers whose server or folder fails.
"""

import dataclasses
import json
import os
import random
import time

import pytest

from conftest import peak_memory
from lenet5.cli import main
from lenet5.config import from_dict, from_recipe
from lenet5.errors import ConfigError

NOISE = random.Random(0).randbytes(3000)
MEMORY_BOUND = 64 << 20  # what any of these may cost; the faults cost gigabytes


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `lenet5 ARGV` in-process: it must fail with one line on stderr, and no traceback."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lenet5: error: ") and "Traceback" not in err, err
    return err.strip()


# ---- numbers in the config: range and finiteness, the flag named ----------------------------

@pytest.mark.parametrize("flag, value, said", [
    ("--epochs", "100000000000000000000000", "--epochs must be between 1 and 100000"),
    ("--lr", "nan", "--lr must be positive and finite"),
    ("--lr", "inf", "--lr must be positive and finite"),
    ("--seed", "100000000000000000000", "--seed must be between 0 and 2**64 - 1"),
    ("--seed", "-1", "--seed must be between 0"),
    ("--weight-decay", "-1", "--weight-decay must be 0 or more"),
    ("--label-smoothing", "5", "--label-smoothing must be from 0 to 1"),
    ("--warmup", "2", "--warmup must be a share of the steps"),
    ("--warmup", "1", "--warmup must be a share of the steps"),
    ("--momentum", "nan", "--momentum must be from 0 to 1"),
    ("--gamma", "-inf", "--gamma must be positive and finite"),
    ("--mean", "nan", "--mean must be a finite number"),
    ("--std", "inf", "--std must be positive and finite"),
    ("--step-size", "0", "--step-size must be positive"),
    ("--dist-timeout", "100000000000", "--dist-timeout must be between 0 and"),
    ("--threads", "-2", "--threads must be 0 or more"),
])
def test_every_number_is_checked_with_its_flag_named(capsys, flag, value, said):
    err = one_line_error(capsys, ["train", f"{flag}={value}", "--print-config"])
    assert said in err, err


def test_numbers_from_a_config_file_are_checked_too():
    with pytest.raises(ConfigError, match="--lr must be positive and finite"):
        from_dict({"lr": float("nan")})
    with pytest.raises(ConfigError, match="--lr must be a finite number"):
        from_dict({"lr": 10**400})  # an int too large for a float
    with pytest.raises(ConfigError, match="must be a list of strings"):
        from_dict({"wandb_tags": [1, 2]})


def test_a_huge_wrong_value_is_never_printed_whole():
    with pytest.raises(ConfigError) as e:
        from_dict({"epochs": ["x" * 1000] * 100_000})
    assert len(str(e.value)) < 160, str(e.value)


# ---- config files: size, kind, encoding, YAML expansion -------------------------------------

def _refused_cheaply(capsys, path, said: str) -> None:
    with peak_memory() as used:
        t0 = time.perf_counter()
        err = one_line_error(capsys, ["train", "--config", str(path), "--print-config"])
    assert said in err, err
    assert used["bytes"] < MEMORY_BOUND and time.perf_counter() - t0 < 5, (used, err)


def test_a_device_or_a_pipe_as_the_config_is_refused_without_reading_it(capsys, tmp_path):
    _refused_cheaply(capsys, "/dev/zero", "/dev/zero: is not a regular file")
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    _refused_cheaply(capsys, fifo, "c.yaml: is not a regular file")
    _refused_cheaply(capsys, tmp_path, "is a folder")


def test_a_big_config_file_is_refused_by_its_size(capsys, tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:  # 50 MB, sparse: nothing is written
        f.truncate(50 << 20)
    _refused_cheaply(capsys, big, "big.yaml: is 50.0 MB, too large for a config file")


def test_yaml_anchors_and_aliases_are_refused_before_they_expand(capsys, tmp_path):
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefg"):
        prev = "abcdefg"[i]
        laughs.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(laughs) + "\nepochs: *g\n")  # 9**7 strings once expanded
    _refused_cheaply(capsys, path, "anchors and aliases (&name, *name) are not allowed")
    (tmp_path / "one.yaml").write_text("epochs: &n 3\nlimit: *n\n")
    _refused_cheaply(capsys, tmp_path / "one.yaml", "not allowed in a config file at line 1")


def test_a_config_file_that_is_not_utf8_is_one_line(capsys, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("epochs: 3\nname: caf\xe9\n".encode("latin-1"))
    _refused_cheaply(capsys, path, "latin1.yaml: not UTF-8 text (byte 0xe9 at offset 19)")


# ---- threads beyond the machine ---------------------------------------------------------------

def test_more_threads_than_cpus_are_capped_with_a_note(tmp_path, mnist, monkeypatch, capsys):
    import torch

    from lenet5 import training
    from lenet5.config import usable_threads

    have = usable_threads(10**9)[0]
    before = torch.get_num_threads()
    try:  # torch and OpenMP given 100,000 threads end in SIGSEGV
        cfg = from_recipe("default", out_dir=str(tmp_path), name="t", limit=256, val_size=64,
                          epochs=1, dry_run=True, progress=False, threads=100_000)
        training.fit(cfg, mnist)
        assert torch.get_num_threads() == have
    finally:
        torch.set_num_threads(before)
    seen = []
    monkeypatch.setattr(training, "fit", lambda cfg, **kw: seen.append(cfg) or {"primary": False})
    assert main(["train", "--threads", "100000", "--out-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err == f"lenet5: --threads 100000: this machine gives lenet5 {have} CPU(s); using {have}\n"


# ---- a resume proves the checkpoint is the run's own ----------------------------------------

def _two_runs(tmp_path, mnist):
    """Two short runs, each stopped after its first of two epochs (dry runs: a few steps)."""
    from lenet5.training import fit

    runs = []
    for name, seed in (("a", 1), ("b", 2)):
        cfg = from_recipe("default", out_dir=str(tmp_path), name=name, limit=256, val_size=64,
                          epochs=2, dry_run=True, progress=False, seed=seed)
        fit(cfg, mnist)
        runs.append(tmp_path / name)
    return runs


def _files(run) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def test_another_runs_checkpoint_copied_in_is_refused(tmp_path, mnist, capsys):
    import shutil

    from lenet5.training import fit

    a, b = _two_runs(tmp_path, mnist)
    ids = [json.loads((run / "config.json").read_text())["run_id"] for run in (a, b)]
    assert ids[0] != ids[1]
    shutil.copy(b / "last.pt", a / "last.pt")
    before = _files(a)
    err = one_line_error(capsys, ["train", "--resume", str(a), "--no-test"])
    assert f"{a / 'last.pt'} belongs to another run" in err and "copied in from elsewhere" in err
    cfg = from_recipe("default", out_dir=str(tmp_path), name="a", limit=256, val_size=64, epochs=2,
                      dry_run=True, progress=False, seed=1)
    with pytest.raises(ConfigError, match="belongs to another run"):
        fit(cfg, mnist, resume=a / "last.pt")  # the Python API checks as the CLI does
    assert _files(a) == before  # metrics.csv and config.json as they were


@pytest.mark.parametrize("edit, said", [
    (lambda c: c.replace('"epochs": 2', '"epochs": 30'), "config.json: epochs is 30, but last.pt was trained with 2"),
    (lambda c: c.replace('"lr": 0.05', '"lr": "fast"'), "config.json: lr is 'fast', but last.pt was trained with 0.05"),
    (lambda c: c.replace('"epochs": 2', '"epoch": 2'), "config.json: unknown key 'epoch'"),
    (lambda c: c[: len(c) // 2], "config.json: not valid JSON"),
    (lambda c: "\udcff", "config.json: not UTF-8 text"),
])
def test_a_hand_edited_or_garbled_config_json_is_named_and_left_alone(tmp_path, mnist, capsys, edit, said):
    (a, _) = _two_runs(tmp_path, mnist)
    text = edit((a / "config.json").read_text())
    (a / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    before = _files(a)
    err = one_line_error(capsys, ["train", "--resume", str(a), "--no-test"])
    assert said in err and ("left as it is" in err or "put config.json back" in err), err
    assert _files(a) == before


def test_a_run_from_before_run_ids_still_resumes(tmp_path, mnist):
    import torch

    from lenet5.training import fit

    (a, _) = _two_runs(tmp_path, mnist)
    config = json.loads((a / "config.json").read_text())
    del config["run_id"]
    (a / "config.json").write_text(json.dumps(config))
    saved = torch.load(a / "last.pt", weights_only=True)
    del saved["run_id"]
    torch.save(saved, a / "last.pt")
    cfg = from_recipe("default", **{k: v for k, v in config.items() if k != "recipe"})
    result = fit(cfg, mnist, resume=a / "last.pt")
    assert result["epochs_run"] == 2 and "run_id" not in torch.load(a / "last.pt", weights_only=True)


# ---- export destinations: never a user's file without --force, never a device ---------------

@pytest.fixture
def weights(tmp_path):
    import torch

    from lenet5.model import LeNet5

    path = tmp_path / "w.pt"
    torch.save(LeNet5().state_dict(), path)
    return path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_never_overwrites_a_file_that_is_not_an_export_without_force(weights, tmp_path, capsys, fmt):
    notes = tmp_path / "notes.txt"
    notes.write_text("my thesis, chapter 3\n")
    err = one_line_error(capsys, ["export", str(weights), "--format", fmt, "--out", str(notes)])
    assert err == (f"lenet5: error: --out {notes}: exists and is not a model export; an export would "
                   "replace it: choose another path, or add --force to replace it")
    assert notes.read_text() == "my thesis, chapter 3\n"


def test_export_force_replaces_and_an_earlier_export_is_replaced_without_it(weights, tmp_path, capsys):
    out = tmp_path / "notes.safetensors"
    out.write_text("not weights")
    assert main(["export", str(weights), "--format", "safetensors", "--out", str(out), "--force"]) == 0
    first = out.read_bytes()
    assert first.startswith(b"{", 8)  # a safetensors header now
    assert main(["export", str(weights), "--format", "safetensors", "--out", str(out)]) == 0  # an export
    capsys.readouterr()


def test_a_failed_export_leaves_the_old_file_whole(weights, tmp_path, monkeypatch, capsys):
    from lenet5 import export

    out = tmp_path / "old.txt"
    out.write_text("keep me")

    def half_then_full_disk(wrapped, path, meta):
        path.write_bytes(b"half an exp")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_safetensors", half_then_full_disk)
    err = one_line_error(capsys, ["export", str(weights), "--format", "safetensors", "--out", str(out), "--force"])
    assert "No space left on device" in err
    assert out.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["old.txt", "w.pt"]


@pytest.mark.parametrize("fmt", ["onnx", "safetensors"])
def test_export_to_a_device_or_a_pipe_is_refused_without_reading_it(weights, tmp_path, capsys, fmt):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    for out in ("/dev/full", "/dev/null", fifo):
        with peak_memory() as used:
            err = one_line_error(capsys, ["export", str(weights), "--format", fmt, "--out", str(out), "--force"])
        assert err == (f"lenet5: error: --out {out}: is not a regular file (a device, a pipe or a socket); "
                       "give a file name"), err
        assert used["bytes"] < MEMORY_BOUND
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


# ---- checkpoints and pictures that are not what they claim ------------------------------------

@pytest.mark.parametrize("name, content, said", [
    ("x.onnx", NOISE, "x.onnx: not a lenet5 checkpoint (an ONNX export is for onnxruntime; "
                                 "give a .pt, .pth or .safetensors checkpoint)"),
    ("x.onnx", b"{}", "x.onnx: not a lenet5 checkpoint (an ONNX export is for onnxruntime"),
    ("x.pt", b"{}", "x.pt: not a readable PyTorch checkpoint (unreadable bytes: neither a PyTorch file "
                    "nor safetensors); give a .pt, .pth or .safetensors checkpoint"),
    ("x.pt", b"\x80" + NOISE, "x.pt: not a readable PyTorch checkpoint"),
    ("x.pth", b"", "x.pth: not a readable PyTorch checkpoint"),
])
def test_bytes_that_are_no_checkpoint_are_named_for_what_they_are_not(tmp_path, capsys, name, content, said):
    path = tmp_path / name
    path.write_bytes(content)
    err = one_line_error(capsys, ["export", str(path), "--out", str(tmp_path / "o.onnx")])
    assert said in err and "pickled" not in err, err


def test_a_pickled_object_is_still_called_one_and_its_message_is_cut_between_words(tmp_path):
    import torch

    from lenet5.checkpoint import load
    from lenet5.errors import CheckpointError

    torch.save({"x": ConfigError("a" * 10)}, tmp_path / "obj.pt")
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "obj.pt")
    message = str(e.value)
    assert "obj.pt: refused: it holds pickled Python objects" in message, message
    detail = message.split("(", 1)[1].split(")")[0]
    assert "GLOBAL lenet5.errors.ConfigError" in detail and (detail.endswith("...") or len(detail) < 100)


def test_a_device_or_a_pipe_as_a_checkpoint_or_a_picture_is_not_a_regular_file(tmp_path, capsys):
    from lenet5.images import ImageError, load_digit

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for path in ("/dev/null", str(fifo)):
        with pytest.raises(ImageError, match="not a regular file"):
            load_digit(path)
        err = one_line_error(capsys, ["evaluate", path])
        assert "not a regular file (a device, a pipe or a socket)" in err, err
    with pytest.raises(ImageError, match="no such file"):
        load_digit(tmp_path / "missing.png")


def test_float_weights_relabelled_as_ints_are_refused(tmp_path):
    from safetensors.torch import save_file

    from lenet5.checkpoint import load_model
    from lenet5.errors import CheckpointError
    from lenet5.model import LeNet5

    path = tmp_path / "w.safetensors"
    save_file(LeNet5().state_dict(), str(path))
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = data[8:8 + size].replace(b'"F32"', b'"I32"')  # the same bytes, read as int32
    path.write_bytes(data[:8] + header + data[8 + size:])
    with pytest.raises(CheckpointError, match=r"w.safetensors: \S+ holds int32 numbers; LeNet5's weights are float32"):
        load_model(path)
    half = {k: v.half() for k, v in LeNet5().state_dict().items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    load_model(tmp_path / "half.safetensors")  # float16 is converted


# ---- a write that fails: room to make, or permission to get ------------------------------------

@pytest.mark.parametrize("code, fix", [
    (13, "writing there is not allowed: check its permissions, or choose another --out-dir"),  # EACCES
    (1, "writing there is not allowed: check its permissions"),  # EPERM
    (30, "writing there is not allowed: check its permissions"),  # EROFS
    (28, "make room there, or choose another --out-dir"),  # ENOSPC
    (122, "make room there"),  # EDQUOT
])
def test_a_failed_write_says_room_or_permission_as_it_is(tmp_path, mnist, monkeypatch, code, fix):
    from lenet5 import checkpoint, training
    from lenet5.errors import TrainingError
    from lenet5.rundir import RunDir

    def refused(*a, **k):
        raise OSError(code, os.strerror(code), str(tmp_path / "x"))

    cfg = from_recipe("default", out_dir=str(tmp_path), name="w", limit=256, val_size=64, epochs=1,
                      dry_run=True, progress=False)
    with monkeypatch.context() as m:  # the run folder's first file
        m.setattr(RunDir, "write_config", refused)
        with pytest.raises(TrainingError) as e:
            training.fit(cfg, mnist)
    assert f"cannot be written: {fix}" in str(e.value) and ("make room" in str(e.value)) == (code in (28, 122))
    monkeypatch.setattr(checkpoint, "write", refused)  # an epoch's checkpoint
    with pytest.raises(TrainingError) as e:
        training.fit(dataclasses.replace(cfg, name="w2"), mnist)
    said = str(e.value)
    assert ("make room, then" in said) == (code in (28, 122)), said
    assert ("allow writing there (check its permissions), then" in said) == (code in (1, 13, 30)), said


# ---- a big folder of pictures: work is seen to begin at once ----------------------------------

def test_a_big_folder_says_at_once_how_many_files_it_reads(tmp_path, monkeypatch, capsys):
    from lenet5 import cli, predict

    monkeypatch.setattr(cli, "MANY_FILES", 50)  # the threshold, small: the same path, fewer files
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        (folder / f"{i:03}.png").write_bytes(b"")
    said_first = []

    def predicting(model, files, *a, **k):  # what was on stderr before the first file was read
        said_first.append(capsys.readouterr().err)
        return [{"file": str(f), "error": f"{f}: file is empty"} for f in files]

    monkeypatch.setattr(predict, "predict_files", predicting)
    assert main(["predict", str(folder), "--out-dir", str(tmp_path / "none")]) == 1
    assert said_first and said_first[0].splitlines()[0] == "lenet5: reading 60 files...", said_first


def test_force_never_replaces_a_checkpoint(weights, tmp_path, capsys):
    other = tmp_path / "other.pt"
    other.write_bytes(weights.read_bytes())
    err = one_line_error(capsys, ["export", str(weights), "--format", "safetensors", "--out", str(other), "--force"])
    assert err.endswith("is a PyTorch checkpoint; an export would replace it: choose another path")
    assert other.read_bytes() == weights.read_bytes()
