"""fit(): the epoch loop, learning-rate schedule, early stopping, checkpoints and resume.

Reads top to bottom. Under torchrun each process trains on its own slice of every global batch
(DistributedDataParallel all-reduces the gradients); only the primary process prints and writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from . import checkpoint, compute
from .config import Config, choose_device, from_dict, to_dict
from .data import MNIST, EpochPlan, load_mnist, split_validation
from .errors import ConfigError, TrainingError
from .evaluate import evaluate
from .model import LeNet5
from .step import GraphedStep, TrainStep
from .tracking import RunDir


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        return self.rank == 0


def setup_distributed(cfg: Config) -> tuple[Dist, torch.device]:
    """Join the torchrun job if there is one (nccl on CUDA, gloo on CPU); choose the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), choose_device(cfg.device)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise ConfigError(f"--device {cfg.device}: distributed training runs on cuda or cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=cfg.dist_timeout))
        except Exception as e:  # a peer that never came: a clear error, not a hang
            raise TrainingError(f"rank {rank}: could not join the {world}-process job within "
                                f"--dist-timeout {cfg.dist_timeout}s ({_first_line(e)})") from None
    return Dist(rank, world, local_rank), device


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # foreach: one multi-tensor kernel per update instead of one per parameter (faster on CPU too)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay,
                           foreach=True)


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The schedule and whether it steps per batch (onecycle) or per epoch (StepLR, as the seed)."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=cfg.warmup, div_factor=25.0, final_div_factor=1e3), "step"
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "epoch"


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


def seed_everything(cfg: Config) -> None:
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # the fastest algorithm for each shape, chosen once
        # TF32 for the fully connected layers too, as torch already does for cuDNN's convolutions:
        # --recipe fast 12 % sooner on an H200, its accuracy unchanged over 3 seeds
        torch.backends.cuda.matmul.allow_tf32 = True


def use_cuda_graphs(cfg: Config, device: torch.device, world: int) -> bool:
    """--cuda-graphs records one fixed step: on CUDA, with plain SGD, in one process, uncompiled."""
    return (cfg.cuda_graphs and device.type == "cuda" and cfg.optimizer == "sgd" and world == 1
            and not cfg.compile)


def training_path(cfg: Config, model, device: torch.device, world: int) -> compute.Path:
    """compute.py's choice for this run's steps (`model` as the step will call it)."""
    return compute.for_training(model, device, label_smoothing=cfg.label_smoothing, world=world,
                                compiled=cfg.compile,
                                cuda_graphs=use_cuda_graphs(cfg, device, world))


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    """NHWC where it pays: oneDNN's CPU convolutions (~15 % faster steps). On CUDA, NCHW measured
    faster for training and inference alike (cuDNN's NHWC kernels add layout conversions)."""
    return cfg.channels_last and device.type == "cpu"


def run_name(cfg: Config) -> str:
    return cfg.name or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"


def fit(cfg: Config, data: MNIST | None = None, resume: str | os.PathLike | None = None,
        on_epoch=None, on_end=None, on_start=None, overwrite: bool = False) -> dict:
    """Train a LeNet5 as `cfg` says; return a summary (run folder, best metrics, history).

    `resume` is a `last.pt` to continue exactly where it stopped. On the primary process,
    `on_start(path)` is called once the compute path is chosen (a `compute.Path`), `on_epoch(row)` after each epoch (the CLI prints the epoch line) and
    `on_end(run_path, data)` once training is done, with the MNIST set already loaded, before the
    wandb mirror closes, so what it adds to the run folder (test metrics, plots) is mirrored too.
    A resumed run whose training is over (`finished`) trains no more: it only calls `on_end`.
    `overwrite`: start afresh in a run folder that holds a run, removing its files.

    The run folder always agrees with its newest last.pt, whatever stops the process: the files
    an epoch improves (mnist_lenet5.pth, best.pt) are written before its last.pt, metrics.csv after
    it, and a resume rewrites metrics.csv from the rows last.pt carries. A checkpoint that cannot
    be written (a full disk) stops training at the next step, naming the file; last.pt is then an
    earlier epoch's, whole and resumable. One training at a time owns a run folder (RunDir.lock).
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info, device = setup_distributed(cfg)
    args = (cfg, dist_info, device, data, resume, on_epoch, on_end, on_start, overwrite)
    if dist_info.world == 1:
        with contextlib.ExitStack() as cleanup:
            return _fit(*args, cleanup)
    import torch.distributed as dist

    try:
        with contextlib.ExitStack() as cleanup:
            return _fit(*args, cleanup)
    except (dist.DistError, RuntimeError) as e:  # a peer died or stopped answering
        raise TrainingError(f"rank {dist_info.rank}: lost contact with the other processes "
                            f"({_first_line(e)}); the job stopped, its last epoch is in last.pt: "
                            "continue with --resume") from None
    finally:
        dist.destroy_process_group()


def _fit(cfg: Config, dist_info: Dist, device: torch.device, data: MNIST | None, resume, on_epoch,
         on_end, on_start, overwrite: bool, cleanup: contextlib.ExitStack) -> dict:
    seed_everything(cfg)
    primary = dist_info.primary

    # Data: the whole set in memory, on the training device.
    data = data or load_mnist(cfg.data_dir)
    images, labels = data.train_images, data.train_labels
    if cfg.limit:
        images, labels = images[:cfg.limit], labels[:cfg.limit]
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, cfg.val_size, cfg.seed)
    train_x, train_y = train_x.to(device), train_y.to(device)
    val_x, val_y = val_x.to(device), val_y.to(device)
    n = len(train_x)

    model = LeNet5().to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    optimizer = make_optimizer(cfg, model)
    scheduler, sched_every = make_scheduler(cfg, optimizer, steps_per_epoch)
    stopper = EarlyStopping(cfg.monitor, cfg.patience)
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(device=gen_device).manual_seed(cfg.seed)

    start_epoch, start_step, history, best_metrics = 0, 0, [], {}
    run = RunDir(Path(resume).parent) if resume else RunDir(Path(cfg.out_dir) / run_name(cfg))
    if primary:  # the folder is this process's until fit returns or raises
        with _writing(run):
            run = RunDir.open(run.path) if resume else RunDir.create(run.path, overwrite)
        cleanup.callback(run.release)
    resume_sums = None
    if resume:
        state = checkpoint.load(resume)
        model.load_state_dict(checkpoint.model_state(state, resume))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["early_stopping"])
        generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        best_metrics = dict(state.get("best_metrics", {}))
        resume_sums = state.get("running")
        if primary:  # metrics.csv as last.pt knows it: rows written after last.pt was are dropped
            with _writing(run):
                history = _history_at(run, state, start_epoch)
    elif primary:
        with _writing(run):
            run.write_config(to_dict(cfg))

    train_model = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    step_model = torch.compile(train_model) if cfg.compile else train_model
    path = training_path(cfg, step_model, device, dist_info.world)
    if path.name == "cuda-graphs":
        train_step = GraphedStep(step_model, optimizer, cfg.batch_size, channels_last, cfg.label_smoothing)
    else:
        train_step = TrainStep(step_model, optimizer, cfg.label_smoothing, dist_info.world, path)
    if primary:
        with _writing(run):
            run.write_environment(path, device, dist_info.world)
        if on_start:
            on_start(path)
    tracker = None
    if primary and cfg.wandb:
        from .tracking import start_wandb

        tracker = start_wandb(cfg, run)

    def snapshot(epoch: int, step: int, epoch_gen_state: torch.Tensor, running=None) -> dict:
        """Everything `last.pt` needs to continue exactly from (epoch, step)."""
        return {
            "format": checkpoint.FORMAT, "version": checkpoint.VERSION,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(),
            "epoch": epoch, "step": step, "running": running,
            "rng": {"generator": epoch_gen_state, "torch": torch.get_rng_state()},
            "best_metrics": best_metrics, "config": to_dict(cfg),
            "normalize": {"mean": cfg.mean, "std": cfg.std},
            "history": history,  # metrics.csv's rows: a resume rewrites the file from these
        }

    from tqdm import tqdm

    world, rank = dist_info.world, dist_info.rank
    if world > 1:
        import torch.distributed as dist
    done = finished(cfg, start_epoch, start_step, stopper)
    stopped_early = done and stopper.should_stop
    epochs_run = start_epoch
    interrupt = InterruptFlag()
    writer = checkpoint.Writer()  # epoch checkpoints reach the disk while the next epoch trains
    try:
        for epoch in range(start_epoch, start_epoch if done else cfg.epochs):
            epoch_gen_state = generator.get_state()
            plan = EpochPlan(n, cfg.batch_size, cfg.shift, generator, device)
            whole = None
            if device.type == "cuda" and world == 1:  # the epoch's batches made at once: fewer launches
                whole = plan.whole(train_x, train_y, cfg.mean, cfg.std)
            first = start_step if epoch == start_epoch else 0
            last = min(plan.steps, first + 3) if cfg.dry_run else plan.steps
            # An interrupted epoch's sums are the whole job's: rank 0 carries them on, the others
            # start from zero, and the epoch's reduction adds them up.
            carried = resume_sums if epoch == start_epoch and resume_sums and primary else None
            train_step.reset(carried)
            seen = int(carried["seen"]) if carried else 0
            t0 = time.perf_counter()
            model.train()
            bar = tqdm(range(first, last), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=None if (primary and cfg.progress) else True, leave=False, dynamic_ncols=True)

            def stop(step: int, signum: int, together: bool = True):
                """Save the state before `step` (rank 0) and end the run: Ctrl-C or SIGTERM came.

                `together`: every process stops at this step, so the epoch's sums so far are
                gathered from all of them; otherwise a peer is gone and rank 0 keeps its own.
                """
                bar.close()
                sums = train_step.sums(seen)
                if world > 1 and together:
                    dist.all_reduce(sums)
                if primary:
                    interrupt.saving = True  # a signal now must not cut this save short
                    _written(writer, run, f"at epoch {epoch + 1}, step {step + 1}")  # older files first
                    loss_sum, correct, seen_all = sums.tolist()
                    running = {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen_all)}
                    with _saving(run, f"at epoch {epoch + 1}, step {step + 1}"):
                        checkpoint.save(snapshot(epoch, step, epoch_gen_state, running),
                                        run.path / "last.pt")
                raise Interrupted(run.path / "last.pt", signum) from None

            for step in bar:
                if world == 1:
                    signum = interrupt.requested
                elif step % STOP_CHECK_EVERY == 0:
                    # A signal reaches each process at its own moment: they agree, at the same
                    # steps, whether any got one, and so all stop at the same boundary.
                    asked = torch.tensor([interrupt.requested], device=device)
                    dist.all_reduce(asked, op=dist.ReduceOp.MAX)
                    signum = int(asked.item())
                else:
                    signum = 0
                if signum:  # stop between steps, so the state is exact
                    stop(step, signum)
                if writer.failure is not None:  # a checkpoint did not reach the disk: stop now
                    _written(writer, run, f"at epoch {epoch + 1}, step {step + 1}")
                if whole is not None:
                    rows = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
                    x, y = whole[0][rows], whole[1][rows]
                else:
                    x, y = plan.batch(step, train_x, train_y, cfg.mean, cfg.std, rank, world)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                try:
                    train_step(x, y, min(cfg.batch_size, n - step * cfg.batch_size))
                except Exception:
                    # A peer stopped at once (a second Ctrl-C) and so failed this step's gradient
                    # all-reduce. Nothing has been updated yet: stop at this step's boundary.
                    if world > 1 and interrupt.requested:
                        stop(step, interrupt.requested, together=False)
                    raise
                if sched_every == "step":
                    scheduler.step()
                seen += len(y)
                if step % 100 == 99 and primary:
                    running = train_step.loss_sum.item() / max(seen, 1)
                    if not math.isfinite(running):
                        raise TrainingError(_nan_message(cfg, epoch, step, run))
                    bar.set_postfix(loss=f"{running:.4f}")
            bar.close()
            if sched_every == "epoch":
                scheduler.step()

            # Reduce the epoch's training figures across processes.
            totals = train_step.sums(seen)
            if world > 1:
                dist.all_reduce(totals)
            train_loss = (totals[0] / totals[2].clamp(min=1)).item()
            train_acc = (totals[1] / totals[2].clamp(min=1)).item()
            if not math.isfinite(train_loss):
                raise TrainingError(_nan_message(cfg, epoch, last - 1, run))

            # Every process scores the same validation set with the same weights, so all reach
            # the same early-stopping decision without talking to each other.
            val_images, val_labels = (val_x[:512], val_y[:512]) if cfg.dry_run else (val_x, val_y)
            val = evaluate(model, val_images, val_labels, cfg.mean, cfg.std, cfg.eval_batch_size,
                           device, channels_last)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": val["loss"], "val_acc": val["accuracy"],
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            improved = stopper.update(row)
            if improved:
                best_metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
            epochs_run = epoch + 1
            if primary:
                # In this order, so that a crash anywhere leaves last.pt the newest word: what
                # this epoch improved, then last.pt, then the table (rewritten from last.pt on resume).
                history.append(row)
                state = checkpoint.portable(snapshot(epoch + 1, 0, generator.get_state()))
                if writer.failure is not None:
                    _written(writer, run, f"at the end of epoch {epoch + 1}")
                if improved:
                    writer.save(state["model"], run.path / "mnist_lenet5.pth")
                writer.write(checkpoint.serialise(state),
                             *([run.path / "best.pt"] if improved else []), run.path / "last.pt")
                writer.write(run.metrics_text(history).encode(), run.metrics_csv)
                if tracker:
                    tracker.log_epoch(row)
                if on_epoch:
                    on_epoch(row)
            if cfg.dry_run:
                break
            if stopper.should_stop:
                stopped_early = True
                break
            start_step = 0
        _written(writer, run, f"at the end of epoch {epochs_run}")
        if primary and on_end:
            on_end(run.path, data)
    finally:
        writer.close()
        interrupt.restore()
        if tracker:
            tracker.finish(run, best_metrics)

    return {"run_dir": str(run.path), "best": best_metrics, "history": history,
            "stopped_early": stopped_early, "epochs_run": epochs_run, "device": str(device),
            "primary": primary, "path": path.name}


def finished(cfg: Config, epoch: int, step: int, stopper: EarlyStopping) -> bool:
    """A run at (epoch, step) has no more epochs to train: all done, or early stopping ended it."""
    return step == 0 and (epoch >= cfg.epochs or stopper.should_stop)


def finished_state(state: dict) -> bool:
    """`finished` for a loaded last.pt."""
    cfg = from_dict(state["config"])
    stopper = EarlyStopping(cfg.monitor, cfg.patience)
    stopper.load_state_dict(state["early_stopping"])
    return finished(cfg, int(state["epoch"]), int(state["step"]), stopper)


def _history_at(run: RunDir, state: dict, epoch: int) -> list[dict]:
    """The metrics rows of the first `epoch` epochs, and metrics.csv rewritten to hold just them."""
    if "history" not in state:  # written before last.pt carried its rows: trust the file's
        return run.truncate_metrics(epoch)
    history = [dict(row) for row in state["history"]]
    run.write_metrics(history)
    return history


@contextlib.contextmanager
def _writing(run: RunDir):
    """The run folder's set-up files: an OSError (read-only folder, full disk) becomes one line."""
    try:
        yield
    except OSError as e:
        raise TrainingError(f"{run.path}/: {e.strerror or e}; the run folder cannot be written: "
                            "make room or allow writing there, or choose another --out-dir") from None


def _written(writer: checkpoint.Writer, run: RunDir, when: str) -> None:
    """Wait until the checkpoints handed to `writer` are on disk; a failed one stops training."""
    with _saving(run, when):
        writer.wait()


@contextlib.contextmanager
def _saving(run: RunDir, when: str):
    """A checkpoint write that fails stops training (`when`: where it stood) with the file, the
    reason and the way on."""
    try:
        yield
    except OSError as e:
        raise TrainingError(_write_failed_message(e, run, when)) from None


def _write_failed_message(e: OSError, run: RunDir, when: str) -> str:
    last = run.path / "last.pt"
    try:
        kept = f"{last} holds epoch {int(checkpoint.load(last)['epoch'])}, whole"
        then = f"continue with: lenet5 train --resume {run.path}"
    except Exception:  # none written yet (or unreadable): nothing to continue from
        kept, then = "no epoch was saved", "start it again"
    return (f"could not write {e.filename or run.path} ({e.strerror or e}); training stopped "
            f"{when}; {kept}: make room, then {then}")


STOP_CHECK_EVERY = 10  # under torchrun, steps between the processes' checks for a stop signal


class Interrupted(KeyboardInterrupt):
    """Training was stopped by a signal (Ctrl-C, SIGTERM); `path` holds the state to resume from."""

    def __init__(self, path: Path, signum: int = signal.SIGINT):
        super().__init__(str(path))
        self.path, self.signum = path, signum


class InterruptFlag:
    """The first Ctrl-C, or SIGTERM (what schedulers and torchrun send before they kill a job), asks
    the loop to stop at the next step boundary. Another one a second or more later stops at once,
    unless that stop's checkpoint is being written; sooner, it is the same request again (torchrun
    passes the terminal's Ctrl-C on to processes that already got it)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    GRACE = 1.0  # seconds

    def __init__(self):
        self.requested = 0  # the signal that asked, once one has
        self.saving = False
        self._at = 0.0
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def _handle(self, signum, frame):
        if not self.requested:
            self.requested, self._at = signum, time.monotonic()
        elif not self.saving and time.monotonic() - self._at >= self.GRACE:
            raise KeyboardInterrupt

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:200] if text else type(e).__name__)


def _nan_message(cfg: Config, epoch: int, step: int, run: RunDir) -> str:
    return (f"training loss became NaN/inf at epoch {epoch + 1}, step {step + 1}; lower --lr "
            f"(now {cfg.lr}) and start again, or resume from the last good checkpoint "
            f"{run.path / 'last.pt'}")
