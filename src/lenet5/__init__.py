"""lenet5: the classic LeNet-5 digit reader for MNIST, made into real software.

import lenet5
reader = lenet5.load()                   # the shipped weights (or lenet5.load("runs/NAME"))
reader.predict("my-seven.jpg").digit     # 7
"""

__version__ = "0.1.0"

__all__ = ["LeNet5", "Prediction", "Reader", "evaluate", "load", "train", "__version__"]


def __getattr__(name: str):
    """The API's names, imported on first use: `import lenet5.images` (the web server's picture
    readers, say) then needs neither torch nor the time it takes to import."""
    if name == "LeNet5":
        from .model import LeNet5

        return LeNet5
    if name in ("Prediction", "Reader", "evaluate", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lenet5' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
