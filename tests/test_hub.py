"""hubconf.py: torch.hub.load(<clone>, "lenet5", source="local") gives the shipped model, from a clone."""

import os
import subprocess
import sys

import torch

from conftest import ROOT
from lenet5.checkpoint import load_model
from lenet5.weights import shipped


def test_hub_gives_the_shipped_model_and_fresh_weights_and_the_reader(mnist):
    model = torch.hub.load(str(ROOT), "lenet5", source="local", pretrained=True)
    reference, _ = load_model(shipped())
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not model.training and (model.mean, model.std) == (0.1307, 0.3081)
    x = (mnist.test_images[:500].float() / 255 - model.mean) / model.std
    with torch.no_grad():
        right = (model(x.unsqueeze(1)).argmax(1) == mnist.test_labels[:500]).float().mean()
    assert right > 0.98

    fresh = torch.hub.load(str(ROOT), "lenet5", source="local", pretrained=False)
    assert not torch.equal(fresh.conv1.weight, reference.conv1.weight)

    reader = torch.hub.load(str(ROOT), "reader", source="local")
    assert reader.predict(mnist.test_images[0]).digit == int(mnist.test_labels[0])


def test_hub_works_from_a_clone_without_installing(tmp_path):
    """A fresh interpreter, started elsewhere, with no PYTHONPATH: hubconf finds the clone's src/."""
    code = (
        "import torch\n"
        f"m = torch.hub.load({str(ROOT)!r}, 'lenet5', source='local', pretrained=True)\n"
        "import lenet5\n"
        "print(type(m).__name__, lenet5.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, where = out.stdout.split()
    assert name == "LeNet5" and where == str(ROOT / "src" / "lenet5" / "__init__.py")
