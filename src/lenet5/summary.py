"""Looking inside the model: the layer table (as Keras' model.summary() or torchinfo print it) and
the feature maps one digit produces. Everything is measured by running the model, not written down."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def layers(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> list[dict]:
    """One row per layer call, in the order the forward pass makes them (the pool layer runs twice):
    name, kind, output shape (without the batch), parameters, multiply-adds for one input."""
    rows: list[dict] = []
    seen: set[str] = set()

    def hook(module, inputs, output):
        name = names[module]
        params = 0 if name in seen else sum(p.numel() for p in module.parameters())
        seen.add(name)
        if isinstance(module, nn.Conv2d):
            # each output value: in_channels/groups x kernel products
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs = output[0].numel() * k
        elif isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features
        else:
            macs = 0  # pooling and activations compare or clamp; they do not multiply
        rows.append(
            {
                "name": name,
                "kind": type(module).__name__,
                "shape": tuple(output.shape[1:]),
                "params": params,
                "macs": int(macs),
            }
        )

    names = {m: n for n, m in model.named_modules() if n and not list(m.children())}
    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return rows


def format_layers(rows: list[dict], input_shape: tuple[int, ...] = (1, 28, 28)) -> str:
    """The layer table as text, with the totals."""

    def shape(s):
        return "×".join(map(str, s))

    lines = [
        f"{'layer':<8}{'type':<11}{'output shape':>14}{'parameters':>13}{'mult-adds':>13}",
        "-" * 59,
        f"{'input':<8}{'':<11}{shape(input_shape):>14}{'':>13}{'':>13}",
    ]
    for r in rows:
        lines.append(
            f"{r['name']:<8}{r['kind']:<11}{shape(r['shape']):>14}{r['params']:>13,}{r['macs']:>13,}"
        )
    lines.append("-" * 59)
    total_params = sum(r["params"] for r in rows)
    total_macs = sum(r["macs"] for r in rows)
    lines.append(f"{'total':<19}{'':>14}{total_params:>13,}{total_macs:>13,}")
    lines.append(
        f"{total_params:,} parameters ({4 * total_params / 1024:.1f} KiB as float32); "
        f"{total_macs:,} multiply-adds per {shape(input_shape)} image. "
        "ReLU and flatten run between the layers and have neither."
    )
    return "\n".join(lines)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What conv1 and conv2 output for a normalised batch x (B, 1, 28, 28), after their ReLU:
    {"conv1": (B, 6, 24, 24), "conv2": (B, 16, 8, 8)}, plus "logits" (B, 10)."""
    maps: dict[str, torch.Tensor] = {}
    handles = []
    for name in ("conv1", "conv2"):
        handles.append(
            getattr(model, name).register_forward_hook(
                lambda m, i, out, name=name: maps.__setitem__(name, torch.relu(out))
            )
        )
    try:
        maps["logits"] = model(x)
    finally:
        for h in handles:
            h.remove()
    return maps
