"""``handgrad gradcheck [MODEL]``: the hand-derived gradients against finite differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..model import ACTIVATIONS, MLP, gradcheck
from ..serialization import load
from ._common import (
    CLIError,
    ExitCode,
    ExplicitStore,
    add_subparser,
    flag,
    hidden_sizes,
    non_negative_int,
    positive_float,
    positive_int,
)


def add_parser(subparsers):
    g = add_subparser(subparsers, "gradcheck",
                      help="check the hand-derived gradients by finite differences")
    g.add_argument("model", type=Path, nargs="?", default=None,
                   help="a model file (default: a fresh network)")
    fresh = g.add_argument_group("the fresh network (without MODEL)")
    fresh.add_argument("--inputs", type=positive_int, default=20, action=ExplicitStore,
                       help="inputs of the fresh network")
    fresh.add_argument("--hidden", type=hidden_sizes, default="16", action=ExplicitStore,
                       help="hidden layer sizes of the fresh network")
    fresh.add_argument("--classes", type=positive_int, default=5, action=ExplicitStore,
                       help="classes of the fresh network")
    fresh.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                       action=ExplicitStore, help="hidden-layer activation of the fresh network")
    g.add_argument("--batch-size", type=positive_int, default=8,
                   help="random examples the gradients are computed on")
    g.add_argument("--max-checks", type=positive_int, default=50,
                   help="entries checked per parameter")
    g.add_argument("--tolerance", type=positive_float, default=1e-5,
                   help="largest error that passes (relative, with a floor at the finite differences' noise)")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the random examples (and of the fresh network's weights)")
    g.add_argument("--json", action="store_true", help="print the errors as JSON")
    return g


FRESH = ("inputs", "hidden", "classes", "activation")  # describe the fresh network only


def run(args):
    rng = np.random.default_rng(args.seed)
    if args.model is not None:
        given = [flag(name) for name in FRESH if getattr(args, f"{name}_given", False)]
        if given:
            raise CLIError(f"{', '.join(given)} {'describes' if len(given) == 1 else 'describe'}"
                           f" the fresh network; {args.model} brings its own (drop "
                           f"{'it' if len(given) == 1 else 'them'}, or drop MODEL)",
                           ExitCode.USAGE)
        model = load(args.model)
    else:
        model = MLP(args.inputs, args.hidden, args.classes, activation=args.activation,
                    dtype="float64", seed=args.seed)
    X = rng.normal(size=(args.batch_size, model.n_inputs))
    y = rng.integers(0, model.n_classes, size=args.batch_size)
    result = gradcheck(model, X, y, max_checks=args.max_checks, seed=args.seed,
                       tolerance=args.tolerance)
    if args.json:
        print(json.dumps({"errors": dict(result), "worst": result.worst,
                          "tolerance": result.tolerance, "floor": result.floor,
                          "noise": result.noise, "passed": result.passed}, indent=2))
    else:
        print(f"gradient check of {model!r}: central differences in float64, "
              f"batch {args.batch_size}, up to {args.max_checks} entries per parameter")
        print(f"error |a - n| / max(|a| + |n|, {result.floor:.1e}): relative, or against the "
              f"finite differences' own noise ({result.noise:.1e}) where gradients vanish")
        for name, err in result.items():
            print(f"  {name:<6} {tuple(model.params[name].shape)!s:<14} worst error "
                  f"{err:.2e}  {'ok' if err <= result.tolerance else 'FAIL'}")
        print(f"{'passed' if result.passed else 'FAILED'}: worst {result.worst:.2e}, "
              f"tolerance {result.tolerance:.0e}")
    return ExitCode.OK if result.passed else ExitCode.ERROR
