"""The run folder: config.json, a per-epoch metrics.csv, and an optional wandb mirror of both."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from .errors import ConfigError

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


def write_text(path: Path, text: str) -> None:
    """Atomic text write: a crash leaves the old file or the new one, never half of either."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class RunDir:
    """runs/<name>/: what a training run leaves behind, written by the primary process only."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | os.PathLike, overwrite: bool = False) -> "RunDir":
        run = cls(path)
        if (run.path / "last.pt").exists() and not overwrite:
            raise ConfigError(
                f"{run.path}/ already holds a run; continue it with --resume {run.path} "
                "or choose another --name"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    def write_config(self, config: dict) -> None:
        write_text(self.path / "config.json", json.dumps(config, indent=2) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_csv.exists():
            return []
        with open(self.metrics_csv, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(f)]

    def append_metrics(self, row: dict) -> None:
        new = not self.metrics_csv.exists()
        with open(self.metrics_csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in COLUMNS})

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop rows after `last_epoch` (written after the checkpoint a resume starts from)."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= last_epoch]
        if self.metrics_csv.exists():
            self.metrics_csv.unlink()
        for r in rows:
            self.append_metrics(r)
