"""The fast paths, one layer beside their reference (the model and autograd, model.py), each
checked against it by the tests:

  choose.py      which path runs a training step or an inference, and why (the one place)
  cpu_step.py    the CPU step's forward and backward written out, without autograd's graph
  native.py      builds, verifies and loads convs.cpp: LeNet-5's convolutions in native kernels
  convs.cpp      those kernels, one image per vector lane, for every x86-64 level and NEON
  cuda_graph.py  a whole CUDA step recorded once and replayed

bench/README.md tells how each was measured, and what was tried and not kept.
"""

from .choose import Path, for_inference, for_training  # noqa: F401

__all__ = ["Path", "for_inference", "for_training"]
