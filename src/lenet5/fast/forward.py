"""The whole forward pass for reading digits: lenet5's native one (convs.cpp, `lenet_read`) or
torch's, chosen once per model by fast/choose.py, and fed in bounded batches.

The native forward takes uint8 pixels and normalises them itself, runs each image through every
layer in buffers that stay in the core's first-level cache, and returns the logits and the last
hidden layer (84 features) in one call: no torch operator between the layers, nothing allocated
per call but the answer. It is what makes one digit cost microseconds instead of milliseconds
(the README's figures table: reading). Torch's path is the model itself (model.py), the
reference the native one is tested against at every ISA level.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model import LeNet5
from .native import Kernels

CHUNK = 4096  # images per call: memory stays bounded (~3.5 MB of inputs) for any number of them


def pack(model: LeNet5) -> np.ndarray:
    """The weights in the order and layout `lenet_read` reads them (convs.cpp, "Reading")."""
    sd = {k: v.detach().float().cpu().contiguous().numpy() for k, v in model.state_dict().items()}

    def dense(w: np.ndarray, b: np.ndarray, width: int) -> list[np.ndarray]:
        wt = np.zeros((w.shape[1], width), np.float32)
        wt[:, : w.shape[0]] = w.T
        bp = np.zeros(width, np.float32)
        bp[: b.shape[0]] = b
        return [wt.ravel(), bp]

    parts = [
        sd["conv1.weight"].ravel(),
        sd["conv1.bias"],
        sd["conv2.weight"].reshape(16, 150).T.ravel(),
        sd["conv2.bias"],
        *dense(sd["fc1.weight"], sd["fc1.bias"], 128),
        *dense(sd["fc2.weight"], sd["fc2.bias"], 128),
        *dense(sd["fc3.weight"], sd["fc3.bias"], 64),
    ]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


class Forward:
    """model(normalise(pixels)) and its 84 features, for uint8 pixels (N, 28, 28), N any size."""

    def __init__(
        self,
        model: LeNet5,
        mean: float,
        std: float,
        kernels: Kernels | None,
        device: torch.device | str = "cpu",
    ):
        self.model, self.mean, self.std = model.eval(), float(mean), float(std)
        self.device = torch.device(device)
        self.kernels = kernels if self.device.type == "cpu" else None
        self.packed = None
        if self.kernels is not None:
            self.packed = pack(model)
            if len(self.packed) != self.kernels.lib.lenet_packed_size():
                raise RuntimeError("lenet_read's packed weights differ in size from fast/forward.py's")
            self._read = self.kernels.lib.lenet_read
            self._threads = self.kernels.threads
            self._weights = _address(self.packed)

    @property
    def native(self) -> bool:
        return self.packed is not None

    def __call__(self, pixels: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (N, 10), features (N, 84) or None) as float32 numpy arrays."""
        n = len(pixels)
        logits = np.empty((n, 10), np.float32)
        feats = np.empty((n, 84), np.float32) if features else None
        if self.native and n <= CHUNK and pixels.dtype == np.uint8 and pixels.flags.c_contiguous:
            self._native(pixels, logits, feats)  # one call: what one digit's few microseconds need
            return logits, feats
        for start in range(0, n, CHUNK):
            part = np.ascontiguousarray(pixels[start : start + CHUNK], dtype=np.uint8)
            rows = slice(start, start + len(part))
            if self.native:
                self._native(part, logits[rows], feats[rows] if feats is not None else None)
            else:
                z, h = self._torch(part)
                logits[rows] = z
                if feats is not None:
                    feats[rows] = h
        return logits, feats

    def _native(self, part: np.ndarray, logits: np.ndarray, feats: np.ndarray | None) -> None:
        self._read(
            _address(part),
            None,
            len(part),
            self.mean,
            self.std,
            self._weights,
            _address(logits),
            _address(feats) if feats is not None else None,
            self._threads(),
        )

    @torch.no_grad()
    def _torch(self, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ..data import normalize

        m = self.model
        x = normalize(torch.from_numpy(part).to(self.device), self.mean, self.std)
        x = x.to(m.conv1.weight.dtype)
        x = torch.relu(m.pool(m.conv1(x)))  # (B, 6, 12, 12)
        x = torch.relu(m.pool(m.conv2(x))).flatten(1)  # (B, 256)
        h = torch.relu(m.fc2(torch.relu(m.fc1(x))))  # (B, 84)
        return m.fc3(h).float().cpu().numpy(), h.float().cpu().numpy()


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]
