"""One training step (forward, loss, backward, update), written once for every device.

The SGD update is torch.optim.SGD's own multi-tensor arithmetic, op for op (a test compares them
bit for bit), without the optimizer's per-call Python: 3.5% of a CPU epoch at batch 64. The
optimizer object still owns the state (momentum buffers, lr, momentum), so schedules, checkpoints
and resume are unchanged; Adam-style optimizers take the plain `optimizer.step()`.

Which forward and backward a step runs is fast/choose.py's choice (a `Path`): on the CPU, a plain
LeNet5 in NHWC takes them from fast/cpu_step.py (lenet5's native convolutions or torch's, and no
autograd graph; the gradients autograd's to float rounding), anything else autograd's.

Every CUDA step reads lr and momentum from device tensors refreshed when the schedule changes them,
so a plain step does the same arithmetic as the recorded one of fast/cuda_graph.py (GraphedStep):
`--cuda-graphs` changes the speed, not the result.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from .fast import choose, cpu_step

Number = float | torch.Tensor


def sgd_update(optimizer: torch.optim.SGD, lr: Number, momentum: Number) -> None:
    """Apply SGD to the parameters' `.grad`, exactly as `optimizer.step()` (foreach) would.

    lr and momentum are the group's values as floats, or 0-dim tensors on the parameters' device:
    then no value is baked into the kernels, so a CUDA graph can record the update.
    """
    # what LR schedulers check for, to warn when step() never ran
    optimizer._opt_called = True  # type: ignore[attr-defined]  # torch's private flag, set by step()
    group = optimizer.param_groups[0]
    params = group["params"]
    grads: list[torch.Tensor] | tuple[torch.Tensor, ...] = [p.grad for p in params]
    tensors = isinstance(lr, torch.Tensor)
    if group["weight_decay"] != 0:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    if (group["momentum"] if tensors else momentum) != 0:  # tensors: recorded once, for every step
        state = optimizer.state
        bufs = [state[p].get("momentum_buffer") for p in params]
        if all(b is not None for b in bufs):
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
        else:  # the first step: each buffer starts as a copy of its gradient, as in torch
            for i, p in enumerate(params):
                if bufs[i] is None:
                    bufs[i] = state[p]["momentum_buffer"] = grads[i].detach().clone()
                else:
                    bufs[i].mul_(momentum).add_(grads[i], alpha=1 - group["dampening"])
        if group["nesterov"]:
            if isinstance(momentum, torch.Tensor):  # as `tensors`: lr and momentum are of one kind
                torch._foreach_add_(grads, torch._foreach_mul(bufs, momentum))
            else:
                torch._foreach_add_(grads, bufs, alpha=momentum)
        else:
            grads = bufs
    if isinstance(lr, torch.Tensor):  # `tensors`, said so that the type checker follows
        torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
    else:
        torch._foreach_add_(params, grads, alpha=-lr)


def outlier_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed over the non-digit rows (label -100): the cross-entropy from equal probabilities,
    -mean(log_softmax(z)) = logsumexp(z) - mean(z). Its minimum says "none of the ten"."""
    return ((torch.logsumexp(logits.float(), 1) - logits.float().mean(1)) * (y < 0)).sum()


class TrainStep:
    """Calls `model` on a batch, backpropagates, updates, and sums loss and hits on the device.

    `loss_sum` and `correct` are running sums over the epoch (no host sync per step); `reset()`
    clears them. Under torchrun each process passes its own share of a global batch of
    `global_n` images: the loss is scaled so that DDP's average is the global batch mean.
    """

    def __init__(
        self,
        model,
        optimizer: torch.optim.Optimizer,
        label_smoothing: float = 0.0,
        world: int = 1,
        path: choose.Path | None = None,
        outlier_weight: float = 0.0,
    ):
        self.model, self.optimizer = model, optimizer
        self.group = optimizer.param_groups[0]
        self.params = list(self.group["params"])
        self.plain_sgd = (
            type(optimizer) is torch.optim.SGD
            and len(optimizer.param_groups) == 1
            and not self.group["maximize"]
        )
        self.label_smoothing, self.world = label_smoothing, world
        self.outlier_weight = outlier_weight  # non-digit rows (label -100) pulled to 1/10 each
        device = self.params[0].device
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        # lr and momentum as the update reads them: Python floats (the CPU: torch.optim.SGD's own
        # arithmetic, bit for bit), or 0-dim device tensors (CUDA: the arithmetic a graph records)
        self.on_device = self.plain_sgd and device.type == "cuda"
        self.lr = torch.zeros((), device=device)
        self.momentum = torch.zeros((), device=device)
        self.values = (None, None)  # the (lr, momentum) last written to the device tensors
        # the CPU's NHWC LeNet5: native convolutions or torch's, no autograd graph (fast/cpu_step.py)
        self.path = path or choose.for_training(model, device, label_smoothing=label_smoothing, world=world)
        self.written_out = self.path.name in ("native", "written-out")

    def reset(self, running: dict | None = None) -> int:
        """Start the epoch's sums at zero, or where an interrupted epoch left them; return the
        images they already count."""
        self.loss_sum.fill_(running["loss_sum"] if running else 0.0)
        self.correct.fill_(int(running["correct"]) if running else 0)
        return int(running["seen"]) if running else 0

    def sums(self, seen: int) -> torch.Tensor:
        """(loss sum, correct, seen) as one tensor, ready to add up across processes."""
        return torch.stack(
            [
                self.loss_sum,
                self.correct.to(self.loss_sum.dtype),
                torch.tensor(float(seen), device=self.loss_sum.device),
            ]
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_n: int) -> None:
        self._step(x, y, global_n, *self.hyper())

    def hyper(self) -> tuple[Number, Number]:
        """This step's (lr, momentum): floats, or the device tensors, refreshed if the schedule moved."""
        if not self.plain_sgd:
            return self.group["lr"], 0.0
        values = (self.group["lr"], self.group["momentum"])
        if not self.on_device:
            return values
        if values != self.values:  # onecycle: every step; StepLR: once an epoch at most
            self.lr.fill_(values[0])
            self.momentum.fill_(values[1])
            self.values = values
        return self.lr, self.momentum

    def _step(self, x, y, global_n: int, lr: Number, momentum: Number) -> None:
        if self.written_out:
            loss, logits, grads = cpu_step.grads(
                self.model, x, y, self.world / global_n, self.path.kernels, self.outlier_weight
            )
            loss = loss * (self.world / global_n)
            for p, g in zip(self.model.parameters(), grads, strict=False):
                p.grad = g
        else:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, reduction="sum", label_smoothing=self.label_smoothing) * (
                self.world / global_n
            )
            for p in self.params:
                p.grad = None
            if self.outlier_weight:
                (loss + outlier_loss(logits, y) * (self.outlier_weight * self.world / global_n)).backward()
            else:
                loss.backward()
        with torch.no_grad():
            if self.plain_sgd:
                sgd_update(cast(torch.optim.SGD, self.optimizer), lr, momentum)  # plain_sgd: an SGD
            else:
                self.optimizer.step()
            self.loss_sum += loss * (global_n / self.world)
            self.correct += (logits.argmax(1) == y).sum()
