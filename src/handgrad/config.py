"""The settings of a training run, as one frozen dataclass (nanoGPT's ``TrainConfig``).

A :class:`TrainConfig` is what checkpoints and model files store (``config.to_dict()``),
what ``handgrad train --resume`` restores, and what :meth:`handgrad.Trainer.from_config`
turns into an optimizer, regularisers, schedules and callbacks. Adding a training option
means one field here, one flag in :mod:`handgrad.cli.train`, and one use in
``Trainer.from_config``.

handgrad 0.1 stored the same values as a plain "settings" dict with the same keys;
:meth:`TrainConfig.from_dict` reads those too (missing keys take their defaults).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from numbers import Integral, Real

from ._errors import ParameterError

OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
SCALINGS = ("divide", "standardize", "none")
SCHEDULES = ("constant", "step", "cosine", "plateau")
AUGMENTATIONS = ("none", "affine", "elastic")
DIVERGENCE_POLICIES = ("stop", "backoff")
ACTIVATION_NAMES = ("relu", "tanh", "logistic", "identity")
DTYPE_NAMES = ("float32", "float64")
ARRAYS = "<arrays>"  # the dataset of a run on arrays passed from Python


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; defaults are the command line's.

    ``lr=None`` means the optimizer's default (1e-3 for adam/adamw, 0.01 for sgd);
    ``weight_decay=None`` likewise (0, or 0.01 for adamw). ``l2`` is scikit-learn's
    ``alpha``: the penalty ``l2/2 · Σ‖W_l‖² / Σ_n s_n`` of each batch, on the weights
    and not the biases. ``out``, ``checkpoint_dir`` and ``plot`` are where the run
    writes (absolute paths, or None): a resumed run writes to the same places.
    """

    # data
    dataset: str = "digits"
    label_column: str = "auto"
    scaling: str = "divide"
    val_fraction: float = 0.1
    # network
    hidden: tuple = (256,)
    activation: str = "relu"
    dtype: str = "float32"
    # optimisation
    epochs: int = 30
    batch_size: int = 32
    shuffle: bool = True
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None
    l2: float = 0.0
    seed: int = 0
    on_divergence: str = "stop"
    # regularisation
    dropout: float = 0.0
    input_dropout: float = 0.0
    label_smoothing: float = 0.0
    max_norm: float | None = None
    # schedules and early stopping
    schedule: str = "constant"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    early_stopping: bool = False
    n_iter_no_change: int = 10
    tol: float = 1e-4
    # augmentation
    augment: str = "none"
    rotation: float = 10.0
    zoom: float = 0.1
    shear: float = 10.0
    translate: float = 2.0
    elastic_alpha: float = 34.0
    elastic_sigma: float = 4.0
    # distributed
    virtual_shards: int = 12
    # outputs
    out: str | None = None
    checkpoint_dir: str | None = None
    plot: str | None = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        for name in ("dataset", "label_column"):
            if not isinstance(getattr(self, name), str):
                set_(name, str(getattr(self, name)))
        _choice("scaling", self.scaling, SCALINGS)
        _choice("activation", self.activation, ACTIVATION_NAMES)
        _choice("dtype", self.dtype, DTYPE_NAMES)
        _choice("optimizer", self.optimizer, OPTIMIZER_NAMES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("on_divergence", self.on_divergence, DIVERGENCE_POLICIES)
        hidden = (self.hidden,) if isinstance(self.hidden, Integral) else self.hidden
        try:
            hidden = tuple(hidden)
        except TypeError:
            raise ValueError(f"hidden must be a tuple of positive integers, got "
                             f"{self.hidden!r}") from None
        for h in hidden:
            _integer("hidden sizes", h, 1)
        set_("hidden", tuple(int(h) for h in hidden))
        for name, minimum in (("epochs", 0), ("batch_size", 1), ("seed", 0),
                              ("warmup_epochs", 0), ("step_size", 1), ("n_iter_no_change", 1),
                              ("virtual_shards", 1)):
            set_(name, _integer(name, getattr(self, name), minimum))
        for name in ("shuffle", "nesterov", "early_stopping"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("momentum", "l2", "min_lr", "tol", "rotation", "shear", "translate",
                     "elastic_alpha"):
            set_(name, _number(name, getattr(self, name), 0.0))
        for name in ("val_fraction", "dropout", "input_dropout", "label_smoothing", "zoom"):
            value = _number(name, getattr(self, name), 0.0)
            if value >= 1:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
            set_(name, value)
        for name in ("lr", "max_norm"):
            if getattr(self, name) is not None:
                value = _number(name, getattr(self, name), 0.0)
                if value == 0:
                    raise ValueError(f"{name} must be positive, got 0")
                set_(name, value)
        if self.weight_decay is not None:
            set_("weight_decay", _number("weight_decay", self.weight_decay, 0.0))
        for name in ("gamma", "elastic_sigma"):
            value = _number(name, getattr(self, name), 0.0)
            if value == 0:
                raise ValueError(f"{name} must be positive, got 0")
            set_(name, value)
        for name in ("out", "checkpoint_dir", "plot"):
            value = getattr(self, name)
            if value is not None:
                set_(name, str(value))

    # -- conversion ---------------------------------------------------------------

    def replace(self, **changes):
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """Plain JSON values, one key per field."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d):
        """The config of a ``to_dict()`` result, or of handgrad 0.1's settings dict.

        Missing keys take their defaults; an unknown key (a newer handgrad's setting)
        raises ValueError naming it.
        """
        if not isinstance(d, dict):
            raise ValueError(f"training settings must be a JSON object, got "
                             f"{type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {', '.join(map(repr, unknown))} "
                             f"(written by a newer handgrad? upgrade: pip install -U handgrad)")
        return cls(**{k: (tuple(v) if k == "hidden" and isinstance(v, list) else v)
                      for k, v in d.items()})

    @classmethod
    def from_training(cls, training):
        """The config recorded in a model's ``training`` summary, or None.

        Reads the ``config`` entry, or the ``settings`` entry of files written by 0.1.
        """
        if not isinstance(training, dict):
            return None
        d = training.get("config", training.get("settings"))
        return None if not d else cls.from_dict(d)


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(name, value, minimum):
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
            or value < minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


class ConfigError(ParameterError):
    """Settings that cannot work together, or with the data; names the settings involved.

    The message is a template whose ``{name}`` fields are settings (``settings`` maps each
    to its value, or None to show the name alone). ``str()`` shows them as Python names
    (``warmup_epochs=5``); :meth:`format` lets a front end show them its own way (the
    command line shows its flags: ``--warmup-epochs 5``).
    """

    @property
    def settings(self):
        """The settings named: :attr:`parameters`, under the name configs use."""
        return self.parameters
