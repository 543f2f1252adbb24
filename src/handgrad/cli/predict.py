"""``handgrad predict MODEL INPUT...``: classify images or IDX/CSV/NPY files of examples."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..inputs import input_format, read_examples
from ..model import PREDICT_CHUNK
from ..serialization import load
from ._common import ExitCode, add_subparser, positive_int


def add_parser(subparsers):
    p = add_subparser(subparsers, "predict", help="classify images or IDX/CSV/NPY files")
    p.add_argument("model", type=Path, help="a model file written by handgrad train --out")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="PNG/JPEG images, or IDX, CSV or .npy files of examples (recognised "
                        "by suffix, else by content; other files are refused)")
    p.add_argument("--top", type=positive_int, default=1, help="show the top K classes")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    return p


def run(args):
    """Prints as it goes: memory stays bounded however many rows the inputs hold."""
    model = load(args.model)
    kinds = [input_format(path, "predict") for path in args.inputs]  # refuse a bad one first
    classes = model.classes or [str(i) for i in range(model.n_classes)]
    first = True
    if args.json:
        sys.stdout.write("[")
    for path, kind in zip(args.inputs, kinds):
        names, raw = read_examples(path, model, kind, mmap=True, reader="predict")
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
