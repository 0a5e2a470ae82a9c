"""Training on real MNIST subsets: it learns, resumes exactly, stops cleanly, fails clearly."""

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATA, Crash, crash_after_epoch_1
from lenet5 import checkpoint as checkpoint_mod
from lenet5 import training as train_mod
from lenet5.checkpoint import load, load_model
from lenet5.config import from_recipe
from lenet5.errors import ConfigError, TrainingError
from lenet5.metrics import evaluate
from lenet5.cli import main
from lenet5.model import LeNet5
from lenet5.rundir import PLOTS as RUN_PLOTS
from lenet5.rundir import RunDir
from lenet5.training import fit
from lenet5.data import MEAN, STD

QUICK = dict(limit=6000, val_size=1000, epochs=2, batch_size=128, progress=False, threads=0)


def cfg_for(tmp_path, **kw):
    return from_recipe("default", out_dir=str(tmp_path / "runs"), **{**QUICK, **kw})


def weights(path):
    return load(path)["model"]


def test_short_run_learns_and_writes_its_run_folder(tmp_path, mnist):
    cfg = cfg_for(tmp_path, limit=12000, epochs=3, name="learn")
    rows = []
    result = fit(cfg, mnist, on_epoch=rows.append, test=False)
    run = tmp_path / "runs" / "learn"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "best.pt", "last.pt",
                                               "mnist_lenet5.pth"}
    assert len(rows) == 3 and len((run / "metrics.csv").read_text().splitlines()) == 4
    model, obj = load_model(run / "best.pt")
    assert obj["config"]["limit"] == 12000 and obj["normalize"] == {"mean": MEAN, "std": STD}
    held_out = evaluate(model, mnist.test_images[:2000], mnist.test_labels[:2000], MEAN, STD)
    # three short epochs of bent digits and non-digit pictures: learning, not yet the full 99 %
    assert held_out["accuracy"] > 0.93, held_out["accuracy"]
    assert result["best"]["epoch"] == max(rows, key=lambda r: -r["val_loss"])["epoch"]
    # the seed's file: a plain state_dict that the seed's torch.load + load_state_dict reads
    from seed_code import SeedLeNet5

    seed_model = SeedLeNet5()
    seed_model.load_state_dict(torch.load(run / "mnist_lenet5.pth"))


def test_resume_ends_with_the_same_weights(tmp_path, mnist):
    full = fit(cfg_for(tmp_path, name="full", epochs=3), mnist, test=False)
    with pytest.raises(Crash):
        fit(cfg_for(tmp_path, name="part", epochs=3), mnist, on_epoch=crash_after_epoch_1, test=False)
    part_last = tmp_path / "runs" / "part" / "last.pt"
    assert load(part_last)["epoch"] == 1
    resumed = fit(cfg_for(tmp_path, name="part", epochs=3), mnist, resume=part_last, test=False)
    for k, v in weights(tmp_path / "runs" / "full" / "last.pt").items():
        assert torch.equal(v, weights(part_last)[k]), k
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][-1]["val_loss"] == full["history"][-1]["val_loss"]


def test_ctrl_c_mid_epoch_saves_last_and_resume_is_exact(tmp_path, mnist):
    fit(cfg_for(tmp_path, name="full"), mnist, test=False)

    def ctrl_c_after_step_20(epoch, step):  # a real SIGINT, as a terminal sends it
        if (epoch, step) == (0, 19):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(train_mod.Interrupted) as info:
        fit(cfg_for(tmp_path, name="cut"), mnist, on_step=ctrl_c_after_step_20, test=False)
    last = load(info.value.path)
    assert (last["epoch"], last["step"]) == (0, 20)
    fit(cfg_for(tmp_path, name="cut"), mnist, resume=info.value.path, test=False)
    for k, v in weights(tmp_path / "runs" / "full" / "last.pt").items():
        assert torch.equal(v, weights(info.value.path)[k]), k


def test_the_run_keeps_the_weights_average_and_trains_exactly_as_without_it(tmp_path, mnist, monkeypatch):
    """--ema: best.pt, last.pt and mnist_lenet5.pth hold the moving average of the weights after
    each step (decay (1 + t) / (10 + t) at first, capped at --ema), and validation scores it; the
    trained weights, from which a resume goes on, are those of the same run without --ema."""
    trained, average, updates = {}, {}, [0]
    make_step = train_mod.make_step

    def watching(cfg, state, *a, **k):
        trained["model"] = state.model
        return make_step(cfg, state, *a, **k)

    def follow(epoch, step):  # the average by hand, one tensor at a time
        updates[0] += 1
        decay = min(0.99, (1 + updates[0]) / (10 + updates[0]))
        for name, p in trained["model"].named_parameters():
            p = p.detach().contiguous()
            average[name] = p.clone() if name not in average else torch.lerp(average[name], p, 1 - decay)

    monkeypatch.setattr(train_mod, "make_step", watching)
    rows = []
    fit(cfg_for(tmp_path, name="ema", ema=0.99, limit=3000), mnist, on_step=follow, on_epoch=rows.append,
        test=False)
    plain = fit(cfg_for(tmp_path, name="plain", ema=0.0, limit=3000), mnist, test=False)
    run = tmp_path / "runs" / "ema"
    last = load(run / "last.pt")
    for name, value in last["trained"].items():  # training itself is untouched by the average
        assert torch.equal(value, weights(tmp_path / "runs" / "plain" / "last.pt")[name]), name
    assert last["average_updates"] == updates[0] == 2 * 16  # 2,000 training images, batches of 128
    for name, value in last["model"].items():
        torch.testing.assert_close(value, average[name], msg=name)  # float32 rounding only
        assert not torch.equal(value, last["trained"][name]), name
    best = load(run / "best.pt")
    assert rows[-1]["epoch"] == best["epoch"] and torch.equal(best["model"]["fc3.bias"], last["model"]["fc3.bias"])
    assert all(torch.equal(v, torch.load(run / "mnist_lenet5.pth")[k]) for k, v in best["model"].items())
    model = load_model(run / "best.pt")[0]
    val = evaluate(model, *train_mod.training_data(cfg_for(tmp_path, limit=3000), mnist, torch.device("cpu"))[1],
                   MEAN, STD)
    assert val["loss"] == pytest.approx(rows[-1]["val_loss"], rel=1e-5)  # validated: the average
    assert rows[-1]["val_loss"] != plain["history"][-1]["val_loss"]


def test_a_run_saved_before_the_average_existed_resumes_as_it_was_trained(tmp_path, mnist):
    """A last.pt and config.json written before --ema existed (no "ema" in the config, no
    "trained" weights) go on without an average, exactly as such a run would have."""
    full = fit(cfg_for(tmp_path, name="full", ema=0.0), mnist, test=False)
    with pytest.raises(Crash):
        fit(cfg_for(tmp_path, name="old", ema=0.0), mnist, on_epoch=crash_after_epoch_1, test=False)
    run = tmp_path / "runs" / "old"
    saved = load(run / "last.pt")
    del saved["config"]["ema"]
    checkpoint_mod.save(saved, run / "last.pt")
    config = json.loads((run / "config.json").read_text())
    del config["ema"]
    (run / "config.json").write_text(json.dumps(config))
    cfg, path, _ = train_mod.resume_config(run, {})
    assert cfg.ema == 0.0
    resumed = fit(cfg, mnist, resume=path, test=False)
    assert "trained" not in load(path)
    assert resumed["history"][-1]["val_loss"] == full["history"][-1]["val_loss"]
    for k, v in weights(tmp_path / "runs" / "full" / "last.pt").items():
        assert torch.equal(v, weights(path)[k]), k


def test_a_last_pt_with_the_average_but_not_the_trained_weights_is_refused(tmp_path, mnist, capsys):
    with pytest.raises(Crash):
        fit(cfg_for(tmp_path, name="cut"), mnist, on_epoch=crash_after_epoch_1, test=False)
    last = tmp_path / "runs" / "cut" / "last.pt"
    saved = load(last)
    del saved["trained"]
    checkpoint_mod.save(saved, last)
    assert main(["train", "--resume", str(last), "--data-dir", str(DATA)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"lenet5: error: {last}: holds the weights' average (--ema) but not the trained weights "
                       "beside it; it is damaged: resume from an older copy or start again"), err


def test_nan_loss_stops_with_a_clear_message(tmp_path, mnist):
    cfg = cfg_for(tmp_path, name="nan", lr=1e6, schedule="constant", epochs=1)
    with pytest.raises(TrainingError, match="NaN/inf .* lower --lr"):
        fit(cfg, mnist, test=False)


def test_seed_recipe_is_the_seed(tmp_path):
    cfg = from_recipe("seed")
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay) == (64, 0.001, 0.9, False, 0.0)
    assert (cfg.schedule, cfg.step_size, cfg.gamma, cfg.epochs) == ("step", 5, 0.1, 10)
    assert (cfg.monitor, cfg.patience, cfg.val_size, cfg.shift) == ("train_loss", 2, 0, 0)


def test_early_stopping_on_training_loss_like_the_seed():
    stopper = train_mod.EarlyStopping("train_loss", 2)
    flags = [stopper.update({"train_loss": v}) for v in (1.0, 0.5, 0.6, 0.7)]
    assert flags == [True, True, False, False] and stopper.should_stop


def test_config_errors():
    with pytest.raises(ConfigError, match="--optimizer 'adam'"):
        from_recipe("default", optimizer="adam")
    with pytest.raises(ConfigError, match="unknown config key"):
        from_recipe("default", learning_rate=1)
    with pytest.raises(ConfigError, match="must be int"):
        from_recipe("default", epochs="3")
    with pytest.raises(ConfigError, match="--monitor val_acc needs a validation split"):
        from_recipe("default", monitor="val_acc", val_size=0)
    with pytest.raises(ConfigError, match="--recipe"):
        from_recipe("nope")


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_real_ctrl_c_saves_last_and_says_how_to_resume(tmp_path, signum, code, said):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler, torchrun) to a running `lenet5 train`: the exit code
    of that signal, last.pt written whole, a one-line hint."""
    import subprocess
    import sys

    from conftest import DATA

    cmd = [sys.executable, "-m", "lenet5", "train", "--data-dir", str(DATA), "--out-dir",
           str(tmp_path), "--name", "c", "--limit", "20000", "--val-size", "1000", "--epochs", "30",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # wait for the first epoch line, then press Ctrl-C
        if line.startswith("epoch  1/30"):
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err == f"lenet5: {said}; progress saved, continue with: lenet5 train --resume {tmp_path / 'c'}\n"
    last = load(tmp_path / "c" / "last.pt")
    assert last["epoch"] >= 1 and last["config"]["epochs"] == 30
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".")) == []


def test_compiled_model_trains_and_saves_the_seeds_names(tmp_path, mnist):
    """--compile: torch.compile's wrapper trains the same parameters; files keep the plain names."""
    result = fit(cfg_for(tmp_path, name="compiled", compile=True, dry_run=True, limit=2000), mnist, test=False)
    saved = weights(tmp_path / "runs" / "compiled" / "last.pt")
    assert sorted(saved) == sorted(LeNet5().state_dict())
    torch.manual_seed(0)
    assert not torch.equal(saved["conv1.weight"], LeNet5().conv1.weight.detach())  # it stepped
    assert result["epochs_run"] == 1


def test_a_second_signal_stops_at_once_but_never_cuts_the_save_short():
    before = signal.getsignal(signal.SIGTERM)
    flag = train_mod.InterruptFlag()
    try:
        flag._handle(signal.SIGTERM, None)
        assert flag.requested == signal.SIGTERM  # remembered: the exit code and message name it
        flag._handle(signal.SIGINT, None)  # within the grace second: the same request, passed on
        flag._at -= flag.GRACE  # a second later ...
        flag.saving = True
        flag._handle(signal.SIGINT, None)  # ... but the stop's checkpoint is being written
        assert flag.requested == signal.SIGTERM
        flag.saving = False
        with pytest.raises(KeyboardInterrupt):
            flag._handle(signal.SIGINT, None)
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGTERM) is before


# --- the run folder under crashes, a full disk, a read-only folder and a second training -------

TINY = ["--limit", "2000", "--val-size", "500", "--epochs", "2", "--threads", "1", "--no-progress"]
COMPLETE = {"config.json", "env.json", "metrics.csv", "best.pt", "last.pt", "mnist_lenet5.pth",
            "test_metrics.json", *RUN_PLOTS}


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str, *options: str):
    """A tmpfs of `size` at `where`, unmounted afterwards; the test is skipped where none can be
    mounted (not root, no permission, no mount command)."""
    where.mkdir()
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]),
                               "tmpfs", str(where)], capture_output=True, text=True)
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def remount(where: Path, *options: str) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(where)], check=True)


def metrics_epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in RunDir(run).read_metrics()]


def test_a_full_disk_stops_training_at_the_next_step_naming_the_file(tmp_path, mnist, monkeypatch):
    """Room for epoch 1's files, not epoch 2's: the write that fails (in the background, while
    epoch 3 trains) stops training at the next step boundary, names its file, and leaves the run
    at epoch 1, whole, which resumes once there is room."""
    steps, failed_at = [0], []  # training steps started; how many had when a write failed
    write = checkpoint_mod.write

    def noting_failures(data, *paths):
        try:
            write(data, *paths)
        except OSError:
            failed_at.append(steps[0])
            raise

    def count(epoch, step):
        steps[0] += 1

    monkeypatch.setattr(checkpoint_mod, "write", noting_failures)
    with mounted_tmpfs(tmp_path / "disk", "1400k") as disk:  # epoch 1: 3 files, 1.3 MB
        cfg = from_recipe("default", out_dir=str(disk), name="full",
                          **{**QUICK, "limit": 1000, "val_size": 200, "epochs": 3})
        rows = []
        with pytest.raises(TrainingError) as info:
            fit(cfg, mnist, on_epoch=rows.append, on_step=count, test=False)
        message = str(info.value)
        run = disk / "full"
        assert re.fullmatch(rf"could not write {run}/(last\.pt|mnist_lenet5\.pth) \(No space left on device\); "
                            rf"training stopped at epoch 3, step \d+; {run}/last\.pt holds epoch 1, "
                            rf"whole: make room, then continue with: lenet5 train --resume {run}",
                            message), message
        # no step after the next boundary: at most one ended between the failure and that check
        assert len(failed_at) == 1 and steps[0] - failed_at[0] <= 1
        assert [r["epoch"] for r in rows] == [1, 2]
        assert load(run / "last.pt")["epoch"] == 1 and metrics_epochs(run) == [1]
        assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
        remount(disk, "size=4m")  # room made
        resumed = fit(cfg, mnist, resume=run / "last.pt", test=False)
        assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3] == metrics_epochs(run)


def test_a_read_only_folder_is_one_line_naming_it(tmp_path, capsys):
    with mounted_tmpfs(tmp_path / "ro", "100k") as ro:
        remount(ro, "ro")
        code = main(["train", "--data-dir", str(DATA), "--out-dir", str(ro), "--name", "x",
                     "--dry-run", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err == (f"lenet5: error: {ro / 'x'}/: Read-only file system; the run folder "
                                 "cannot be written: writing there is not allowed: check its "
                                 "permissions, or choose another --out-dir\n"), err


def test_a_second_training_with_the_same_name_is_refused(tmp_path, capsys):
    """Whoever holds the run folder (here this test, as a running training would) keeps it: a
    second training of that --name is refused at once and writes nothing there."""
    held = RunDir.create(tmp_path / "same")
    try:
        code = main(["train", "--data-dir", str(DATA), "--out-dir", str(tmp_path), "--name", "same",
                     "--dry-run", "--no-progress"])
        assert code == 1
        assert capsys.readouterr().err == (f"lenet5: error: {tmp_path / 'same'}/: another lenet5 "
                                           "train is writing this run now; wait for it to end, or "
                                           "choose another --name\n")
        assert list(held.path.iterdir()) == []
    finally:
        held.release()
    assert main(["train", "--data-dir", str(DATA), "--out-dir", str(tmp_path), "--name", "same",
                 "--dry-run", "--no-progress", "--no-test"]) == 0  # released: free again


def test_leftovers_of_a_killed_run_are_swept_and_never_counted_twice(tmp_path, mnist):
    """What a killed process can leave: a temporary, a metrics row written after last.pt, a row
    without any last.pt. A resume, or the same command again, cleans them up."""
    cfg = cfg_for(tmp_path, name="left", limit=1000, val_size=200)
    with pytest.raises(Crash):
        fit(cfg, mnist, on_epoch=crash_after_epoch_1, test=False)
    run = tmp_path / "runs" / "left"
    (run / "last.pt").unlink()  # killed before epoch 1's last.pt: the same command again
    fit(cfg, mnist, test=False)
    assert metrics_epochs(run) == [1, 2]
    with pytest.raises(Crash):
        fit(cfg, mnist, on_epoch=crash_after_epoch_1, overwrite=True, test=False)
    (run / ".best.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    rows = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(rows + [rows[-1].replace("1,", "2,", 1)]) + "\n")
    fit(cfg, mnist, resume=run / "last.pt", test=False)
    assert metrics_epochs(run) == [1, 2]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


def lenet5_train(*args: str, env: dict | None = None, kill_on: str | None = None):
    """`python -m lenet5 train ARGS`; with `kill_on`, SIGKILLed on the stdout line it starts with."""
    proc = subprocess.Popen([sys.executable, "-m", "lenet5", "train", "--data-dir", str(DATA), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LENET5_NATIVE": "0", "PYTHONUNBUFFERED": "1",
                                 **(env or {})})
    for line in proc.stdout:
        if kill_on and line.startswith(kill_on):
            proc.kill()
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


# Where a kill lands: first while an epoch's files are written (some points leave no last.pt yet,
# `#2` is epoch 2's file), then in the final test and plots. Each is the seam in files.py
# (LENET5_KILL_AT) or a line the process prints.
KILL_POINTS = [
    ["before:config.json", "after:mnist_lenet5.pth", "before:best.pt", "after:best.pt",
     "before:last.pt", "after:last.pt", "before:metrics.csv", "before:last.pt#2", "after:last.pt#2",
     "before:metrics.csv#2"],
    ["line:test accuracy", "before:test_metrics.json"],
]


def test_killed_anywhere_the_run_resumes_to_the_same_weights(tmp_path, mnist, monkeypatch, capsys):
    """kill -9 a real `lenet5 train` at two points chosen by a seeded RNG, each time going on as a
    user would: --resume, or the same command again where no epoch was saved yet. The end is the
    weights of an uninterrupted run, bit for bit, a metrics row for each epoch in last.pt, no stray
    file, and the final test and plots, which the last --resume (here in this process) finishes."""
    monkeypatch.setenv("LENET5_NATIVE", "0")  # the same arithmetic in every process
    threads = torch.get_num_threads()
    try:
        reference = tmp_path / "reference"
        fit(from_recipe("default", out_dir=str(tmp_path), name="reference", limit=2000,
                        val_size=500, epochs=2, threads=1, progress=False), mnist, test=False)

        rng = random.Random(5)
        points = [rng.choice(stage) for stage in KILL_POINTS]
        run = tmp_path / "killed"
        for point in points:
            kind, _, where = point.partition(":")
            resume = ["--resume", str(run)] if (run / "last.pt").exists() else []
            code, err = lenet5_train(*(resume or ["--out-dir", str(tmp_path), "--name", "killed", *TINY]),
                                     env={} if kind == "line" else {"LENET5_KILL_AT": point},
                                     kill_on=where if kind == "line" else None)
            assert code == -signal.SIGKILL, (points, point, err)
            last = load(run / "last.pt")["epoch"] if (run / "last.pt").exists() else 0
            assert set(metrics_epochs(run)) <= set(range(1, last + 1)), (points, point)  # none ahead
        assert load(run / "last.pt")["epoch"] == 2 and not (run / "test_metrics.json").exists()
        capsys.readouterr()
        assert main(["train", "--data-dir", str(DATA), "--resume", str(run)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert f"{run}: training is done; running the final test and plots it lacks" in capsys.readouterr().out
    assert {p.name for p in run.iterdir()} == COMPLETE, points
    assert metrics_epochs(run) == [1, 2]
    for name in ("last.pt", "best.pt"):
        for k, v in weights(reference / name).items():
            assert torch.equal(v, weights(run / name)[k]), (points, name, k)
