"""CUDA graphs: a whole training step recorded once and replayed with one launch per batch.

At LeNet-5's size a GPU step is mostly launch and Python overhead, not arithmetic (`--cuda-graphs`,
on by default with SGD in one process). The recorded step is TrainStep's own (step.py), reading lr
and momentum from device tensors, so plain and recorded steps do the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..step import TrainStep
from .choose import Path


class GraphedStep(TrainStep):
    """CUDA, plain SGD, one process: full batches replay one recorded graph of the whole step.

    The first few full batches run eagerly on a side stream (cuDNN picks its algorithms, cuBLAS
    sets up, the momentum buffers appear), as torch's CUDA graph notes advise; they are real
    training steps with the recorded one's arithmetic. A short last batch runs eagerly.
    """

    WARMUP = 3

    def __init__(
        self,
        model,
        optimizer: torch.optim.SGD,
        batch_size: int,
        channels_last: bool,
        label_smoothing: float = 0.0,
        outlier_weight: float = 0.0,
        outlier_rows: int = 0,
    ):
        super().__init__(
            model,
            optimizer,
            label_smoothing,
            path=Path("cuda-graphs", why="the whole step replayed as one CUDA graph"),
            outlier_weight=outlier_weight,
        )
        device = self.params[0].device
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_size = batch_size  # digits a full step holds; non-digit pictures come after them
        self.rows = rows = batch_size + outlier_rows
        self.x = torch.zeros(rows, 1, 28, 28, device=device).contiguous(memory_format=fmt)
        self.y = torch.zeros(rows, dtype=torch.long, device=device)
        self.on_device = True  # what the graph records, so every step here does the same
        self.graph: torch.cuda.CUDAGraph | None = None
        self.replay: Callable[[], None] | None = None  # set once the step is recorded
        self.warm = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor, global_n: int) -> None:
        if len(y) != self.rows:
            return super().__call__(x, y, global_n)
        self.x.copy_(x)  # warm-up, capture and replay all see the same buffers, strides included
        self.y.copy_(y)
        if self.replay is None and self.warm < self.WARMUP:
            self._warm_up(global_n)
            self.warm += 1
            return
        if self.replay is None:
            for p in self.params:  # the graph's backward makes (and keeps) its own gradients
                p.grad = None
            self.replay = self._record()
        self.hyper()  # the tensors the graph reads, up to date
        self.replay()

    def _warm_up(self, global_n: int) -> None:
        """One eager step on a side stream, as torch's CUDA graph notes advise before capture."""
        device = self.x.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            super().__call__(self.x, self.y, global_n)
        torch.cuda.current_stream(device).wait_stream(side)

    def _record(self) -> Callable[[], None]:
        """Capture one step over the fixed buffers (nothing runs yet); return what replays it."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.x, self.y, self.batch_size, self.lr, self.momentum)
        return self.graph.replay
