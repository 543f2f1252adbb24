"""What every subcommand shares: exit codes, the one-line error, argument types, wording.

Kept apart from ``handgrad/cli/__init__.py`` (which imports every subcommand) so that
imports point one way: subcommands import this module, ``__init__`` imports them.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from enum import IntEnum
from pathlib import Path

from .._atomic import OverwriteRefusedError
from .._errors import ParameterError, python_words
from ..config import ARRAYS, ConfigError, TrainConfig


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # training failed or a check did not pass
    USAGE = 2  # bad command-line arguments
    DATA = 3  # a data or model file is missing, damaged or unsuitable
    DIVERGED = 4  # the loss or gradient became NaN or infinite
    MISSING_PACKAGE = 5  # an optional package the command needs is not installed
    INTERRUPTED = 130  # Ctrl-C (SIGINT): a checkpoint was saved
    BROKEN_PIPE = 141  # the reader of the output went away (| head): 128 + SIGPIPE
    TERMINATED = 143  # SIGTERM: a checkpoint was saved


class CLIError(Exception):
    """An error to show as one line, with its exit code."""

    def __init__(self, message, code=ExitCode.ERROR):
        super().__init__(message)
        self.code = code


def flag(setting, value=None):
    """A setting as the user typed it: ``--warmup-epochs 5`` (or ``--augment``)."""
    name = "--" + setting.replace("_", "-")
    return name if value is None else f"{name} {value}"


#: The library's parameters that its errors name (as data: ``ParameterError.parameters``)
#: and the flag that sets each on the command line. A TrainConfig field is a flag of its
#: own name (``warmup_epochs``: ``--warmup-epochs``); a parameter in neither stays in
#: Python's spelling rather than name a flag that does not exist.
PARAMETER_FLAGS = {
    "label_column": "--label-column",  # load_dataset, read_csv: handgrad train
    "index": "--index",  # handgrad.tracing.explain: handgrad explain
    "label": "--label",  # handgrad.tracing.explain: handgrad explain
    "names": "--name",  # handgrad.serve.load_models: handgrad serve, once per MODEL
    "max_queue": "--max-queue",  # ServeConfig: handgrad serve
    "max_batch_size": "--max-batch-size",  # ServeConfig: handgrad serve
}


def parameter_flag(parameter, value=None):
    """A library parameter, with the value shown beside it, as the command line's flag:
    ``--label-column 0``; Python's ``parameter=value`` where no flag sets it."""
    name = PARAMETER_FLAGS.get(parameter)
    if name is None and parameter in {f.name for f in fields(TrainConfig)}:
        name = flag(parameter)
    if name is None:
        return python_words(parameter, value)
    return name if value is None else f"{name} {value}"


def config_message(exc: ConfigError):
    """A library :class:`ConfigError` worded with the command line's flags."""
    return exc.format(parameter_flag)


def describe(exc):
    """One line for an error with no special wording; the parameters a
    :class:`~handgrad._errors.ParameterError` names, as flags."""
    if isinstance(exc, ParameterError):
        return exc.format(parameter_flag)
    if isinstance(exc, OverwriteRefusedError):  # overwrite=True is --force here
        return exc.format("--force")
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


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


def label_column(text):
    """A CSV label column: an index, or a header name."""
    try:
        return int(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- #
# Parser pieces
# --------------------------------------------------------------------------- #


class ExplicitStore(argparse.Action):
    """Stores the value and records that the user gave it (``<dest>_given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where there is none (None) or it is a flag."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.nargs == 0:
            return action.help
        if action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def add_subparser(subparsers, name, **kwargs):
    """A subcommand's parser, with the options every subcommand takes (``--traceback``,
    accepted after the subcommand too)."""
    p = subparsers.add_parser(name, formatter_class=Formatter, **kwargs)
    # SUPPRESS: absent, it leaves the value of the option before the subcommand alone
    p.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")
    return p


# --------------------------------------------------------------------------- #
# Shared by several subcommands
# --------------------------------------------------------------------------- #


def dataset_for(model, spec, model_path):
    """The data set to evaluate ``model`` on: ``spec``, or the one it was trained on
    (:func:`handgrad._recorded.recorded_dataset`: the recorded label column, classes
    matched to the model's by name)."""
    from .._recorded import recorded_dataset
    if spec is None and model.training.get("dataset") in (None, ARRAYS):
        raise CLIError(f"{model_path}: the model does not record its data set; pass --dataset",
                       ExitCode.USAGE)
    return recorded_dataset(model, spec, source=str(model_path))


def write_plots(model, ds, directory):
    """PNG figures of ``model`` into ``directory``: training curves, the confusion matrix
    on ``ds``'s test set (if ``ds``), the first layer's weights (2-D image inputs)."""
    from ..metrics import classification_report
    from ..plots import plot_confusion, plot_first_layer, plot_history

    directory = Path(directory)
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
