"""LeNet-5's forward and backward pass written out, for training (and scoring) on the CPU.

Two things made a CPU step at the seed's batch of 64 slow, and neither was arithmetic:
- oneDNN's kernels vectorise badly over LeNet-5's 1, 6 and 16 channels: the convolutions and
  their max-pools were most of a step. The native kernels in convs.cpp (built by native.py) run
  the whole convolution stack forward and backward with one image in each lane of a vector.
- Autograd records and walks a graph of ~20 nodes every step. Here the fully connected layers and
  the loss call the aten kernels autograd would call, in the same order, with the same arguments.

choose.py decides whether the native kernels or aten's run the convolutions and passes them in
(`kernels=None`: aten's). On aten's kernels the gradients are bit for bit autograd's; on the native
ones they agree to float rounding, at every ISA level built (both are tested).
It covers what CPU training runs: a float32 LeNet5 in NHWC (channels_last), cross-entropy summed
over the batch then scaled, no label smoothing. Everything else (CUDA, DDP, --compile, label
smoothing, NCHW) uses autograd.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from ..model import LeNet5
from .native import Kernels

aten = torch.ops.aten

ONE, ZERO, TWO = [1, 1], [0, 0], [2, 2]
SUM = 2  # nll_loss reduction: 0 none, 1 mean, 2 sum


def applies(model, label_smoothing: float) -> bool:
    """Whether `grads` can stand in for autograd: a plain float32 LeNet5, on the CPU, in NHWC,
    with no forward hooks (they would not run)."""
    if type(model) is not LeNet5 or label_smoothing != 0 or _hooked(model):
        return False
    w = model.conv2.weight
    return (
        w.device.type == "cpu"
        and w.dtype == torch.float32
        and w.is_contiguous(memory_format=torch.channels_last)
    )


def _hooked(model: torch.nn.Module) -> bool:
    from torch.nn.modules import module as nn_module

    return bool(nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in model.modules()
    )


def _conv(x, w, b):
    return aten.convolution(x, w, b, ONE, ZERO, ONE, False, ZERO, 1)


def _conv_backward(g, x, w, input_grad: bool):
    return aten.convolution_backward(
        g, x, w, [w.shape[0]], ONE, ZERO, ONE, False, ZERO, 1, [input_grad, True, True]
    )


def _pool_backward(g, x, indices):
    return aten.max_pool2d_with_indices_backward(g, x, TWO, TWO, ZERO, ONE, False, indices)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class Convs:
    """conv1 -> pool -> ReLU -> conv2 -> pool -> ReLU -> flatten, forward then backward.

    The native kernels (convs.cpp), or aten's (`kernels=None`), called as autograd calls them.
    """

    def __init__(self, kernels: Kernels | None, model: LeNet5, x: torch.Tensor):
        self.kernels, self.model, self.x = kernels, model, x
        self.n = n = x.shape[0]
        m = model
        if kernels is None:
            self.c1 = _conv(x, m.conv1.weight, m.conv1.bias)  # (B, 6, 24, 24)
            p1, self.i1 = aten.max_pool2d_with_indices(self.c1, TWO, TWO)
            self.r1 = aten.relu(p1)  # (B, 6, 12, 12)
            self.c2 = _conv(self.r1, m.conv2.weight, m.conv2.bias)  # (B, 16, 8, 8)
            p2, self.i2 = aten.max_pool2d_with_indices(self.c2, TWO, TWO)
            self.r2 = aten.relu(p2)  # (B, 16, 4, 4)
            self.out = self.r2.flatten(1)  # (B, 256)
            return
        lanes = kernels.lanes  # images per chunk: one per lane of the build's vector
        chunks = (n + lanes - 1) // lanes
        self.w2 = m.conv2.weight.contiguous()  # (16, 6, 5, 5) in NCHW order, as the kernels read it
        self.xk = torch.empty(chunks, 784, lanes)
        self.r1, self.arg1 = torch.empty(chunks, 864, lanes), torch.empty(chunks, 864, lanes)
        self.r2, self.arg2 = torch.empty(chunks, 256, lanes), torch.empty(chunks, 256, lanes)
        self.out = torch.empty(n, 256)
        self.rows = x.reshape(n, 28 * 28).contiguous()  # one image a row (a view for NHWC input)
        assert m.conv1.bias is not None and m.conv2.bias is not None  # a LeNet5's convolutions have them
        with record_function("lenet5::convs_forward"):  # a row of its own in torch.profiler
            kernels.forward(
                _ptr(self.rows),
                n,
                _ptr(m.conv1.weight),
                _ptr(m.conv1.bias),
                _ptr(self.w2),
                _ptr(m.conv2.bias),
                _ptr(self.xk),
                _ptr(self.r1),
                _ptr(self.arg1),
                _ptr(self.r2),
                _ptr(self.arg2),
                _ptr(self.out),
            )

    def backward(self, g: torch.Tensor) -> list[torch.Tensor]:
        """g: (B, 256), the gradient at the flattened output; returns conv1's and conv2's."""
        m = self.model
        if self.kernels is None:
            g = g.view(self.r2.shape)  # (B, 16, 4, 4)
            g = _pool_backward(aten.threshold_backward(g, self.r2, 0), self.c2, self.i2)
            g, w2, b2 = _conv_backward(g, self.r1, m.conv2.weight, True)  # (B, 6, 12, 12)
            g = _pool_backward(aten.threshold_backward(g, self.r1, 0), self.c1, self.i1)
            _, w1, b1 = _conv_backward(g, self.x, m.conv1.weight, False)
            return [w1, b1, w2, b2]
        chunks, lanes = self.xk.shape[0], self.xk.shape[2]
        g = g.contiguous()
        scratch = [torch.empty(chunks, size, lanes) for size in (256, 1024, 864)]  # alive until done
        grads = [torch.zeros(6, 1, 5, 5), torch.zeros(6), torch.zeros(16, 6, 5, 5), torch.zeros(16)]
        with record_function("lenet5::convs_backward"):
            self.kernels.backward(
                _ptr(g),
                self.n,
                _ptr(self.w2),
                _ptr(self.xk),
                _ptr(self.r1),
                _ptr(self.arg1),
                _ptr(self.r2),
                _ptr(self.arg2),
                *map(_ptr, scratch),
                *map(_ptr, grads),
            )
        return grads


def _fully_connected(m: LeNet5, f: torch.Tensor):
    """fc1 -> ReLU -> fc2 -> ReLU -> fc3 on the flattened features f (B, 256): (h1, h2, logits)."""
    h1 = aten.relu(aten.addmm(m.fc1.bias, f, m.fc1.weight.t()))  # (B, 120)
    h2 = aten.relu(aten.addmm(m.fc2.bias, h1, m.fc2.weight.t()))  # (B, 84)
    return h1, h2, aten.addmm(m.fc3.bias, h2, m.fc3.weight.t())  # (B, 10)


def grads(
    model: LeNet5,
    x: torch.Tensor,
    y: torch.Tensor,
    scale: float,
    kernels: Kernels | None,
    outlier_weight: float = 0.0,
):
    """Forward and backward for `loss = cross_entropy(model(x), y, reduction="sum") * scale`,
    plus `outlier_weight * scale` times each non-digit row's cross-entropy to equal probabilities
    (rows labelled -100, which the cross-entropy itself ignores; see step.outlier_loss).

    x: (B, 1, 28, 28) channels_last. Returns (the digits' loss before `scale`, logits, gradients in
    the order of `model.parameters()`), as autograd would compute them.
    """
    m = model
    with torch.no_grad():
        # forward, saving what the backward reads (as autograd would)
        convs = Convs(kernels, m, x)
        f = convs.out  # (B, 256)
        h1, h2, logits = _fully_connected(m, f)
        logp = aten._log_softmax(logits, 1, False)
        loss, total_weight = aten.nll_loss_forward(logp, y, None, SUM, -100)

        # backward, from the loss down
        g = aten.nll_loss_backward(torch.full((), scale), logp, y, None, SUM, -100, total_weight)
        g = aten._log_softmax_backward_data(g, logp, 1, logp.dtype)  # (B, 10)
        if outlier_weight:  # d/dz of -mean(log_softmax(z)) is softmax(z) - 1/10
            rows = (y < 0).unsqueeze(1).to(g.dtype) * (scale * outlier_weight)
            g = g + rows * (logp.exp() - 0.1)
        w5, b5 = g.t().mm(h2), g.sum(0)
        g = aten.threshold_backward(g.mm(m.fc3.weight), h2, 0)  # (B, 84)
        w4, b4 = g.t().mm(h1), g.sum(0)
        g = aten.threshold_backward(g.mm(m.fc2.weight), h1, 0)  # (B, 120)
        w3, b3 = g.t().mm(f), g.sum(0)
        w1, b1, w2, b2 = convs.backward(g.mm(m.fc1.weight))  # from (B, 256)
    return loss, logits, [w1, b1, w2, b2, w3, b3, w4, b4, w5, b5]
