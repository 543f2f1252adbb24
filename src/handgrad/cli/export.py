"""``handgrad export MODEL OUT``: the model as ONNX, preprocessing included."""

from __future__ import annotations

from pathlib import Path

from .._atomic import check_writable
from ..serialization import load
from ._common import ExitCode, add_subparser


def add_parser(subparsers):
    x = add_subparser(subparsers, "export", help="write a model as ONNX (preprocessing included)")
    x.add_argument("model", type=Path, help="a model file")
    x.add_argument("out", type=Path, help="the .onnx file to write")
    return x


def run(args):
    from ..onnx import export_onnx

    model = load(args.model)
    check_writable(args.out, "file")
    export_onnx(model, args.out)
    shape = model.preprocessor.input_shape if model.preprocessor else (model.n_inputs,)
    print(f"wrote {args.out}: input (N, {', '.join(map(str, shape))}) of raw values, "
          f"outputs probabilities (N, {model.n_classes}) and label (N,)")
    return ExitCode.OK
