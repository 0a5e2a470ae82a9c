"""The CLI through main([...]) and as the installed `lenet5` command."""

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import DATA
from lenet5.cli import main
from lenet5.data import MEAN, STD
from seed_code import SeedLeNet5, seed_train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small real run through the CLI, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli") / "runs"
    code = main(["train", "--data-dir", str(DATA), "--out-dir", str(out), "--name", "r",
                 "--limit", "8000", "--val-size", "1000", "--epochs", "2", "--no-progress"])
    assert code == 0
    return out / "r"


def test_train_prints_epoch_lines_and_test_accuracy(trained, capsys):
    assert (trained / "test_metrics.json").exists()
    metrics = json.loads((trained / "test_metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and len(metrics["confusion"]) == 10


def test_evaluate_json(trained, capsys):
    assert main(["evaluate", str(trained), "--data-dir", str(DATA), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 10000 and sum(map(sum, out["confusion"])) == 10000
    assert out["accuracy"] == pytest.approx(sum(out["confusion"][d][d] for d in range(10)) / 10000)


def test_evaluate_readable(trained, capsys):
    assert main(["evaluate", str(trained / "best.pt"), "--data-dir", str(DATA)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion (rows: true digit" in out


def test_predict_index_uses_the_checkpoint_normalisation(trained, capsys):
    assert main(["predict", str(trained), "--index", "0", "--index", "1", "--data-dir", str(DATA), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["label"] for r in results] == [7, 2]
    assert results[0]["prediction"] == 7 and results[0]["probability"] > 0.5


def test_predict_reads_a_state_dict_written_by_the_seeds_training(tmp_path, mnist, capsys):
    x = ((mnist.train_images[:2048].float() / 255 - MEAN) / STD).unsqueeze(1)
    loader = list(zip(x.split(64), mnist.train_labels[:2048].split(64)))
    seed_train(loader, tmp_path / "mnist_lenet5.pth", epochs=2)
    assert main(["predict", str(tmp_path / "mnist_lenet5.pth"), "--index", "0", "--data-dir", str(DATA)]) == 0
    out = capsys.readouterr().out  # two epochs of the seed's rate on 2,048 images: barely trained,
    assert out.startswith("test image 0: true label 7, ") and "top 3: " in out  # and maybe unsure


def test_show_writes_a_png(tmp_path):
    out = tmp_path / "d.png"
    assert main(["show", "--index", "3", "--out", str(out), "--data-dir", str(DATA)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_what_commands_draw_or_write_goes_into_the_run_folder_never_here(trained, tmp_path, monkeypatch, capsys):
    """Untold where, `show` saves into the newest run's folder (as `plot` does), `export` beside the
    checkpoint; with only the shipped weights (which lie in the installed package) each asks where,
    in one line, and writes nothing. The current folder is never written to."""
    monkeypatch.chdir(tmp_path)
    runs = str(trained.parent)
    assert main(["show", "--index", "3", "--data-dir", str(DATA), "--out-dir", runs]) == 0
    assert capsys.readouterr().out == f"saved {trained / 'digit-3.png'}\n"
    assert main(["export", "--format", "safetensors", "--out-dir", runs]) == 0
    assert (trained / "best.safetensors").is_file()
    capsys.readouterr()
    for argv, example in ((["show", "--index", "3"], "--out digit-3.png"),
                          (["show", "--index", "3", "--activations"], "--out activations-3.png"),
                          (["export", "--format", "web"], "--out lenet5-default-web"),
                          (["predict", "--index", "3", "--explain"], "--explain=DIR")):
        assert main([*argv, "--data-dir", str(DATA)] if argv[0] != "export" else argv) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("lenet5: error: no run in runs/ to save ")
        assert err.rstrip().endswith(f"(the shipped weights have none); say where: {example}"), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-1"], "--lr must be positive"),
    (["train", "--device", "tpu"], "--device 'tpu'"),
    (["evaluate", "nowhere.pt"], "nowhere.pt: no such checkpoint file"),
    (["predict", "--index", "10000", "X"], "X: no such checkpoint file"),
    (["show", "--index", "-1"], "--index -1: the test set has images 0 to 9999"),
    (["train", "--data-dir", "/nonexistent/mnist", "--dry-run"], "could not download|MNIST"),
    (["train", "--out-dir", "a-file", "--dry-run", "--data-dir", str(DATA)], r"a-file/\S+: Not a directory"),
    (["train", "--resume", "a-file"], "--resume a-file: a run continues from the last.pt in its folder"),
    (["show", "--index", "3", "--out", "a-file/d.png"], r"a-file: File exists \(a file stands where a folder is needed\)"),
])
def test_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").touch()
    if argv[0] == "show":
        argv = argv + ["--data-dir", str(DATA)]
    if argv[:3] == ["train", "--data-dir", "/nonexistent/mnist"]:
        import lenet5.data

        offline = lenet5.data.download  # no mirror, one try: the offline message at once
        monkeypatch.setattr(lenet5.data, "download", lambda root, names, **kw: offline(
            root, names, **{**kw, "mirrors": (), "retries": 1, "show_progress": False}))
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("lenet5: error:") and len(err.splitlines()) == 1, err
    import re

    assert re.search(message, err), err


def test_resume_refuses_changed_hyperparameters(trained, capsys):
    assert main(["train", "--resume", str(trained), "--lr", "0.1"]) == 1
    assert "--lr cannot change when resuming" in capsys.readouterr().err


def test_seed_inference_code_loads_our_file(trained):
    """The seed's inference: model.load_state_dict(torch.load('mnist_lenet5.pth'))."""
    model = SeedLeNet5()
    model.load_state_dict(torch.load(trained / "mnist_lenet5.pth"))
    model.eval()


def test_installed_command_and_module(tmp_path, trained):
    exe = shutil.which("lenet5") or str(__import__("pathlib").Path(sys.executable).parent / "lenet5")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("lenet5 ")
    proc = subprocess.run([sys.executable, "-m", "lenet5", "predict", str(trained), "--index", "0",
                           "--data-dir", str(DATA)], capture_output=True, text=True)
    assert proc.returncode == 0 and "true label 7" in proc.stdout
    bad = subprocess.run([exe, "evaluate", str(tmp_path / "none.pt")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "none.pt" in bad.stderr


def test_flags_help_and_version_need_no_torch():
    """`lenet5 --version`, a help page or a mistyped flag answers at once: torch (seconds to import)
    is loaded only by the commands that use it."""
    script = ("import sys; from lenet5.cli import main\n"
              "for argv in (['--version'], ['train', '--help'], ['serve', '--no-such-flag']):\n"
              "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
              "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["show"], ["summary"],
                                     ["export"], ["serve"], ["plot"]])
def test_every_help_page_prints(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lenet5")
    if command == ["train"]:  # every Config field is a flag with its own help
        assert "--cuda-graphs" in out and "one recorded graph" in out


@pytest.mark.parametrize("rank", [None, "0", "1"])
def test_ctrl_c_is_reported_once_under_torchrun(rank, monkeypatch, capsys, tmp_path):
    """Rank 0 saves last.pt and says so; the other ranks stop quietly instead of repeating it."""
    from lenet5 import cli
    from lenet5.training import Interrupted

    def interrupted(args):
        raise Interrupted(tmp_path / "run" / "last.pt")

    monkeypatch.setitem(cli.COMMANDS, "summary", interrupted)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert main(["summary"]) == 130
    err = capsys.readouterr().err
    if rank == "1":
        assert err == ""
    else:
        assert err == f"lenet5: interrupted; progress saved, continue with: lenet5 train --resume {tmp_path / 'run'}\n"


def test_a_closed_pipe_ends_quietly():
    """`lenet5 summary | head -c 10`: the reader is gone before lenet5 writes; no error, no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "lenet5", "summary"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before anything is written: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    assert err == ""
