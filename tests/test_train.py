"""Training on real MNIST subsets: it learns, resumes exactly, stops cleanly, fails clearly."""

import signal

import pytest
import torch

from conftest import Crash, crash_after_epoch_1
from lenet5 import train as train_mod
from lenet5.checkpoint import load, load_model
from lenet5.config import from_recipe
from lenet5.errors import ConfigError, TrainingError
from lenet5.evaluate import evaluate
from lenet5.model import LeNet5
from lenet5.train import fit

QUICK = dict(limit=6000, val_size=1000, epochs=2, batch_size=128, progress=False, threads=0)


def cfg_for(tmp_path, **kw):
    return from_recipe("default", out_dir=str(tmp_path / "runs"), **{**QUICK, **kw})


def weights(path):
    return load(path)["model"]


def test_short_run_learns_and_writes_its_run_folder(tmp_path, mnist):
    cfg = cfg_for(tmp_path, limit=12000, epochs=3, name="learn")
    rows = []
    result = fit(cfg, mnist, on_epoch=rows.append)
    run = tmp_path / "runs" / "learn"
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "best.pt", "last.pt",
                                               "mnist_lenet5.pth"}
    assert len(rows) == 3 and len((run / "metrics.csv").read_text().splitlines()) == 4
    model, obj = load_model(run / "best.pt")
    assert obj["config"]["limit"] == 12000 and obj["normalize"] == {"mean": 0.1307, "std": 0.3081}
    held_out = evaluate(model, mnist.test_images[:2000], mnist.test_labels[:2000], 0.1307, 0.3081)
    assert held_out["accuracy"] > 0.95, held_out["accuracy"]
    assert result["best"]["epoch"] == max(rows, key=lambda r: -r["val_loss"])["epoch"]
    # the seed's file: a plain state_dict that the seed's torch.load + load_state_dict reads
    from seed_code import SeedLeNet5

    seed_model = SeedLeNet5()
    seed_model.load_state_dict(torch.load(run / "mnist_lenet5.pth"))


def test_resume_ends_with_the_same_weights(tmp_path, mnist):
    full = fit(cfg_for(tmp_path, name="full", epochs=3), mnist)
    with pytest.raises(Crash):
        fit(cfg_for(tmp_path, name="part", epochs=3), mnist, on_epoch=crash_after_epoch_1)
    part_last = tmp_path / "runs" / "part" / "last.pt"
    assert load(part_last)["epoch"] == 1
    resumed = fit(cfg_for(tmp_path, name="part", epochs=3), mnist, resume=part_last)
    for k, v in weights(tmp_path / "runs" / "full" / "last.pt").items():
        assert torch.equal(v, weights(part_last)[k]), k
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][-1]["val_loss"] == full["history"][-1]["val_loss"]


def test_ctrl_c_mid_epoch_saves_last_and_resume_is_exact(tmp_path, mnist, monkeypatch):
    fit(cfg_for(tmp_path, name="full"), mnist)

    class CtrlCAtStep20(train_mod.InterruptFlag):
        checks = 0

        @property
        def requested(self):
            CtrlCAtStep20.checks += 1
            return signal.SIGINT if CtrlCAtStep20.checks == 20 + 1 else 0  # epoch 1, step 20

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(train_mod, "InterruptFlag", CtrlCAtStep20)
    with pytest.raises(train_mod.Interrupted) as info:
        fit(cfg_for(tmp_path, name="cut"), mnist)
    last = load(info.value.path)
    assert (last["epoch"], last["step"]) == (0, 20)
    monkeypatch.undo()
    fit(cfg_for(tmp_path, name="cut"), mnist, resume=info.value.path)
    for k, v in weights(tmp_path / "runs" / "full" / "last.pt").items():
        assert torch.equal(v, weights(info.value.path)[k]), k


def test_nan_loss_stops_with_a_clear_message(tmp_path, mnist):
    cfg = cfg_for(tmp_path, name="nan", lr=1e6, schedule="constant", epochs=1)
    with pytest.raises(TrainingError, match="NaN/inf .* lower --lr"):
        fit(cfg, mnist)


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
    result = fit(cfg_for(tmp_path, name="compiled", compile=True, dry_run=True, limit=2000), mnist)
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
