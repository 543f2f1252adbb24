"""ONNX export (needs the ``onnx`` package): Gemm / activation / Softmax nodes.

The graph takes *raw* examples (shaped as the model's training data, e.g.
(N, 28, 28) pixel values 0–255, with a dynamic batch dimension N), applies the
stored preprocessing (flatten, then divide or standardise, as
:class:`handgrad.datasets.Preprocessor` does), runs F1–F4 layer by layer and
outputs ``probabilities`` (N, M) and ``label`` (N,), the most probable class
index. The class names are stored in the model's ``metadata_props``.

An ONNX input has one element type: the model's float type by default, or
``input_dtype="uint8"`` for images as they come (the graph casts them first).
(:func:`handgrad.to_torch`, by contrast, takes rows already preprocessed by
``model.prepare``, as :meth:`handgrad.MLP.predict_proba` does.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._atomic import atomic_write, check_overwrite
from ._requirements import MissingPackageError

OPSET = 17
ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingPackageError("ONNX export needs the 'onnx' package: pip install "
                                  "'handgrad[onnx]'", ["onnx"]) from None
    return onnx


INPUT_DTYPES = ("float32", "float64", "uint8")


def _input_dtype(model, input_dtype):
    if input_dtype is None:
        return np.dtype(model.dtype).name
    name = str(np.dtype(input_dtype)) if not isinstance(input_dtype, str) else input_dtype
    if name not in INPUT_DTYPES:
        raise ValueError(f"input_dtype must be one of {', '.join(INPUT_DTYPES)} (or None for "
                         f"the model's own, {np.dtype(model.dtype).name}), got {input_dtype!r}")
    return name


def to_onnx_model(model, fold_preprocessing=True, input_dtype=None):
    """Build the ``onnx.ModelProto`` of ``model`` (checked with ``full_check=True``).

    ``input_dtype``: the element type of the graph's ``input``: None (the model's
    dtype), ``"float32"``, ``"float64"`` or ``"uint8"`` (raw pixels, cast inside).
    """
    if model.config.output != "softmax":
        raise ValueError(f"ONNX export covers softmax classifiers (probabilities and label); "
                         f"this model's output is {model.config.output!r}")
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    in_name = _input_dtype(model, input_dtype)
    in_elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
               "uint8": TensorProto.UINT8}[in_name]
    prep = model.preprocessor if fold_preprocessing else None
    input_shape = list(prep.input_shape) if prep is not None else [model.n_inputs]
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=model.dtype), name))
        return name

    x = "input"
    if in_elem != elem:  # e.g. uint8 pixels: computed in the model's float type
        nodes.append(helper.make_node("Cast", [x], ["input_cast"], to=elem))
        x = "input_cast"
    if len(input_shape) > 1:
        nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
        x = "flat"
    if prep is not None and prep.scaling == "divide":
        nodes.append(helper.make_node("Div", [x, const("scale", prep.scale)], ["scaled"]))
        x = "scaled"
    elif prep is not None and prep.scaling == "standardize":
        nodes.append(helper.make_node("Sub", [x, const("mean", prep.mean)], ["centred"]))
        nodes.append(helper.make_node("Div", ["centred", const("std", prep.std)], ["scaled"]))
        x = "scaled"
    K = model.n_layers
    for l in range(1, K + 1):
        W = const(f"W{l}", model.params[f"W{l}"])  # (out, in), as stored: transB=1
        b = const(f"b{l}", model.params[f"b{l}"])
        q = f"Q{l}" if l < K else "logits"
        nodes.append(helper.make_node("Gemm", [x, W, b], [q], transB=1))  # F1 / F3
        x = q
        op = ACTIVATION_OPS[model.config.activation]
        if l < K and op is not None:
            nodes.append(helper.make_node(op, [q], [f"h{l}"]))  # F2
            x = f"h{l}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))  # F4
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes, "handgrad_mlp",
        [helper.make_tensor_value_info("input", in_elem, ["N", *input_shape])],
        [helper.make_tensor_value_info("probabilities", elem, ["N", model.n_classes]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="handgrad")
    proto.ir_version = 9  # readable by onnxruntime releases from 1.16 on
    helper.set_model_props(proto, {
        "classes": json.dumps(model.classes),
        "architecture": json.dumps(model.config.to_dict()),
        "input": json.dumps({"dtype": in_name, "shape": ["N", *input_shape],
                             "preprocessing_included": prep is not None}),
    })
    onnx.checker.check_model(proto, full_check=True)
    return proto


def to_onnx_bytes(model, fold_preprocessing=True, input_dtype=None):
    """The serialized ONNX model (see :func:`to_onnx_model`)."""
    return to_onnx_model(model, fold_preprocessing, input_dtype).SerializeToString()


def is_handgrad_onnx(path):
    """Whether ``path`` is an ONNX file that handgrad wrote (its producer)."""
    try:
        with open(path, "rb") as f:
            first = f.read(1)
        size = Path(path).stat().st_size
    except OSError:
        return False
    # handgrad's files begin with the model's ir_version (field 1, a varint: byte 0x08)
    # and, as every protobuf, are under 2 GiB: anything else is not parsed at all
    if first != b"\x08" or size >= 2 << 30:
        return False
    onnx = _onnx()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, or anything unreadable
        return False
    return proto.producer_name == "handgrad"


def check_onnx_path(path, *, overwrite=False):
    """Raise :class:`~handgrad._atomic.OverwriteRefusedError` (a ``FileExistsError``) if
    ``path`` holds a file other than an ONNX file handgrad wrote, unless ``overwrite``."""
    check_overwrite(path, "an ONNX file written by handgrad", is_handgrad_onnx,
                    overwrite=overwrite)


def export_onnx(model, path, fold_preprocessing=True, input_dtype=None, *, overwrite=False):
    """Write ``model`` as an ONNX file (atomically); returns the path.

    The graph takes raw examples (the preprocessing is part of it) of element type
    ``input_dtype`` (see :func:`to_onnx_model`; ``"uint8"`` for images as they come).
    A previous ONNX export at ``path`` is replaced; any other file there is refused with
    a ``FileExistsError`` unless ``overwrite=True``.
    """
    check_onnx_path(path, overwrite=overwrite)
    data = to_onnx_bytes(model, fold_preprocessing, input_dtype)
    path = Path(path)
    with atomic_write(path) as f:
        f.write(data)
    return path
