"""Trackers: the optional wandb mirror of a run folder and its TensorBoard event files (rundir.py
owns the folder itself).

The local files are always written; wandb (`--wandb`) and TensorBoard (`--tensorboard`) only mirror
them, and never stop training: a tracker that fails says so in one line and stops, training goes on.
A missing package is refused before training starts, with the command that installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import warnings
from pathlib import Path

from .files import write_text
from .rundir import BEST, COLUMNS, CONFIG, METRICS, RunDir

INIT_TIMEOUT_S = 20.0  # online start, at most (wandb's own default, 90 s, stalls training's start)
OFFLINE_TIMEOUT_S = 30.0  # an offline start, at most (it only writes files: seconds)
FINISH_TIMEOUT_S = 60.0  # an upload that cannot finish is left for `wandb sync`
WANDB_ID_FILE = "wandb.json"  # in the run folder: the online wandb run that `--resume` continues


def _has_wandb_key(wandb) -> bool:
    """An API key in the environment or in ~/.netrc for the configured W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc
        from urllib.parse import urlparse

        host = urlparse(wandb.Settings().base_url).hostname
        return bool(host and netrc.netrc(os.environ.get("NETRC")).authenticators(host))
    except Exception:  # no ~/.netrc, or one netrc cannot parse: no key
        return False


def _say(message: str, tracker: str = "wandb") -> None:
    print(f"lenet5: {tracker}: {message}", file=sys.stderr, flush=True)


class WandbTracker:
    """Mirrors a run folder to a wandb run: config, per-epoch metrics, plots, best.pt. A failure in
    wandb is reported once and tracking stops; training never does."""

    def __init__(self, wandb, wb_run):
        self.wandb, self.wb_run = wandb, wb_run

    def _fail(self, what: str, e: Exception) -> None:
        _say(
            f"{what} failed ({type(e).__name__}: {str(e)[:160]}); tracking stops, training goes on; "
            "the run folder has everything"
        )
        with contextlib.suppress(Exception):
            self.wb_run.finish(exit_code=1)
        self.wb_run = None

    def log_epoch(self, row: dict) -> None:
        if self.wb_run is None:
            return
        try:
            self.wb_run.log({k: v for k, v in row.items() if v == v})  # NaN: no validation split
        except Exception as e:
            self._fail("logging an epoch", e)

    def finish(self, run: RunDir, best_metrics: dict) -> None:
        """Summary (best epoch, test metrics), the run's PNGs as images, best.pt + config.json +
        metrics.csv as a model artifact; then close the wandb run (failed if training raised)."""
        if self.wb_run is None:
            return
        failed = sys.exc_info()[0] is not None  # called from a finally: is an exception on its way?
        try:
            self.wb_run.summary.update({f"best/{k}": v for k, v in best_metrics.items()})
            test = run.test_metrics
            if test.exists():
                m = json.loads(test.read_text())
                self.wb_run.summary.update({"test/accuracy": m["accuracy"], "test/loss": m["loss"]})
            images = {f"plots/{p.stem}": self.wandb.Image(str(p)) for p in run.plots()}
            if images:
                self.wb_run.log(images)
            if run.best.exists():
                art = self.wandb.Artifact(
                    f"lenet5-{run.path.name}",
                    type="model",
                    metadata={k: v for k, v in best_metrics.items() if v == v},
                )
                for name in (BEST, CONFIG, METRICS):
                    if (run.path / name).exists():
                        art.add_file(str(run.path / name), name=name)
                self.wb_run.log_artifact(art, aliases=["best"])
            self.wb_run.finish(exit_code=1 if failed else 0)
            self.wb_run = None
        except Exception as e:
            self._fail("finishing the wandb run", e)


def start_wandb(cfg, run: RunDir) -> WandbTracker | None:
    """Start mirroring `run` to wandb, as `cfg` says; None when wandb cannot start (said in one line).

    Mode: WANDB_MODE when set; otherwise online with an API key, offline without one (an offline
    run lands in <run folder>/wandb/offline-run-*, for `wandb sync` later). Online start-up is bounded by
    INIT_TIMEOUT_S and falls back to offline.
    """
    from .config import to_dict
    from .errors import ConfigError

    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package: pip install 'lenet5[wandb]'") from None
    if os.environ.get("WANDB_MODE"):
        mode, why = os.environ["WANDB_MODE"], "WANDB_MODE is set"
    elif _has_wandb_key(wandb):
        mode, why = "online", ""
    else:
        mode, why = "offline", "no W&B API key"
    # dir: wandb/ in the run folder (WANDB_DIR overrides it), never the current directory; given
    # every time, as wandb would otherwise keep the first run's for the whole process.
    kwargs = dict(
        dir=os.environ.get("WANDB_DIR") or str(run.path.resolve()),
        project=cfg.wandb_project,
        name=cfg.wandb_name or run.path.name,
        tags=list(cfg.wandb_tags),
        group=run.path.name,
        config=to_dict(cfg),
        job_type="train",
        notes=f"lenet5 run folder: {run.path}",
    )

    # A resumed run folder continues its online wandb run. Offline, wandb cannot look up the run
    # it would continue, so a resumed run is a new offline run in the same group.
    ids = run.path / WANDB_ID_FILE
    try:
        previous = json.loads(ids.read_text()).get("id") if ids.is_file() else None
    except (OSError, ValueError, AttributeError):  # unreadable or not our JSON: start a new run
        previous = None

    def init(mode: str):
        settings = wandb.Settings(
            mode=mode,  # type: ignore[arg-type]  # WANDB_MODE as the user set it: wandb checks it
            init_timeout=INIT_TIMEOUT_S,
            finish_timeout=FINISH_TIMEOUT_S,
            silent=True,
            console="off",
        )
        same = dict(id=previous, resume="allow") if mode == "online" and previous else {}
        wb_run = wandb.init(settings=settings, reinit="create_new", **kwargs, **same)
        wb_run.define_metric("epoch")
        wb_run.define_metric("*", step_metric="epoch")  # curves against epochs, as in metrics.csv
        return wb_run

    try:
        try:
            wb_run = _within(INIT_TIMEOUT_S if mode == "online" else OFFLINE_TIMEOUT_S, init, mode)
        except Exception as e:
            if mode != "online":
                raise
            mode, why = "offline", f"W&B online failed: {type(e).__name__}"
            wb_run = _within(OFFLINE_TIMEOUT_S, init, mode)
    except Exception as e:
        _say(f"could not start ({type(e).__name__}: {str(e)[:160]}); training goes on without it")
        return None
    if mode == "offline":
        where = Path(wb_run.dir).parent  # .../wandb/offline-run-<time>-<id>/files -> its folder
        _say(f"offline ({why}): logging to {where}; upload later with: wandb sync {where}")
    elif mode == "online":
        _say(f"logging to {wb_run.url}")
        try:
            write_text(ids, json.dumps({"id": wb_run.id, "url": wb_run.url}) + "\n")
        except OSError as e:
            _say(f"could not remember the run id in {ids} ({e}); a resume starts a new wandb run")
    return WandbTracker(wandb, wb_run)


def _within(seconds: float, init, mode: str):
    """`init(mode)` on a daemon thread, waited for at most `seconds` whatever the server does
    (wandb's own init_timeout does not cover every wait: a server that takes the connection and
    never answers held training's start for 43 s). A run that starts after the wait is over is
    closed again, on that thread. TimeoutError when the time is up."""
    box: dict = {}
    lock = threading.Lock()

    def start():
        try:
            wb_run = init(mode)
        except BaseException as e:  # handed to the caller, if it still waits
            with lock:
                box["error"] = e
            return
        with lock:
            late = box.get("late", False)
            box["run"] = wb_run
        if late:
            with contextlib.suppress(Exception):
                wb_run.finish(exit_code=1)

    thread = threading.Thread(target=start, name=f"lenet5-wandb-{mode}", daemon=True)
    thread.start()
    thread.join(seconds)
    with lock:
        if "run" in box:
            return box["run"]
        if "error" in box:
            raise box["error"]
        box["late"] = True
    raise TimeoutError(f"no answer within {seconds:g} s")


class TensorBoardTracker:
    """Writes a run as TensorBoard sees it, into <run folder>/tensorboard/: the config and the model
    graph at the start, metrics.csv's columns each epoch (against the epoch, as in the file), the
    test metrics and the run's plots at the end. A failure is reported once and TensorBoard logging
    stops; training never does.

    Event files are streams TensorBoard reads while they grow, so they are appended to rather than
    written atomically (files.py); a crash loses at most the events not yet flushed."""

    def __init__(self, writer):
        self.writer = writer
        self.epoch = 0  # the last epoch logged: the step the end-of-run images are shown at

    def _fail(self, what: str, e: Exception) -> None:
        _say(
            f"{what} failed ({type(e).__name__}: {str(e)[:160]}); TensorBoard logging stops, "
            "training goes on; the run folder has everything",
            "tensorboard",
        )
        with contextlib.suppress(Exception):
            self.writer.close()
        self.writer = None

    def log_epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        try:
            self.epoch = int(row["epoch"])
            for key in COLUMNS:
                value = row.get(key)
                if key != "epoch" and value is not None and value == value:  # NaN: no validation split
                    self.writer.add_scalar(key, value, self.epoch)
            self.writer.flush()  # someone watching the run live sees each epoch as it ends
        except Exception as e:
            self._fail("logging an epoch", e)

    def finish(self, run: RunDir, best_metrics: dict) -> None:
        """The test metrics and the run's PNGs (as images) at the last epoch; then close the file."""
        if self.writer is None:
            return
        try:
            import numpy as np
            from PIL import Image

            step = self.epoch or int(best_metrics.get("epoch", 0))
            if run.test_metrics.exists():
                m = json.loads(run.test_metrics.read_text())
                self.writer.add_scalar("test/accuracy", m["accuracy"], step)
                self.writer.add_scalar("test/loss", m["loss"], step)
            for png in run.plots():
                with Image.open(png) as img:
                    pixels = np.asarray(img.convert("RGB"))  # (H, W, 3) uint8; the PNGs carry alpha
                self.writer.add_image(f"plots/{png.stem}", pixels, step, dataformats="HWC")
            self.writer.close()
            self.writer = None
        except Exception as e:
            self._fail("writing the end of the run", e)


def _quiet_writer_threads() -> None:
    """TensorBoard's writer thread, when a write fails (a folder made read-only, a full disk),
    dies re-raising the error, which Python prints as a traceback; the same error reaches the
    next call on the training thread, which says it in one line (TensorBoardTracker._fail). So
    the writer thread's own report is dropped; every other thread's is printed as before."""
    previous = threading.excepthook
    if getattr(previous, "lenet5_quiet", False):
        return

    def hook(args) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread":  # tensorboard's event writer
            return
        previous(args)

    hook.lenet5_quiet = True  # type: ignore[attr-defined]  # a mark: installed once per process
    threading.excepthook = hook


def start_tensorboard(cfg, run: RunDir) -> TensorBoardTracker | None:
    """Start TensorBoard event files in `run`'s tensorboard/ folder; None when that fails (said in
    one line). A resumed run drops the events an earlier process logged past its last.pt."""
    from .config import to_dict
    from .errors import ConfigError
    from .model import LeNet5

    try:
        import tensorboard  # noqa: F401  (torch's writer needs it, and says so less plainly)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'lenet5[tensorboard]'"
        ) from None
    import torch

    # Resumed: metrics.csv holds the epochs last.pt knows. Events of later epochs (logged before a
    # crash, their last.pt never on disk) are purged by TensorBoard when it reads the files, so the
    # epochs trained again are not drawn twice.
    purge = None
    if any(run.tensorboard.glob("events.out.tfevents.*")):
        rows = run.read_metrics()
        purge = (rows[-1]["epoch"] if rows else 0) + 1
    _quiet_writer_threads()
    try:
        writer = SummaryWriter(log_dir=str(run.tensorboard), purge_step=purge)
        config = json.dumps(to_dict(cfg), indent=2)
        writer.add_text("config", "\n".join("    " + line for line in config.splitlines()), purge or 0)
        if purge is None:
            # The graph is the same for every run: traced once, on the CPU, from a fresh model, so
            # the device, channels_last or torch.compile of the one training cannot trip the tracer.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes about itself
                writer.add_graph(LeNet5().eval(), torch.zeros(1, 1, 28, 28))
        writer.flush()
    except Exception as e:
        _say(
            f"could not start ({type(e).__name__}: {str(e)[:160]}); training goes on without it",
            "tensorboard",
        )
        return None
    _say(f"logging to {run.tensorboard}; view with: tensorboard --logdir {run.path.parent}", "tensorboard")
    return TensorBoardTracker(writer)
