"""The CPU step written out: autograd's gradients, on torch's kernels and on the native kernels
built for every ISA level this CPU runs (x86-64-v2, -v3, -v4 on an AVX-512 machine)."""

import pytest
import torch
import torch.nn.functional as F

from lenet5.fast import cpu_step as backprop, native as kernels
from lenet5.data import normalize
from lenet5.model import LeNet5
from lenet5.step import TrainStep
from lenet5.data import MEAN, STD

CL = torch.channels_last
LEVELS = kernels.levels()


@pytest.fixture(params=LEVELS)
def built(request):
    """The native kernels for one ISA level, built (once per machine) and loaded."""
    assert kernels.compiler(), "a C++ compiler (c++, g++ or clang++) builds the native kernels"
    k = kernels.load(request.param)
    assert k is not None, kernels.status(request.param)
    return k


def autograd_grads(model, x, y, scale):
    model.zero_grad()
    loss = F.cross_entropy(model(x), y, reduction="sum") * scale
    loss.backward()
    return loss, [p.grad.clone() for p in model.parameters()]


def digits(mnist, n):
    """Real digits: wide flat background, so max-pool windows tie exactly, as in training."""
    return normalize(mnist.train_images[:n]).contiguous(memory_format=CL), mnist.train_labels[:n]


@pytest.mark.parametrize("n", [64, 37, 1])
def test_torch_kernels_give_autograds_gradients_bit_for_bit(mnist, n):
    torch.manual_seed(0)
    model = LeNet5().to(memory_format=CL)
    x, y = digits(mnist, n)
    loss, expected = autograd_grads(model, x, y, 1 / n)
    raw, logits, got = backprop.grads(model, x, y, 1 / n, None)
    assert torch.equal(raw * (1 / n), loss)
    assert torch.equal(logits, model(x))
    for name, e, g in zip([k for k, _ in model.named_parameters()], expected, got):
        assert torch.equal(e, g), name


@pytest.mark.parametrize("n", [64, 37, 1])
def test_native_kernels_agree_with_autograd(mnist, built, n):
    """Float sums in another order: within 1e-5 of the largest value, at every level."""
    torch.manual_seed(1)
    model = LeNet5().to(memory_format=CL)
    x, y = digits(mnist, n)
    loss, expected = autograd_grads(model, x, y, 1 / n)
    raw, logits, got = backprop.grads(model, x, y, 1 / n, built)
    assert torch.allclose(raw * (1 / n), loss, rtol=1e-5)
    assert torch.allclose(logits, model(x), atol=1e-5)
    for name, e, g in zip([k for k, _ in model.named_parameters()], expected, got):
        assert e.shape == g.shape, name
        assert (e - g).abs().max() <= 1e-5 * e.abs().max(), name


def test_native_kernels_in_a_forked_process_run_on_one_thread(mnist, built, monkeypatch):
    assert built.threads() == torch.get_num_threads()
    monkeypatch.setattr(built, "pid", -1)  # as in a child forked after the kernels ran
    assert built.threads() == 1
    model = LeNet5().to(memory_format=CL)
    x, y = digits(mnist, 48)
    _, expected = autograd_grads(model, x, y, 1 / 48)
    _, _, got = backprop.grads(model, x, y, 1 / 48, built)
    for e, g in zip(expected, got):
        assert (e - g).abs().max() <= 1e-5 * e.abs().max()


def test_native_max_pool_ties_go_to_the_first_position_as_in_torch(built):
    """A flat image ties every window: torch gives each window's gradient to its top-left cell."""
    model = LeNet5().to(memory_format=CL)
    x = torch.full((16, 1, 28, 28), -0.42).contiguous(memory_format=CL)
    y = torch.arange(16) % 10
    _, expected = autograd_grads(model, x, y, 1.0)
    _, _, got = backprop.grads(model, x, y, 1.0, built)
    assert torch.allclose(got[0], expected[0], rtol=1e-4, atol=1e-6)  # conv1.weight


def test_training_steps_use_it_only_where_it_applies():
    model = LeNet5()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert not TrainStep(model, sgd).written_out  # NCHW
    model = model.to(memory_format=CL)
    assert TrainStep(model, sgd).written_out
    assert not TrainStep(model, sgd, label_smoothing=0.1).written_out
    assert not backprop.applies(torch.nn.Sequential(model), 0.0)  # a wrapper (DDP, compile)


def test_a_model_with_forward_hooks_runs_its_own_forward(mnist):
    """Hooks (feature maps, a user's own) see every layer: the written-out path steps aside."""
    from lenet5.metrics import predict_logits

    model = LeNet5().to(memory_format=CL)
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    assert not backprop.applies(model, 0.0)
    predict_logits(model, mnist.test_images[:10], MEAN, STD)
    assert seen == [torch.Size([10, 16, 8, 8])]
    handle.remove()
    assert backprop.applies(model, 0.0)



def test_cpu_inference_runs_the_native_forward_and_agrees_with_the_model(mnist, monkeypatch):
    from lenet5.metrics import predict_logits

    monkeypatch.setenv("LENET5_NATIVE", "1")
    torch.manual_seed(2)
    model = LeNet5()
    images = mnist.test_images[:300]
    with torch.no_grad():
        expected = model(normalize(images))
    from lenet5.fast.forward import Forward

    calls = []
    native = Forward._native
    monkeypatch.setattr(Forward, "_native", lambda self, *a: calls.append(self.kernels) or native(self, *a))
    got = predict_logits(model, images, MEAN, STD, batch_size=128)
    assert calls == [kernels.load()]  # the reader's whole forward, natively, in one call
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
