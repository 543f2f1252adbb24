"""``handgrad report MODEL``: PNG figures of a model (curves, confusion matrix, weights)."""

from __future__ import annotations

from pathlib import Path

from .._atomic import check_writable
from ..serialization import load
from ._common import CLIError, ExitCode, add_subparser, dataset_for, write_plots


def add_parser(subparsers):
    r = add_subparser(subparsers, "report",
                      help="PNG figures of a model: curves, confusion matrix, weights")
    r.add_argument("model", type=Path, help="a model file")
    r.add_argument("--out", type=Path, default="report", metavar="DIR",
                   help="folder for the PNG files")
    r.add_argument("--dataset", default=None,
                   help="data set for the confusion matrix (default: the training one)")
    return r


def run(args):
    model = load(args.model)
    check_writable(args.out, "dir")
    try:
        ds = dataset_for(model, args.dataset, args.model)
    except CLIError:
        ds = None
    for f in write_plots(model, ds, args.out):
        print(f"figure written to {f}")
    return ExitCode.OK
