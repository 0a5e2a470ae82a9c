"""LeNet5 is the seed's model: same layers, names, parameter count; state_dicts move both ways."""

import torch

from lenet5 import LeNet5
from seed_code import SeedLeNet5


def test_shape_names_and_parameter_count():
    model = LeNet5()
    assert model(torch.randn(7, 1, 28, 28)).shape == (7, 10)
    assert sum(p.numel() for p in model.parameters()) == 44_426
    assert [name for name, _ in model.named_children()] == ["conv1", "pool", "conv2", "fc1", "fc2", "fc3"]
    assert list(model.state_dict()) == list(SeedLeNet5().state_dict())


def test_state_dict_moves_both_ways_with_identical_outputs():
    x = torch.randn(5, 1, 28, 28)
    seed, ours = SeedLeNet5(), LeNet5()
    ours.load_state_dict(seed.state_dict())
    assert torch.equal(ours(x), seed(x))
    ours2, seed2 = LeNet5(), SeedLeNet5()
    seed2.load_state_dict(ours2.state_dict())
    assert torch.equal(ours2(x), seed2(x))


def test_gradients_are_the_seeds_bit_for_bit():
    """Pooling before ReLU (ours) and after it (the seed's): the same gradients, ties included."""
    x = torch.randn(8, 1, 28, 28)
    x[:, :, :12] = -0.4242  # MNIST's blank background: equal values, so max-pool windows tie
    seed, ours = SeedLeNet5(), LeNet5()
    ours.load_state_dict(seed.state_dict())
    y = torch.arange(8) % 10
    for model in (seed, ours):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    for (name, p), q in zip(seed.named_parameters(), ours.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_channels_last_gives_the_same_logits():
    model = LeNet5().eval()
    x = torch.randn(4, 1, 28, 28)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, cl, atol=1e-5)
