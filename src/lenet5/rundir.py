"""The run folder and the names of the files in it: one owner for both.

runs/<name>/ holds config.json, env.json, metrics.csv, best.pt, last.pt, mnist_lenet5.pth,
test_metrics.json and the plots; RunDir names each one, and everything else asks it. The commands
that look at a run save what they draw there too, when not told where: `lenet5 plot`, `show`,
`predict --explain` (into explain/), `export`. Trackers
(tracking.py: wandb, TensorBoard) only mirror these files; TensorBoard's event files go in
tensorboard/, where `tensorboard --logdir runs` finds every run under its folder's name.

One training owns a run folder at a time: it holds an exclusive lock (flock) on the folder itself
from before its first file until it ends, and the kernel drops the lock when the process dies,
however it dies: a second `lenet5 train` with the same --name is refused, and a crashed run never
leaves a lock behind to clear by hand. Holding the lock, the owner sweeps the temporaries a killed
writer left.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Collection
from dataclasses import fields
from pathlib import Path

from .config import RUN_ID, Config, read_file
from .errors import ConfigError, short
from .files import clean_temporaries, write_text

COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
LAST = "last.pt"  # everything a resume needs; written last of an epoch's checkpoints
BEST = "best.pt"  # the best epoch so far, in the same format
WEIGHTS = "mnist_lenet5.pth"  # the best weights as a plain state_dict: the seed's own file
TEST_METRICS = "test_metrics.json"  # written after the plots: its presence marks a finished run
TENSORBOARD = "tensorboard"  # the folder of TensorBoard's event files (--tensorboard)
METRICS = "metrics.csv"  # a row per epoch (COLUMNS)
CONFIG = "config.json"  # the run's config and run id
ENV = "env.json"  # where and how it trained
# The plots a finished run has (plots.draw_run draws them; `lenet5 plot` redraws them)
CURVES, CONFUSION, MISTAKES = "curves.png", "confusion.png", "mistakes.png"
PREDICTIONS, FILTERS, RELIABILITY = "predictions.png", "filters.png", "reliability.png"
PLOTS = (CURVES, CONFUSION, MISTAKES, PREDICTIONS, FILTERS, RELIABILITY)
CHECKPOINTS = (BEST, LAST, WEIGHTS)  # a folder holding one of these is a run to read from
EXPLAIN = "explain"  # the folder of `lenet5 predict --explain`'s pictures, when not told another
# What a training writes into its folder (--overwrite clears these)
RUN_FILES = (LAST, BEST, WEIGHTS, METRICS, CONFIG, ENV, TEST_METRICS, *PLOTS)


def new_run_id() -> str:
    """A run's identity: in its config.json and in every checkpoint it writes."""
    return uuid.uuid4().hex


class RunDir:
    """runs/<name>/: what a training run leaves behind, written by the primary process only."""

    LAST, BEST, WEIGHTS = LAST, BEST, WEIGHTS

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock: int | None = None

    @classmethod
    def create(cls, path: str | os.PathLike, overwrite: bool = False) -> RunDir:
        """The folder for a new run, locked; refused if it holds a run (unless `overwrite`)."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        run.lock()
        try:
            if overwrite:
                run.clear()
            elif run.last.exists():
                raise ConfigError(
                    f"{run.path}/ already holds a run; continue it with --resume {run.path} "
                    "or choose another --name"
                )
        except BaseException:
            run.release()
            raise
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> RunDir:
        """An existing run's folder, locked, to continue it."""
        run = cls(path)
        run.lock()
        return run

    def lock(self) -> None:
        """Take the folder for this process (see the module docstring); sweep stale temporaries.

        Where there are no locks (Windows, a filesystem without flock) the run goes on unlocked."""
        try:
            import fcntl
        except ImportError:
            fcntl = None  # type: ignore[assignment]  # None marks no fcntl (Windows): no lock
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if fcntl:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.path}/: another lenet5 train is writing this run now; wait "
                "for it to end, or choose another --name"
            ) from None
        except OSError:  # this filesystem has no flock
            pass
        self._lock = fd
        clean_temporaries(self.path)

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def clear(self) -> None:
        """Remove a previous run's files (--overwrite), its TensorBoard events too: TensorBoard
        would draw the old run's curves and the new one's as one."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for events in self.tensorboard.glob("events.out.tfevents.*"):
            events.unlink(missing_ok=True)

    def finished_outputs(self) -> bool:
        """The final test and plots are done: test_metrics.json is written after the plots."""
        return self.test_metrics.is_file()

    @staticmethod
    def training_over(saved: dict) -> bool:
        """A loaded last.pt has no epochs left to train: all done, or early stopping ended it."""
        from .stopping import finished_state

        return finished_state(saved)

    @classmethod
    def holds_run(cls, path: str | os.PathLike) -> bool:
        """A folder with a run's checkpoint in it (best.pt, last.pt or mnist_lenet5.pth)."""
        p = Path(path)
        return p.is_dir() and any((p / name).is_file() for name in CHECKPOINTS)

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def test_metrics(self) -> Path:
        return self.path / TEST_METRICS

    def plots(self) -> list[Path]:
        """The run's plots that exist."""
        return [self.path / name for name in PLOTS if (self.path / name).exists()]

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    def write_config(self, config: dict, run_id: str | None = None) -> None:
        """config.json: the run's config, and the id that every checkpoint of the run carries too."""
        record = {**config, RUN_ID: run_id} if run_id else config
        write_text(self.config, json.dumps(record, indent=2) + "\n")

    def check_owns(self, saved: dict, checkpoint: Path, free: Collection[str] = frozenset()) -> None:
        """Refuse a checkpoint this run did not write (another run's last.pt copied in), and a
        config.json that does not match it (hand-edited or garbled), naming the field; the fields
        in `free` may differ (those a resume may change). config.json is read, never written.

        Runs from before run ids carry none: their checkpoints are taken as they are."""
        if not self.config.is_file():
            return
        how = "it is the run's record and is left as it is: put it back as it was"
        try:
            values = read_file(self.config, what="run config")
        except ConfigError as e:
            raise ConfigError(f"{str(e).removeprefix('run config ')}; {how}") from None
        mine, theirs = values.get(RUN_ID), saved.get(RUN_ID)
        if mine and mine != theirs:
            raise ConfigError(
                f"{checkpoint} belongs to another run (run id {str(theirs or 'none')[:12]}; "
                f"{self.config.name} says {str(mine)[:12]}): it was copied in from elsewhere; resume "
                "that run in its own folder, or start a new run"
            )
        config = saved.get("config")
        if not isinstance(config, dict):
            config = {}
        known = {f.name for f in fields(Config)}
        for key, value in values.items():
            if key == RUN_ID or key in free:
                continue
            if key not in known:
                raise ConfigError(f"{self.config}: unknown key {short(key)}; {how}")
            if key in config and value != config[key]:
                raise ConfigError(
                    f"{self.config}: {key} is {short(value)}, but {checkpoint.name} was trained with "
                    f"{short(config[key])}; a resumed run goes on with its checkpoint's config: put "
                    f"config.json back, or start a new run with --config {self.config}"
                )

    def write_environment(self, path, device, world: int) -> None:
        """env.json: where and how the run trained (versions, CPU, compute path, command line)."""
        from .environment import describe

        env = describe(device)
        env.update({"compute_path": path.name, "compute_detail": path.why, "processes": world})
        write_text(self.path / ENV, json.dumps(env, indent=2) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_csv.exists():
            return []
        with open(self.metrics_csv, newline="") as f:
            return [
                {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)
            ]

    @staticmethod
    def metrics_text(rows: list[dict]) -> str:
        """metrics.csv's whole content for `rows`: the file is rewritten whole, never appended to,
        so it is always some epoch's complete table."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
        return out.getvalue()

    def write_metrics(self, rows: list[dict]) -> None:
        write_text(self.metrics_csv, self.metrics_text(rows))

    def truncate_metrics(self, last_epoch: int) -> list[dict]:
        """Keep the rows up to `last_epoch` (those a checkpoint a resume starts from knows)."""
        rows = [r for r in self.read_metrics() if r["epoch"] <= last_epoch]
        if self.metrics_csv.exists():
            self.write_metrics(rows)
        return rows
