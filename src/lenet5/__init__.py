"""lenet5: the classic LeNet-5 digit reader for MNIST, made into real software.

    import lenet5
    reader = lenet5.load()                   # the shipped weights (or lenet5.load("runs/NAME"))
    reader.predict("my-seven.jpg").digit     # 7
"""

__version__ = "0.1.0"

from .api import Prediction, Reader, evaluate, load, train  # noqa: E402
from .model import LeNet5  # noqa: E402

__all__ = ["LeNet5", "Prediction", "Reader", "evaluate", "load", "train", "__version__"]
