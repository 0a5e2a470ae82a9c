"""lenet5: the classic LeNet-5 digit reader for MNIST, made into real software."""

__version__ = "0.1.0"

from .model import LeNet5  # noqa: E402

__all__ = ["LeNet5", "__version__"]
