"""The training Config (one dataclass, every field a flag), the named recipes, and device choice."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

# The statistics of the MNIST training images, as in the seed: every checkpoint stores the pair it
# was trained with (`data.normalize` applies them). Here, not in data.py, so that reading the flags
# (`lenet5 --help`, a mistyped flag) needs no torch.
MEAN, STD = 0.1307, 0.3081


def opt(default, help: str):
    """A Config field: its default and its --help text (a list default is given as `list`)."""
    if default is list:
        return field(default_factory=list, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # what to run
    recipe: str = opt("default", "the preset the other values start from: seed | default | best | fast")
    data_dir: str = opt("", "MNIST root: <data_dir>/MNIST/raw/ or the files directly in it; empty: "
                            "./data if it holds MNIST, else $LENET5_DATA, else ~/.cache/lenet5/data")
    out_dir: str = opt("runs", "where run folders go")
    name: str = opt("", "run folder name; empty: <recipe>-<date>-<time>")
    # optimisation
    epochs: int = opt(20, "passes over the training images")
    batch_size: int = opt(128, "images per step (the global batch, split across processes under torchrun)")
    optimizer: str = opt("sgd", "sgd | adamw")
    lr: float = opt(0.05, "learning rate: the peak for onecycle, the starting one otherwise")
    momentum: float = opt(0.9, "SGD momentum (0: plain SGD)")
    nesterov: bool = opt(True, "Nesterov momentum")
    weight_decay: float = opt(5e-4, "L2 weight decay")
    schedule: str = opt("onecycle", "onecycle (per step) | step (per epoch, StepLR) | constant")
    step_size: int = opt(5, "StepLR: epochs between decays")
    gamma: float = opt(0.1, "StepLR: decay factor")
    warmup: float = opt(0.25, "onecycle: the share of steps spent rising to --lr")
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing (0: none)")
    # data
    shift: int = opt(2, "random shifts of training images, up to this many pixels each way (0: none)")
    augment: float = opt(1.0, "random turns, scales, shears and elastic bends of training images, "
                              "as a strength (0: none; 1: up to 12 degrees, 0.87-1.1x, shear 0.25)")
    outliers: float = opt(0.25, "non-digit pictures added to each batch, as a share of its digits, "
                                "trained to read as no digit (outlier exposure; 0: none)")
    outlier_weight: float = opt(0.5, "weight of the non-digit pictures' loss beside the digits'")
    val_size: int = opt(5000, "training images held out for validation (a fixed, seeded split)")
    limit: int = opt(0, "train on only the first N training images (0: all); for quick runs and tests")
    mean: float = opt(MEAN, "normalisation mean, stored in every checkpoint")
    std: float = opt(STD, "normalisation standard deviation, stored in every checkpoint")
    # early stopping: off by default, as OneCycle does its best work in its last low-rate epochs
    # (README, "Recipes")
    monitor: str = opt("val_loss", "what best.pt and early stopping watch: val_loss | val_acc | "
                                   "train_loss (the seed's choice) | none")
    patience: int = opt(0, "epochs without improvement before stopping (0: never stop early)")
    # machinery
    seed: int = opt(0, "random seed: initial weights, the validation split, batch order, shifts")
    deterministic: bool = opt(False, "deterministic kernels (slower on a GPU)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps")
    threads: int = opt(0, "CPU threads for torch and the native kernels (0: torch's default)")
    channels_last: bool = opt(True, "NHWC on the CPU, which the fast CPU paths need")
    compile: bool = opt(False, "torch.compile the model")
    cuda_graphs: bool = opt(True, "CUDA: replay each step as one recorded graph (SGD, one process, "
                                  "no --compile)")
    eval_batch_size: int = opt(1024, "images per batch when scoring the validation set")
    dist_timeout: int = opt(300, "seconds a process waits for the others under torchrun before giving up")
    progress: bool = opt(True, "progress bars (on a terminal)")
    dry_run: bool = opt(False, "a few steps of one epoch through the real path, then stop")
    wandb: bool = opt(False, "mirror the run to Weights & Biases (offline without an account)")
    wandb_project: str = opt("lenet5", "Weights & Biases project")
    wandb_name: str = opt("", "Weights & Biases run name (empty: the run folder's name)")
    wandb_tags: list[str] = opt(list, "Weights & Biases tags")
    tensorboard: bool = opt(False, "write TensorBoard event files into <run folder>/tensorboard/ "
                                   "(pip install 'lenet5[tensorboard]')")

    def validate(self) -> "Config":
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("onecycle", "step", "constant"),
            "monitor": ("val_loss", "val_acc", "train_loss", "none"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"--{flag(key)} {getattr(self, key)!r}: choose one of {', '.join(allowed)}")
        positive = ("epochs", "batch_size", "eval_batch_size")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ConfigError(f"--{flag(key)} must be positive, got {getattr(self, key)}")
        for key in ("val_size", "limit", "patience", "shift", "threads", "dist_timeout"):
            if getattr(self, key) < 0:
                raise ConfigError(f"--{flag(key)} must not be negative, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.std <= 0:
            raise ConfigError(f"--std must be positive, got {self.std}")
        if self.monitor.startswith("val") and self.val_size == 0:
            raise ConfigError(f"--monitor {self.monitor} needs a validation split: set --val-size > 0")
        if not 0 <= self.augment <= 3:
            raise ConfigError(f"--augment {self.augment}: a strength from 0 (none) to 3")
        if not 0 <= self.outliers <= 4:
            raise ConfigError(f"--outliers {self.outliers}: a share of each batch, from 0 (none) to 4")
        if not 0 <= self.outlier_weight <= 10:
            raise ConfigError(f"--outlier-weight {self.outlier_weight}: use 0 to 10")
        if self.shift > 8:
            raise ConfigError(f"--shift {self.shift} would push digits out of the 28x28 field; use 0-8")
        if self.name and (os.sep in self.name or self.name in (".", "..")):
            raise ConfigError(f"--name {self.name!r} must be a plain folder name")
        return self


# Each recipe is a set of overrides on the Config defaults above. What each reaches, and in how
# long on which machine: the README's table of figures.
RECIPES: dict[str, dict] = {
    # The seed, exactly: batch 64, SGD 0.001/0.9, StepLR(5, 0.1), 10 epochs, early stopping with
    # patience 2 on the training loss, all 60,000 training images, no augmentation.
    "seed": dict(epochs=10, batch_size=64, lr=0.001, momentum=0.9, nesterov=False, weight_decay=0.0,
                 schedule="step", step_size=5, gamma=0.1, shift=0, val_size=0, monitor="train_loss",
                 patience=2, outliers=0.0, augment=0.0),
    # The default: the Config above, the unchanged architecture trained with OneCycle and shifts.
    "default": dict(),
    # Ten epochs more: a little better on a GPU, no better on the CPU (README).
    "best": dict(epochs=30),
    # Time to 99 %: big batches, five epochs of OneCycle, all 60,000 images, no validation pass.
    "fast": dict(epochs=5, batch_size=256, lr=0.08, val_size=0, monitor="none", warmup=0.2),
}


def flag(key: str) -> str:
    return key.replace("_", "-")


def from_recipe(recipe: str = "default", **overrides) -> Config:
    """The Config of a recipe, with overrides; unknown keys and wrong types are errors."""
    if recipe not in RECIPES:
        raise ConfigError(f"--recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    values = {**RECIPES[recipe], **overrides, "recipe": recipe}
    return from_dict(values)


def from_dict(values: dict) -> Config:
    """A Config from plain values (a checkpoint's or config.json's), checked field by field."""
    values = dict(values)
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    defaults = Config()
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} must be {expected.__name__}, got {value!r}")
    return dataclasses.replace(defaults, **values).validate()


def read_file(path: str | os.PathLike) -> dict:
    """Config values from a JSON or YAML file (a run folder's config.json, or one of your own):
    checked as `from_dict` checks them when the Config is made."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text)
        else:
            import json

            values = json.loads(text)
    except ImportError:
        raise ConfigError(f"--config {path}: YAML needs PyYAML: pip install pyyaml") from None
    except Exception as e:  # JSONDecodeError, yaml.YAMLError: the parser says where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--config {path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} "
                          f"({first[:160]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: holds a {type(values).__name__}, not a mapping of "
                          "config keys to values")
    return values


def to_dict(cfg: Config) -> dict:
    """Plain types only, so it can live in JSON and in a weights_only checkpoint."""
    return dataclasses.asdict(cfg)


def choose_device(name: str = "auto") -> torch.device:
    """Pick the device once; everything else is handed it."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is available to this torch "
                              f"({torch.__version__}); use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name}: MPS is not available here; use --device auto or cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device
