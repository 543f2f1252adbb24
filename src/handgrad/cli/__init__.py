"""The ``handgrad`` command: train, evaluate, predict, info, gradcheck, explain, export,
report, serve.

A thin layer over the library, one module per subcommand: each turns arguments into
library calls and results into output, through ``add_parser(subparsers)`` and
``run(args) -> int``. A new subcommand is a new module and one entry in
:data:`COMMANDS`. Here: the parser, and :func:`main`, which turns every error into one
line on stderr and an :class:`ExitCode` (defined, with :class:`CLIError`, in
``_common`` so that the subcommands need not import this module back).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import traceback

from .. import __version__
from .._atomic import OutputPathError
from .._requirements import MissingPackageError
from ..config import ConfigError
from ..datasets import DataError
from ..serialization import ModelFileError
from ..train import DivergenceError
from . import evaluate, explain, export, gradcheck, info, predict, report, serve, train
from ._common import CLIError, ExitCode, Formatter, config_message, describe

__all__ = ["COMMANDS", "CLIError", "ExitCode", "build_parser", "main"]

#: The subcommands, in the order ``handgrad --help`` lists them.
COMMANDS = [train, evaluate, predict, info, gradcheck, explain, export, report, serve]


class _Parser(argparse.ArgumentParser):
    """argparse's parser with its errors on one line (the usage is what ``--help`` is for);
    subcommands' parsers are of the same class."""

    def error(self, message):
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {_suggest(message)}\n")


def _suggest(message):
    """argparse's "invalid choice" message with a "did you mean" for a near miss
    (``predcit``: ``predict``)."""
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not found:
        return message
    choices = [c.strip().strip("'\"") for c in found[2].split(",")]
    close = difflib.get_close_matches(found[1], choices, n=1, cutoff=0.6)
    return f"{message}; did you mean {close[0]}?" if close else message


def build_parser():
    parser = _Parser(
        prog="handgrad", formatter_class=Formatter,
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
    for command in COMMANDS:
        p = command.add_parser(sub)
        p.set_defaults(run=command.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unrecognized(parser, args, extra)
    except SystemExit as exc:  # argparse has printed its message (or --help)
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a reader gone (| head) shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:
        return _broken_pipe()
    except CLIError as exc:
        return _fail(args, str(exc), exc.code)
    except ConfigError as exc:
        return _fail(args, config_message(exc), ExitCode.USAGE)
    except DivergenceError as exc:
        return _fail(args, str(exc), ExitCode.DIVERGED)
    except MissingPackageError as exc:  # before RuntimeError, which it is
        return _fail(args, str(exc), ExitCode.MISSING_PACKAGE)
    except OutputPathError as exc:  # an output path that cannot work: a bad argument
        return _fail(args, describe(exc), ExitCode.USAGE)
    except (ModelFileError, DataError) as exc:
        return _fail(args, describe(exc), ExitCode.DATA)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", ExitCode.INTERRUPTED)
    except (ValueError, OSError, RuntimeError) as exc:
        return _fail(args, describe(exc), ExitCode.ERROR)


def _unrecognized(parser, args, extra):
    """argparse's "unrecognized arguments" error, from the subcommand's parser, with a
    "did you mean" for each mistyped option."""
    sub = _subparser(parser, args.command)
    options = [s[2:] for action in sub._actions for s in action.option_strings
               if s.startswith("--")]
    hints = []
    for token in extra:
        name = token.split("=", 1)[0]
        if name.startswith("--"):  # compared without the dashes every option shares
            close = difflib.get_close_matches(name[2:], options, n=1, cutoff=0.7)
            if close:
                hints.append((name, "--" + close[0]))
    message = f"unrecognized arguments: {' '.join(extra)}"
    if len(hints) == 1:
        message += f"; did you mean {hints[0][1]}?"
    elif hints:
        message += "; did you mean " + ", ".join(f"{c} for {n}" for n, c in hints) + "?"
    sub.error(message)


def _subparser(parser, command):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command, parser)
    return parser


def _broken_pipe():
    """Standard output's reader has gone (``handgrad predict m x.npy | head -1``): stop
    quietly, as Unix tools do, with 128 + SIGPIPE; what is still buffered goes to
    /dev/null so that Python's flush at exit does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass
    return ExitCode.BROKEN_PIPE


def _fail(args, message, code):
    if getattr(args, "traceback", False):
        traceback.print_exc()
    print(f"handgrad: error: {message}", file=sys.stderr)
    return code
