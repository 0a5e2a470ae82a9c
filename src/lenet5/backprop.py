"""LeNet-5's forward and backward pass written out, for training on the CPU.

Two things make a CPU step at the seed's batch of 64 slow, and neither is arithmetic:
- oneDNN's kernels for the first block (conv 1->6, max-pool, ReLU) vectorise badly over one input
  channel and six output channels: with the pool's backward, over a third of the step. The native
  kernels in conv1.cpp (built by kernels.py) run that block forward and backward ~5x faster, with
  16 images in each vector's 16 lanes.
- Autograd records and walks a graph of ~20 nodes every step. Here the rest of the network calls
  the aten kernels autograd would call, in the same order, with the same arguments.

Without the native kernels (no compiler, LENET5_NATIVE=0) the gradients are bit for bit
autograd's; with them they agree to float rounding (both are tested). It covers what CPU training
runs: LeNet5 in NHWC (channels_last), cross-entropy summed over the batch then scaled, no label
smoothing. Everything else (CUDA, DDP, --compile, label smoothing, NCHW) uses autograd.
"""

from __future__ import annotations

import ctypes

import torch

from . import kernels
from .model import LeNet5

aten = torch.ops.aten

ONE, ZERO, TWO = [1, 1], [0, 0], [2, 2]
SUM = 2  # nll_loss reduction: 0 none, 1 mean, 2 sum


def applies(model, label_smoothing: float) -> bool:
    """Whether `grads` can stand in for autograd: a plain LeNet5, on the CPU, in NHWC."""
    if type(model) is not LeNet5 or label_smoothing != 0:
        return False
    w = model.conv2.weight
    return w.device.type == "cpu" and w.is_contiguous(memory_format=torch.channels_last)


def _conv(x, w, b):
    return aten.convolution(x, w, b, ONE, ZERO, ONE, False, ZERO, 1)


def _conv_backward(g, x, w, input_grad: bool):
    return aten.convolution_backward(g, x, w, [w.shape[0]], ONE, ZERO, ONE, False, ZERO, 1,
                                     [input_grad, True, True])


def _pool_backward(g, x, indices):
    return aten.max_pool2d_with_indices_backward(g, x, TWO, TWO, ZERO, ONE, False, indices)


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _to_chunks(t: torch.Tensor) -> torch.Tensor:
    """(B, F) -> (ceil(B / 16), F, 16): conv1.cpp's layout, zero images filling the last chunk."""
    b, f = t.shape
    pad = -b % 16
    if pad:
        t = torch.cat([t, t.new_zeros(pad, f)])
    return t.view(-1, 16, f).transpose(1, 2).contiguous()


def _from_chunks(t: torch.Tensor, b: int) -> torch.Tensor:
    """(chunks, F, 16) -> (b, F): back to one row per image."""
    return t.transpose(1, 2).reshape(-1, t.shape[1])[:b]


class _Block1:
    """conv1 -> max-pool -> ReLU, forward then backward: native kernels, or aten's as autograd."""

    def __init__(self, lib, x, weight, bias):
        self.lib, self.x, self.weight = lib, x, weight
        b = x.shape[0]
        if lib is None:
            self.c1 = _conv(x, weight, bias)  # (B, 6, 24, 24)
            p1, self.i1 = aten.max_pool2d_with_indices(self.c1, TWO, TWO)
            self.out = aten.relu(p1)  # (B, 6, 12, 12)
            return
        self.xk = _to_chunks(x.reshape(b, 28 * 28))
        self.outk = torch.empty(self.xk.shape[0], 12 * 12 * 6, 16)
        self.argk = torch.empty_like(self.outk)
        lib.conv1_pool_relu_forward(_ptr(self.xk), _ptr(weight), _ptr(bias), _ptr(self.outk),
                                    _ptr(self.argk), self.xk.shape[0])
        # rows in (i, j, c) order are NHWC: (B, 6, 12, 12) in channels_last
        self.out = _from_chunks(self.outk, b).view(b, 12, 12, 6).permute(0, 3, 1, 2)

    def backward(self, g: torch.Tensor):
        """g: the gradient at the block's output; returns (weight's, bias's)."""
        if self.lib is None:
            g = _pool_backward(aten.threshold_backward(g, self.out, 0), self.c1, self.i1)
            return _conv_backward(g, self.x, self.weight, False)[1:]
        b = g.shape[0]
        gk = _to_chunks(g.permute(0, 2, 3, 1).reshape(b, 12 * 12 * 6))
        dw, db = torch.zeros(6, 25), torch.zeros(6)
        self.lib.conv1_pool_relu_backward(_ptr(self.xk), _ptr(gk), _ptr(self.outk), _ptr(self.argk),
                                          _ptr(dw), _ptr(db), self.xk.shape[0])
        return dw.view(self.weight.shape), db


def grads(model: LeNet5, x: torch.Tensor, y: torch.Tensor, scale: float):
    """Forward and backward for `loss = cross_entropy(model(x), y, reduction="sum") * scale`.

    x: (B, 1, 28, 28) channels_last. Returns (loss before `scale`, logits, gradients in the order
    of `model.parameters()`), as autograd would compute them.
    """
    m = model
    with torch.no_grad():
        # forward, saving what the backward reads (as autograd would)
        block1 = _Block1(kernels.load(), x, m.conv1.weight, m.conv1.bias)
        r1 = block1.out  # (B, 6, 12, 12)
        c2 = _conv(r1, m.conv2.weight, m.conv2.bias)  # (B, 16, 8, 8)
        p2, i2 = aten.max_pool2d_with_indices(c2, TWO, TWO)
        r2 = aten.relu(p2)  # (B, 16, 4, 4)
        f = r2.flatten(1)  # (B, 256)
        h1 = aten.relu(aten.addmm(m.fc1.bias, f, m.fc1.weight.t()))  # (B, 120)
        h2 = aten.relu(aten.addmm(m.fc2.bias, h1, m.fc2.weight.t()))  # (B, 84)
        logits = aten.addmm(m.fc3.bias, h2, m.fc3.weight.t())  # (B, 10)
        logp = aten._log_softmax(logits, 1, False)
        loss, total_weight = aten.nll_loss_forward(logp, y, None, SUM, -100)

        # backward, from the loss down
        g = aten.nll_loss_backward(torch.full((), scale), logp, y, None, SUM, -100, total_weight)
        g = aten._log_softmax_backward_data(g, logp, 1, logp.dtype)  # (B, 10)
        w5, b5 = g.t().mm(h2), g.sum(0)
        g = aten.threshold_backward(g.mm(m.fc3.weight), h2, 0)  # (B, 84)
        w4, b4 = g.t().mm(h1), g.sum(0)
        g = aten.threshold_backward(g.mm(m.fc2.weight), h1, 0)  # (B, 120)
        w3, b3 = g.t().mm(f), g.sum(0)
        g = g.mm(m.fc1.weight).view(r2.shape)  # (B, 16, 4, 4)
        g = _pool_backward(aten.threshold_backward(g, r2, 0), c2, i2)  # (B, 16, 8, 8)
        g, w2, b2 = _conv_backward(g, r1, m.conv2.weight, True)  # (B, 6, 12, 12)
        w1, b1 = block1.backward(g)
    return loss, logits, [w1, b1, w2, b2, w3, b3, w4, b4, w5, b5]
