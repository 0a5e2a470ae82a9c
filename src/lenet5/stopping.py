"""When a run stops: early stopping's record of the monitored metric, and whether a run at a given
epoch and step has no more epochs to train. Apart from training.py so that the run folder
(rundir.py) can tell a finished run from its last.pt without importing the training loop."""

from __future__ import annotations

import math

from .config import Config, from_dict


class EarlyStopping:
    """Tracks the monitored metric; says when it improved and when patience ran out."""

    def __init__(self, monitor: str, patience: int):
        self.monitor, self.patience = monitor, patience
        self.sign = -1.0 if monitor == "val_acc" else 1.0  # lower is better, except accuracy
        self.best = math.inf
        self.bad_epochs = 0

    def update(self, metrics: dict) -> bool:
        """True when this epoch is the best so far."""
        if self.monitor == "none":
            return True
        value = self.sign * metrics[self.monitor]
        if value < self.best:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.monitor != "none" and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


def finished(cfg: Config, epoch: int, step: int, stopper: EarlyStopping) -> bool:
    """A run at (epoch, step) has no more epochs to train: all done, or early stopping ended it."""
    return step == 0 and (epoch >= cfg.epochs or stopper.should_stop)


def finished_state(state: dict) -> bool:
    """`finished` for a loaded last.pt (RunDir.training_over asks it)."""
    cfg = from_dict(state["config"])
    stopper = EarlyStopping(cfg.monitor, cfg.patience)
    stopper.load_state_dict(state["early_stopping"])
    return finished(cfg, int(state["epoch"]), int(state["step"]), stopper)
