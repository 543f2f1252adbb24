"""``handgrad evaluate MODEL``: accuracy, per-class scores and confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

from ..datasets import DataError
from ..metrics import classification_report, format_report
from ..serialization import load
from ._common import CLIError, ExitCode, add_subparser, dataset_for


def add_parser(subparsers):
    e = add_subparser(subparsers, "evaluate",
                      help="accuracy, per-class scores and confusion matrix")
    e.add_argument("model", type=Path, help="a model file written by handgrad train --out")
    e.add_argument("--dataset", default=None,
                   help="data set to evaluate on (default: the one the model was trained on)")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    return e


def run(args):
    model = load(args.model)
    ds = dataset_for(model, args.dataset, args.model)
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
