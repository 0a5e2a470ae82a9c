"""The training Config (one dataclass, every field a flag), the named recipes, and device choice."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from .datasets import DATASETS, DIGITS
from .errors import ConfigError, clip, short

if TYPE_CHECKING:
    import torch

# The statistics of the MNIST training images, as in the seed: every checkpoint stores the pair it
# was trained with (`data.normalize` applies them); another --dataset has its own (datasets.py).
# Here and there, not in data.py, so that reading the flags (`lenet5 --help`, a mistyped flag)
# needs no torch.
MEAN, STD = DATASETS["mnist"].mean, DATASETS["mnist"].std


# The groups `lenet5 train --help` shows the flags in, in this order, each with a line on what
# its flags set. Every field names its group (cli.py builds the help from them).
GROUPS = {
    "run": "the recipe, a config file, resuming, a dry run",
    "data": "the MNIST files, the split and the normalisation",
    "optimisation": "the optimiser and the loss",
    "schedule": "how long, the learning-rate schedule, best.pt and early stopping",
    "augmentation": "what training images are changed into, and the non-digits added to them",
    "output": "the run folder and what is printed",
    "tracking": "Weights & Biases and TensorBoard, mirroring the run folder",
    "system": "seed, device, threads and the compute path",
}


def opt(default, help: str, group: str):
    """A Config field: its default, its --help text and its help group (a list default is given
    as `list`)."""
    assert group in GROUPS, group
    metadata = {"help": help, "group": group}
    if default is list:
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    # Each field: its default, its help, its group in `lenet5 train --help` (GROUPS above).
    # what to run
    recipe: str = opt(
        "default", "the preset the other values start from: seed | default | best | fast", "run"
    )
    dataset: str = opt(
        "mnist",
        "the images to learn: mnist (digits) | fashion-mnist (clothes) | kmnist (cursive Japanese); "
        "the last two bring their own --mean, --std and no --outliers",
        "data",
    )
    data_dir: str = opt(
        "",
        "data root: <data_dir>/MNIST/raw/ (FashionMNIST/raw/, KMNIST/raw/), MNIST's files also "
        "directly in it; empty: ./data if it holds the set, else $LENET5_DATA, else ~/.cache/lenet5/data",
        "data",
    )
    out_dir: str = opt("runs", "where run folders go", "output")
    name: str = opt("", "run folder name; empty: <recipe>-<date>-<time>", "output")
    # optimisation and schedule
    epochs: int = opt(20, "passes over the training images", "schedule")
    batch_size: int = opt(
        128, "images per step (the global batch, split across processes under torchrun)", "optimisation"
    )
    optimizer: str = opt("sgd", "sgd | adamw", "optimisation")
    lr: float = opt(0.05, "learning rate: the peak for onecycle, the starting one otherwise", "optimisation")
    momentum: float = opt(0.9, "SGD momentum (0: plain SGD)", "optimisation")
    nesterov: bool = opt(True, "Nesterov momentum", "optimisation")
    weight_decay: float = opt(5e-4, "L2 weight decay", "optimisation")
    schedule: str = opt("onecycle", "onecycle (per step) | step (per epoch, StepLR) | constant", "schedule")
    step_size: int = opt(5, "StepLR: epochs between decays", "schedule")
    gamma: float = opt(0.1, "StepLR: decay factor", "schedule")
    warmup: float = opt(0.25, "onecycle: the share of steps spent rising to --lr", "schedule")
    label_smoothing: float = opt(0.0, "cross-entropy label smoothing (0: none)", "optimisation")
    ema: float = opt(
        0.9995,
        "keep an exponential moving average of the weights with this decay per step, and validate, "
        "keep and ship the average (0: the trained weights themselves)",
        "schedule",
    )
    # augmentation and data
    shift: int = opt(
        2, "random shifts of training images, up to this many pixels each way (0: none)", "augmentation"
    )
    augment: float = opt(
        1.0,
        "random turns, scales, shears and elastic bends of training images, "
        "as a strength (0: none; 1: up to 12 degrees, 0.87-1.1x, shear 0.25)",
        "augmentation",
    )
    outliers: float = opt(
        0.25,
        "non-digit pictures added to each batch, as a share of its digits, "
        "trained to read as no digit (outlier exposure; 0: none)",
        "augmentation",
    )
    outlier_weight: float = opt(
        0.5, "weight of the non-digit pictures' loss beside the digits'", "augmentation"
    )
    val_size: int = opt(5000, "training images held out for validation (a fixed, seeded split)", "data")
    limit: int = opt(
        0, "train on only the first N training images (0: all); for quick runs and tests", "data"
    )
    mean: float = opt(
        MEAN, "normalisation mean, stored in every checkpoint (another --dataset: its own)", "data"
    )
    std: float = opt(
        STD,
        "normalisation standard deviation, stored in every checkpoint (another --dataset: its own)",
        "data",
    )
    # early stopping: off by default, as OneCycle does its best work in its last low-rate epochs
    # (docs/02-training.md, "Validation, the best epoch, early stopping")
    monitor: str = opt(
        "val_loss",
        "what best.pt and early stopping watch: val_loss | val_acc | train_loss (the seed's choice) | none",
        "schedule",
    )
    patience: int = opt(0, "epochs without improvement before stopping (0: never stop early)", "schedule")
    # machinery
    seed: int = opt(0, "random seed: initial weights, the validation split, batch order, shifts", "system")
    deterministic: bool = opt(False, "deterministic kernels (slower on a GPU)", "system")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps", "system")
    threads: int = opt(0, "CPU threads for torch and the native kernels (0: torch's default)", "system")
    channels_last: bool = opt(True, "NHWC on the CPU, which the fast CPU paths need", "system")
    compile: bool = opt(False, "torch.compile the model", "system")
    cuda_graphs: bool = opt(
        True, "CUDA: replay each step as one recorded graph (SGD, one process, no --compile)", "system"
    )
    eval_batch_size: int = opt(1024, "images per batch when scoring the validation set", "system")
    dist_timeout: int = opt(
        300, "seconds a process waits for the others under torchrun before giving up", "system"
    )
    progress: bool = opt(True, "progress bars (on a terminal)", "output")
    dry_run: bool = opt(False, "a few steps of one epoch through the real path, then stop", "run")
    wandb: bool = opt(False, "mirror the run to Weights & Biases (offline without an account)", "tracking")
    wandb_project: str = opt("lenet5", "Weights & Biases project", "tracking")
    wandb_name: str = opt("", "Weights & Biases run name (empty: the run folder's name)", "tracking")
    wandb_tags: list[str] = opt(list, "Weights & Biases tags", "tracking")
    tensorboard: bool = opt(
        False,
        "write TensorBoard event files into <run folder>/tensorboard/ (pip install 'lenet5[tensorboard]')",
        "tracking",
    )

    def validate(self) -> Config:
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("onecycle", "step", "constant"),
            "monitor": ("val_loss", "val_acc", "train_loss", "none"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"--{flag(key)} {short(getattr(self, key))}: choose one of {', '.join(allowed)}"
                )
        for key, (ok, what) in NUMBERS.items():
            value = getattr(self, key)
            number = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
            if isinstance(value, bool) or not number or not ok(value):
                raise ConfigError(f"--{flag(key)} must be {what}, got {short(value)}")
        if self.shift > 8:
            raise ConfigError(f"--shift {self.shift} would push digits out of the 28x28 field; use 0-8")
        if self.monitor.startswith("val") and self.val_size == 0:
            raise ConfigError(f"--monitor {self.monitor} needs a validation split: set --val-size > 0")
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset {short(self.dataset)}: choose one of {', '.join(DATASETS)}")
        if self.dataset != DIGITS and self.outliers > 0:
            raise ConfigError(
                f"--outliers {self.outliers:g} with --dataset {self.dataset}: the non-digit pictures are "
                "made to be unlike digits, not unlike this set's images; use --outliers 0"
            )
        if self.name and (os.sep in self.name or self.name in (".", "..") or "\0" in self.name):
            raise ConfigError(f"--name {short(self.name)} must be a plain folder name")
        return self


# Every numeric field's bounds: (test, what the message says). Far beyond any real run, they keep
# out what would overflow, hang or crash further down; NaN and infinity are refused before the test.
BIG = 10**9
NUMBERS = {
    "epochs": (lambda v: 1 <= v <= 100_000, "between 1 and 100000"),
    "batch_size": (lambda v: 1 <= v <= BIG, "positive"),
    "eval_batch_size": (lambda v: 1 <= v <= BIG, "positive"),
    "step_size": (lambda v: 1 <= v <= BIG, "positive"),
    "val_size": (lambda v: 0 <= v <= BIG, "0 or more"),
    "limit": (lambda v: 0 <= v <= BIG, "0 or more"),
    "patience": (lambda v: 0 <= v <= BIG, "0 or more"),
    "shift": (lambda v: v >= 0, "0 or more"),
    "threads": (lambda v: 0 <= v <= BIG, "0 or more"),
    "dist_timeout": (lambda v: 0 <= v <= 10**7, "between 0 and 10000000 (seconds)"),
    "seed": (lambda v: 0 <= v < 2**64, "between 0 and 2**64 - 1"),
    "lr": (lambda v: 0 < v <= 1e6, "positive and finite (at most 1e6)"),
    "momentum": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "weight_decay": (lambda v: 0 <= v <= 1e6, "0 or more, finite"),
    "gamma": (lambda v: 0 < v <= 1e6, "positive and finite"),
    "warmup": (lambda v: 0 <= v < 1, "a share of the steps, from 0 to below 1"),
    "label_smoothing": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "mean": (lambda v: -1e6 <= v <= 1e6, "a finite number"),
    "std": (lambda v: 0 < v <= 1e6, "positive and finite"),
    "augment": (lambda v: 0 <= v <= 3, "a strength from 0 (none) to 3"),
    "outliers": (lambda v: 0 <= v <= 4, "a share of each batch, from 0 (none) to 4"),
    "outlier_weight": (lambda v: 0 <= v <= 10, "from 0 to 10"),
    "ema": (lambda v: 0 <= v < 1, "a decay from 0 (none) to below 1, e.g. 0.9995"),
}


# Each recipe is a set of overrides on the Config defaults above. What each reaches, and in how
# long on which machine: the README's table of figures.
RECIPES: dict[str, dict] = {
    # The seed, exactly: batch 64, SGD 0.001/0.9, StepLR(5, 0.1), 10 epochs, early stopping with
    # patience 2 on the training loss, all 60,000 training images, no augmentation.
    "seed": dict(
        epochs=10,
        batch_size=64,
        lr=0.001,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        schedule="step",
        step_size=5,
        gamma=0.1,
        shift=0,
        val_size=0,
        monitor="train_loss",
        patience=2,
        outliers=0.0,
        augment=0.0,
        ema=0.0,
    ),
    # The default: the Config above, the unchanged architecture trained with OneCycle and shifts.
    "default": dict(),
    # Three times as long, averaged over ~5,000 steps: the network is short of capacity, not of
    # regularisation, so length and a slower average are what help (README, docs/02-training.md).
    "best": dict(epochs=60, ema=0.9998),
    # Time to 99 %: big batches, five epochs of OneCycle, all 60,000 images, no validation pass.
    "fast": dict(epochs=5, batch_size=256, lr=0.08, val_size=0, monitor="none", warmup=0.2, ema=0.0),
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
    """A Config from plain values (a checkpoint's or config.json's), checked field by field. A set
    other than MNIST brings its own normalisation and no non-digit pictures, unless given."""
    values = dict(values)
    name = values.get("dataset")
    dataset = DATASETS.get(name) if isinstance(name, str) else None
    if dataset is not None and dataset.name != DIGITS:
        values = {"mean": dataset.mean, "std": dataset.std, "outliers": 0.0, **values}
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    defaults = Config()
    for key, value in values.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                values[key] = float(value)
            except OverflowError:
                raise ConfigError(f"--{flag(key)} must be a finite number, got {short(value)}") from None
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config key {key!r} must be {expected.__name__}, got {short(value)}")
        elif expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key {key!r} must be a list of strings, got {short(value)}")
    return dataclasses.replace(defaults, **values).validate()


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; anything near this is not one


def read_file(path: str | os.PathLike, what: str = "--config") -> dict:
    """Config values from a JSON or YAML file (a run folder's config.json, or one of your own):
    checked as `from_dict` checks them when the Config is made. `what` names the file in errors.

    Only a regular file of at most MAX_CONFIG_BYTES is read (never a device or a pipe, which could
    be endless), and YAML without anchors and aliases (which can expand a small file into gigabytes).
    """
    path = os.fspath(path)
    kind = "YAML" if path.endswith((".yaml", ".yml")) else "JSON"
    text = read_text(path, what)
    try:
        if kind == "YAML":
            import yaml

            values = yaml.load(text, Loader=_yaml_loader())  # noqa: S506  (a SafeLoader, aliases refused)
        else:
            import json

            values = json.loads(text)
    except ImportError:
        raise ConfigError(f"{what} {path}: YAML needs PyYAML: pip install pyyaml") from None
    except Exception as e:  # JSONDecodeError, yaml.YAMLError, RecursionError: the parser says where
        mark = getattr(e, "problem_mark", None)
        if mark is not None:  # PyYAML's own message quotes the text around the spot, over lines
            first = (
                f"{getattr(e, 'problem', None) or 'error'} at line {mark.line + 1}, column {mark.column + 1}"
            )
        else:
            first = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"{what} {path}: not valid {kind} ({clip(first, 160)})") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{what} {path}: holds a {type(values).__name__}, not a mapping of config keys to values"
        )
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(
                f"{what} {path}: key {short(key)} is not a config key name (those are "
                "words, as --print-config shows)"
            )
    return values


RUN_ID = "run_id"  # which run wrote a config.json or a checkpoint (rundir.py); not a setting


def read_text(path: str, what: str = "--config") -> str:
    """A small regular file's text (UTF-8): a device, a pipe, a big or a binary file is an error."""
    import stat

    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device or a pipe)"
            raise ConfigError(f"{what} {path}: is {kind}; give a JSON or YAML file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{what} {path}: is {info.st_size / 2**20:.1f} MB, too large for a config "
                f"file (at most {MAX_CONFIG_BYTES >> 20} MB)"
            )
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:  # it grew while being read
        raise ConfigError(f"{what} {path}: too large for a config file (at most {MAX_CONFIG_BYTES >> 20} MB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None


def _yaml_loader():
    """PyYAML's SafeLoader, refusing anchors (&name) and aliases (*name): a few lines of them
    ("billion laughs") would expand into gigabytes, and a config file never needs them."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "anchors and aliases (&name, *name) are not allowed in a config file",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return NoAliases


def to_dict(cfg: Config) -> dict:
    """Plain types only, so it can live in JSON and in a weights_only checkpoint."""
    return dataclasses.asdict(cfg)


def usable_threads(wanted: int) -> tuple[int, str]:
    """(the threads to use for `wanted`, a note when that is more than this process may run on):
    torch and OpenMP given 100,000 threads crash rather than refuse."""
    try:
        have = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity, all the CPUs
        have = os.cpu_count() or 1
    if wanted > have:
        return have, f"--threads {wanted}: this machine gives lenet5 {have} CPU(s); using {have}"
    return wanted, ""


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
            raise ConfigError(
                f"--device {name}: no CUDA device is available to this torch "
                f"({torch.__version__}); use --device auto or cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name}: MPS is not available here; use --device auto or cpu")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device
