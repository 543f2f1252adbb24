"""The ``handgrad`` command: train, evaluate, predict, info, gradcheck, report.

A thin layer over the library: it parses arguments, calls library functions
with explicit values, and turns errors into one line on stderr and an exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from enum import IntEnum
from pathlib import Path

import numpy as np

from . import __version__  # noqa: F401  (set before the import below)
from . import _cli_explain, _cli_serve
from ._atomic import remove_stale_temporaries
from ._progress import progress_bar
from .datasets import NAMED, DataError, Preprocessor, load_dataset, stratified_split
from .metrics import classification_report, format_report
from .model import ACTIVATIONS, DTYPES, MLP, PREDICT_CHUNK, gradcheck
from .optim import OPTIMIZERS, make_optimizer
from .serialization import ModelFileError, load, load_checkpoint, save, save_checkpoint
from .train import Callback, DivergenceError, Trainer

CHECKPOINT_NAME = "checkpoint.safetensors"


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # training failed or a check did not pass
    USAGE = 2  # bad command-line arguments
    DATA = 3  # a data or model file is missing, damaged or unsuitable
    DIVERGED = 4  # the loss or gradient became NaN or infinite
    INTERRUPTED = 130  # Ctrl-C (SIGINT): a checkpoint was saved
    TERMINATED = 143  # SIGTERM: a checkpoint was saved


class CLIError(Exception):
    """An error to show as one line, with its exit code."""

    def __init__(self, message, code=ExitCode.ERROR):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- #
# Argument types: each names the bad value
# --------------------------------------------------------------------------- #


def _number_type(convert, noun, accept, requirement):
    """An argparse type that converts, checks, and names the bad value when it fails."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be {requirement}")
        return value

    return parse


positive_int = _number_type(int, "a whole number", lambda v: v > 0, "at least 1")
non_negative_int = _number_type(int, "a whole number", lambda v: v >= 0, "0 or more")
positive_float = _number_type(float, "a number", lambda v: math.isfinite(v) and v > 0,
                              "a positive number")
non_negative_float = _number_type(float, "a number", lambda v: math.isfinite(v) and v >= 0,
                                  "a non-negative number")


def fraction(text):
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0 and below 1")
    return value


def hidden_sizes(text):
    """``256``, ``512,256``, or ``none`` (no hidden layer: logistic regression)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: hidden sizes are whole numbers separated by commas, e.g. 512,256"
            ) from None
        if size <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: each hidden size must be at least 1")
        sizes.append(size)
    return tuple(sizes)


# --------------------------------------------------------------------------- #
# The parser
# --------------------------------------------------------------------------- #


class _ExplicitStore(argparse.Action):
    """Stores the value and records that the user gave it (``<dest>_given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where there is none (None) or it is a flag."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="handgrad", formatter_class=_Formatter,
        description="Train and use neural-network classifiers whose gradients are "
                    "derived by hand (see docs/derivation.md).",
        epilog="examples:\n  handgrad train\n"
               "  handgrad train --dataset mnist --hidden 800 --epochs 10 --out mnist.safetensors\n"
               "  handgrad evaluate mnist.safetensors\n"
               "  handgrad predict mnist.safetensors my-digit.png")
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", formatter_class=_Formatter, help="train a classifier",
                       description="Train a network and report its test accuracy.")
    data = t.add_argument_group("data")
    data.add_argument("--dataset", default="digits",
                      help=f"{', '.join(NAMED)}, an IDX folder, a .csv or an .npz file")
    data.add_argument("--label-column", default="-1",
                      help="label column of a CSV file: an index or a header name")
    data.add_argument("--scaling", choices=("divide", "standardize", "none"), default="divide",
                      help="input scaling fitted on the training set (divide: x / max value)")
    data.add_argument("--val-fraction", type=fraction, default=0.1,
                      help="fraction of the training set held out for validation (0: none)")
    net = t.add_argument_group("network")
    net.add_argument("--hidden", type=hidden_sizes, default="256",
                     help="hidden layer sizes, e.g. 800 or 512,256; 'none' for none")
    net.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                     help="hidden-layer activation (relu is the specification's)")
    net.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="floating-point type of weights and arithmetic")
    opt = t.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=non_negative_int, default=30, action=_ExplicitStore,
                     help="training epochs (with --resume: the total to reach)")
    opt.add_argument("--batch-size", type=positive_int, default=32, help="examples per step")
    opt.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam",
                     help="update rule (PyTorch's formulas)")
    opt.add_argument("--lr", type=positive_float, default=None,
                     help="learning rate (default: 1e-3 for adam/adamw, 0.01 for sgd)")
    opt.add_argument("--momentum", type=non_negative_float, default=0.0, help="SGD momentum")
    opt.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=None,
                     help="L2 (sgd, adam) or decoupled (adamw, default 0.01) weight decay")
    opt.add_argument("--seed", type=non_negative_int, default=0,
                     help="seed of the initial weights, the shuffles and the validation split")
    out = t.add_argument_group("output")
    reg = t.add_argument_group("regularisation, schedules and augmentation")
    reg.add_argument("--dropout", type=fraction, default=0.0,
                     help="dropout rate of the hidden units (inverted dropout)")
    reg.add_argument("--input-dropout", type=fraction, default=0.0,
                     help="dropout rate of the inputs")
    reg.add_argument("--label-smoothing", type=fraction, default=0.0,
                     help="ε: targets become (1 − ε) one-hot + ε / classes")
    reg.add_argument("--max-norm", type=positive_float, default=None,
                     help="cap each unit's incoming weight vector at this L2 norm")
    reg.add_argument("--schedule", choices=("constant", "step", "cosine", "plateau"),
                     default="constant", help="learning-rate schedule")
    reg.add_argument("--warmup-epochs", type=non_negative_int, default=0,
                     help="cosine: epochs of linear warm-up")
    reg.add_argument("--min-lr", type=non_negative_float, default=0.0,
                     help="cosine: final learning rate")
    reg.add_argument("--step-size", type=positive_int, default=10,
                     help="step: epochs between decays")
    reg.add_argument("--gamma", type=positive_float, default=0.1,
                     help="step: decay factor; plateau: factor on a plateau")
    reg.add_argument("--early-stopping", action="store_true",
                     help="stop when validation loss stalls and keep the best epoch's weights")
    reg.add_argument("--n-iter-no-change", type=positive_int, default=10,
                     help="epochs without improvement before early stopping or a plateau step")
    reg.add_argument("--tol", type=non_negative_float, default=1e-4,
                     help="improvement that counts, for early stopping and plateau")
    reg.add_argument("--augment", choices=("none", "affine", "elastic"), default="none",
                     help="random distortions of image inputs: affine maps, or affine plus "
                          "Simard-style elastic fields")
    reg.add_argument("--rotation", type=non_negative_float, default=10.0,
                     help="augment: largest rotation in degrees")
    reg.add_argument("--zoom", type=fraction, default=0.1,
                     help="augment: largest relative zoom")
    reg.add_argument("--shear", type=non_negative_float, default=10.0,
                     help="augment: largest shear in degrees")
    reg.add_argument("--translate", type=non_negative_float, default=2.0,
                     help="augment: largest shift in pixels")
    reg.add_argument("--elastic-alpha", type=non_negative_float, default=34.0,
                     help="augment elastic: displacement scale in pixels")
    reg.add_argument("--elastic-sigma", type=positive_float, default=4.0,
                     help="augment elastic: smoothness of the displacement field in pixels")
    dist = t.add_argument_group("distributed (run under mpiexec)")
    dist.add_argument("--distributed", action="store_true",
                      help="data-parallel training over MPI: mpiexec -n 4 handgrad train "
                           "--distributed ...")
    dist.add_argument("--virtual-shards", type=positive_int, default=12,
                      help="the data is cut into this many shards; any number of ranks up "
                           "to it trains on exactly the same batches")
    opt.add_argument("--on-divergence", choices=("stop", "backoff"), default="stop",
                     help="when the loss becomes NaN/inf: stop, or halve the learning rate "
                          "and retry from the last epoch (up to 5 times)")
    out.add_argument("--out", type=Path, default=None, help="save the trained model here")
    out.add_argument("--checkpoint-dir", type=Path, default=None,
                     help=f"write {CHECKPOINT_NAME} here after every epoch")
    out.add_argument("--resume", type=Path, default=None,
                     help="continue an interrupted run from its checkpoint file")
    out.add_argument("--plot", type=Path, default=None, metavar="DIR",
                     help="write PNG figures (curves, confusion matrix, weights) into DIR")
    out.add_argument("--json", action="store_true",
                     help="print a machine-readable summary on stdout")
    out.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("evaluate", formatter_class=_Formatter,
                       help="accuracy, per-class scores and confusion matrix")
    e.add_argument("model", type=Path, help="a model file written by handgrad train --out")
    e.add_argument("--dataset", default=None,
                   help="data set to evaluate on (default: the one the model was trained on)")
    e.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("predict", formatter_class=_Formatter,
                       help="classify images or IDX/CSV/NPY files")
    p.add_argument("model", type=Path, help="a model file written by handgrad train --out")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="PNG/JPEG images, or IDX, CSV or .npy files of examples")
    p.add_argument("--top", type=positive_int, default=1, help="show the top K classes")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")

    i = sub.add_parser("info", formatter_class=_Formatter,
                       help="architecture, parameters and metadata of a model file")
    i.add_argument("model", type=Path, help="a model file")
    i.add_argument("--json", action="store_true", help="print the information as JSON")

    g = sub.add_parser("gradcheck", formatter_class=_Formatter,
                       help="check the hand-derived gradients by finite differences")
    g.add_argument("model", type=Path, nargs="?", default=None,
                   help="a model file (default: a fresh network)")
    g.add_argument("--inputs", type=positive_int, default=20,
                   help="inputs of the fresh network")
    g.add_argument("--hidden", type=hidden_sizes, default="16",
                   help="hidden layer sizes of the fresh network")
    g.add_argument("--classes", type=positive_int, default=5,
                   help="classes of the fresh network")
    g.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    g.add_argument("--batch-size", type=positive_int, default=8)
    g.add_argument("--max-checks", type=positive_int, default=50,
                   help="entries checked per parameter")
    g.add_argument("--tolerance", type=positive_float, default=1e-5,
                   help="largest relative error that passes")
    g.add_argument("--seed", type=non_negative_int, default=0)
    g.add_argument("--json", action="store_true", help="print the errors as JSON")

    x = sub.add_parser("export", formatter_class=_Formatter,
                       help="write a model as ONNX (preprocessing included)")
    x.add_argument("model", type=Path, help="a model file")
    x.add_argument("out", type=Path, help="the .onnx file to write")

    r = sub.add_parser("report", formatter_class=_Formatter,
                       help="PNG figures of a model: curves, confusion matrix, weights")
    r.add_argument("model", type=Path, help="a model file")
    r.add_argument("--out", type=Path, default="report", metavar="DIR",
                   help="folder for the PNG files")
    r.add_argument("--dataset", default=None,
                   help="data set for the confusion matrix (default: the training one)")
    _cli_explain.add_parser(sub)
    _cli_serve.add_parser(sub)
    return parser


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message (or --help)
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    command = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
               "info": cmd_info, "gradcheck": cmd_gradcheck, "report": cmd_report,
               "export": cmd_export, "explain": _cli_explain.run,
               "serve": _cli_serve.run}[args.command]
    try:
        return int(command(args))
    except CLIError as exc:
        return _fail(args, str(exc), exc.code)
    except (ModelFileError, DataError) as exc:
        return _fail(args, str(exc), ExitCode.DATA)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", ExitCode.INTERRUPTED)
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(args, _describe(exc), ExitCode.ERROR)


def _describe(exc):
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _fail(args, message, code):
    if getattr(args, "traceback", False):
        traceback.print_exc()
    print(f"handgrad: error: {message}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- #
# train
# --------------------------------------------------------------------------- #


def _label_column(text):
    try:
        return int(text)
    except ValueError:
        return text


def _check_writable(path, what):
    """Fail before training, not after it, when an output cannot be written.

    Probes by creating (and removing) a file, which also catches read-only file
    systems and, for root, what permission bits would not.
    """
    path = Path(path)
    directory = path.parent if what == "file" else path
    if what == "dir":
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CLIError(f"{directory}: cannot create folder: {exc.strerror}") from None
    if not directory.is_dir():
        raise CLIError(f"{path}: folder {directory} does not exist")
    if what == "file" and path.is_dir():
        raise CLIError(f"{path}: is a folder; give a file name such as model.safetensors")
    try:
        fd, probe = tempfile.mkstemp(prefix=".handgrad-write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"{path}: folder {directory} is not writable ({exc.strerror})") from None


class _Progress(Callback):
    """A live bar per epoch and one fixed-format line per epoch."""

    def __init__(self, epochs, stream, quiet):
        self.epochs, self.stream, self.quiet = epochs, stream, quiet
        self.bar = None

    def on_epoch_begin(self, epoch, n_batches):
        if not self.quiet:
            self.bar = progress_bar(n_batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                                    unit="batch")

    def on_batch_end(self, batch, loss):
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0:
                self.bar.set_postfix_str(f"loss {loss:.4f}")

    def on_epoch_end(self, epoch, history):
        self.close()
        if not self.quiet:
            print(format_epoch(history.last(), self.epochs), file=self.stream, flush=True)
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(m, epochs):
    """``epoch   3/20  loss 0.123456  acc 0.9712  val_loss 0.145600  val_acc 0.9650  1.23s``."""
    width = len(str(epochs))
    line = (f"epoch {m['epoch'] + 1:>{width}}/{epochs}  loss {m['train_loss']:.6f}  "
            f"acc {m['train_accuracy']:.4f}")
    if m.get("val_loss") is not None:
        line += f"  val_loss {m['val_loss']:.6f}  val_acc {m['val_accuracy']:.4f}"
    return line + f"  {m['epoch_time']:.2f}s"


class _Checkpointer(Callback):
    def __init__(self, path, save_fn):
        self.path, self.save_fn = path, save_fn

    def on_epoch_end(self, epoch, history):
        if self.path is not None:
            self.save_fn(self.path)
        return False


class _SignalStop:
    """SIGINT/SIGTERM ask the trainer to stop after the current batch; a second
    signal stops at once."""

    def __init__(self, trainer=None):
        self.trainer = trainer
        self.signum = None
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.trainer is not None:
            self.trainer.request_stop()


def _settings_from_args(args):
    return {
        "dataset": args.dataset, "label_column": args.label_column, "scaling": args.scaling,
        "val_fraction": args.val_fraction, "hidden": list(args.hidden),
        "activation": args.activation, "dtype": args.dtype, "epochs": args.epochs,
        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
        "momentum": args.momentum, "nesterov": args.nesterov,
        "weight_decay": args.weight_decay, "seed": args.seed,
        "dropout": args.dropout, "input_dropout": args.input_dropout,
        "label_smoothing": args.label_smoothing, "max_norm": args.max_norm,
        "schedule": args.schedule, "warmup_epochs": args.warmup_epochs, "min_lr": args.min_lr,
        "step_size": args.step_size, "gamma": args.gamma,
        "early_stopping": args.early_stopping, "n_iter_no_change": args.n_iter_no_change,
        "tol": args.tol, "augment": args.augment, "rotation": args.rotation, "zoom": args.zoom,
        "shear": args.shear, "translate": args.translate,
        "elastic_alpha": args.elastic_alpha, "elastic_sigma": args.elastic_sigma,
        "virtual_shards": args.virtual_shards,
    }


def _training_extras(settings, model, optimizer):
    """Trainer options and callbacks (schedules, early stopping) from the settings."""
    from .augment import Augmenter
    from .model import Dropout
    from .schedules import CosineWithWarmup, EarlyStopping, ReduceOnPlateau, StepLR

    get = settings.get
    options = {"label_smoothing": get("label_smoothing", 0.0), "max_norm": get("max_norm")}
    if get("dropout", 0.0) or get("input_dropout", 0.0):
        options["dropout"] = Dropout(get("input_dropout", 0.0), get("dropout", 0.0))
    if get("augment", "none") != "none":
        shape = model.preprocessor.input_shape if model.preprocessor else None
        if shape is None or len(shape) != 2:
            raise CLIError(f"--augment needs image data; this data set's examples have shape "
                           f"{shape}", ExitCode.USAGE)
        if model.preprocessor.scaling == "standardize":
            raise CLIError("--augment needs --scaling divide or none (a zero background)",
                           ExitCode.USAGE)
        options["augment"] = Augmenter(
            shape, rotation=get("rotation"), scale=get("zoom"), shear=get("shear"),
            translate=get("translate"),
            elastic_alpha=get("elastic_alpha") if get("augment") == "elastic" else 0.0,
            elastic_sigma=get("elastic_sigma"), seed=get("seed"))
    callbacks = []
    schedule, epochs = get("schedule", "constant"), settings["epochs"]
    if schedule == "step":
        callbacks.append(StepLR(optimizer, get("step_size"), get("gamma")))
    elif schedule == "cosine":
        if get("warmup_epochs", 0) >= epochs:
            raise CLIError(f"--warmup-epochs {get('warmup_epochs')} must be below --epochs "
                           f"{epochs}", ExitCode.USAGE)
        callbacks.append(CosineWithWarmup(optimizer, epochs, get("warmup_epochs", 0),
                                          min(get("min_lr", 0.0), optimizer.lr)))
    elif schedule == "plateau":
        callbacks.append(ReduceOnPlateau(optimizer, factor=min(get("gamma"), 0.99),
                                         patience=get("n_iter_no_change"), tol=get("tol")))
    if get("early_stopping"):
        if not settings["val_fraction"]:
            raise CLIError("--early-stopping needs a validation split (--val-fraction > 0)",
                           ExitCode.USAGE)
        callbacks.append(EarlyStopping(model, "val_loss", get("n_iter_no_change"), get("tol")))
    return options, callbacks


def _prepare_data(settings, progress):
    """Load, split off validation rows (stratified, seeded) and fit the preprocessing."""
    ds = load_dataset(settings["dataset"], label_column=_label_column(settings["label_column"]),
                      progress=progress)
    x_train, y_train = ds.x_train, ds.y_train
    x_val = y_val = None
    if settings["val_fraction"] > 0:
        tr, va = stratified_split(y_train, settings["val_fraction"], settings["seed"])
        if len(va) == 0:
            raise CLIError(f"--val-fraction {settings['val_fraction']} leaves no validation "
                           f"rows; use a larger fraction or 0")
        x_train, y_train, x_val, y_val = x_train[tr], y_train[tr], x_train[va], y_train[va]
    return ds, x_train, y_train, x_val, y_val


def _prepare_rows(model, raw):
    """``model.prepare``, allowing the empty share a rank may hold of a small set."""
    if len(raw) == 0:
        return np.empty((0, model.n_inputs), model.dtype)
    return model.prepare(raw)


def _prepare_shard(settings, comm, show):
    """This rank's training, validation and test rows, reading only those where it can.

    The validation split and the shard layout are computed from the labels alone,
    identically on every rank; image rows are then read from the IDX files by range.
    """
    from types import SimpleNamespace

    from .datasets import load_idx
    from .datasets.mnist import DATASETS as FAMILY, PARTS, find_part, mnist_files
    from .distributed import ShardLayout, split_rows

    spec = settings["dataset"]
    folder = None
    if spec in FAMILY:
        if comm.rank == 0:
            mnist_files(name=spec, progress=show)  # downloads, once, on rank 0
        comm.Barrier()
        folder = mnist_files(name=spec, download_missing=False)
    elif Path(spec).is_dir():
        folder = Path(spec)
    if folder is not None and all(find_part(folder, p) for p in PARTS):
        files = {p: find_part(folder, p) for p in PARTS}
        y_all = load_idx(files["train-labels-idx1-ubyte"]).astype(np.int64)
        y_test_all = load_idx(files["t10k-labels-idx1-ubyte"]).astype(np.int64)

        def train_rows(lo, hi):
            return load_idx(files["train-images-idx3-ubyte"], rows=(lo, hi))

        n_test = len(y_test_all)
        a, b = split_rows(n_test, comm)
        x_test = load_idx(files["t10k-images-idx3-ubyte"], rows=(a, b))
        y_test = y_test_all[a:b]
        classes = (list(FAMILY[spec].classes) if spec in FAMILY
                   else [str(i) for i in range(int(max(y_all.max(), y_test_all.max())) + 1)])
        name = spec if spec in FAMILY else Path(spec).name
    else:  # CSV, npz, digits: no partial reads, so load and slice
        ds = load_dataset(spec, label_column=_label_column(settings["label_column"]),
                          progress=show)
        y_all = ds.y_train

        def train_rows(lo, hi):
            return ds.x_train[lo:hi]

        a, b = split_rows(len(ds.x_test), comm)
        x_test, y_test, classes, name = ds.x_test[a:b], ds.y_test[a:b], ds.classes, ds.name
    if settings["val_fraction"] > 0:
        tr, va = stratified_split(y_all, settings["val_fraction"], settings["seed"])
    else:
        tr, va = np.arange(len(y_all)), np.arange(0)
    layout = ShardLayout(len(tr), settings["batch_size"], settings.get("virtual_shards", 12),
                         comm.size)
    start, stop = layout.rank_rows(comm.rank)
    lo = 0 if comm.rank == 0 else int(tr[start])  # this rank's range of the original file
    hi = len(y_all) if comm.rank == comm.size - 1 else int(tr[stop])
    images = train_rows(lo, hi)
    mine = tr[start:stop]
    val_mine = va[(va >= lo) & (va < hi)]
    x_val = images[val_mine - lo] if len(va) else None
    y_val = y_all[val_mine] if len(va) else None
    ds = SimpleNamespace(name=name, classes=classes, n_classes=len(classes),
                         x_test=x_test, y_test=y_test)
    return ds, images[mine - lo], y_all[mine], x_val, y_val, len(tr)


def cmd_train(args):
    if not args.distributed:
        return _train(args, comm=None)
    from .distributed import _mpi, run_or_abort

    comm = _mpi().COMM_WORLD
    # an error on any rank (bad data, a full disk on rank 0...) ends every rank at once,
    # rather than leaving the others waiting in a collective for ever
    return run_or_abort(comm, _train, args, comm)


def _train(args, comm):
    rank0 = comm is None or comm.rank == 0
    stream = sys.stderr if args.json else sys.stdout
    show = not args.quiet and rank0
    if rank0 and args.out is not None:
        _check_writable(args.out, "file")
    if rank0 and args.checkpoint_dir is not None:
        _check_writable(args.checkpoint_dir, "dir")
    if rank0 and args.plot is not None:
        _check_writable(args.plot, "dir")

    for target in (args.out, None if args.checkpoint_dir is None
                   else args.checkpoint_dir / CHECKPOINT_NAME):
        if target is not None:
            remove_stale_temporaries(target)  # left by a run killed mid-write
    resumed = None
    if args.resume is not None:
        model, opt_state, trainer_state, settings = load_checkpoint(args.resume)
        if getattr(args, "epochs_given", False):
            settings["epochs"] = args.epochs
        resumed = (opt_state, trainer_state)
    else:
        settings = _settings_from_args(args)
        model = None

    if comm is None:
        ds, x_train, y_train, x_val, y_val = _prepare_data(settings, progress=show)
        n_rows = len(x_train)
    else:
        ds, x_train, y_train, x_val, y_val, n_rows = _prepare_shard(settings, comm, show)
    if model is None:
        prep = Preprocessor(settings["scaling"]).fit(x_train, comm=comm)
        model = MLP(prep.n_features, tuple(settings["hidden"]), ds.n_classes,
                    activation=settings["activation"], dtype=settings["dtype"],
                    seed=settings["seed"])
        model.preprocessor = prep
        model.classes = list(ds.classes)
    elif model.preprocessor is None or model.n_classes != ds.n_classes:
        raise CLIError(f"{args.resume}: the checkpoint does not match data set "
                       f"{settings['dataset']!r}")
    X = model.prepare(x_train)  # (N, D)
    val = None if x_val is None else (_prepare_rows(model, x_val), y_val)

    optimizer = make_optimizer(settings["optimizer"], settings["lr"], settings["momentum"],
                               settings["weight_decay"], settings["nesterov"])
    settings["lr"] = optimizer.lr  # record the effective value, not None
    progress = _Progress(settings["epochs"], stream, quiet=not show)
    stopper = _SignalStop()
    ckpt_path = None if args.checkpoint_dir is None else args.checkpoint_dir / CHECKPOINT_NAME
    options, extra_callbacks = _training_extras(settings, model, optimizer)
    if comm is None:
        trainer = Trainer(model, X, y_train, optimizer=optimizer, epochs=settings["epochs"],
                          batch_size=settings["batch_size"], seed=settings["seed"],
                          validation_data=val, **options)
    else:
        from .distributed import DistributedTrainer

        trainer = DistributedTrainer(model, X, y_train, comm=comm, n_rows=n_rows,
                                     virtual_shards=settings.get("virtual_shards", 12),
                                     optimizer=optimizer, epochs=settings["epochs"],
                                     batch_size=settings["batch_size"], seed=settings["seed"],
                                     validation_data=val, **options)

    def write_checkpoint(path):
        if rank0:  # every rank holds the same weights and state: one writer
            save_checkpoint(path, model, optimizer, trainer.state_dict(), settings)

    # the checkpointer runs last, after schedules and early stopping updated their state
    stopper.trainer = trainer
    trainer.callbacks = [progress, *extra_callbacks, _Checkpointer(ckpt_path, write_checkpoint)]
    if resumed is not None:
        optimizer.load_state_dict(resumed[0])
        trainer.load_state_dict(resumed[1])
        if show:
            print(f"resuming from {args.resume} at epoch {trainer.epoch + 1}, "
                  f"batch {trainer.batch + 1}", file=stream)

    n_val, n_test = (0 if val is None else len(val[0])), len(ds.x_test)
    if comm is not None:  # every rank joins these collectives, printing or not
        n_val, n_test = comm.allreduce(n_val), comm.allreduce(n_test)
    if show:
        sizes = "-".join(str(s) for s in model.config.layer_sizes)
        where = "" if comm is None else f" over {comm.size} MPI ranks"
        print(f"training {sizes} ({model.config.activation}, {model.config.dtype}) on "
              f"{ds.name}{where}: {n_rows} train, {n_val} validation, {n_test} test examples",
              file=stream)
    t0 = time.perf_counter()
    stopper.install()
    try:
        _run_with_divergence_policy(trainer, model, optimizer, args.on_divergence,
                                    ckpt_path, write_checkpoint, stream)
    finally:
        stopper.restore()
        progress.close()
    train_time = time.perf_counter() - t0

    if stopper.signum is not None or trainer.stop_requested or not trainer.finished:
        path = ckpt_path or _default_checkpoint(args.out)
        write_checkpoint(path)
        if not rank0:
            return ExitCode.INTERRUPTED
        if stopper.signum is None:
            stopper.signum = signal.SIGINT  # another rank was interrupted
        name = "SIGTERM" if stopper.signum == signal.SIGTERM else "Ctrl-C"
        print(f"handgrad: {name}: stopped at epoch {trainer.epoch + 1}, batch {trainer.batch}; "
              f"checkpoint saved to {path}; continue with: handgrad train --resume {path}",
              file=sys.stderr)
        return ExitCode.TERMINATED if stopper.signum == signal.SIGTERM else ExitCode.INTERRUPTED

    if comm is None:
        test_loss, test_acc = model.evaluate(model.prepare(ds.x_test), ds.y_test)
    else:
        from .distributed import evaluate_distributed

        test_loss, test_acc = evaluate_distributed(model, _prepare_rows(model, ds.x_test),
                                                   ds.y_test, comm)
        if not rank0:
            return ExitCode.OK
    history = trainer.history.to_dict()
    model.training = {
        "dataset": settings["dataset"], "settings": settings, "history": history,
        "test_accuracy": test_acc, "test_loss": test_loss, "train_time_s": train_time,
        "handgrad_version": __version__,
    }
    if args.out is not None:
        save(model, args.out)
    figures = _write_plots(model, ds, args.plot) if args.plot is not None else []
    summary = {
        "dataset": settings["dataset"], "layer_sizes": list(model.config.layer_sizes),
        "activation": model.config.activation, "dtype": model.config.dtype,
        "epochs": len(history["epochs"]), "history": history,
        "test_accuracy": test_acc, "test_loss": test_loss, "train_time_s": train_time,
        "model_path": None if args.out is None else str(args.out),
        "figures": [str(f) for f in figures],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"test accuracy {test_acc:.4f}  test loss {test_loss:.6f}  "
              f"({n_test} examples, trained in {train_time:.1f}s)")
        if args.out is not None:
            print(f"model saved to {args.out}")
        for f in figures:
            print(f"figure written to {f}")
    return ExitCode.OK


MAX_BACKOFFS = 5


class _Snapshot(Callback):
    """The state at the end of the last epoch, to retry from after a divergence."""

    def __init__(self, trainer, model, optimizer):
        self.trainer, self.model, self.optimizer = trainer, model, optimizer
        self.take()

    def take(self):
        self.state = (self.model.param_buffer.copy(), self.optimizer.state_dict(),
                      self.trainer.state_dict())

    def restore(self):
        params, opt_state, trainer_state = self.state
        self.model.param_buffer[...] = params
        lr = self.optimizer.lr
        self.optimizer.load_state_dict(opt_state)
        self.optimizer.lr = lr
        self.trainer.load_state_dict(trainer_state)

    def on_epoch_end(self, epoch, history):
        self.take()
        return False


def _run_with_divergence_policy(trainer, model, optimizer, policy, ckpt_path, write_checkpoint,
                                stream):
    snapshot = _Snapshot(trainer, model, optimizer) if policy == "backoff" else None
    if snapshot is not None:
        trainer.callbacks.append(snapshot)
    backoffs = 0
    while True:
        try:
            return trainer.run()
        except DivergenceError as exc:
            if snapshot is None or backoffs >= MAX_BACKOFFS:
                if ckpt_path is not None:
                    write_checkpoint(ckpt_path)  # the last finite weights, resumable
                hint = (f"; the last finite weights are in {ckpt_path}" if ckpt_path else "")
                if backoffs:
                    hint += f" (after {backoffs} learning-rate back-offs)"
                raise CLIError(f"{exc}{hint}", ExitCode.DIVERGED) from None
            backoffs += 1
            snapshot.restore()
            optimizer.lr *= 0.5
            print(f"diverged at epoch {exc.epoch + 1}, batch {exc.batch + 1}: retrying from "
                  f"epoch {trainer.epoch + 1} with learning rate {optimizer.lr:g}", file=stream)


def _default_checkpoint(out):
    base = Path("handgrad") if out is None else Path(out).with_suffix("")
    return base.parent / f"{base.name}.checkpoint.safetensors"


def _write_plots(model, ds, directory):
    from .plots import plot_confusion, plot_first_layer, plot_history

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    history = model.training.get("history")
    if history and history["epochs"]:
        files.append(plot_history(history, directory / "curves.png"))
    if ds is not None:
        pred = model.predict(model.prepare(ds.x_test))
        report = classification_report(ds.y_test, pred, model.classes or ds.classes)
        files.append(plot_confusion(report["confusion_matrix"], model.classes or ds.classes,
                                    directory / "confusion.png"))
    shape = None if model.preprocessor is None else model.preprocessor.input_shape
    if shape is not None and len(shape) == 2 and model.n_layers > 1:
        files.append(plot_first_layer(model.params["W1"], shape, directory / "weights.png"))
    return files


# --------------------------------------------------------------------------- #
# evaluate, predict, info, gradcheck, report
# --------------------------------------------------------------------------- #


def _dataset_for(model, spec, model_path):
    spec = spec or model.training.get("dataset")
    if spec is None:
        raise CLIError(f"{model_path}: the model does not record its data set; pass --dataset",
                       ExitCode.USAGE)
    settings = model.training.get("settings", {})
    ds = load_dataset(spec, label_column=_label_column(settings.get("label_column", "-1")))
    if ds.n_classes > model.n_classes:
        raise CLIError(f"data set {spec!r} has {ds.n_classes} classes, the model "
                       f"{model.n_classes}", ExitCode.DATA)
    return ds


def cmd_evaluate(args):
    model = load(args.model)
    ds = _dataset_for(model, args.dataset, args.model)
    try:
        X = model.prepare(ds.x_test)
    except (ValueError, DataError) as exc:
        raise CLIError(f"data set does not fit the model: {exc}", ExitCode.DATA) from None
    pred = model.predict(X)
    report = classification_report(ds.y_test, pred, model.classes or ds.classes)
    report["loss"] = model.evaluate(X, ds.y_test)[0]
    if args.json:
        print(json.dumps(report | {"dataset": ds.name, "model": str(args.model)}, indent=2))
    else:
        print(f"{args.model} on {ds.name} (test set)")
        print(format_report(report))
    return ExitCode.OK


def _read_inputs(path, model):
    """``(names, raw examples)`` from one input file, shaped as the model expects."""
    from .datasets import load_csv, load_idx, load_npy
    from .images import IMAGE_SUFFIXES, load_digit_image

    prep = model.preprocessor
    shape = prep.input_shape if prep is not None else (model.n_inputs,)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        max_value = prep.scale if (prep is not None and prep.scaling == "divide") else 255.0
        img = load_digit_image(path, shape if len(shape) == 2 else (28, 28), max_value)
        return [str(path)], img[None]
    if suffix == ".npy":
        arr = load_npy(path, mmap=True)  # read chunk by chunk, however large
    elif suffix == ".csv":
        arr, _, _ = load_csv(path, label_column=None)
    else:
        arr = load_idx(path)
    if arr.shape[1:] == tuple(shape) or (arr.ndim == 2 and arr.shape[1] == model.n_inputs):
        pass
    elif arr.shape == tuple(shape):
        arr = arr[None]
    else:
        raise DataError(f"{path}: examples of shape {arr.shape[1:]}, the model takes "
                        f"{tuple(shape)} (or rows of {model.n_inputs} values)")
    return _IndexNames(str(path), len(arr)), arr


class _IndexNames:
    """``path[i]`` for each row, made on demand (no list of a million strings)."""

    def __init__(self, path, n):
        self.path, self.n = path, n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return [f"{self.path}[{i}]" for i in range(self.n)[item]]


def cmd_predict(args):
    """Prints as it goes: memory stays bounded however many rows the inputs hold."""
    model = load(args.model)
    classes = model.classes or [str(i) for i in range(model.n_classes)]
    first = True
    if args.json:
        sys.stdout.write("[")
    for path in args.inputs:
        names, raw = _read_inputs(path, model)
        for start in range(0, len(raw), PREDICT_CHUNK):
            P = model.predict_proba(model.prepare(raw[start:start + PREDICT_CHUNK]))  # (B, M)
            chunk_names = names[start:start + PREDICT_CHUNK]
            width = max(len(n) for n in chunk_names)
            for name, p in zip(chunk_names, P):
                top = np.argsort(-p)[:args.top]
                if args.json:
                    item = {"input": name, "class": classes[top[0]],
                            "probability": float(p[top[0]]),
                            "top": [{"class": classes[k], "probability": float(p[k])}
                                    for k in top]}
                    sys.stdout.write(("\n " if first else ",\n ") + json.dumps(item))
                else:
                    extra = "".join(f"  {classes[k]} {p[k]:.4f}" for k in top[1:])
                    print(f"{name:<{width}}  {classes[top[0]]}  {p[top[0]]:.4f}{extra}")
                first = False
    if args.json:
        sys.stdout.write("\n]\n")
    return ExitCode.OK


def cmd_info(args):
    model = load(args.model)
    cfg = model.config
    info = {
        "file": str(args.model), "layer_sizes": list(cfg.layer_sizes),
        "activation": cfg.activation, "dtype": cfg.dtype, "parameters": model.n_params,
        "tensors": {k: list(v.shape) for k, v in model.params.items()},
        "classes": model.classes,
        "preprocessing": None if model.preprocessor is None else {
            "scaling": model.preprocessor.scaling, "scale": model.preprocessor.scale,
            "input_shape": list(model.preprocessor.input_shape)},
        "training": {k: v for k, v in model.training.items() if k != "history"},
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return ExitCode.OK
    print(f"file         {info['file']}")
    print(f"layers       {' -> '.join(str(s) for s in cfg.layer_sizes)}")
    print(f"activation   {cfg.activation}")
    print(f"dtype        {cfg.dtype}")
    print(f"parameters   {model.n_params:,}")
    for name, shape in info["tensors"].items():
        print(f"  {name:<10} {tuple(shape)}")
    if model.classes:
        print(f"classes      {', '.join(model.classes)}")
    if info["preprocessing"]:
        p = info["preprocessing"]
        print(f"inputs       {tuple(p['input_shape'])}, scaling {p['scaling']}"
              + (f" (÷ {p['scale']:g})" if p["scaling"] == "divide" else ""))
    tr = model.training
    if tr.get("estimator"):
        print(f"trained by   {tr['estimator']}: {tr.get('n_iter')} iterations, "
              f"final loss {tr.get('loss')}")
    elif tr.get("dataset"):
        s = tr.get("settings", {})
        print(f"trained on   {tr.get('dataset')}: {len(tr.get('history', {}).get('epochs', []))} "
              f"epochs, {s.get('optimizer')} lr {s.get('lr')}, batch {s.get('batch_size')}, "
              f"seed {s.get('seed')}")
        if tr.get("test_accuracy") is not None:
            print(f"test         accuracy {tr['test_accuracy']:.4f}, loss {tr['test_loss']:.6f}")
    return ExitCode.OK


def cmd_gradcheck(args):
    rng = np.random.default_rng(args.seed)
    if args.model is not None:
        model = load(args.model)
    else:
        model = MLP(args.inputs, args.hidden, args.classes, activation=args.activation,
                    dtype="float64", seed=args.seed)
    X = rng.normal(size=(args.batch_size, model.n_inputs))
    y = rng.integers(0, model.n_classes, size=args.batch_size)
    errors = gradcheck(model, X, y, max_checks=args.max_checks, seed=args.seed)
    worst = max(errors.values())
    passed = worst <= args.tolerance
    if args.json:
        print(json.dumps({"errors": errors, "worst": worst, "tolerance": args.tolerance,
                          "passed": passed}, indent=2))
    else:
        print(f"gradient check of {model!r}: central differences in float64, "
              f"batch {args.batch_size}, up to {args.max_checks} entries per parameter")
        for name, err in errors.items():
            print(f"  {name:<6} {tuple(model.params[name].shape)!s:<14} worst relative error "
                  f"{err:.2e}  {'ok' if err <= args.tolerance else 'FAIL'}")
        print(f"{'passed' if passed else 'FAILED'}: worst {worst:.2e}, tolerance "
              f"{args.tolerance:.0e}")
    return ExitCode.OK if passed else ExitCode.ERROR


def cmd_report(args):
    model = load(args.model)
    _check_writable(args.out, "dir")
    try:
        ds = _dataset_for(model, args.dataset, args.model)
    except CLIError:
        ds = None
    for f in _write_plots(model, ds, args.out):
        print(f"figure written to {f}")
    return ExitCode.OK


def cmd_export(args):
    from .onnx import export_onnx

    model = load(args.model)
    _check_writable(args.out, "file")
    export_onnx(model, args.out)
    shape = model.preprocessor.input_shape if model.preprocessor else (model.n_inputs,)
    print(f"wrote {args.out}: input (N, {', '.join(map(str, shape))}) of raw values, "
          f"outputs probabilities (N, {model.n_classes}) and label (N,)")
    return ExitCode.OK
