"""The training step: its SGD update is torch.optim.SGD's, bit for bit; the graph form agrees."""

import pytest
import torch

from conftest import Crash, crash_after_epoch_1
from lenet5 import step as step_mod
from lenet5 import training as train_mod
from lenet5.fast import choose
from lenet5.checkpoint import load
from lenet5.config import from_recipe
from lenet5.model import LeNet5
from lenet5.fast.cuda_graph import GraphedStep
from lenet5.step import TrainStep, sgd_update
from lenet5.training import fit, make_optimizer, make_scheduler, use_channels_last, use_cuda_graphs

STEPS = 12


def batches(n=STEPS, size=32):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def setup(cfg):
    torch.manual_seed(0)
    model = LeNet5()
    optimizer = make_optimizer(cfg, model)
    scheduler, _ = make_scheduler(cfg, optimizer, STEPS)
    return model, optimizer, scheduler


def plain_loop(cfg):
    """The loop every PyTorch tutorial writes: backward, then optimizer.step()."""
    model, optimizer, scheduler = setup(cfg)
    for x, y in batches():
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum") * (1 / len(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer


CASES = {
    "default (nesterov, weight decay, onecycle momentum)": dict(recipe="default"),
    "seed (plain momentum, StepLR)": dict(recipe="seed"),
    "no momentum": dict(recipe="default", schedule="constant", momentum=0.0, nesterov=False),
    "adamw (optimizer.step)": dict(recipe="default", optimizer="adamw", lr=1e-3),
}


@pytest.mark.parametrize("case", CASES)
def test_step_is_the_plain_loop_bit_for_bit(case):
    kw = dict(CASES[case])
    cfg = from_recipe(kw.pop("recipe"), **kw)
    expected_model, expected_opt = plain_loop(cfg)
    model, optimizer, scheduler = setup(cfg)
    step = TrainStep(model, optimizer)
    for x, y in batches():
        step(x, y, len(y))
        scheduler.step()
    for (name, a), b in zip(expected_model.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name
    for a, b in zip(expected_opt.state.values(), optimizer.state.values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    assert step.correct.item() >= 0 and step.loss_sum.item() > 0


def test_update_from_device_tensors_matches_floats():
    """The form a CUDA graph records (lr and momentum read from tensors) computes the same step."""
    cfg = from_recipe("default")
    runs = []
    for as_tensors in (False, True):
        model, optimizer, scheduler = setup(cfg)
        group = optimizer.param_groups[0]
        for x, y in batches():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr, momentum = group["lr"], group["momentum"]
            if as_tensors:
                lr, momentum = torch.tensor(lr), torch.tensor(momentum)
            with torch.no_grad():
                sgd_update(optimizer, lr, momentum)
            scheduler.step()
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(runs[0], setup(cfg)[0].fc1.weight.flatten())  # it did train
    assert torch.allclose(runs[0], runs[1], rtol=1e-5, atol=1e-7)


def test_reset_starts_from_zero_or_from_an_interrupted_epoch():
    model, optimizer, _ = setup(from_recipe("default"))
    step = TrainStep(model, optimizer)
    step(*batches(1)[0], 32)
    step.reset()
    assert step.loss_sum.item() == 0 and step.correct.item() == 0
    step.reset({"loss_sum": 1.5, "correct": 7, "seen": 9})
    assert step.loss_sum.item() == 1.5 and step.correct.item() == 7


@pytest.mark.parametrize("device, overrides, world, graphs", [
    ("cuda", {}, 1, True),  # the default on a GPU
    ("cuda", {"cuda_graphs": False}, 1, False),
    ("cpu", {}, 1, False),
    ("cuda", {"optimizer": "adamw"}, 1, False),  # its step() is not recorded
    ("cuda", {}, 2, False),  # torchrun: DDP's all-reduce runs outside
    ("cuda", {"compile": True}, 1, False),  # torch.compile takes the whole step itself
])
def test_cuda_graphs_apply_where_one_fixed_step_can_be_recorded(device, overrides, world, graphs):
    assert use_cuda_graphs(from_recipe("default", **overrides), torch.device(device), world) is graphs


def test_channels_last_on_the_cpu_only():
    cfg = from_recipe("default")
    assert use_channels_last(cfg, torch.device("cpu"))
    assert not use_channels_last(cfg, torch.device("cuda"))
    assert not use_channels_last(from_recipe("default", channels_last=False), torch.device("cpu"))


class ReplayOnCPU(GraphedStep):
    """GraphedStep with its two CUDA calls stood in for, so its logic runs in CI: warm-up steps run
    in place, and recording keeps a function that runs the recorded step over the same fixed
    buffers (x, y, lr, momentum), which is what a replay reads. tests/test_cuda.py runs the real one."""

    recorded = 0

    def _warm_up(self, global_n):
        TrainStep.__call__(self, self.x, self.y, global_n)

    def _record(self):
        ReplayOnCPU.recorded += 1
        return lambda: self._step(self.x, self.y, self.batch_size, self.lr, self.momentum)


def test_graph_mode_trains_and_resumes_as_plain_steps(tmp_path, mnist, monkeypatch):
    monkeypatch.setattr(train_mod, "GraphedStep", ReplayOnCPU)
    # The update reads lr and momentum from the step's tensors as floats: the float and tensor forms
    # round differently where a CPU fuses a multiply-add (test_update_from_device_tensors_matches_floats
    # checks the two forms), and over 40 steps that last bit grows past any fair tolerance. What is
    # checked here is the rest: the values the schedule writes, the buffers, the short batch, resume.
    monkeypatch.setattr(step_mod, "sgd_update", lambda opt, lr, m: sgd_update(opt, float(lr), float(m)))
    # plain steps as on CUDA: torch's kernels through autograd, the arithmetic the graph records
    monkeypatch.setattr(choose.cpu_step, "applies", lambda model, label_smoothing: False)
    monkeypatch.setattr(train_mod, "use_cuda_graphs", lambda cfg, device, world: cfg.cuda_graphs)

    def cfg(name, graphs):  # 2,500 training images: 19 full batches of 128 and a short one
        return from_recipe("default", limit=3000, val_size=500, epochs=2, batch_size=128,
                           progress=False, out_dir=str(tmp_path), name=name, cuda_graphs=graphs)

    plain = fit(cfg("plain", False), mnist, test=False)
    graphs = fit(cfg("graphs", True), mnist, test=False)
    assert ReplayOnCPU.recorded == 1  # once per run, not per epoch
    with pytest.raises(Crash):
        fit(cfg("part", True), mnist, on_epoch=crash_after_epoch_1, test=False)
    fit(cfg("part", True), mnist, resume=tmp_path / "part" / "last.pt", test=False)
    a, b, c = (load(tmp_path / name / "last.pt")["model"] for name in ("plain", "graphs", "part"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
        assert torch.equal(b[k], c[k]), k  # resumed: warm-up steps do the recorded arithmetic
    for p, g in zip(plain["history"], graphs["history"]):
        assert p["train_acc"] == g["train_acc"]  # every step counted, the short one included
        assert p["train_loss"] == g["train_loss"]
    assert graphs["history"][1]["train_loss"] < graphs["history"][0]["train_loss"]
