"""``handgrad info MODEL``: architecture, parameters and metadata of a model file;
``handgrad info --system``: what this machine gives handgrad (:mod:`handgrad.sysinfo`)."""

from __future__ import annotations

import json
from pathlib import Path

from .._words import count
from ..config import TrainConfig
from ..serialization import load
from ..sysinfo import format_system_info, system_info
from ._common import CLIError, ExitCode, add_subparser


def add_parser(subparsers):
    i = add_subparser(subparsers, "info",
                      help="architecture, parameters and metadata of a model file")
    i.add_argument("model", type=Path, nargs="?", default=None, help="a model file")
    i.add_argument("--system", action="store_true",
                   help="instead of a model: NumPy's BLAS (its kernel and threads), the CPU's "
                        "vector extensions and the accelerator, with a warning when "
                        "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE force a slower BLAS kernel")
    i.add_argument("--json", action="store_true", help="print the information as JSON")
    return i


def run(args):
    if args.system:
        if args.model is not None:
            raise CLIError("info takes a MODEL or --system, not both", ExitCode.USAGE)
        info = system_info()
        print(json.dumps(info, indent=2) if args.json else format_system_info(info))
        return ExitCode.OK
    if args.model is None:
        raise CLIError("info needs a MODEL file (or --system for this machine)",
                       ExitCode.USAGE)
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
        n_iter = tr.get("n_iter")
        iterations = "iterations unknown" if n_iter is None else count(n_iter, "iteration")
        print(f"trained by   {tr['estimator']}: {iterations}, "
              f"final loss {tr.get('loss')}")
    elif tr.get("dataset"):
        try:
            c = TrainConfig.from_training(tr)
        except ValueError:  # settings of a newer handgrad: show what is readable
            c = None
        how = "" if c is None else (f", {c.optimizer} lr {c.lr}, batch {c.batch_size}, "
                                    f"seed {c.seed}")
        print(f"trained on   {tr.get('dataset')}: "
              f"{count(len(tr.get('history', {}).get('epochs', [])), 'epoch')}{how}")
        if tr.get("test_accuracy") is not None:
            print(f"test         accuracy {tr['test_accuracy']:.4f}, loss {tr['test_loss']:.6f}")
    return ExitCode.OK
