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
    x.add_argument("--input-dtype", choices=("float32", "float64", "uint8"), default=None,
                   help="element type of the graph's raw input (default: the model's float "
                        "type; uint8 takes image pixels as they come)")
    x.add_argument("--force", action="store_true",
                   help="replace OUT even if it is not an ONNX file handgrad wrote")
    return x


def run(args):
    from ..onnx import check_onnx_path, export_onnx

    model = load(args.model)
    check_writable(args.out, "file")
    check_onnx_path(args.out, overwrite=args.force)
    export_onnx(model, args.out, input_dtype=args.input_dtype, overwrite=args.force)
    shape = model.preprocessor.input_shape if model.preprocessor else (model.n_inputs,)
    dtype = args.input_dtype or model.dtype.name
    print(f"wrote {args.out}: input (N, {', '.join(map(str, shape))}) of raw {dtype} values, "
          f"outputs probabilities (N, {model.n_classes}) and label (N,)")
    return ExitCode.OK
