"""Trackers: the optional wandb mirror of a run folder (rundir.py owns the folder itself).

The local files are always written; wandb (`--wandb`) only mirrors them, and never stops training.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .files import write_text
from .rundir import BEST, RunDir

INIT_TIMEOUT_S = 20.0  # wandb's own default (90 s) stalls training start when the network is gone
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


def _say(message: str) -> None:
    print(f"lenet5: wandb: {message}", file=sys.stderr, flush=True)


class WandbTracker:
    """Mirrors a run folder to a wandb run: config, per-epoch metrics, plots, best.pt. A failure in
    wandb is reported once and tracking stops; training never does."""

    def __init__(self, wandb, wb_run):
        self.wandb, self.wb_run = wandb, wb_run

    def _fail(self, what: str, e: Exception) -> None:
        _say(f"{what} failed ({type(e).__name__}: {str(e)[:160]}); tracking stops, training goes on; "
             "the run folder has everything")
        try:
            self.wb_run.finish(exit_code=1)
        except Exception:
            pass
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
                art = self.wandb.Artifact(f"lenet5-{run.path.name}", type="model",
                                          metadata={k: v for k, v in best_metrics.items() if v == v})
                for name in (BEST, "config.json", "metrics.csv"):
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
    run lands in ./wandb/offline-run-*, for `wandb sync` later). Online start-up is bounded by
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
    # dir: wandb remembers the first run's folder for the whole process; say where, every time.
    kwargs = dict(dir=os.environ.get("WANDB_DIR") or os.getcwd(),
                  project=cfg.wandb_project, name=cfg.wandb_name or run.path.name,
                  tags=list(cfg.wandb_tags), group=run.path.name, config=to_dict(cfg),
                  job_type="train", notes=f"lenet5 run folder: {run.path}")

    # A resumed run folder continues its online wandb run. Offline, wandb cannot look up the run
    # it would continue, so a resumed run is a new offline run in the same group.
    ids = run.path / WANDB_ID_FILE
    try:
        previous = json.loads(ids.read_text()).get("id") if ids.is_file() else None
    except (OSError, ValueError, AttributeError):  # unreadable or not our JSON: start a new run
        previous = None

    def init(mode: str):
        settings = wandb.Settings(mode=mode, init_timeout=INIT_TIMEOUT_S,
                                  finish_timeout=FINISH_TIMEOUT_S, silent=True, console="off")
        same = dict(id=previous, resume="allow") if mode == "online" and previous else {}
        wb_run = wandb.init(settings=settings, reinit="create_new", **kwargs, **same)
        wb_run.define_metric("epoch")
        wb_run.define_metric("*", step_metric="epoch")  # curves against epochs, as in metrics.csv
        return wb_run

    try:
        try:
            wb_run = init(mode)
        except Exception as e:
            if mode != "online":
                raise
            mode, why = "offline", f"W&B online failed: {type(e).__name__}"
            wb_run = init(mode)
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
