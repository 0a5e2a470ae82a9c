"""The `lenet5` command: argument parsing and printing. The work is done by the modules it calls."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__
from .config import GROUPS, RECIPES, RUN_ID, Config, flag, from_recipe, read_file, to_dict, usable_threads
from .errors import ConfigError, Lenet5Error


def _add_config_flags(groups: dict, recipe: str) -> None:
    """A flag for every Config field in its group, its help from the field, its default the recipe's."""
    defaults = from_recipe(recipe) if recipe in RECIPES else Config()
    for f in fields(Config):
        if f.name == "recipe":
            continue
        parser = groups[f.metadata["group"]]
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help text
        shown = default if not isinstance(default, str) or default else "''"
        help_text = f"{help_text} (default: {shown})" if help_text else f"(default: {shown})"
        name = f"--{flag(f.name)}"
        if isinstance(default, bool):
            parser.add_argument(
                name,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif isinstance(default, list):
            parser.add_argument(name, dest=f.name, nargs="*", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(
                name,
                dest=f.name,
                type=type(default),
                default=argparse.SUPPRESS,
                help=help_text,
                metavar=f.name.upper(),
            )


DATA_HOME = "./data if it holds the set, else $LENET5_DATA, else ~/.cache/lenet5/data"


def _location_flags(
    p: argparse.ArgumentParser,
    data_help: str | None = "data root (MNIST/raw/ or the checkpoint's set)",
    device: bool = True,
) -> None:
    """--data-dir, --out-dir (where the newest run is looked for) and --device."""
    if data_help:
        p.add_argument("--data-dir", default="", help=f"{data_help} (default: {DATA_HOME})")
    p.add_argument("--out-dir", default="runs", help="where to look for the newest run (default: runs)")
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")


def build_parser(recipe: str = "default") -> argparse.ArgumentParser:
    """The whole command line; `lenet5 train --help` shows `recipe`'s defaults."""
    parser = argparse.ArgumentParser(
        prog="lenet5", description="LeNet-5 for MNIST: train, evaluate, predict, look inside."
    )
    parser.add_argument("--version", action="version", version=f"lenet5 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _train_command(sub, recipe)
    _evaluate_command(sub)
    _predict_command(sub)
    _show_command(sub)
    _plot_command(sub)
    _summary_command(sub)
    _export_command(sub)
    _serve_command(sub)
    _info_command(sub)
    return parser


def _train_command(sub, recipe: str) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (then score it on the test set)",
        description="Train LeNet-5. A recipe sets the defaults; any flag overrides it.",
    )
    groups = {name: p.add_argument_group(name, about) for name, about in GROUPS.items()}
    run = groups["run"]
    run.add_argument(
        "--recipe",
        default=None,
        choices=list(RECIPES),
        help="seed: the seed's exact recipe; default: OneCycle with shifts; best: the "
        "default for 60 epochs, averaged longer; fast: time to 99%%. What each reaches: the README "
        "(default: default)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help="start from this JSON or YAML file of config values (a run folder's "
        "config.json reruns that run); flags override it",
    )
    run.add_argument(
        "--print-config", action="store_true", help="print the config these flags give, as JSON, and stop"
    )
    run.add_argument("--resume", metavar="RUN", help="continue a run exactly: its folder or last.pt")
    run.add_argument(
        "--no-test",
        dest="test",
        action="store_false",
        help="skip scoring the best checkpoint on the test set at the end",
    )
    groups["output"].add_argument(
        "--overwrite", action="store_true", help="reuse an existing run folder --name"
    )
    _add_config_flags(groups, recipe)


def _evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="test loss, accuracy, per-class accuracy, confusion matrix")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: newest run)")
    _location_flags(p)
    p.add_argument("--batch-size", type=int, default=1024, help="images per batch (default: 1024)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _predict_command(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify your own digit pictures, or MNIST test images by --index",
        description="Classify image files (PNG, JPEG, BMP, GIF, WebP, TIFF; files, folders, globs), "
        "each made into an MNIST-style 28x28 input first, or MNIST test images by --index. "
        "A path that is a checkpoint (.pt/.pth/.safetensors) or a run folder is the checkpoint.",
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="FILE",
        help="image files, folders or globs; or the checkpoint / run folder to use",
    )
    read = p.add_argument_group("what to read")
    read.add_argument("--checkpoint", help="checkpoint file or run folder (default: newest run)")
    read.add_argument(
        "--index",
        type=int,
        action="append",
        metavar="N",
        help="MNIST test-set image number, 0-9999 (repeat for several)",
    )
    read.add_argument(
        "--number",
        action="store_true",
        help="each picture is a whole number: find its digits, read them left to right "
        "(--json adds each digit's probability and box)",
    )
    out = p.add_argument_group("what to show and save")
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument(
        "--explain",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="save why each digit was read so, as DIR/<name>-explain.png: the 28x28 input "
        "and, for the digit read and the two runners-up, the pixels that spoke for it (red) "
        "and against it (blue); put it after the pictures, or write --explain=DIR "
        "(default DIR: explain/ in the checkpoint's run folder; needs lenet5[plots])",
    )
    out.add_argument(
        "--show-input",
        metavar="DIR",
        help="save the 28x28 image the model saw for each file as DIR/<name>-input.png",
    )
    out.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it only shows on a terminal anyway)",
    )
    where = p.add_argument_group("where things are, and how many at once")
    where.add_argument("--batch-size", type=int, default=256, help="files per batch (default: 256)")
    _location_flags(where, data_help="data root, for --index")


def _show_command(sub) -> None:
    p = sub.add_parser(
        "show",
        help="save a test image as PNG; --activations: what the conv layers see",
        description="Save MNIST test image N (or your own picture, --image) as a PNG "
        "titled with its label (the seed's view), or with --activations the "
        "input, the six conv1 and the sixteen conv2 feature maps a trained "
        "model computes for it. The PNG goes into the run folder, or where --out says.",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="checkpoint or run folder: the folder the PNG goes in, and the model for "
        "--activations (default: newest run)",
    )
    what = p.add_argument_group("what to show")
    what.add_argument(
        "--index", type=int, default=None, metavar="N", help="test-set image number (default: 0)"
    )
    what.add_argument(
        "--image",
        metavar="FILE",
        help="a digit picture of your own instead, shown as the 28x28 input the model sees",
    )
    what.add_argument(
        "--activations", action="store_true", help="draw the conv1 and conv2 feature maps for the digit"
    )
    where = p.add_argument_group("where")
    where.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="PNG to write (default: digit-<N>.png, or activations-<N>.png, in the run "
        "folder; <N> is the picture's name with --image)",
    )
    _location_flags(where)


def _plot_command(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="redraw a run's plots from its files",
        description="Draw curves.png (loss, accuracy, learning rate per epoch), "
        "confusion.png, mistakes.png, predictions.png and filters.png "
        "from a run folder's metrics.csv and best.pt and the MNIST test set.",
    )
    p.add_argument("run", nargs="?", help="run folder or checkpoint (default: newest run)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    _location_flags(p)


def _summary_command(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="the layer table: output shapes, parameters, multiply-adds",
        description="LeNet-5 layer by layer for one 1x28x28 input, measured by running "
        "the model: output shape, parameters and multiply-adds, with totals.",
    )
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def _export_command(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write the model as ONNX or TorchScript (normalisation inside), "
        "its weights as safetensors, or the drawing page without a server",
        description="Write one self-contained file: ONNX or TorchScript take uint8 "
        "pixels (N, 28, 28) and return logits (N, 10), the batch size "
        "free; safetensors holds the weights, with the normalisation in "
        "its metadata, and loads anywhere a checkpoint does. web writes "
        "a folder: the drawing page reading digits in the browser, with "
        "no server, opened from disk or from any static host.",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: newest run)")
    what = p.add_argument_group("what to write, and where")
    what.add_argument(
        "--format",
        default="onnx",
        choices=["onnx", "torchscript", "safetensors", "web"],
        help="(default: onnx)",
    )
    what.add_argument(
        "--out",
        default=None,
        help="file to write, or folder for web (default: beside the checkpoint, "
        "<name>.onnx, <name>.torchscript.pt, <name>.safetensors or <name>-web/)",
    )
    what.add_argument(
        "--force",
        action="store_true",
        help="replace a file at --out that is not an earlier export (never a checkpoint)",
    )
    check = p.add_argument_group("checking")
    check.add_argument(
        "--verify",
        action="store_true",
        help="run the export on all 10,000 MNIST test images and compare with PyTorch "
        "(not for web: its forward pass runs in a browser)",
    )
    what.add_argument("--json", action="store_true", help="print the result as JSON")
    _location_flags(
        p.add_argument_group("where things are"), data_help="data root, for --verify", device=False
    )


def _serve_command(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page to draw digits on, and its JSON API",
        description="Serve the drawing page at / and the API at /api (OpenAPI at /docs).",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder (default: newest run)")
    listen = p.add_argument_group("where it listens")
    listen.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 opens it to the network (default: 127.0.0.1)",
    )
    listen.add_argument("--port", type=int, default=8000, help="TCP port, 0 picks a free one (default: 8000)")
    listen.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name the server answers to besides --host and localhost (repeat it; "
        "'*.example.org' for subdomains, '*' for any); others get a 400",
    )
    limits = p.add_argument_group("limits against slow and hostile clients")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send "
        "a request's headers; slower ones get a 408 and are closed (default: 10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a request's body once its headers are in (default: 30)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=200,
        help="connections open at once "
        "(at most half the open-file limit); a new one beyond them closes the slowest "
        "client with a 408, or gets a 503 when none is idle (default: 200)",
    )
    limits.add_argument(
        "--readers",
        type=int,
        default=None,
        help="processes that decode and prepare "
        "uploaded pictures side by side, about 60 MiB each; 0 reads them on the "
        "server's own threads (default: 2, so that a drawing never waits behind a photo)",
    )
    _location_flags(p.add_argument_group("where things are"), data_help=None)


def _info_command(sub) -> None:
    p = sub.add_parser(
        "info",
        help="this machine: CPU and ISA level, compiler, torch, threads, "
        "which compute path runs, and each path's measured step time",
        description="What lenet5 finds on this machine and which compute path "
        "training and inference take here, with each path timed now.",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads to time with (default: torch's)")
    p.add_argument("--json", action="store_true", help="print it as JSON")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_recipe_in(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except Lenet5Error as e:
        print(f"lenet5: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `lenet5 ... | head`: the reader is gone, which is no error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush is quiet too
        return 128 + signal.SIGPIPE
    except OSError as e:  # a path given that cannot be read or written: the file and why, one line
        where = f"{e.filename}: " if e.filename else ""
        why = e.strerror or str(e)
        if isinstance(e, (FileExistsError, NotADirectoryError)):  # mkdir over a file, a/file/b
            why = f"{why} (a file stands where a folder is needed)"
        print(f"lenet5: error: {where}{why}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 saves and speaks for all
            return 128 + getattr(e, "signum", signal.SIGINT)
        path, signum = getattr(e, "path", None), getattr(e, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        where = f"; progress saved, continue with: lenet5 train --resume {path.parent}" if path else ""
        print(f"lenet5: {what}{where}", file=sys.stderr)
        return 128 + signum


def _recipe_in(argv: list[str]) -> str:
    """The --recipe on a command line, so that help can show that recipe's defaults."""
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1]
    return "default"


def _config_overrides(args: argparse.Namespace) -> dict:
    names = {f.name for f in fields(Config)} - {"recipe"}
    return {k: v for k, v in vars(args).items() if k in names}


def cmd_train(args: argparse.Namespace) -> int:
    from .rundir import RunDir
    from .training import fit, resume_config

    overrides = _config_overrides(args)
    resume = None
    if args.resume:
        if args.config:
            raise ConfigError(
                "--config with --resume: a resumed run continues with the config in "
                "its last.pt (change only what may change, by flags)"
            )
        cfg, resume, saved = resume_config(args.resume, overrides)
        if RunDir.training_over(saved):
            # Killed during the final test and plots: finish those (test_metrics.json comes last).
            if not args.test or RunDir(resume.parent).finished_outputs():
                print(f"{resume.parent}: training and its final test are done; nothing to resume")
                return 0
            print(f"{resume.parent}: training is done; running the final test and plots it lacks")
    else:
        values = read_file(args.config) if args.config else {}
        values.pop(RUN_ID, None)  # a run folder's config.json: the rerun is a new run
        recipe = args.recipe or values.pop("recipe", None) or "default"
        values.pop("recipe", None)
        unknown = sorted(set(values) - {f.name for f in fields(Config)})
        if unknown:
            raise ConfigError(f"--config {args.config}: unknown config key(s): {', '.join(unknown)}")
        cfg = from_recipe(recipe, **{**values, **overrides})
        if args.overwrite and not cfg.name:
            raise ConfigError("--overwrite needs --name: the run folder to reuse")

    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    if usable_threads(cfg.threads)[1]:
        print(f"lenet5: {usable_threads(cfg.threads)[1]}", file=sys.stderr)

    def on_epoch(row: dict) -> None:
        val = (
            f"val_loss {row['val_loss']:.4f}  val_acc {100 * row['val_acc']:.2f}%  "
            if row["val_loss"] == row["val_loss"]
            else ""
        )
        print(
            f"epoch {row['epoch']:>2}/{cfg.epochs}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {100 * row['train_acc']:.2f}%  {val}lr {row['lr']:.2e}  "
            f"{row['seconds']:.{2 if row['seconds'] < 1 else 1}f}s",
            flush=True,
        )  # GPU epochs: 0.08s

    def on_end(run: Path, finished) -> None:
        if finished:
            _say_finished(finished)

    def on_start(path) -> None:
        print(f"compute path: {path.line()}", flush=True)

    result = fit(
        cfg,
        resume=resume,
        on_epoch=on_epoch,
        on_end=on_end,
        on_start=on_start,
        overwrite=bool(args.overwrite and not resume),
        test=args.test,
    )
    if not result["primary"]:
        return 0
    run = Path(result["run_dir"])
    note = " (stopped early)" if result["stopped_early"] else ""
    print(f"run folder {run}{note}; best epoch {result['best'].get('epoch', '-')}")
    return 0


def _say_finished(finished: dict) -> None:
    """The run's last stage, as training.finish did it: the test, the reader, the plots."""
    from .datasets import get
    from .reader import percent

    m = finished["test"]
    cal = m["calibration"]
    print(
        f"test accuracy {100 * m['accuracy']:.2f}%  test loss {m['loss']:.4f}  "
        f"(best.pt, {m['count']:,} {get(m.get('dataset', 'mnist')).title} test images)",
        flush=True,
    )
    print(
        f"reader: temperature {cal['temperature']:.3f} (ECE {percent(cal['ece'], 2)}); "
        f"{_none_of(m.get('dataset', 'mnist'))} below {percent(cal['threshold'])}: "
        f"{percent(m['accepted_and_right'], 2)} of the test {_items(m.get('dataset', 'mnist'))} "
        "accepted and read right",
        flush=True,
    )
    if finished["plots"]:
        print(f"plots: {', '.join(str(p) for p in finished['plots'])}")
    if finished["plots_skipped"]:
        print(f"lenet5: plots skipped: {finished['plots_skipped']}", file=sys.stderr)


def _checkpoint(given, out_dir: str, saving: tuple[str, str] | None = None) -> Path:
    """The checkpoint a command uses: the one given, else the newest run's, else the shipped
    weights (said in one line on stderr). `saving`: what a command saves beside the checkpoint
    when not told where, checked before anything is said (`_folder`)."""
    from .checkpoint import is_shipped, resolve

    path = resolve(given, out_dir, shipped=True)
    if saving:
        _folder(path, given, out_dir, saving)
    if not given and is_shipped(path):
        from .weights import card

        info = card()
        print(
            f"lenet5: no run in {out_dir}/: using the weights that ship with lenet5 ({info['recipe']} "
            f"recipe, {100 * info['test_accuracy']:.2f}% on the MNIST test set)",
            file=sys.stderr,
        )
    return path


def _folder(path: Path, given, out_dir: str, saving: tuple[str, str]) -> Path:
    """Where a command saves what it draws or writes when not told: the checkpoint's folder (its
    run folder, or wherever the file lies), never the current directory. The shipped weights lie
    inside the installed package, no place for a user's files: then the command needs to be told,
    in one line that says how. `saving`: (what is saved, the flag that says where, as an example)."""
    from .checkpoint import is_shipped

    if not is_shipped(path):
        return path.parent
    what, example = saving
    if given:
        raise ConfigError(f"the shipped weights have no run folder to save {what} in; say where: {example}")
    raise ConfigError(
        f"no run in {out_dir}/ to save {what} in (the shipped weights have none); say where: {example}"
    )


def _load_for_inference(args: argparse.Namespace, saving: tuple[str, str] | None = None):
    """(checkpoint path, Reader) for the command's checkpoint flags."""
    from .reader import Reader

    path = _checkpoint(args.checkpoint, args.out_dir, saving)
    return path, Reader.load(path, args.device)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .datasets import get
    from .metrics import format_report, score
    from .reader import percent

    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    path, reader = _load_for_inference(args)
    data = load_dataset(reader.dataset, args.data_dir)  # the set it was trained on
    metrics = score(reader, data)
    if args.json:
        print(json.dumps({"checkpoint": str(path), **metrics}))
        return 0
    title = get(reader.dataset).title
    print(
        format_report(
            metrics, f"{path} on the {title} test set (normalised with {reader.mean}, {reader.std})"
        )
    )
    cal = metrics["calibration"]
    print(
        f"\ncalibration: temperature {cal['temperature']:.3f}, expected calibration error "
        f"{percent(cal['ece'], 2)}; {_none_of(reader.dataset)} below {percent(cal['threshold'])}"
        f"{' (' + cal['fitted'] + ')' if cal['fitted'] else ' (never fitted for these weights)'}"
    )
    items = _items(reader.dataset)
    print(
        f"test {items} read as {items}: {percent(metrics['accepted'], 2)}; as {items} and right: "
        f"{percent(metrics['accepted_and_right'], 2)}"
    )
    return 0


def _items(dataset: str) -> str:
    """What a set's pictures are called in a sentence: digits (MNIST), else images."""
    return "digits" if dataset == "mnist" else "images"


def _none_of(dataset: str) -> str:
    """The reader's answer for a picture unlike all it knows: "not a digit" for MNIST's."""
    return "not a digit" if dataset == "mnist" else "unlike its classes"


def _check_indices(indices: list[int], count: int) -> None:
    for i in indices:
        if not 0 <= i < count:
            raise ConfigError(f"--index {i}: the test set has images 0 to {count - 1}")


def _is_checkpoint(path: str) -> bool:
    """A .pt/.pth/.safetensors file, or a folder holding a run's checkpoint: not a picture to classify."""
    p = Path(path)
    if p.suffix.lower() in (".pt", ".pth", ".safetensors"):
        return True
    from .rundir import RunDir

    return RunDir.holds_run(p)


def _split_paths(args: argparse.Namespace) -> list[str]:
    """Set args.checkpoint from the positional paths; return the rest (pictures to read)."""
    from .images import EXTENSIONS

    if args.index:
        given = ([args.checkpoint] if args.checkpoint else []) + args.paths
        pictures = [p for p in args.paths if Path(p).suffix.lower() in EXTENSIONS]
        if pictures:
            raise ConfigError(
                f"{pictures[0]}: --index reads MNIST test images; to classify picture "
                "files, leave --index out"
            )
    else:
        given = ([args.checkpoint] if args.checkpoint else []) + [p for p in args.paths if _is_checkpoint(p)]
    if len(given) > 1:
        raise ConfigError(f"two checkpoints given ({given[0]} and {given[1]}); keep one")
    args.checkpoint = given[0] if given else None
    return [p for p in args.paths if p != args.checkpoint]


def cmd_predict(args: argparse.Namespace) -> int:
    _explain_picture(args)
    sources = _split_paths(args)
    if not args.index and not sources:
        taken = f" (--explain took {args.explain} as the folder to save in)" if args.explain else ""
        raise ConfigError(
            "give picture files, folders or globs to classify, or --index N for MNIST "
            f"test images (see lenet5 predict --help){taken}"
        )
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    if args.number and args.explain is not None:
        raise ConfigError("--explain draws its maps for single digits; leave out --number, or --explain")
    if args.explain is not None:
        from .plots import check_matplotlib

        check_matplotlib()  # the one-line hint now, not after every picture was read
    if args.index:
        if args.number:
            raise ConfigError(
                "--number reads numbers in picture files; MNIST test images (--index) are single digits"
            )
        return _predict_indices(args)
    return _predict_files(args, sources)


def _explain_picture(args: argparse.Namespace) -> None:
    """`predict --explain seven.png`: argparse gives the picture to --explain as its folder; a
    picture is no folder to save in, so it is read (and explained, into the default folder)."""
    from .images import EXTENSIONS

    if args.explain and (Path(args.explain).suffix.lower() in EXTENSIONS or Path(args.explain).is_file()):
        args.paths.insert(0, args.explain)
        args.explain = ""


EXPLAINING = ("the why views", "--explain=DIR")


def _explain_folder(args: argparse.Namespace) -> tuple[str, str] | None:
    """What `_checkpoint` checks for --explain without a folder (None when not explaining)."""
    return EXPLAINING if args.explain == "" else None


def _predict_indices(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .datasets import DIGITS
    from .reader import chance, verdict

    path, reader = _load_for_inference(args, _explain_folder(args))
    data = load_dataset(reader.dataset, args.data_dir)  # the test set of the set it was trained on
    _check_indices(args.index, len(data.test_images))
    readings = reader.read(data.test_images[args.index])
    names = reader.classes
    results = [
        {
            "index": i,
            "label": int(data.test_labels[i]),
            **{k: v for k, v in p.to_dict().items() if k != "probabilities"},
            **(
                {}
                if reader.dataset == DIGITS
                else {"class": names[p.digit], "label_class": names[data.test_labels[i]]}
            ),
        }
        for i, p in zip(args.index, readings, strict=False)
    ]
    if args.explain is not None:
        folder = _explain_to(args, path)
        for r, p in zip(results, readings, strict=True):
            title = f"test image {r['index']}: true label {r['label']}, read as {verdict(p)}"
            image = data.test_images[r["index"]].numpy()
            r["explain_png"] = str(_save_explanation(reader, image, p, folder / f"test-{r['index']}", title))
    if args.json:
        print(json.dumps({"checkpoint": str(path), "results": results}))
        return 0
    for r, p in zip(results, readings, strict=False):
        if reader.dataset != DIGITS:  # no "not a digit" here: the class it is closest to, by name
            mark = "" if r["label"] == r["prediction"] else "   <- wrong"
            print(
                f"test image {r['index']}: true label {r['label']} ({r['label_class']}), "
                f"{r['prediction']} {r['class']} ({chance(p.probability)}){mark}"
            )
            continue
        mark = "" if r["label"] == r["prediction"] and p.is_digit else "   <- wrong"
        print(f"test image {r['index']}: true label {r['label']}, {_answer(p)}{mark}")
    _say_explained(args, results)
    return 0


def _explain_to(args: argparse.Namespace, path: Path) -> Path:
    """The folder for --explain's pictures: the one given, else explain/ in the run folder."""
    from .rundir import EXPLAIN

    return (
        Path(args.explain)
        if args.explain
        else _folder(path, args.checkpoint, args.out_dir, EXPLAINING) / EXPLAIN
    )


def _save_explanation(reader, image, reading, stem: Path, title: str) -> Path:
    """The why view of one reading as <stem>-explain.png (explain.py, plots.py)."""
    from .explain import explain
    from .plots import plot_explanation

    return plot_explanation(
        explain(reader, image, reading), stem.with_name(f"{stem.name}-explain.png"), title
    )


def _say_explained(args: argparse.Namespace, results: list[dict]) -> None:
    saved = [r["explain_png"] for r in results if "explain_png" in r]
    if saved:
        print(
            f"saved why each was read so in {Path(saved[0]).parent}/ (<name>-explain.png: red "
            "pixels spoke for the digit, blue against it)"
        )


def _answer(p) -> str:
    """`7 (99.1 %)   top 3: 7 99.1 %  1 0.5 %  2 0.2 %`, or the not-a-digit answer with its top 3."""
    from .reader import chance, verdict

    if not p.is_digit and p.reason != "unlike any digit":
        return verdict(p)
    return f"{verdict(p)}   top 3: " + "  ".join(f"{d} {chance(v)}" for d, v in p.top3)


def _digits_only(reader, path, why: str) -> None:
    """Refuse a checkpoint trained on a set other than MNIST where only digits make sense."""
    from .datasets import DIGITS, get

    if reader.dataset != DIGITS:
        raise ConfigError(
            f"{path}: trained on {get(reader.dataset).title}, and {why}; give a checkpoint trained on MNIST"
        )


MANY_FILES = 1000  # `lenet5 predict` says how many it reads from this many on (seconds of work)


def _predict_files(args: argparse.Namespace, sources: list[str]) -> int:
    from .images import save_input
    from .predict import find_images, predict_files, predict_numbers
    from .reader import verdict

    files, problems = find_images(sources)
    if len(files) >= MANY_FILES:  # their results print at the end: say at once that work began
        print(f"lenet5: reading {len(files):,} files...", file=sys.stderr, flush=True)
    show = Path(args.show_input) if args.show_input else None
    if show and any(f.parent.resolve() == show.resolve() for f in files):
        raise ConfigError(
            f"--show-input {show}: that folder holds the pictures being read; choose "
            "another so none is overwritten"
        )
    path, reader = _load_for_inference(args, _explain_folder(args))
    _digits_only(
        reader, path, "picture files are prepared as handwritten digits (its test images: --index N)"
    )
    if args.number:
        return _print_numbers(args, path, predict_numbers(reader, files), problems, show)
    results = predict_files(reader, files, args.batch_size, args.progress)
    names = _names([r["file"] for r in results if "input" in r])
    explain = _explain_to(args, path) if args.explain is not None else None
    for r in results:
        if "input" in r:
            name = names[r["file"]]
            if show:
                r["input_png"] = str(save_input(r["input"], show / f"{name}-input.png"))
            if explain:
                title = f"{r['file']}: read as {verdict(r['reading'])}"
                r["explain_png"] = str(
                    _save_explanation(reader, r["input"].numpy(), r["reading"], explain / name, title)
                )
    failed = _say_failures(problems, results)
    if args.json:
        rows = [{k: v for k, v in r.items() if k not in ("input", "reading")} for r in results]
        rows += [{"file": source, "error": message} for source, message in problems]
        print(json.dumps({"checkpoint": str(path), "results": rows}))
    else:
        for r in results:
            if "error" not in r:
                print(f"{r['file']}: {_answer(r['reading'])}")
        if show and any("input_png" in r for r in results):
            print(f"saved the 28x28 inputs the model saw in {show}/")
        _say_explained(args, results)
    if failed and len(problems) + len(results) > 1:
        print(
            f"lenet5: {len(failed)} of {len(problems) + len(results)} inputs could not be read",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _names(files: list[str]) -> dict[str, str]:
    """A file name stem for each file's pictures, each once: a.png and other/a.png are a, a-2."""
    taken: dict[str, str] = {}
    for file in files:
        stem = name = Path(file).stem
        n = 1
        while name in taken.values():
            n += 1
            name = f"{stem}-{n}"
        taken.setdefault(file, name)
    return taken


def _say_failures(problems: list, results: list[dict]) -> list[str]:
    """One line on stderr for each input that could not be read; their messages."""
    failed = [message for _, message in problems] + [r["error"] for r in results if "error" in r]
    for message in failed:
        print(f"lenet5: error: {message}", file=sys.stderr)
    return failed


def _print_numbers(args: argparse.Namespace, path, results: list[dict], problems: list, show) -> int:
    """`lenet5 predict --number`: one line per picture, `FILE: 2026 (99.1% 99.8% 97.4% 99.9%)`."""
    from .images import save_input

    if show:
        for r in results:
            r["input_pngs"] = [
                str(save_input(image, show / f"{Path(r['file']).stem}-{k}-input.png"))
                for k, image in enumerate(r.get("inputs", []), 1)
            ]
    failed = _say_failures(problems, results)
    if args.json:
        rows = [{k: v for k, v in r.items() if k != "inputs"} for r in results]
        rows += [{"file": source, "error": message} for source, message in problems]
        print(json.dumps({"checkpoint": str(path), "results": rows}))
    else:
        from .reader import chance

        for r in results:
            if "error" not in r:
                sure = " ".join(chance(d["probability"]).replace(" ", "") for d in r["digits"])
                problem = f"; could not read: {r['problem']}" if r["problem"] else ""
                print(f"{r['file']}: {r['number']} ({sure}){problem}")
        if show and any(r.get("input_pngs") for r in results):
            print(f"saved the 28x28 inputs the model saw in {show}/ (<name>-<k>-input.png, k-th digit)")
    if failed and len(problems) + len(results) > 1:
        print(
            f"lenet5: {len(failed)} of {len(problems) + len(results)} inputs could not be read",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_show(args: argparse.Namespace) -> int:
    if args.image is not None and args.index is not None:
        raise ConfigError("show: give --index N (a test image) or --image FILE (your own), not both")
    index = args.index if args.index is not None else 0
    name = Path(args.image).stem if args.image is not None else str(index)
    file = f"{'activations' if args.activations else 'digit'}-{name}.png"
    saving = (file, f"--out {file}")
    # with --activations, the model first: where its picture goes, and the set it was trained on
    loaded = _load_for_inference(args, None if args.out else saving) if args.activations else None
    if args.image is not None:
        from .images import load_digit

        image, label = load_digit(args.image), None
        what = f"{args.image}:"
    else:
        from .data import load_dataset

        data = load_dataset(loaded[1].dataset if loaded else "mnist", args.data_dir)
        _check_indices([index], len(data.test_images))
        image, label = data.test_images[index], int(data.test_labels[index])
        what = f"test image {index}: true label {label},"
    if not args.activations:
        from .checkpoint import resolve
        from .plots import show_digit

        if args.out:
            out = Path(args.out)
        else:  # the newest run's folder (no model needed), as `lenet5 plot` draws into it
            out = (
                _folder(
                    resolve(args.checkpoint, args.out_dir, shipped=True),
                    args.checkpoint,
                    args.out_dir,
                    saving,
                )
                / file
            )
        title = f"true label: {label}" if label is not None else f"{args.image}, as the model sees it"
        print(f"saved {show_digit(image, title, out)}")
        return 0
    from .checkpoint import is_shipped
    from .data import normalize
    from .plots import plot_activations
    from .reader import verdict
    from .summary import feature_maps

    assert loaded is not None  # loaded above for --activations
    path, reader = loaded
    out = Path(args.out) if args.out else path.parent / file
    maps = feature_maps(reader.model, normalize(image[None].to(reader.device), reader.mean, reader.std))
    by = "lenet5's shipped weights" if is_shipped(path) else path
    title = f"{what} read as {verdict(reader.read(image[None])[0])} by {by}"
    print(f"saved {plot_activations(image, maps, out, title)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .datasets import get
    from .export import default_path, export, verify
    from .reader import Reader

    if args.verify and args.format == "web":
        raise ConfigError(
            "--verify: not available for --format web, whose forward pass runs in a "
            "browser (tests/test_web_static.py checks it there); leave --verify out"
        )
    # beside the checkpoint; the shipped weights' lie inside the installed package: --out is needed
    example = default_path(Path("lenet5-default.pt"), args.format).name
    path = _checkpoint(
        args.checkpoint, args.out_dir, None if args.out else ("the export", f"--out {example}")
    )
    reader = Reader.load(path, "cpu")
    if args.format == "web":
        _digits_only(reader, path, "the drawing page reads digits drawn by hand")
    model, mean, std = reader.model, reader.mean, reader.std
    out = Path(args.out) if args.out else default_path(path, args.format)
    info = export(reader, args.format, out, source=str(path), force=args.force)
    check = None
    if args.verify:
        from .data import load_dataset

        data = load_dataset(reader.dataset, args.data_dir)
        check = verify(out, model, data.test_images, mean, std)
    if args.json:
        print(json.dumps({**info, "verify": check}))
    elif args.format == "web":
        print(
            f"wrote {out}/ ({len(info['files'])} files, {info['bytes'] / 1024:.0f} KiB): "
            f"{', '.join(info['files'])}"
        )
        print(
            f"the drawing page reads digits in the browser with {info['name']}, no server: open "
            f"{out / 'index.html'} or put the folder on any static host"
        )
    else:
        opset = f", opset {info['opset']}" if "opset" in info else ""
        what = (
            f"LeNet5 weights, normalisation ({mean}, {std}) in its metadata"
            if args.format == "safetensors"
            else f"uint8 pixels (N, 28, 28) -> logits (N, 10), normalisation ({mean}, {std}) inside"
        )
        print(f"wrote {out} ({args.format}{opset}, {info['bytes'] / 1024:.0f} KiB): {what}")
        if check:
            print(
                f"verified on {check['count']:,} {get(reader.dataset).title} test images against PyTorch: "
                f"{check['identical']}/{check['count']} predictions identical, "
                f"max |logit difference| {check['max_abs_diff']:.2e}"
            )
    if check and not check["ok"]:
        print(f"lenet5: error: {out} does not match the checkpoint {path}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import torch

    from .reader import Reader
    from .web.app import allowed_hosts, bind, create_app, server

    hosts = allowed_hosts(args.host, args.allowed_host)
    path = _checkpoint(args.checkpoint, args.out_dir)
    _digits_only(Reader.load(path, "cpu"), path, "the drawing page reads digits drawn by hand")
    # One torch thread: the server reads several pictures at once, and splitting one picture's
    # small forward pass over the cores as well only makes the threads wait on each other (half
    # the CPU a reading, the same time).
    torch.set_num_threads(1)
    app = create_app(path, args.device, readers=args.readers, hosts=hosts)
    srv = server(
        app,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app.state.start_readers()
    print(f"serving {path} at http://{shown}:{port}/  (API docs: /docs; Ctrl-C stops)", flush=True)
    try:
        srv.run(sockets=[sock])
    finally:
        app.state.close_readers()
    if srv.signum:  # stopped by Ctrl-C or SIGTERM, whose re-raise asyncio may have swallowed
        stopped = KeyboardInterrupt()
        stopped.signum = srv.signum  # type: ignore[attr-defined]  # read by main() for the exit code
        raise stopped
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .checkpoint import dataset_of, load, resolve
    from .config import choose_device
    from .data import load_dataset
    from .plots import draw_run

    device = choose_device(args.device)
    path = resolve(args.run, args.out_dir)
    data = load_dataset(dataset_of(load(path))[0], args.data_dir)
    for out in draw_run(path, data.test_images, data.test_labels, device, args.out):
        print(f"saved {out}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .model import LeNet5
    from .summary import format_layers, layers

    rows = layers(LeNet5())
    if args.json:
        print(
            json.dumps(
                {
                    "input": [1, 28, 28],
                    "layers": rows,
                    "total_params": sum(r["params"] for r in rows),
                    "total_macs": sum(r["macs"] for r in rows),
                }
            )
        )
    else:
        print(format_layers(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .environment import describe
    from .fast import choose
    from .model import LeNet5

    if args.threads < 0:
        raise ConfigError(f"--threads must be 0 or more, got {args.threads}")
    if args.threads:
        threads, note = usable_threads(args.threads)
        if note:
            print(f"lenet5: {note}", file=sys.stderr)
        torch.set_num_threads(threads)
    env = describe("cpu")
    model = LeNet5().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    train = choose.for_training(model, torch.device("cpu"))
    infer = choose.for_inference(model)
    rows = choose.survey()
    if args.json:
        print(
            json.dumps(
                {**env, "train_path": train.line(), "inference_path": infer.line(), "paths": rows}, indent=2
            )
        )
        return 0
    print(f"lenet5 {env['lenet5']}, torch {env['torch']}, Python {env['python']}, {env['os']}")
    print(f"CPU        {env['cpu']}; runs {', '.join(env['isa_levels']) or 'no x86-64 level'}")
    print(f"compiler   {env['compiler'] or 'none (the native kernels need a C++ compiler)'}")
    print(f"threads    {env['threads']}")
    print(f"training   {train.line()}")
    print(f"inference  {infer.line()}")
    print(
        "\nmeasured now, best of several (ms): a training step at batch 64 (forward and "
        "backward), inference over 1024 images"
    )
    print(f"  {'path':<12} {'kernels':<44} {'train':>8} {'infer':>8}")
    for r in rows:
        print(f"  {r['path']:<12} {r['kernels']:<44} {r['train_ms']:>8.3f} {r['infer_ms']:>8.2f}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "show": cmd_show,
    "export": cmd_export,
    "serve": cmd_serve,
    "plot": cmd_plot,
    "summary": cmd_summary,
    "info": cmd_info,
}
