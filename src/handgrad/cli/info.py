"""``handgrad info MODEL``: architecture, parameters and metadata of a model file;
``handgrad info --system``: what this machine gives handgrad (:mod:`handgrad.sysinfo`)."""

from __future__ import annotations

import json
from pathlib import Path

from .._words import count
from ..config import TrainConfig
from ..serialization import CHECKPOINT_FORMAT, file_format, load, load_checkpoint
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
    checkpoint = None
    if file_format(args.model) == CHECKPOINT_FORMAT:  # where a run stands, and its length
        state = load_checkpoint(args.model).trainer_state
        history = state.get("history") or {}
        checkpoint = {"epoch": int(state["epoch"]), "batch": int(state["batch"]),
                      "epochs": int(state["epochs"]),
                      "epochs_done": len(history.get("epochs", [])),
                      "stopped_early": bool(history.get("stopped_early", False))}
    info = {
        "file": str(args.model),
        "kind": "model" if checkpoint is None else "checkpoint", "checkpoint": checkpoint,
        "layer_sizes": list(cfg.layer_sizes),
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
    if checkpoint is not None:
        print(f"checkpoint   of a training run: {_position(checkpoint)}; continue it with: "
              f"handgrad train --resume {args.model}")
    print(f"layers       {' -> '.join(str(s) for s in cfg.layer_sizes)}")
    print(f"activation   {cfg.activation if cfg.hidden else 'none (no hidden layer)'}")
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
        loss = tr.get("loss")
        print(f"trained by   {tr['estimator']}: {iterations}, final loss "
              f"{'unknown' if loss is None else format(loss, '.6f')}")
        if tr.get("feature_names_in"):
            print(f"features     {', '.join(map(str, tr['feature_names_in']))}")
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


def _position(checkpoint):
    """``3 of 10 epochs done (next: epoch 4, batch 1)``, or that the run is complete."""
    done, total = checkpoint["epochs_done"], checkpoint["epochs"]
    text = f"{done} of {count(total, 'epoch')} done"
    if checkpoint["stopped_early"]:
        return text + ", stopped early: complete"
    if checkpoint["epoch"] >= total:
        return text + ": complete"
    return text + f" (next: epoch {checkpoint['epoch'] + 1}, batch {checkpoint['batch'] + 1})"
