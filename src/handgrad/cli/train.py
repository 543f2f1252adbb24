"""``handgrad train``: load a data set, train, report the test accuracy, write the outputs.

Every flag is a field of :class:`~handgrad.config.TrainConfig` (same name, defaults from
it); the data is :func:`handgrad.datasets.prepare_data`'s (under MPI, each rank's share:
:func:`handgrad.distributed.prepare_shard`); the run itself is
:class:`~handgrad.train.Trainer`'s, with checkpoints
(:class:`~handgrad.callbacks.BackupAndRestore`), the divergence policy and signal
handling from the library. ``--resume`` restores the whole config from the checkpoint,
outputs included; ``--epochs``, ``--out``, ``--checkpoint-dir`` and ``--plot`` given
again override it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

from .. import __version__
from .._atomic import OverwriteRefusedError, check_writable, remove_stale_temporaries
from .._progress import progress_bar
from .._recorded import dataset_spec
from .._requirements import require
from .._words import count
from ..callbacks import (CHECKPOINT_NAME, BackupAndRestore, Callback, LearningRateBackoff,
                         checkpoint_file)
from ..config import ARRAYS, TrainConfig
from ..datasets import NAMED, Preprocessor, prepare_data
from ..model import ACTIVATIONS, DTYPES, MLP
from ..optim import OPTIMIZERS
from ..serialization import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    NotACheckpointError,
    check_model_path,
    load_checkpoint,
    save,
)
from ..train import DivergenceError, Trainer, TrainingInterrupted
from ._common import (
    CLIError,
    ExitCode,
    ExplicitStore,
    add_subparser,
    describe,
    flag,
    fraction,
    hidden_sizes,
    label_column,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    write_plots,
)

MAX_BACKOFFS = 5
OUTPUTS = ("out", "checkpoint_dir", "plot")  # restored by --resume unless given again


def add_parser(subparsers):
    d = TrainConfig()  # the defaults
    t = add_subparser(subparsers, "train", help="train a classifier",
                      description="Train a network and report its test accuracy.")
    data = t.add_argument_group("data")
    data.add_argument("--dataset", default=d.dataset,
                      help=f"{', '.join(NAMED)}, an IDX folder, a .csv or an .npz file")
    data.add_argument("--label-column", default=d.label_column,
                      help="label column of a CSV file: an index (from 0), a header name, or auto (a header "
                           "named label, target, class or y, else the last column)")
    data.add_argument("--scaling", choices=("divide", "standardize", "none"), default=d.scaling,
                      help="input scaling fitted on the training set (divide: x / max value)")
    data.add_argument("--val-fraction", type=fraction, default=d.val_fraction,
                      help="fraction of the training set held out for validation (0: none)")
    net = t.add_argument_group("network")
    net.add_argument("--hidden", type=hidden_sizes, default=",".join(map(str, d.hidden)),
                     help="hidden layer sizes, e.g. 800 or 512,256; 'none' for none")
    net.add_argument("--activation", choices=ACTIVATIONS, default=d.activation,
                     help="hidden-layer activation (relu is the specification's)")
    net.add_argument("--dtype", choices=DTYPES, default=d.dtype,
                     help="floating-point type of weights and arithmetic")
    opt = t.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=non_negative_int, default=d.epochs, action=ExplicitStore,
                     help="training epochs (with --resume: the total to reach)")
    opt.add_argument("--batch-size", type=positive_int, default=d.batch_size,
                     help="examples per step")
    opt.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default=d.optimizer,
                     help="update rule (PyTorch's formulas)")
    opt.add_argument("--lr", type=positive_float, default=d.lr,
                     help="learning rate (default: 1e-3 for adam/adamw, 0.01 for sgd)")
    opt.add_argument("--momentum", type=non_negative_float, default=d.momentum,
                     help="SGD momentum")
    opt.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    opt.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay,
                     help="L2 (sgd, adam) or decoupled (adamw, default 0.01) weight decay")
    opt.add_argument("--seed", type=non_negative_int, default=d.seed,
                     help="seed of the initial weights, the shuffles and the validation split")
    out = t.add_argument_group("output")
    reg = t.add_argument_group("regularisation, schedules and augmentation")
    reg.add_argument("--dropout", type=fraction, default=d.dropout,
                     help="dropout rate of the hidden units (inverted dropout)")
    reg.add_argument("--input-dropout", type=fraction, default=d.input_dropout,
                     help="dropout rate of the inputs")
    reg.add_argument("--label-smoothing", type=fraction, default=d.label_smoothing,
                     help="ε: targets become (1 − ε) one-hot + ε / classes")
    reg.add_argument("--max-norm", type=positive_float, default=d.max_norm,
                     help="cap each unit's incoming weight vector at this L2 norm")
    reg.add_argument("--l2", type=non_negative_float, default=d.l2,
                     help="scikit-learn's alpha: each batch's loss gains "
                          "l2/2 · Σ‖W‖² / batch size (weights, not biases)")
    reg.add_argument("--schedule", choices=("constant", "step", "cosine", "plateau"),
                     default=d.schedule, help="learning-rate schedule")
    reg.add_argument("--warmup-epochs", type=non_negative_int, default=d.warmup_epochs,
                     help="cosine: epochs of linear warm-up")
    reg.add_argument("--min-lr", type=non_negative_float, default=d.min_lr,
                     help="cosine: final learning rate")
    reg.add_argument("--step-size", type=positive_int, default=d.step_size,
                     help="step: epochs between decays")
    reg.add_argument("--gamma", type=positive_float, default=d.gamma,
                     help="step: decay factor; plateau: factor on a plateau")
    reg.add_argument("--early-stopping", action="store_true",
                     help="stop when validation loss stalls and keep the best epoch's weights")
    reg.add_argument("--n-iter-no-change", type=positive_int, default=d.n_iter_no_change,
                     help="epochs without improvement before early stopping or a plateau step")
    reg.add_argument("--tol", type=non_negative_float, default=d.tol,
                     help="improvement that counts, for early stopping and plateau")
    reg.add_argument("--augment", choices=("none", "affine", "elastic"), default=d.augment,
                     help="random distortions of image inputs: affine maps, or affine plus "
                          "Simard-style elastic fields")
    reg.add_argument("--rotation", type=non_negative_float, default=d.rotation,
                     help="augment: largest rotation in degrees")
    reg.add_argument("--zoom", type=fraction, default=d.zoom,
                     help="augment: largest relative zoom")
    reg.add_argument("--shear", type=non_negative_float, default=d.shear,
                     help="augment: largest shear in degrees")
    reg.add_argument("--translate", type=non_negative_float, default=d.translate,
                     help="augment: largest shift in pixels")
    reg.add_argument("--elastic-alpha", type=non_negative_float, default=d.elastic_alpha,
                     help="augment elastic: displacement scale in pixels")
    reg.add_argument("--elastic-sigma", type=positive_float, default=d.elastic_sigma,
                     help="augment elastic: smoothness of the displacement field in pixels")
    dist = t.add_argument_group("distributed (run under mpiexec)")
    dist.add_argument("--distributed", action="store_true",
                      help="data-parallel training over MPI: mpiexec -n 4 handgrad train "
                           "--distributed ...")
    dist.add_argument("--virtual-shards", type=positive_int, default=d.virtual_shards,
                      help="the data is cut into this many shards; any number of ranks up "
                           "to it trains on exactly the same batches")
    dist.add_argument("--blas-threads", type=_blas_threads, default=None, metavar="N",
                      help="BLAS threads per rank (default: $HANDGRAD_BLAS_THREADS, else the "
                           "node's cores divided by the ranks on it)")
    opt.add_argument("--on-divergence", choices=("stop", "backoff"), default=d.on_divergence,
                     help="when the loss becomes NaN/inf: stop, or halve the learning rate "
                          "and retry from the last epoch (up to 5 times)")
    out.add_argument("--out", type=Path, default=None, action=ExplicitStore,
                     help="save the trained model here")
    out.add_argument("--force", action="store_true",
                     help="replace the --out file even if it is not a handgrad model file "
                          "(never the --dataset file)")
    out.add_argument("--checkpoint-dir", type=Path, default=None, action=ExplicitStore,
                     help=f"write {CHECKPOINT_NAME} here after every epoch")
    out.add_argument("--resume", type=Path, default=None,
                     help="continue an interrupted run from its checkpoint file (with its "
                          "--out, --checkpoint-dir and --plot unless given again)")
    out.add_argument("--plot", type=Path, default=None, metavar="DIR", action=ExplicitStore,
                     help="write PNG figures (curves, confusion matrix, weights) into DIR")
    out.add_argument("--json", action="store_true",
                     help="print a machine-readable summary on stdout")
    out.add_argument("--quiet", action="store_true", help="no progress output")
    settings = {f.name for f in fields(TrainConfig)}
    for action in t._actions:  # which settings the user typed, whatever their value
        if action.dest in settings:
            _record_given(action)
    return t


def _record_given(action):
    """Make ``action`` add its setting's name to the namespace's ``given`` set."""
    base = type(action)

    class Given(base):
        def __call__(self, parser, namespace, values, option_string=None):
            given = getattr(namespace, "given", None)
            if given is None:
                given = set()
                namespace.given = given
            given.add(self.dest)
            super().__call__(parser, namespace, values, option_string)

    Given.__name__ = base.__name__
    action.__class__ = Given


def _given(args):
    """The settings (TrainConfig field names) typed on the command line."""
    return getattr(args, "given", None) or set()


def run(args):
    if not args.distributed:
        return _train(args, comm=None)
    from ..distributed import _mpi, run_or_abort

    comm = _mpi().COMM_WORLD
    # an error on any rank (bad data, a full disk on rank 0...) ends every rank at once,
    # rather than leaving the others waiting in a collective for ever
    return run_or_abort(comm, _train, args, comm,
                        describe=lambda exc: f"{type(exc).__name__}: {describe(exc)}",
                        show_traceback=getattr(args, "traceback", False))


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def _train(args, comm):
    rank0 = comm is None or comm.rank == 0
    stream = sys.stderr if args.json else sys.stdout
    show = not args.quiet and rank0
    checkpoint = None
    if args.resume is not None:
        args.resume = checkpoint_file(args.resume)  # a --checkpoint-dir: its checkpoint
        checkpoint, config = _resumed_config(args)
    else:
        config = config_from_args(args)
        if rank0:
            _note_unused(args, config)
    shown = _shown_outputs(args, config)  # as the user typed them, where given this time
    if config.early_stopping and not config.val_fraction:
        raise CLIError("--early-stopping needs a validation split (--val-fraction > 0)",
                       ExitCode.USAGE)
    if rank0:  # fail now, not after training
        if config.plot is not None:
            require("plots")
        if config.out is not None:
            check_writable(shown["out"], "file")
            _check_out(config, shown["out"], args.force)
            remove_stale_temporaries(config.out)  # left by a run killed mid-write
        if config.checkpoint_dir is not None:
            check_writable(shown["checkpoint_dir"], "dir")
            check_model_path(Path(config.checkpoint_dir) / CHECKPOINT_NAME, CHECKPOINT_FORMAT)
        if config.plot is not None:
            check_writable(shown["plot"], "dir")

    data = _prepare(config, comm, show)
    if checkpoint is None:
        prep = Preprocessor(config.scaling)
        if comm is None:
            prep.fit(data.x_train)
        else:
            from ..distributed import fit_preprocessor

            fit_preprocessor(prep, data.x_train, comm)
        model = MLP(prep.n_features, config.hidden, data.n_classes,
                    activation=config.activation, dtype=config.dtype, seed=config.seed)
        model.preprocessor = prep
        model.classes = list(data.classes)
    else:
        model = checkpoint.model
        if model.preprocessor is None or model.n_classes != data.n_classes:
            raise CLIError(f"{args.resume}: the checkpoint does not match data set "
                           f"{config.dataset!r}")
    X = model.prepare(data.x_train)  # (N, D)
    val = None if data.x_val is None else (_prepare_rows(model, data.x_val), data.y_val)

    typed = config.dataset  # as given, for the summary
    # recorded (checkpoints, the model file) as an absolute path: found from any folder
    config = config.replace(dataset=dataset_spec(config.dataset))
    progress = _Progress(config.epochs, stream, quiet=not show)
    callbacks = [progress]
    if config.on_divergence == "backoff":
        def report(error, trainer):
            print(f"diverged at epoch {error.epoch + 1}, batch {error.batch + 1}: retrying "
                  f"from epoch {trainer.epoch + 1} with learning rate "
                  f"{trainer.optimizer.lr:g}", file=stream)

        callbacks.append(LearningRateBackoff(0.5, MAX_BACKOFFS, report=report if rank0 else None))
    if comm is None:
        trainer = Trainer.from_config(model, X, data.y_train, config, validation_data=val,
                                      callbacks=callbacks)
    else:
        from ..distributed import DistributedTrainer

        trainer = DistributedTrainer.from_config(model, X, data.y_train, config, comm=comm,
                                                 n_rows=data.n_train, validation_data=val,
                                                 callbacks=callbacks,
                                                 blas_threads=args.blas_threads)
    config = trainer.config  # with the effective learning rate
    if config.checkpoint_dir is not None:  # last: after schedules and early stopping
        trainer.callbacks.append(BackupAndRestore(config.checkpoint_dir))
    done = None
    if checkpoint is not None:
        trainer.restore(checkpoint)
        # a finished run trains nothing; its model and figures are still written (a run
        # killed after its last checkpoint but before its --out gets them now)
        done = _completed(checkpoint, config, args.resume)
        if done is not None and rank0:
            print(done, file=stream)
        elif show:
            lr = ("" if trainer.lr_changed is None else
                  f" with learning rate {trainer.lr_changed[1]:g} (was "
                  f"{trainer.lr_changed[0]:g})")
            print(f"resuming from {args.resume} at epoch {trainer.epoch + 1}, "
                  f"batch {trainer.batch + 1}{lr}; {_destinations(shown)}", file=stream)

    n_val, n_test = (0 if val is None else len(val[0])), len(data.x_test)
    if comm is not None:  # every rank joins these collectives, printing or not
        n_val, n_test = comm.allreduce(n_val), comm.allreduce(n_test)
    if show and done is None:
        sizes = "-".join(str(s) for s in model.config.layer_sizes)
        where = "" if comm is None else f" over {count(comm.size, 'MPI rank')}"
        kind = (model.config.activation if model.config.hidden
                else "no hidden layer: multinomial logistic regression")
        print(f"training {sizes} ({kind}, {model.config.dtype}) on "
              f"{data.name}{where}: {data.n_train} train, {n_val} validation, "
              f"{count(n_test, 'test example')}",
              file=stream)
        if data.label_column is not None:
            print(f"label column: {data.label_column}", file=stream)
        if comm is not None:
            print(trainer.blas_threads.describe(), file=stream)
    t0 = time.perf_counter()
    try:
        trainer.run(handle_signals=True)
    except TrainingInterrupted as exc:
        progress.close()
        return _interrupted(exc, trainer, config, rank0)
    except DivergenceError as exc:
        progress.close()
        raise CLIError(divergence_advice(exc, trainer, config, args.resume),
                       ExitCode.DIVERGED) from None
    finally:
        progress.close()
    train_time = time.perf_counter() - t0

    if comm is None:
        test_loss, test_acc = model.evaluate(model.prepare(data.x_test), data.y_test)
    else:
        from ..distributed import evaluate_distributed

        test_loss, test_acc = evaluate_distributed(model, _prepare_rows(model, data.x_test),
                                                   data.y_test, comm)
        if not rank0:
            return ExitCode.OK
    history = trainer.history.to_dict()
    kept = _kept_epoch(trainer)
    if kept is not None and show:
        print(kept[1], file=stream)
    warning = _ruined(model, trainer, test_loss)
    if warning is not None and rank0:
        print(f"handgrad: warning: {warning}", file=sys.stderr)
    model.training = {
        "dataset": config.dataset, "config": config.to_dict(), "history": history,
        "test_accuracy": test_acc, "test_loss": test_loss, "train_time_s": train_time,
        "handgrad_version": __version__,
    }
    if config.out is not None:
        save(model, config.out, overwrite=args.force)
    figures = write_plots(model, data, config.plot) if config.plot is not None else []
    summary = {
        "dataset": typed, "layer_sizes": list(model.config.layer_sizes),
        "activation": model.config.activation, "dtype": model.config.dtype,
        "epochs": len(history["epochs"]), "history": history,
        "test_accuracy": test_acc, "test_loss": test_loss, "train_time_s": train_time,
        "model_path": shown["out"], "figures": [str(f) for f in figures],
        "kept_epoch": None if kept is None else kept[0] + 1,
        "warnings": [] if warning is None else [warning],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"test accuracy {test_acc:.4f}  test loss {test_loss:.6f}  "
              f"({count(n_test, 'example')}, trained in {train_time:.1f}s)")
        if config.out is not None:
            print(f"model saved to {shown['out']}")
        for f in figures:
            print(f"figure written to {f}")
    return ExitCode.OK


def _completed(checkpoint, config, path):
    """The line saying that the run of ``checkpoint`` is complete and nothing is left to
    train, or None if it has epochs left."""
    state = checkpoint.trainer_state
    epoch = int(state["epoch"])
    if state.get("history", {}).get("stopped_early"):
        return (f"{path}: the run is complete (stopped early by --early-stopping after epoch "
                f"{epoch}); nothing to train")
    if epoch >= config.epochs:
        return (f"{path}: the run is complete ({epoch} of {config.epochs} epochs); nothing "
                f"to train (give --epochs above {epoch} to train further)")
    return None


def divergence_advice(exc, trainer, config, resumed):
    """The one-line error of a diverged run, with advice that can be followed and that
    does not suggest what was done already: after automatic back-offs (which leave the
    checkpoint at the end of the last complete epoch), continue from there at a smaller
    rate (``--resume CHECKPOINT --lr``); a resumed run resumes again."""
    smaller = f"{exc.lr / 10:.3g}"
    ck = trainer.last_checkpoint
    if exc.backoffs:
        advice = (f"{count(exc.backoffs, 'automatic learning-rate back-off')} (down to "
                  f"{exc.lr:g}) did not help")
        source = ck if ck is not None else resumed
        if source is None:
            return f"{exc.message}; {advice}: start again with a smaller --lr (e.g. --lr {smaller})"
        what = ("the weights of the last complete epoch are in" if ck is not None
                else "the run can still continue from")
        return (f"{exc.message}; {advice}; {what} {source}: continue at a smaller rate with: "
                f"handgrad train --resume {source} --lr {smaller}")
    hint = "" if ck is None else f"; the last finite weights are in {ck}"
    if resumed is None:
        return (f"{exc}: try a smaller --lr, or --on-divergence backoff to halve it and retry "
                f"automatically{hint}")
    return (f"{exc}: resume at a smaller rate (handgrad train --resume "
            f"{ck if ck is not None else resumed} --lr {smaller}), or with --on-divergence "
            f"backoff to halve it and retry automatically{hint}")


def _kept_epoch(trainer):
    """``(epoch, line)`` saying when early stopping stopped and whose weights it kept,
    or None when it did not stop the run."""
    from ..schedules import EarlyStopping

    stopper = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    history = trainer.history
    if stopper is None or not history.stopped_early or stopper.best_epoch is None:
        return None
    best = stopper.best_epoch
    value = history.val_loss[history.epochs.index(best)] if best in history.epochs else None
    at = "" if value is None else f" (val_loss {value:.6f})"
    kept = (f"kept the weights of epoch {best + 1}{at}" if stopper.restore_best
            else "kept the last epoch's weights")
    return best, (f"early stopping: no improvement in val_loss for more than "
                  f"{count(stopper.rule.patience, 'epoch')}; stopped after epoch "
                  f"{history.epochs[-1] + 1} of {trainer.epochs}, {kept}")


def _ruined(model, trainer, test_loss):
    """A warning when training left the network worse than a uniform guess (test loss
    well above ln M, and the training loss above it too), else None."""
    import math

    chance = math.log(model.n_classes)
    losses = [v for v in trainer.history.train_loss if v is not None]
    if not losses or not (test_loss > 1.5 * chance and losses[-1] > chance):
        return None
    return (f"training ruined the network: its test loss {test_loss:.4g} is worse than a "
            f"uniform guess's (ln {model.n_classes} = {chance:.3g}), its last training "
            f"loss {losses[-1]:.4g}; the learning rate ({trainer.optimizer.lr:g}) is most "
            f"likely too high: train again with a smaller --lr")


def _check_out(config, shown, force):
    """Refuse an ``--out`` that would destroy the training data (always) or a file that is
    not a handgrad model (unless ``--force``), before training, not after it."""
    out = Path(config.out)
    data = Path(config.dataset)
    if config.dataset not in NAMED and data.is_file() and out.exists() \
            and os.path.samefile(out, data):
        raise OverwriteRefusedError(shown, "the training data (--dataset)", option=None)
    if config.checkpoint_dir is not None \
            and out.resolve() == (Path(config.checkpoint_dir) / CHECKPOINT_NAME).resolve():
        raise OverwriteRefusedError(shown, "the checkpoint file of --checkpoint-dir (the "
                                           "model and its checkpoints need two files)",
                                    option=None)
    check_model_path(shown, MODEL_FORMAT, overwrite=force)


def _blas_threads(text):
    return "auto" if text.strip().lower() == "auto" else positive_int(text)


def config_from_args(args):
    """The :class:`TrainConfig` of the flags: each flag sets the field of its name."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    for name in OUTPUTS:
        values[name] = _absolute(values.get(name))
    return TrainConfig(**values)


def _resumed_config(args):
    """The checkpoint and its config, with the flags given again applied."""
    try:
        checkpoint = load_checkpoint(args.resume)
    except NotACheckpointError as exc:
        raise CLIError(f"{exc}; --resume takes the checkpoint file from --checkpoint-dir",
                       ExitCode.DATA) from None
    config = checkpoint.config
    if config is None or config.dataset == ARRAYS:
        raise CLIError(f"{args.resume}: a checkpoint of training on arrays from Python, "
                       f"not of handgrad train; continue it with handgrad.fit(..., "
                       f"resume={str(args.resume)!r})", ExitCode.DATA)
    changes = {}
    if getattr(args, "epochs_given", False):
        changes["epochs"] = args.epochs
    if args.lr is not None:  # continue at another rate (after a divergence, say)
        changes["lr"] = args.lr
    if "on_divergence" in _given(args):
        changes["on_divergence"] = args.on_divergence
    for name in OUTPUTS:
        if getattr(args, f"{name}_given", False):
            changes[name] = _absolute(getattr(args, name))
    defaults = TrainConfig()
    given = _given(args)
    ignored = [flag(f.name) for f in fields(TrainConfig)
               if f.name not in RESUMABLE and hasattr(args, f.name)
               and (f.name in given or getattr(args, f.name) != getattr(defaults, f.name))]
    if ignored:
        print(f"handgrad: note: {', '.join(ignored)} ignored: a resumed run keeps its "
              f"checkpoint's settings (only --epochs, --lr, --on-divergence, --out, "
              f"--checkpoint-dir and --plot change them)", file=sys.stderr)
    return checkpoint, config.replace(**changes)


#: The settings a resumed run takes from the command line rather than its checkpoint.
RESUMABLE = ("epochs", "lr", "on_divergence", *OUTPUTS)


#: Settings that only one choice of another uses: (settings, whether this run uses them,
#: "apply to" what).
DEPENDENT = (
    (("momentum", "nesterov"), lambda c: c.optimizer == "sgd", "apply to --optimizer sgd"),
    (("step_size",), lambda c: c.schedule == "step", "apply to --schedule step"),
    (("gamma",), lambda c: c.schedule in ("step", "plateau"),
     "apply to --schedule step or plateau"),
    (("warmup_epochs", "min_lr"), lambda c: c.schedule == "cosine",
     "apply to --schedule cosine"),
    (("n_iter_no_change", "tol"), lambda c: c.early_stopping or c.schedule == "plateau",
     "apply to --early-stopping and --schedule plateau"),
    (("rotation", "zoom", "shear", "translate"), lambda c: c.augment != "none",
     "apply to --augment affine or elastic"),
    (("elastic_alpha", "elastic_sigma"), lambda c: c.augment == "elastic",
     "apply to --augment elastic"),
    (("label_column",), lambda c: c.dataset.lower().endswith(".csv"),
     "apply to a CSV --dataset"),
)


def _note_unused(args, config):
    """A ``note:`` for each group of settings typed that this run's choices do not use
    (``--nesterov`` with adam), as for a resumed run's settings."""
    given = _given(args)
    for names, applies, why in DEPENDENT:
        unused = [name for name in names if name in given]
        if unused and not applies(config):
            typed = ", ".join(flag(name) for name in unused)
            _, where = why.split(" ", 1)  # "to ...", after the verb
            verb = "applies" if len(unused) == 1 else "apply"
            print(f"handgrad: note: {typed} ignored: {'it' if len(unused) == 1 else 'they'} "
                  f"{verb} {where}", file=sys.stderr)


def _absolute(path):
    return None if path is None else os.path.abspath(path)


def _shown_outputs(args, config):
    """Each output path as the user typed it this time, else as the config records it."""
    return {name: (str(getattr(args, name)) if getattr(args, f"{name}_given", False)
                   else getattr(config, name)) for name in OUTPUTS}


def _destinations(shown):
    parts = []
    if shown["out"] is not None:
        parts.append(f"the model to {shown['out']}")
    if shown["checkpoint_dir"] is not None:
        parts.append(f"checkpoints to {Path(shown['checkpoint_dir']) / CHECKPOINT_NAME}")
    if shown["plot"] is not None:
        parts.append(f"figures to {shown['plot']}")
    if not parts:
        return "writing no files (the run was started without --out, --checkpoint-dir or --plot)"
    return "writing " + ", ".join(parts)


def _interrupted(exc, trainer, config, rank0):
    path = exc.checkpoint
    if path is None:  # no --checkpoint-dir: one checkpoint now, next to the model
        path = default_checkpoint(config.out)
        if trainer.is_chief:
            trainer.save_checkpoint(path)
    if not rank0:
        return ExitCode.INTERRUPTED
    signum = signal.SIGINT if exc.signum is None else exc.signum  # None: another rank's
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    print(f"handgrad: {name}: stopped at epoch {trainer.epoch + 1}, batch {trainer.batch}; "
          f"checkpoint saved to {path}; continue with: handgrad train --resume {path}",
          file=sys.stderr)
    return ExitCode.TERMINATED if signum == signal.SIGTERM else ExitCode.INTERRUPTED


def default_checkpoint(out):
    """Where an interrupted run without ``--checkpoint-dir`` writes its checkpoint."""
    base = Path("handgrad") if out is None else Path(out).with_suffix("")
    return base.parent / f"{base.name}.checkpoint.safetensors"


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


def _prepare(config, comm, progress):
    """The run's rows (:func:`~handgrad.datasets.prepare_data`), or this rank's share of
    them (:func:`~handgrad.distributed.prepare_shard`)."""
    options = dict(label_column=label_column(config.label_column),
                   val_fraction=config.val_fraction, seed=config.seed, progress=progress)
    if comm is None:
        return prepare_data(config.dataset, **options)
    from ..distributed import prepare_shard

    return prepare_shard(config.dataset, comm, batch_size=config.batch_size,
                         virtual_shards=config.virtual_shards, **options)


def _prepare_rows(model, raw):
    """``model.prepare``, allowing the empty share a rank may hold of a small set."""
    if len(raw) == 0:
        return np.empty((0, model.n_inputs), model.dtype)
    return model.prepare(raw)


# --------------------------------------------------------------------------- #
# Progress
# --------------------------------------------------------------------------- #


class _Progress(Callback):
    """A live bar per epoch and one fixed-format line per epoch."""

    def __init__(self, epochs, stream, quiet):
        self.epochs, self.stream, self.quiet = epochs, stream, quiet
        self.bar = None

    def on_epoch_begin(self, epoch, n_batches):
        if not self.quiet:
            self.bar = progress_bar(n_batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                                    unit="batch")

    def on_batch_end(self, batch, loss):
        if self.bar is not None:
            self.bar.update(1)
            if batch % 10 == 0:
                self.bar.set_postfix_str(f"loss {loss:.4f}")

    def on_epoch_end(self, epoch, history):
        self.close()
        if not self.quiet:
            print(format_epoch(history.last(), self.epochs), file=self.stream, flush=True)
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(m, epochs):
    """``epoch   3/20  loss 0.123456  acc 0.9712  val_loss 0.145600  val_acc 0.9650  1.23s``."""
    width = len(str(epochs))
    line = (f"epoch {m['epoch'] + 1:>{width}}/{epochs}  loss {m['train_loss']:.6f}  "
            f"acc {m['train_accuracy']:.4f}")
    if m.get("val_loss") is not None:
        line += f"  val_loss {m['val_loss']:.6f}  val_acc {m['val_accuracy']:.4f}"
    return line + f"  {m['epoch_time']:.2f}s"
