"""torch.hub entry points: LeNet-5 with the weights that ship with lenet5, from a clone of this repository.

    model = torch.hub.load("path/to/lenet5", "lenet5", source="local", pretrained=True)
    x = (pixels / 255 - 0.1307) / 0.3081        # (N, 1, 28, 28): MNIST's normalisation
    model(x).argmax(1)                           # the digits

    reader = torch.hub.load("path/to/lenet5", "reader", source="local")
    reader.predict("my-seven.jpg")               # Prediction(7, 99.1 %): any picture, prepared for you

The code and the weights are this clone's (src/lenet5/), so no `pip install` is needed; a lenet5
already imported in the process is used as it is.
"""

import sys
from pathlib import Path

# What torch.hub checks is importable before it calls an entry point (lenet5's own dependencies).
dependencies = ["torch", "numpy", "PIL", "scipy", "safetensors", "tqdm", "yaml"]

_SRC = Path(__file__).resolve().parent / "src"
if "lenet5" not in sys.modules and (_SRC / "lenet5" / "__init__.py").is_file():
    sys.path.insert(0, str(_SRC))  # this clone's lenet5, ahead of any other installed


def lenet5(pretrained: bool = True, **kwargs):
    """LeNet-5 (a torch.nn.Module, in eval mode) for normalised (N, 1, 28, 28) input, giving (N, 10)
    logits. pretrained=True: the weights that ship with lenet5 (see src/lenet5/weights/default.json,
    its model card); pretrained=False: freshly initialised weights (torch.manual_seed decides them).
    `mean` and `std` on the model are the normalisation its input needs."""
    from lenet5.checkpoint import load_model, normalization
    from lenet5.model import LeNet5
    from lenet5.weights import shipped

    if kwargs:
        raise TypeError(f"lenet5(): unexpected argument(s) {', '.join(sorted(kwargs))}")
    if not pretrained:
        from lenet5.config import MEAN, STD

        model, (mean, std) = LeNet5().eval(), (MEAN, STD)
    else:
        model, obj = load_model(shipped())
        mean, std = normalization(obj)
    model.mean, model.std = mean, std
    return model


def reader(checkpoint: str | None = None, device: str = "cpu"):
    """lenet5's Reader: a trained model that reads digit pictures (files, arrays, PIL images) and says
    "not a digit"; with no checkpoint, the weights that ship with lenet5. Same as `lenet5.load()`."""
    import lenet5 as package

    return package.load(checkpoint, device)
