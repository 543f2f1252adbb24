"""``handgrad explain``: the whole derivation with numbers, each quantity checked.

Everything beyond parsing and printing (loading the model, picking and preparing the
example, the trace itself) is :func:`handgrad.tracing.explain`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .._atomic import atomic_write, check_writable
from .._words import count
from ..tracing import MAX_CHECKS, TraceArgumentError, explain
from ._common import (
    CLIError,
    ExitCode,
    add_subparser,
    describe,
    non_negative_int,
    positive_int,
)

FORMATS = ("text", "markdown", "latex", "json", "html")


def add_parser(subparsers):
    e = add_subparser(
        subparsers, "explain",
        help="the whole derivation (F1–F5, B1–B7) with numbers, each quantity checked",
        description="Trace one example through the forward and backward pass and print\n"
                    "every quantity of the derivation (docs/derivation.md) with its value and\n"
                    "an independent check (a reference forward pass, finite differences, the\n"
                    "numerical Jacobian). Without a MODEL: a 3-4-3 network small enough to\n"
                    "check by hand.",
        epilog="examples:\n  handgrad explain\n"
               "  handgrad explain mnist.safetensors --index 0 --format html --out t.html\n"
               "  handgrad explain mnist.safetensors my-digit.png --label 7\n"
               "  handgrad explain --format markdown --out explain.md")
    e.add_argument("model", type=Path, nargs="?", default=None, metavar="MODEL",
                   help="a model file (default: the demonstration network)")
    e.add_argument("input", type=Path, nargs="?", default=None, metavar="INPUT",
                   help="an image, or a .npy, CSV or IDX file of one example or several "
                        "(with --index), as predict reads them; default: the model's recorded "
                        "test set")
    e.add_argument("--index", type=non_negative_int, default=None, metavar="N",
                   help="the example: row N of INPUT, or of the model's test set (default 0)")
    e.add_argument("--label", default=None,
                   help="the target class, an index or a class name (default: the recorded "
                        "label, or for an INPUT the model's prediction)")
    e.add_argument("--format", choices=FORMATS, default="text", help="output format")
    e.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="write to FILE instead of standard output")
    e.add_argument("--decimals", type=non_negative_int, default=4,
                   help="decimals shown for each value")
    e.add_argument("--max-checks", type=positive_int, default=MAX_CHECKS,
                   help="entries checked by finite differences in each larger step")
    return e


def run(args) -> int:
    if args.input is not None and args.model is None:  # argparse fills MODEL first
        raise CLIError("an INPUT needs a MODEL", ExitCode.USAGE)
    if args.decimals > 15:
        raise CLIError(f"--decimals {args.decimals}: at most 15 (float64 holds about 16 "
                       f"significant digits)", ExitCode.USAGE)
    if args.out is not None:
        check_writable(args.out, "file")
    try:
        trace = explain(args.model, args.input, index=args.index, label=args.label,
                        max_checks=args.max_checks, decimals=args.decimals)
    except TraceArgumentError as exc:
        raise CLIError(describe(exc), ExitCode.USAGE) from None
    text = render(trace, args.format, color=args.out is None and _color(sys.stdout))
    if args.out is None:
        _write_stdout(text)
    else:
        with atomic_write(args.out, "w") as f:
            f.write(text)
        state = "all checks pass" if trace.ok else f"{count(len(trace.failed), 'check')} FAIL"
        print(f"wrote {args.out}: {len(trace.steps)} steps, {state}")
    if not trace.ok:
        names = ", ".join(f"{s.eq} {s.name}" for s in trace.failed)
        print(f"handgrad: error: {len(trace.failed)} of {len(trace.steps)} steps "
              f"{'disagrees' if len(trace.failed) == 1 else 'disagree'} with "
              f"their independent checks: {names}", file=sys.stderr)
        return ExitCode.ERROR
    return ExitCode.OK


def render(trace, fmt, color=False):
    """The trace as text in one of :data:`FORMATS`."""
    if fmt == "text":
        return trace.to_text(color=color)
    if fmt == "markdown":
        return trace.to_markdown()
    if fmt == "latex":
        return trace.to_latex()
    if fmt == "html":
        return trace.to_html()
    return json.dumps(trace.to_dict(), indent=1) + "\n"


def _color(stream):
    return (hasattr(stream, "isatty") and stream.isatty() and "NO_COLOR" not in os.environ
            and os.environ.get("TERM") != "dumb")


def _write_stdout(text):
    """Print, falling back to escapes where the terminal's encoding lacks ✓, ∂ and the rest."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = sys.stdout.encoding or "ascii"
        sys.stdout.write(text.encode(encoding, "backslashreplace").decode(encoding))
    sys.stdout.flush()
