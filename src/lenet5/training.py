"""fit(): train a LeNet5. The loop reads top to bottom; what it calls comes after it.

    prepare      data on the device; the model, optimiser, schedule and early stopping (State);
                 the run folder; the step, on the compute path chosen once
    each epoch   its plan (order, shifts); the steps, each followed by the weights' moving average
                 (--ema); the epoch's end: figures across processes, validation (of the average),
                 early stopping, the epoch's files
    finish       every file on disk; the caller's final test and plots

Under torchrun each process trains on its own slice of every global batch (DistributedDataParallel
all-reduces the gradients); only the primary process prints and writes.

The run folder always agrees with its newest last.pt, whatever stops the process: the files an
epoch improves (mnist_lenet5.pth, best.pt) are written before its last.pt, metrics.csv after it,
and a resume rewrites metrics.csv from the rows last.pt carries. A checkpoint that cannot be written
(a full disk) stops training at the next step, naming the file; last.pt is then an earlier
epoch's, whole and resumable. One training at a time owns a run folder (RunDir.lock).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from . import checkpoint
from .config import RUN_ID, Config, choose_device, flag, from_dict, to_dict, usable_threads
from .data import MNIST, EpochPlan, load_dataset, split_validation
from .datasets import DATASETS
from .errors import CheckpointError, ConfigError, TrainingError
from .fast import choose
from .fast.cuda_graph import GraphedStep
from .files import DENIED, FULL, what_to_do
from .metrics import evaluate
from .model import LeNet5
from .rundir import RunDir, new_run_id
from .step import TrainStep
from .stopping import EarlyStopping, finished

STOP_CHECK_EVERY = 10  # under torchrun, steps between the processes' checks for a stop signal
# Flags that may change when a run is resumed; everything else comes from its last.pt.
RESUMABLE = {
    "device",
    "threads",
    "progress",
    "data_dir",
    "dist_timeout",
    "cuda_graphs",
    "wandb",
    "wandb_project",
    "wandb_name",
    "wandb_tags",
    "tensorboard",
}


def fit(
    cfg: Config,
    data: MNIST | None = None,
    resume: str | os.PathLike | None = None,
    on_epoch=None,
    on_end=None,
    on_start=None,
    overwrite: bool = False,
    on_step=None,
    test: bool = True,
) -> dict:
    """Train a LeNet5 as `cfg` says; return a summary (run folder, best metrics, history).

    `resume` is a `last.pt` to continue exactly where it stopped (`resume_config` checks it and
    gives its Config); a run whose training is over trains no more and only calls `on_end`.
    `overwrite`: start afresh in a run folder that holds a run, removing its files.
    On the primary process: `on_start(path)` once the compute path is chosen, `on_epoch(row)`
    after each epoch (the CLI prints the epoch line), `on_step(epoch, step)` after each step, and
    `on_end(run_path, finished)` at the end, with what `finish` returned (None with `test=False`).
    `test`: end with `finish` (the reader's calibration, the test of best.pt, the plots), before the
    wandb mirror and TensorBoard close, so that they mirror those files too.
    """
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(usable_threads(cfg.threads)[0])  # the CLI says when it is less
    job, device = setup_distributed(cfg)
    hooks = Hooks(on_start, on_epoch, on_step, on_end)
    if job.world == 1:
        with contextlib.ExitStack() as cleanup:
            return _fit(cfg, job, device, data, resume, overwrite, hooks, cleanup, test)
    import torch.distributed as dist

    try:
        with contextlib.ExitStack() as cleanup:
            return _fit(cfg, job, device, data, resume, overwrite, hooks, cleanup, test)
    except (dist.DistError, RuntimeError) as e:  # a peer died or stopped answering
        raise TrainingError(
            f"rank {job.rank}: lost contact with the other processes "
            f"({_first_line(e)}); the job stopped, its last epoch is in last.pt: "
            "continue with --resume"
        ) from None
    finally:
        dist.destroy_process_group()


def _fit(cfg, job, device, data, resume, overwrite, hooks, cleanup, test) -> dict:
    # prepare: data, the model and all that last.pt holds, the run folder, the step
    seed_everything(cfg)
    data = data or load_dataset(cfg.dataset, cfg.data_dir)
    if data.dataset != cfg.dataset:
        raise ConfigError(
            f"--dataset {cfg.dataset}, but the data given holds {data.dataset}: give the same set"
        )
    (train_x, train_y), (val_x, val_y) = training_data(cfg, data, device)
    n = len(train_x)
    bank, per_step = non_digits(cfg, train_x, device)
    state = State.new(cfg, device, steps=math.ceil(n / cfg.batch_size))
    run = open_run(cfg, resume, overwrite, job, cleanup)
    begin(cfg, state, run, resume, job)
    train_step, path = make_step(cfg, state, device, job.world, per_step)
    if job.primary:
        with _writing(run):
            run.write_environment(path, device, job.world)
        hooks.start(path)
    trackers = start_trackers(cfg, run, job)
    stops = Stops(job, device)
    writer = checkpoint.Writer()  # epoch checkpoints reach the disk while the next epoch trains
    loop = Loop(cfg, job, device, state, run, train_step, stops, writer)
    done = finished(cfg, state.epoch, state.step, state.stopper)
    try:
        for epoch in range(state.epoch, state.epoch if done else cfg.epochs):
            # the epoch's plan: its order and shifts, drawn up front (a resume redraws the same)
            epoch_gen = state.generator.get_state()
            plan = EpochPlan(
                n, cfg.batch_size, cfg.shift, state.generator, device, bank, per_step, cfg.augment
            )
            batch = batches(plan, cfg, train_x, train_y, job, device)
            first, last = state.step, min(plan.steps, state.step + 3) if cfg.dry_run else plan.steps
            seen = train_step.reset(state.carried_sums(job))
            t0 = time.perf_counter()
            state.model.train()
            bar = progress_bar(cfg, job, epoch, first, last)

            # the steps: stop between two if asked, else forward, backward, update
            stop = functools.partial(save_and_stop, loop, epoch, epoch_gen)
            for step in bar:
                if signum := stops.asked(step, writer, run, epoch):
                    stop(step, seen, signum)
                x, y = batch(step)
                with stops.peer_gone(stop, step, seen):
                    train_step(x, y, min(cfg.batch_size, n - step * cfg.batch_size))
                if state.average is not None:
                    state.average.update()
                if state.sched_every == "step":
                    state.scheduler.step()
                seen += len(y) - plan.outlier_rows(job.rank, job.world)
                show_loss(loop, bar, seen, step, epoch)
                hooks.step(job, epoch, step)
            bar.close()

            # the epoch's end: figures, validation, early stopping, files
            row = end_of_epoch(loop, seen, (val_x, val_y), epoch, t0)
            if job.primary:
                save_epoch(state, writer, run)
                for tracker in trackers:
                    tracker.log_epoch(row)
                hooks.epoch(row)

            # termination conditions
            if cfg.dry_run or state.stopper.should_stop:
                break

        # finish: every file on disk, then the reader's calibration, the final test and plots
        _written(writer, run, f"at the end of epoch {state.epoch}")
        tested = None
        if job.primary and test and not cfg.dry_run:
            tested = finish(cfg, run, data, (val_x, val_y), device)
        if job.primary:
            hooks.end(run.path, tested)
    finally:
        writer.close()
        stops.flag.restore()
        for tracker in trackers:
            tracker.finish(run, state.best_metrics)
    return _result(run, state, device, job, path, tested)


def _result(run: RunDir, state: State, device: torch.device, job, path, tested: dict | None) -> dict:
    """What `fit` returns: where the run is, its best epoch's figures, its history, the test's."""
    return {
        "run_dir": str(run.path),
        "best": state.best_metrics,
        "history": state.history,
        "stopped_early": state.stopper.should_stop,
        "epochs_run": state.epoch,
        "device": str(device),
        "primary": job.primary,
        "path": path.name,
        "test": tested["test"] if tested else None,
    }


def finish(cfg: Config, run: RunDir, data: MNIST, val, device: torch.device) -> dict:
    """A run's last stage, after its last epoch: the reader's calibration fitted and stored in
    best.pt, best.pt scored on the MNIST test set, the plots drawn beside it, and test_metrics.json
    written last: its presence marks the run finished, so a process killed before it leaves a run
    that `--resume` finishes. {"test": metrics, "plots": [paths], "plots_skipped": reason or ""}."""
    import json

    from . import files
    from .errors import Lenet5Error
    from .metrics import score
    from .plots import draw_run
    from .reader import Reader, fit_calibration

    with _saving(run, "while finishing the run"):
        saved = checkpoint.load(run.best)
        if not isinstance(saved.get("reader"), dict):
            images, labels = val
            fitted = ""
            if not len(images):  # no validation split (the seed recipe): the last training images
                images, labels = data.train_images[-5000:], data.train_labels[-5000:]
                fitted = "the last 5,000 training images (no held-out split), clean and re-drawn"
            saved["reader"] = fit_calibration(
                Reader.load(run.best, "cpu"), images, labels, cfg.seed, fitted
            ).to_dict()
            checkpoint.save(saved, run.best)
        metrics = score(Reader.load(run.best, str(device)), data)
        plots, skipped = [], ""
        try:
            plots = draw_run(run.path, data.test_images, data.test_labels, device)
        except Lenet5Error as e:  # e.g. matplotlib missing: the trained model is what matters
            skipped = str(e)
        files.write_text(run.test_metrics, json.dumps(metrics, indent=2) + "\n")
    return {"test": metrics, "plots": plots, "plots_skipped": skipped}


# --- what the loop calls, in the order it calls it ---------------------------------------------


def begin(cfg: Config, state: State, run: RunDir, resume, job: Dist) -> None:
    """The run's state from its last.pt (checked to be this run's) on a resume, and its files:
    metrics.csv as that last.pt knows it (rows written after it dropped), or a new config.json."""
    if resume:
        saved = checkpoint.load(resume)
        run.check_owns(saved, Path(resume), RESUMABLE)  # before its metrics.csv is rewritten
        state.restore(saved, resume)
    if job.primary:
        with _writing(run):
            if resume:
                state.history = _history_at(run, state.loaded, state.epoch)
            else:
                run.write_config(to_dict(cfg), state.run_id)


@dataclass
class Dist:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        return self.rank == 0


@dataclass
class Hooks:
    """The caller's hooks (see `fit`); each runs on the primary process only."""

    on_start: Callable[[choose.Path], object] | None = None  # the compute path
    on_epoch: Callable[[dict], object] | None = None
    on_step: Callable[[int, int], object] | None = None
    on_end: Callable[[Path, dict | None], object] | None = None

    def start(self, path) -> None:
        if self.on_start:
            self.on_start(path)

    def epoch(self, row: dict) -> None:
        if self.on_epoch:
            self.on_epoch(row)

    def step(self, job: Dist, epoch: int, step: int) -> None:
        if self.on_step and job.primary:
            self.on_step(epoch, step)

    def end(self, path: Path, data) -> None:
        if self.on_end:
            self.on_end(path, data)


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
            raise TrainingError(
                f"rank {rank}: could not join the {world}-process job within "
                f"--dist-timeout {cfg.dist_timeout}s ({_first_line(e)})"
            ) from None
    return Dist(rank, world, local_rank), device


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


def training_data(cfg: Config, data: MNIST, device: torch.device):
    """((train_x, train_y), (val_x, val_y)): uint8 images and labels, on the training device."""
    images, labels = data.train_images, data.train_labels
    if cfg.limit:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, cfg.val_size, cfg.seed)
    return ((train_x.to(device), train_y.to(device)), (val_x.to(device), val_y.to(device)))


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # foreach: one multi-tensor kernel per update instead of one per parameter (faster on CPU too)
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        foreach=True,
    )


def make_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """The schedule and whether it steps per batch (onecycle) or per epoch (StepLR, as the seed)."""
    if cfg.schedule == "onecycle":
        # torch divides by (warmup steps - 1): a warmup of exactly one step (a tiny --limit) would
        # divide by zero, so that run starts at its peak instead
        warmup = 0.0 if cfg.warmup * (cfg.epochs * steps_per_epoch) == 1 else cfg.warmup
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            epochs=cfg.epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=warmup,
            div_factor=25.0,
            final_div_factor=1e3,
        ), "step"
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), "epoch"


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    """NHWC where it pays: oneDNN's CPU convolutions (~15 % faster steps) and lenet5's native
    kernels. On CUDA, NCHW measured faster (cuDNN's NHWC kernels add layout conversions)."""
    return cfg.channels_last and device.type == "cpu"


class State:
    """Everything last.pt holds: the model, optimiser, schedule, early stopping, random state,
    where the run stands (epoch, step), its metrics rows and best epoch. `snapshot()` is last.pt's
    content, `restore()` takes it back."""

    def __init__(
        self,
        cfg: Config,
        model,
        optimizer,
        scheduler,
        sched_every: str,
        stopper: EarlyStopping,
        generator: torch.Generator,
    ):
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.scheduler, self.sched_every, self.stopper, self.generator = (
            scheduler,
            sched_every,
            stopper,
            generator,
        )
        # --ema: the moving average of the weights, which the run validates and keeps (None: off)
        self.average = Average(model, cfg.ema) if cfg.ema > 0 else None
        self.epoch, self.step = 0, 0  # the next step to take
        self.history: list[dict] = []  # metrics.csv's rows
        self.best_metrics: dict = {}
        self.running = None  # an interrupted epoch's sums so far, from a resumed last.pt
        self.improved = False  # whether the last epoch was the best so far
        self.loaded: dict = {}  # the last.pt restored from
        self.run_id: str | None = new_run_id()  # config.json's and every checkpoint's; None: an old run

    @classmethod
    def new(cls, cfg: Config, device: torch.device, steps: int) -> State:
        model = LeNet5().to(device)
        if use_channels_last(cfg, device):
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format
        optimizer = make_optimizer(cfg, model)
        scheduler, every = make_scheduler(cfg, optimizer, steps)
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        generator = torch.Generator(device=gen_device).manual_seed(cfg.seed)
        return cls(
            cfg, model, optimizer, scheduler, every, EarlyStopping(cfg.monitor, cfg.patience), generator
        )

    def snapshot(self, epoch_gen: torch.Tensor | None = None, running: dict | None = None) -> dict:
        """last.pt's content now: at an epoch's end, or mid-epoch (`epoch_gen`: the generator's
        state at the epoch's start, to redraw its plan; `running`: its sums so far)."""
        return {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            # the weights the run's figures are of: with --ema the average, the trained ones beside
            "model": self.kept_model.state_dict(),
            **(self.average.state_dict(self.model) if self.average is not None else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "running": running,
            "rng": {
                "generator": self.generator.get_state() if epoch_gen is None else epoch_gen,
                "torch": torch.get_rng_state(),
            },
            "best_metrics": self.best_metrics,
            "config": to_dict(self.cfg),
            "normalize": {"mean": self.cfg.mean, "std": self.cfg.std},
            "classes": list(DATASETS[self.cfg.dataset].classes),  # label 0 to 9, in words
            "history": self.history,  # metrics.csv's rows: a resume rewrites the file from these
            **({RUN_ID: self.run_id} if self.run_id else {}),  # a resume checks it is this run's
        }

    @property
    def kept_model(self) -> LeNet5:
        """The model validated and saved as best.pt: the average with --ema, else the trained one."""
        return self.average.model if self.average is not None else self.model

    def restore(self, saved: dict, path) -> None:
        if self.average is not None:
            self.average.load_state_dict(saved, path, self.model)
        else:
            self.model.load_state_dict(checkpoint.model_state(saved, path))
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.stopper.load_state_dict(saved["early_stopping"])
        self.generator.set_state(saved["rng"]["generator"])
        torch.set_rng_state(saved["rng"]["torch"])
        self.epoch, self.step = int(saved["epoch"]), int(saved["step"])
        self.best_metrics = dict(saved.get("best_metrics", {}))
        self.running, self.loaded = saved.get("running"), saved
        self.run_id = saved.get(RUN_ID)

    def carried_sums(self, job: Dist) -> dict | None:
        """An interrupted epoch's sums, once: the whole job's, so rank 0 carries them on and the
        others start from zero (the epoch's reduction adds them up)."""
        running, self.running = self.running, None
        return running if job.primary else None


class Average:
    """An exponential moving average of a model's weights, updated after every step (--ema): the
    average of the last few thousand steps' weights reads better than the last step's (README's
    figures). Its decay starts low, (1 + t) / (10 + t) at update t, so that a short run's average is
    not its initial weights. It does not change training: the steps see only the trained weights.
    In a checkpoint, "model" holds the average and "trained" the weights training goes on from."""

    def __init__(self, model: LeNet5, decay: float):
        import copy

        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.live: list[torch.Tensor] = list(model.parameters())
        self.kept: list[torch.Tensor] = list(self.model.parameters())

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.kept, self.live, 1.0 - decay)

    def state_dict(self, trained: torch.nn.Module) -> dict:
        return {"trained": trained.state_dict(), "average_updates": self.updates}

    def load_state_dict(self, saved: dict, path, trained: torch.nn.Module) -> None:
        if not isinstance(saved.get("trained"), dict):
            raise CheckpointError(
                f"{path}: holds the weights' average (--ema) but not the trained weights beside it; "
                "it is damaged: resume from an older copy or start again"
            )
        self.model.load_state_dict(checkpoint.model_state(saved, path))
        trained.load_state_dict(checkpoint.model_state(saved["trained"], path))
        self.updates = int(saved["average_updates"])


def open_run(cfg: Config, resume, overwrite: bool, job: Dist, cleanup) -> RunDir:
    """The run folder; on the primary process locked until fit returns or raises."""
    path = Path(resume).parent if resume else Path(cfg.out_dir) / run_name(cfg)
    if not job.primary:
        return RunDir(path)
    with _writing(RunDir(path)):
        run = RunDir.open(path) if resume else RunDir.create(path, overwrite)
    cleanup.callback(run.release)
    return run


def run_name(cfg: Config) -> str:
    return cfg.name or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"


def use_cuda_graphs(cfg: Config, device: torch.device, world: int) -> bool:
    """--cuda-graphs records one fixed step: on CUDA, with plain SGD, in one process, uncompiled."""
    return (
        cfg.cuda_graphs
        and device.type == "cuda"
        and cfg.optimizer == "sgd"
        and world == 1
        and not cfg.compile
    )


def non_digits(cfg: Config, train_x: torch.Tensor, device: torch.device):
    """The non-digit pictures a run trains with (outliers.py), and how many go in each step:
    (None, 0) with --outliers 0. A tenth as many as the training digits, 256 to 5,000."""
    per_step = round(cfg.outliers * cfg.batch_size)
    if per_step <= 0:
        return None, 0
    from . import outliers

    count = 256 if cfg.dry_run else min(5000, max(256, len(train_x) // 10))
    return outliers.make(count, cfg.seed, train_x.cpu()).to(device), per_step


def make_step(cfg: Config, state: State, device: torch.device, world: int, outlier_rows: int = 0):
    """The training step, on the compute path fast/choose.py picks for it: (step, path)."""
    model = state.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    path = choose.for_training(
        model,
        device,
        label_smoothing=cfg.label_smoothing,
        world=world,
        compiled=cfg.compile,
        cuda_graphs=use_cuda_graphs(cfg, device, world),
    )
    if path.name == "cuda-graphs":
        return GraphedStep(
            model,
            state.optimizer,
            cfg.batch_size,
            use_channels_last(cfg, device),
            cfg.label_smoothing,
            cfg.outlier_weight * bool(outlier_rows),
            outlier_rows,
        ), path
    return TrainStep(
        model, state.optimizer, cfg.label_smoothing, world, path, cfg.outlier_weight * bool(outlier_rows)
    ), path


def start_trackers(cfg: Config, run: RunDir, job: Dist) -> list:
    """The trackers asked for (TensorBoard, the wandb mirror), on the primary process; those that
    could not start are left out (each said why)."""
    if not (job.primary and (cfg.tensorboard or cfg.wandb)):
        return []
    from .tracking import TensorBoardTracker, WandbTracker, start_tensorboard, start_wandb

    trackers: list[TensorBoardTracker | WandbTracker | None]
    trackers = [start_tensorboard(cfg, run)] if cfg.tensorboard else []
    try:
        trackers += [start_wandb(cfg, run)] if cfg.wandb else []
    except BaseException:  # wandb missing: training does not start, so close what did
        for tracker in trackers:
            if tracker:
                tracker.finish(run, {})
        raise
    return [t for t in trackers if t]


def batches(plan: EpochPlan, cfg: Config, images, labels, job: Dist, device: torch.device):
    """step -> (x, y), this process's share of the step's batch, in the step's memory layout."""
    channels_last = use_channels_last(cfg, device)
    whole = None
    if device.type == "cuda" and job.world == 1 and plan.picks is None:  # made at once: fewer launches
        whole = plan.whole(images, labels, cfg.mean, cfg.std)

    def batch(step: int):
        if whole is not None:
            rows = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
            x, y = whole[0][rows], whole[1][rows]
        else:
            x, y = plan.batch(step, images, labels, cfg.mean, cfg.std, job.rank, job.world)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y

    return batch


def progress_bar(cfg: Config, job: Dist, epoch: int, first: int, last: int):
    from tqdm import tqdm

    return tqdm(
        range(first, last),
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        unit="batch",
        disable=None if (job.primary and cfg.progress) else True,
        leave=False,
        dynamic_ncols=True,
    )


class Stops:
    """Whether to stop between two steps: a signal (Ctrl-C, SIGTERM), agreed by every process, or
    a checkpoint that did not reach the disk."""

    def __init__(self, job: Dist, device: torch.device):
        self.job, self.device = job, device
        self.flag = InterruptFlag()

    def asked(self, step: int, writer: checkpoint.Writer, run: RunDir, epoch: int) -> int:
        """The signal that asks this step's boundary to stop (0: none). A failed write raises."""
        if writer.failure is not None:  # a checkpoint did not reach the disk: stop now
            _written(writer, run, f"at epoch {epoch + 1}, step {step + 1}")
        if self.job.world == 1:
            return self.flag.requested
        if step % STOP_CHECK_EVERY:
            return 0
        # A signal reaches each process at its own moment: they agree, at the same steps, whether
        # any got one, and so all stop at the same boundary.
        import torch.distributed as dist

        asked = torch.tensor([self.flag.requested], device=self.device)
        dist.all_reduce(asked, op=dist.ReduceOp.MAX)
        return int(asked.item())

    @contextlib.contextmanager
    def peer_gone(self, stop, step: int, seen: int):
        """Around a step: if it fails because a peer stopped at once (a second Ctrl-C broke this
        step's gradient all-reduce), nothing was updated yet, so `stop` ends the run at its start."""
        try:
            yield
        except Exception:
            if self.job.world > 1 and self.flag.requested:
                stop(step, seen, self.flag.requested, together=False)
            raise


@dataclass
class Loop:
    """What the loop's helpers share, made once when the run is prepared."""

    cfg: Config
    job: Dist
    device: torch.device
    state: State
    run: RunDir
    train_step: TrainStep  # or fast.cuda_graph.GraphedStep, a TrainStep too
    stops: Stops
    writer: checkpoint.Writer


def save_and_stop(
    loop: Loop, epoch: int, epoch_gen, step: int, seen: int, signum: int, together: bool = True
):
    """Save last.pt before `step` (rank 0) and end the run: Ctrl-C or SIGTERM came.

    `together`: every process stops at this step, so the epoch's sums so far are gathered from all
    of them; otherwise a peer is gone and rank 0 keeps its own.
    """
    state, stops, writer, run, train_step = loop.state, loop.stops, loop.writer, loop.run, loop.train_step
    sums = train_step.sums(seen)
    if stops.job.world > 1 and together:
        import torch.distributed as dist

        dist.all_reduce(sums)
    if stops.job.primary:
        stops.flag.saving = True  # a signal now must not cut this save short
        when = f"at epoch {epoch + 1}, step {step + 1}"
        _written(writer, run, when)  # the older files first
        loss_sum, correct, seen_all = sums.tolist()
        running = {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen_all)}
        state.epoch, state.step = epoch, step
        with _saving(run, when):
            checkpoint.save(state.snapshot(epoch_gen, running), run.last)
    raise Interrupted(run.last, signum) from None


def show_loss(loop: Loop, bar, seen: int, step: int, epoch: int):
    """Every 100 steps: the running loss on the bar (one host sync), and a stop if it is NaN."""
    if step % 100 != 99 or not loop.job.primary:
        return
    running = loop.train_step.loss_sum.item() / max(seen, 1)
    if not math.isfinite(running):
        raise TrainingError(_nan_message(loop.cfg, epoch, step, loop.run))
    bar.set_postfix(loss=f"{running:.4f}")


def end_of_epoch(loop: Loop, seen: int, val, epoch: int, t0: float) -> dict:
    """The epoch's row: training figures reduced across processes, the validation set scored
    (every process scores the same set with the same weights, so all reach the same early-stopping
    decision without talking), the schedule and early stopping stepped."""
    cfg, state, train_step, job, device, run = (
        loop.cfg,
        loop.state,
        loop.train_step,
        loop.job,
        loop.device,
        loop.run,
    )
    if state.sched_every == "epoch":
        state.scheduler.step()
    totals = train_step.sums(seen)
    if job.world > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    train_loss = (totals[0] / totals[2].clamp(min=1)).item()
    train_acc = (totals[1] / totals[2].clamp(min=1)).item()
    if not math.isfinite(train_loss):
        raise TrainingError(_nan_message(cfg, epoch, math.ceil(seen / cfg.batch_size) - 1, run))
    val_x, val_y = (val[0][:512], val[1][:512]) if cfg.dry_run else val
    scored = evaluate(
        state.kept_model,
        val_x,
        val_y,
        cfg.mean,
        cfg.std,
        cfg.eval_batch_size,
        device,
        use_channels_last(cfg, device),
    )
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": scored["loss"],
        "val_acc": scored["accuracy"],
        "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
    }
    state.improved = state.stopper.update(row)
    if state.improved:
        state.best_metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))}
    state.epoch, state.step = epoch + 1, 0
    state.history.append(row)
    return row


def save_epoch(state: State, writer: checkpoint.Writer, run: RunDir) -> None:
    """The epoch's files, handed to the background writer in this order, so that a crash anywhere
    leaves last.pt the newest word: what this epoch improved, then last.pt, then metrics.csv."""
    snapshot = checkpoint.portable(state.snapshot())
    if writer.failure is not None:
        _written(writer, run, f"at the end of epoch {state.epoch}")
    if state.improved:
        writer.save(snapshot["model"], run.weights)
    writer.write(checkpoint.serialise(snapshot), *([run.best] if state.improved else []), run.last)
    writer.write(run.metrics_text(state.history).encode(), run.metrics_csv)


def resume_config(given: str | os.PathLike, overrides: dict) -> tuple[Config, Path, dict]:
    """What `--resume RUN` continues: (its Config with the allowed overrides, its last.pt, the
    loaded last.pt). A run folder, or any checkpoint in it, continues from the folder's last.pt."""
    path = checkpoint.resolve(given, which=RunDir.LAST)
    if path.name != RunDir.LAST:  # best.pt, mnist_lenet5.pth: the run goes on from its latest state
        if not (path.parent / RunDir.LAST).is_file():
            raise ConfigError(
                f"--resume {given}: a run continues from the last.pt in its folder, "
                f"and {path.parent / RunDir.LAST} does not exist"
            )
        path = path.parent / RunDir.LAST
    saved = checkpoint.load(path)
    if saved.get("format") != checkpoint.FORMAT or "optimizer" not in saved:
        raise ConfigError(f"--resume {given}: {path} is not a lenet5 training checkpoint")
    RunDir(path.parent).check_owns(saved, path, RESUMABLE)
    fixed = sorted(set(overrides) - RESUMABLE)
    if fixed:
        raise ConfigError(
            f"--{flag(fixed[0])} cannot change when resuming: the run continues with "
            f"the config saved in {path}"
        )
    # A run saved before a field existed goes on as it was trained: without non-digit pictures.
    older = {"outliers": 0.0, "augment": 0.0, "ema": 0.0}
    return from_dict({**older, **saved["config"], **overrides}), path, saved


def _history_at(run: RunDir, saved: dict, epoch: int) -> list[dict]:
    """The metrics rows of the first `epoch` epochs, and metrics.csv rewritten to hold just them."""
    if "history" not in saved:  # written before last.pt carried its rows: trust the file's
        return run.truncate_metrics(epoch)
    history = [dict(row) for row in saved["history"]]
    run.write_metrics(history)
    return history


@contextlib.contextmanager
def _writing(run: RunDir):
    """The run folder's set-up files: an OSError (read-only folder, full disk) becomes one line."""
    try:
        yield
    except OSError as e:
        raise TrainingError(
            f"{run.path}/: {e.strerror or e}; the run folder cannot be written: {what_to_do(e)}"
        ) from None


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
    try:
        kept = f"{run.last} holds epoch {int(checkpoint.load(run.last)['epoch'])}, whole"
        then = f"continue with: lenet5 train --resume {run.path}"
    except Exception:  # none written yet (or unreadable): nothing to continue from
        kept, then = "no epoch was saved", "start it again"
    fix = (
        "make room"
        if e.errno in FULL
        else "allow writing there (check its permissions)"
        if e.errno in DENIED
        else "fix what stopped the write"
    )
    return (
        f"could not write {e.filename or run.path} ({e.strerror or e}); training stopped "
        f"{when}; {kept}: {fix}, then {then}"
    )


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
    return text.splitlines()[0][:200] if text else type(e).__name__


def _nan_message(cfg: Config, epoch: int, step: int, run: RunDir) -> str:
    return (
        f"training loss became NaN/inf at epoch {epoch + 1}, step {step + 1}; lower --lr "
        f"(now {cfg.lr}) and start again, or resume from the last good checkpoint {run.last}"
    )
