"""Model files and checkpoints: safetensors tensors plus JSON metadata, never pickle.

A model file holds the tensors ``W1, b1, W2, b2, ...`` in (out, in) orientation,
so ``safetensors.torch.load_file`` feeds them straight to ``torch.nn.Linear``,
and in the header's ``__metadata__`` (string values, as safetensors requires):

- ``format``: ``handgrad-model``, ``format_version``: ``1``
- ``config``: the :class:`~handgrad.model.MLPConfig` as JSON (architecture,
  activation, dtype), enough to rebuild the model
- ``classes``, ``preprocessing``, ``training``: JSON (class names, the fitted
  preprocessing, a training summary)
- optionally (``save(..., optimizer=)``, as ``handgrad.save`` does for an estimator, so
  that its ``partial_fit`` continues as it would have): the optimizer's arrays as tensors
  ``optimizer/<key>/<name>`` and an ``optimizer`` JSON entry (its type, hyper-parameters
  and counters); readers that do not look for them see the same model

A checkpoint is the same file with ``format`` ``handgrad-checkpoint``, the
optimizer's arrays as extra tensors named ``optimizer/<key>/<name>`` (and
callbacks' arrays as ``callback/<i>/<name>``), and a ``checkpoint`` JSON entry
(optimizer hyper-parameters and counters, the trainer's position, history and
callbacks' state, and the run's :class:`~handgrad.config.TrainConfig` as ``config``).

Format version 2 stores the :class:`~handgrad.config.TrainConfig` (``config``,
also in a model's ``training`` summary); version 1 (handgrad 0.1) stored the same
values as a ``settings`` dict. Both are read.

Every write is atomic (temporary file, fsync, rename). Every read validates the
header before trusting it and raises :class:`ModelFileError` with a hint.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from typing import NamedTuple

from ._atomic import atomic_write, check_overwrite
from .config import TrainConfig
from .datasets.preprocess import Preprocessor
from .datasets.errors import DataError
from .model import MLP, MLPConfig

MODEL_FORMAT = "handgrad-model"
CHECKPOINT_FORMAT = "handgrad-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")  # 1: handgrad 0.1 (a "settings" dict instead of "config")
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit for the JSON header
MAX_FILE_BYTES = 8 << 30
SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64}


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, damaged, or not handgrad's."""


class NotACheckpointError(ModelFileError):
    """A model file was given where a training checkpoint was expected; ``path`` names it."""

    def __init__(self, path):
        super().__init__(f"{path}: a model file, not a training checkpoint")
        self.path = path


class ModelFile(NamedTuple):
    """What :func:`load_with_optimizer` returns: the model, and the optimizer's state dict
    the file keeps (None for a file saved without one)."""

    model: MLP
    optimizer_state: dict | None


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns: the model, the optimizer's state dict, the
    trainer's state dict and the run's :class:`~handgrad.config.TrainConfig` (or None)."""

    model: MLP
    optimizer_state: dict
    trainer_state: dict
    config: TrainConfig | None


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ModelFileError("model files need the 'safetensors' package, a dependency of "
                             "handgrad: pip install safetensors") from None
    return safetensors.numpy


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _model_metadata(model, fmt):
    return {
        "format": fmt,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "classes": json.dumps(None if model.classes is None else [str(c) for c in model.classes]),
        "preprocessing": json.dumps(None if model.preprocessor is None
                                    else model.preprocessor.to_dict()),
        "training": json.dumps(model.training),
    }


def _write(path, tensors, metadata):
    payload = _safetensors().save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                  metadata=metadata)
    path = Path(path)
    try:
        with atomic_write(path) as f:
            f.write(payload)
    except OSError as exc:  # ENOSPC, EACCES, EROFS...: name the file we were writing
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def file_format(path):
    """The ``format`` a handgrad file at ``path`` declares (``handgrad-model``,
    ``handgrad-checkpoint``), read from its header alone; None for anything else (no
    file, another program's safetensors, not safetensors at all)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    return fmt if fmt in (MODEL_FORMAT, CHECKPOINT_FORMAT) else None


def check_model_path(path, fmt=MODEL_FORMAT, *, overwrite=False):
    """Raise :class:`~handgrad._atomic.OverwriteRefusedError` (a ``FileExistsError``) if
    ``path`` holds a file other than a handgrad file of format ``fmt`` (a previous model
    may be replaced: that is how a model is retrained), unless ``overwrite``."""
    kind = "a handgrad model file" if fmt == MODEL_FORMAT else "a handgrad checkpoint"
    check_overwrite(path, kind, lambda p: file_format(p) == fmt, overwrite=overwrite)


def _optimizer_entries(optimizer):
    """``(tensors, description)`` of an optimizer's state: its arrays as tensors
    ``optimizer/<key>/<name>``, and its type, hyper-parameters and counters as JSON."""
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for key, st in opt["state"].items():
        for name, value in st.items():
            if isinstance(value, np.ndarray):
                tensors[f"optimizer/{key}/{name}"] = value
            else:
                scalars.setdefault(key, {})[name] = value
    return tensors, {"type": opt["type"], "hyperparameters": opt["hyperparameters"],
                     "scalars": scalars}


def save(model, path, optimizer=None, *, overwrite=False):
    """Write ``model`` (weights, architecture, classes, preprocessing) to ``path``; with
    an ``optimizer`` (a :class:`handgrad.optim.Optimizer` training ``model``), its state
    too, which :func:`load_with_optimizer` gives back.

    An existing handgrad model file at ``path`` is replaced; any other file (a data
    set, an image, a checkpoint) is not, unless ``overwrite=True``.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"save expects a handgrad.MLP, got {type(model).__name__}")
    if not np.all(np.isfinite(model.param_buffer)):
        raise ValueError("refusing to save a model whose weights hold NaN or infinity")
    check_model_path(path, MODEL_FORMAT, overwrite=overwrite)
    tensors, metadata = dict(model.params), _model_metadata(model, MODEL_FORMAT)
    if optimizer is not None:
        opt_tensors, description = _optimizer_entries(optimizer)
        for name, value in opt_tensors.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"refusing to save an optimizer whose state {name} holds "
                                 f"NaN or infinity")
        tensors.update(opt_tensors)
        metadata["optimizer"] = json.dumps(description)
    return _write(path, tensors, metadata)


def save_checkpoint(path, model, optimizer, trainer_state, config=None, *, overwrite=False):
    """Write a checkpoint: model, optimizer state, training position and ``config``
    (a :class:`~handgrad.config.TrainConfig`, or None). An existing checkpoint at
    ``path`` is replaced; any other file is not, unless ``overwrite=True``."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a handgrad.TrainConfig or None, got "
                        f"{type(config).__name__}")
    check_model_path(path, CHECKPOINT_FORMAT, overwrite=overwrite)
    tensors = dict(model.params)
    opt_tensors, opt_description = _optimizer_entries(optimizer)
    tensors.update(opt_tensors)
    trainer_state = dict(trainer_state)
    callback_states = []
    for i, cb_state in enumerate(trainer_state.get("callbacks") or []):
        if isinstance(cb_state, dict):  # arrays in a callback's state travel as tensors
            cb_state = dict(cb_state)
            for key, value in cb_state.items():
                if isinstance(value, np.ndarray):
                    name = f"callback/{i}/{key}"
                    tensors[name] = value
                    cb_state[key] = {"tensor": name}
        callback_states.append(cb_state)
    if "callbacks" in trainer_state:
        trainer_state["callbacks"] = callback_states
    metadata = _model_metadata(model, CHECKPOINT_FORMAT)
    metadata["checkpoint"] = json.dumps({
        "optimizer": opt_description,
        "trainer": trainer_state,
        "config": None if config is None else config.to_dict(),
    })
    return _write(path, tensors, metadata)


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #


def _read(path, expected_format):
    """Validate and parse a file; returns ``(tensors, metadata)``."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {size:,} bytes is larger than any handgrad model file")
    data = path.read_bytes()
    not_ours = (f"{path}: not a safetensors file (handgrad model files are safetensors; "
                f"pickled files are never loaded)")
    if len(data) < 8:
        raise ModelFileError(not_ours)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise ModelFileError(not_ours)
    if 8 + n > len(data):
        raise ModelFileError(f"{path}: truncated or not a safetensors file (its header "
                             f"declares {n:,} bytes, {len(data) - 8:,} follow)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(not_ours) from None
    if not isinstance(header, dict):
        raise ModelFileError(not_ours)
    meta = header.get("__metadata__") or {}
    fmt = meta.get("format")
    if fmt not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
        raise ModelFileError(f"{path}: a safetensors file, but not a handgrad model "
                             f"(format {fmt!r}); save models with handgrad.save")
    if expected_format == CHECKPOINT_FORMAT and fmt != CHECKPOINT_FORMAT:
        raise NotACheckpointError(path)
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(f"{path}: format version {version!r}; this handgrad reads versions "
                             f"{' and '.join(READABLE_VERSIONS)}: upgrade handgrad "
                             f"(pip install -U handgrad)")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in SAFETENSORS_DTYPES:
            raise ModelFileError(f"{path}: tensor {name!r} has dtype "
                                 f"{info.get('dtype') if isinstance(info, dict) else '?'}; "
                                 f"handgrad stores float32 or float64")
    try:
        tensors = _safetensors().load(data)
    except Exception as exc:  # safetensors raises its own error type for bad offsets
        raise ModelFileError(f"{path}: damaged tensor data ({exc})") from None
    return tensors, meta


def _json(path, meta, key):
    try:
        return json.loads(meta[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: metadata entry {key!r} is missing or not JSON") from None


def _build_model(path, tensors, meta):
    try:
        config = MLPConfig.from_dict(_json(path, meta, "config"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: the stored architecture is invalid ({exc})") from None
    model = MLP.from_config(config)
    missing = [k for k in model.shapes if k not in tensors]
    if missing:
        raise ModelFileError(f"{path}: tensors {', '.join(missing)} are missing for "
                             f"architecture {config.layer_sizes}")
    for name, shape in model.shapes.items():
        t = tensors[name]
        if t.shape != shape:
            raise ModelFileError(f"{path}: {name} has shape {t.shape} but the architecture "
                                 f"{config.layer_sizes} needs {shape}")
        if t.dtype != model.dtype:
            raise ModelFileError(f"{path}: {name} is {t.dtype} but the model is {model.dtype}")
        if not np.all(np.isfinite(t)):
            raise ModelFileError(f"{path}: {name} holds NaN or infinite weights; "
                                 f"the model diverged before it was saved")
        model.params[name][...] = t
    classes = _json(path, meta, "classes")
    if classes is not None:
        if (not isinstance(classes, list) or len(classes) != config.n_classes
                or not all(isinstance(c, str) for c in classes)):
            raise ModelFileError(f"{path}: 'classes' must list {config.n_classes} names")
        model.classes = classes
    prep = _json(path, meta, "preprocessing")
    if prep is not None:
        try:
            model.preprocessor = Preprocessor.from_dict(prep)
        except DataError as exc:
            raise ModelFileError(f"{path}: {exc}") from None
        if model.preprocessor.n_features != config.n_inputs:
            raise ModelFileError(f"{path}: preprocessing yields {model.preprocessor.n_features} "
                                 f"features but the model takes {config.n_inputs}")
    training = _json(path, meta, "training")
    model.training = training if isinstance(training, dict) else {}
    return model


def load(path):
    """Read a model file (or the model inside a checkpoint) into an :class:`MLP`."""
    tensors, meta = _read(path, MODEL_FORMAT)
    return _build_model(path, tensors, meta)


def load_with_optimizer(path):
    """Read a model file into a :class:`ModelFile` ``(model, optimizer_state)``: the state
    dict of the optimizer saved with it (``save(..., optimizer=)``), else None, for
    :meth:`handgrad.optim.Optimizer.load_state_dict`."""
    tensors, meta = _read(path, MODEL_FORMAT)
    model = _build_model(path, tensors, meta)
    if meta.get("format") != MODEL_FORMAT or "optimizer" not in meta:
        return ModelFile(model, None)
    try:
        state = _optimizer_state(path, tensors, _json(path, meta, "optimizer"), model)
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the optimizer's stored state is damaged ({exc})") \
            from None
    return ModelFile(model, state)


def _optimizer_state(path, tensors, description, model):
    """The optimizer's state dict from its tensors and JSON ``description``, checked."""
    state = {}
    for name, arr in tensors.items():
        if name.startswith("optimizer/"):
            _, key, field = name.split("/", 2)
            if arr.shape != model.param_buffer.shape and key == "flat":
                raise ValueError(f"{name} has shape {arr.shape}")
            state.setdefault(key, {})[field] = arr
    for key, scalars in description["scalars"].items():
        state.setdefault(key, {}).update(scalars)
    for key, st in state.items():
        for field, value in st.items():
            if isinstance(value, np.ndarray) and not np.all(np.isfinite(value)):
                raise ModelFileError(f"{path}: optimizer state {key}/{field} is not finite")
            if not isinstance(value, np.ndarray) and not (
                    isinstance(value, (int, float)) and math.isfinite(value)):
                raise ModelFileError(f"{path}: optimizer counter {key}/{field} is invalid")
    if not isinstance(description["type"], str) or not isinstance(
            description["hyperparameters"], dict):
        raise ValueError("'type' must be a name and 'hyperparameters' an object")
    return {"type": description["type"], "hyperparameters": description["hyperparameters"],
            "state": state}


def load_checkpoint(path):
    """Read a checkpoint into a :class:`Checkpoint` ``(model, optimizer_state,
    trainer_state, config)``; files of handgrad 0.1 (format version 1) included."""
    tensors, meta = _read(path, CHECKPOINT_FORMAT)
    model = _build_model(path, tensors, meta)
    ck = _json(path, meta, "checkpoint")
    try:
        opt_state = _optimizer_state(path, tensors, ck["optimizer"], model)
        trainer_state = ck["trainer"]
        stored = ck.get("config", ck.get("settings"))  # version 1 called it "settings"
        config = TrainConfig.from_dict(stored) if stored else None
        for cb_state in trainer_state.get("callbacks") or []:
            if isinstance(cb_state, dict):
                for key, value in cb_state.items():
                    if isinstance(value, dict) and set(value) == {"tensor"}:
                        cb_state[key] = tensors[value["tensor"]]
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: damaged checkpoint metadata ({exc})") from None
    return Checkpoint(model, opt_state, trainer_state, config)
