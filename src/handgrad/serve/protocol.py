"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) on the wire.

Parses an inference request, JSON tensors and the binary tensor data extension
alike, into NumPy arrays, and encodes a response the same two ways. Nothing here
knows about models: :mod:`handgrad.serve.app` checks names and shapes against the
served model.

A request body is JSON, or (binary extension) a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw little-endian
bytes of each input whose ``parameters.binary_data_size`` says how many, in the
order the inputs are listed. A response puts an output's bytes after its JSON
header the same way when the request asks for it (``parameters.binary_data`` on
the output or ``binary_data_output`` on the request), as tritonclient does by
default.

Every failure raises :class:`ProtocolError` with an HTTP status and a message
that names the bad field; the app answers it as ``{"error": message}``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from .. import _accel

try:  # 5–10× faster than the standard library's parser (part of the serve extra)
    import orjson
except ImportError:  # pragma: no cover - the standard library does the same, slower
    orjson = None

HEADER_LENGTH = "inference-header-content-length"

# Datatype names of the protocol and their little-endian NumPy types.
DATATYPES = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
# What a model input accepts: real numbers. BOOL and BYTES (strings) are refused.
NUMERIC = tuple(k for k in DATATYPES if k not in ("BOOL",))
NAMES = {v: k for k, v in DATATYPES.items()}  # NumPy dtype → protocol name
_FINFO_MAX = {k: np.finfo(DATATYPES[k]).max for k in ("FP16", "FP32")}  # largest finite


class ProtocolError(Exception):
    """A request the protocol (or the model) cannot accept; ``status`` is its HTTP code."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: tuple
    data: np.ndarray  # shaped as ``shape``, of ``DATATYPES[datatype]`` (float64 from JSON)


@dataclass
class InferRequest:
    id: str | None
    inputs: list
    outputs: list | None  # [(name, binary or None)] or None for every output
    binary_output: bool = False  # the request-level ``binary_data_output`` parameter
    parameters: dict = field(default_factory=dict)

    def wants_binary(self, name):
        """Whether output ``name`` goes as binary data."""
        for out_name, binary in self.outputs or ():
            if out_name == name and binary is not None:
                return binary
        return self.binary_output


# --------------------------------------------------------------------------- #
# Bodies
# --------------------------------------------------------------------------- #


def decompress(body, encoding, limit):
    """Undo ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's request compression).

    At most ``limit`` bytes come out; more is answered 413, so a small compressed
    body cannot expand into gigabytes in memory.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(415, f"unsupported Content-Encoding {encoding!r}; "
                                 f"send gzip, deflate or identity")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(400, f"the body is not valid {encoding} data ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise ProtocolError(413, f"the body expands beyond the limit of {limit:,} bytes")
    if not d.eof:
        raise ProtocolError(400, f"the {encoding} body is truncated")
    return out


def split_body(body, header_length):
    """``(json header as a dict, binary bytes)`` of a request body."""
    if header_length is None:
        header = _read_with_numbers(body)
        if header is not None:
            return header, b""
    binary = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(400, f"Inference-Header-Content-Length must be a whole "
                                     f"number, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length is {n} but the body "
                                     f"has {len(body)} bytes")
        body, binary = body[:n], body[n:]
    return parse_json(body), binary


class JSONNumbers:
    """The values of a tensor's JSON ``data`` list, read from the body's text by
    :func:`_read_with_numbers`: a flat float64 array equal to ``np.array(list)`` of the
    decoded list, as float64."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values  # (count,) float64


_numbers = {}  # "read": (handgrad.serve._numbers.read_numbers, its POWERS), or None


def numbers_reader():
    """The compiled reader of JSON number lists, or None: numba is not installed, or the
    accelerator is switched off (``HANDGRAD_NO_ACCEL``, :func:`handgrad._accel.use`).
    The first call imports it (compiled, or loaded from numba's cache): a server calls
    it at startup, so no request waits for that."""
    if not _accel.enabled():
        return None
    if "read" not in _numbers:
        try:
            from ._numbers import POWERS, read_numbers

            read_numbers(np.frombuffer(b"[1]", np.uint8), 0, np.empty(1), POWERS)
        except Exception:  # noqa: BLE001 - numba could not compile it: the decoder reads all
            _numbers["read"] = None
        else:
            _numbers["read"] = (read_numbers, POWERS)
    return _numbers["read"]


def _read_with_numbers(body):
    """The JSON object of an inference request whose one input's ``data`` is a flat list
    of numbers, that list read by the compiled reader (:mod:`handgrad.serve._numbers`)
    rather than decoded number by number; None for any other body, which the JSON
    decoder then reads as ever.

    The list is found in the bytes: the body has no backslash (so no escapes, and every
    ``"`` opens or closes a string), ``"data"`` occurs once, after an even number of
    quotes (so it is a string outside any string, and followed by ``:`` a key), and
    its value opens with ``[``. The reader takes the list up to its ``]``; the body with
    the list replaced by ``0`` is decoded as JSON, which is valid exactly when the whole
    body is (a value swapped for another value). That ``0`` is then the value of the
    one key ``data`` there is, so when it sits in the one tensor of ``inputs`` the read
    numbers go in its place (as :class:`JSONNumbers`), and every check of the request
    runs on the same object it would otherwise see.
    """
    if type(body) is not bytes or b"\\" in body:
        return None
    at = body.find(b'"data"')
    if at < 0 or body.count(b'"', 0, at) % 2:
        return None
    reader = numbers_reader()
    if reader is None:
        return None
    i = at + 6
    size = len(body)
    while i < size and body[i] in b" \t\r\n":
        i += 1
    if i == size or body[i] != 58:  # :
        return None
    i += 1
    while i < size and body[i] in b" \t\r\n":
        i += 1
    if i == size or body[i] != 91:  # [
        return None
    out = np.empty((size - i) // 2 + 1)  # a number and a comma take two bytes at least
    read, powers = reader
    end, n = read(np.frombuffer(body, np.uint8), i, out, powers)
    if end < 0 or body.find(b'"data"', end) >= 0:  # a second one: after the list
        return None
    rest = body[:i] + b"0" + body[end:]
    try:
        header = orjson.loads(rest) if orjson is not None else json.loads(rest.decode("utf-8"))
    except (ValueError, RecursionError):  # the decoder's errors, UnicodeDecodeError too
        return None
    inputs = header.get("inputs") if type(header) is dict else None
    if not (type(inputs) is list and len(inputs) == 1 and type(inputs[0]) is dict
            and "data" in inputs[0]):
        return None
    inputs[0]["data"] = JSONNumbers(out[:n])
    return header


def parse_json(body):
    """A JSON object from request bytes, or a 400 naming where it is broken.

    orjson parses when installed; whatever it refuses is parsed again by the standard
    library, for its precise message and because it reads NaN and Infinity, which the
    checks of the tensors then name (422) instead of calling the body broken.
    """
    if not body:
        raise ProtocolError(400, "the request body is empty; send a JSON object")
    if orjson is not None:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if not isinstance(value, dict):
                raise ProtocolError(400, f"the request body must be a JSON object, "
                                         f"got {type(value).__name__}")
            return value
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(400, f"the request body is not valid JSON: {exc.msg} "
                                 f"(line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ProtocolError(400, "the request body nests JSON too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, f"the request body must be a JSON object, "
                                 f"got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- #
# Requests
# --------------------------------------------------------------------------- #


def _shape(value, where):
    if not isinstance(value, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ProtocolError(400, f"{where}: 'shape' must be a list of non-negative integers, "
                                 f"got {json.dumps(value)[:80]}")
    return tuple(value)


def _json_data(data, datatype, shape, where, literals=True):
    """The values of a JSON ``data`` field (flat or nested, row-major) as an array."""
    count = math.prod(shape)
    if type(data) is JSONNumbers:  # read from the text already: numbers, flat, float64
        arr = data.values
    else:
        try:
            arr = np.array(data)  # no dtype given: strings, booleans and nulls stay visible
        except (ValueError, TypeError, OverflowError, RecursionError):
            arr = None
        if arr is None or arr.dtype.kind not in "iuf":
            raise ProtocolError(400, f"{where}: 'data' must be numbers for datatype "
                                     f"{datatype} (a flat or nested list)")
        if literals and _holds_bool(data):  # NumPy reads true/false among numbers as 1/0
            raise ProtocolError(400, f"{where}: 'data' holds true or false; datatype "
                                     f"{datatype} takes numbers")
        arr = arr.astype(np.float64, copy=False)
    if arr.size != count:
        raise ProtocolError(400, f"{where}: shape {list(shape)} needs {count} values, "
                                 f"'data' has {arr.size}")
    if arr.ndim > 1 and arr.shape != shape:
        raise ProtocolError(400, f"{where}: nested 'data' has shape {list(arr.shape)}, "
                                 f"not the declared {list(shape)}")
    arr = arr.reshape(shape)
    dt = DATATYPES[datatype]
    if dt.kind in "iu":  # integer datatypes: whole numbers within the type's range
        finite = np.isfinite(arr)
        if not finite.all():
            raise ProtocolError(400, f"{where}: datatype {datatype} holds integers, "
                                     f"'data' has NaN or infinity")
        info = np.iinfo(dt)
        if arr.size and (arr.min() < info.min or arr.max() > info.max
                         or not np.array_equal(arr, np.round(arr))):
            raise ProtocolError(400, f"{where}: datatype {datatype} holds whole numbers in "
                                     f"[{info.min}, {info.max}]; 'data' has other values")
    elif datatype in ("FP16", "FP32"):
        largest = float(_FINFO_MAX[datatype])
        if arr.size and np.abs(arr).max() <= largest:  # fits: the cast cannot overflow
            return arr.astype(dt)
        with np.errstate(over="ignore"):  # NaN, infinity or a value beyond the datatype
            narrow = arr.astype(dt)
        overflow = np.isinf(narrow) & np.isfinite(arr)  # finite in JSON, beyond the datatype
        if overflow.any():
            i = int(np.argmax(overflow))
            raise ProtocolError(400, f"{where}: {arr.flat[i]:g} (value {i} of 'data') is out "
                                     f"of the {datatype} range (±{largest:.8g}); send it as "
                                     f"FP64, or scale it")
        arr = narrow
    return arr


def may_hold_literals(body):
    """Whether a request body's bytes could hold JSON ``true`` or ``false`` (a search of
    the bytes: far cheaper than looking at each value of a decoded tensor).

    A letter of each word that no number and no key of an ordinary request holds ("r"
    of true, "l" of false) is looked for first: one ``memchr`` each, several times
    faster than searching for the words, which only a body holding the letter needs.
    """
    return (b"r" in body and b"true" in body) or (b"l" in body and b"false" in body)


def _holds_bool(data):
    """Whether a JSON ``data`` value (a number or nested lists) holds a boolean anywhere."""
    if type(data) is bool:
        return True
    stack = [data] if type(data) is list else []
    while stack:
        items = stack.pop()
        kinds = set(map(type, items))  # one C-level pass per list
        if bool in kinds:
            return True
        if list in kinds:
            stack.extend(v for v in items if type(v) is list)
    return False


def _binary_data(binary, offset, size, datatype, shape, where):
    dt = DATATYPES[datatype]
    need = math.prod(shape) * dt.itemsize
    if size != need:
        raise ProtocolError(400, f"{where}: shape {list(shape)} of {datatype} needs {need} "
                                 f"bytes, binary_data_size says {size}")
    if offset + size > len(binary):
        raise ProtocolError(400, f"{where}: binary_data_size {size} runs past the end of the "
                                 f"body ({len(binary) - offset} bytes left)")
    return np.frombuffer(binary, dtype=dt, count=math.prod(shape), offset=offset).reshape(shape)


def parse_infer_request(header, binary=b"", *, literals=True):
    """Check an inference request's JSON (and binary tail) and decode its tensors.

    ``literals=False`` says the request's text holds neither ``true`` nor ``false``
    (:func:`may_hold_literals`), so the search of JSON ``data`` for them is skipped.
    """
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "'inputs' must be a non-empty list of tensors")
    req_id = header.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise ProtocolError(400, "'id' must be a string")
    params = _parameters(header.get("parameters"), "request")
    offset = 0
    decoded = []
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise ProtocolError(400, f"inputs[{i}] must be an object with name, shape, "
                                     f"datatype and data")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(400, f"inputs[{i}]: 'name' must be a non-empty string")
        where = f"input {name!r}"
        datatype = t.get("datatype")
        if datatype == "BYTES" or datatype == "BOOL":
            raise ProtocolError(400, f"{where}: datatype {datatype} is not accepted; send "
                                     f"numbers as one of {', '.join(NUMERIC)}")
        if datatype not in DATATYPES:
            raise ProtocolError(400, f"{where}: unknown datatype {str(datatype)[:40]!r}; "
                                     f"use one of {', '.join(NUMERIC)}")
        shape = _shape(t.get("shape"), where)
        tparams = _parameters(t.get("parameters"), where)
        size = tparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(400, f"{where}: binary_data_size must be a non-negative "
                                         f"integer")
            if "data" in t:
                raise ProtocolError(400, f"{where}: give 'data' or binary_data_size, not both")
            data = _binary_data(binary, offset, size, datatype, shape, where)
            offset += size
        elif "data" in t:
            data = _json_data(t["data"], datatype, shape, where, literals)
        else:
            raise ProtocolError(400, f"{where}: no 'data' and no binary_data_size")
        decoded.append(InferInput(name, datatype, shape, data))
    if offset != len(binary):
        raise ProtocolError(400, f"{len(binary) - offset} bytes of binary data are left over "
                                 f"after the inputs' binary_data_size")
    outputs = header.get("outputs")
    wanted = None
    if outputs is not None:
        if not isinstance(outputs, list):
            raise ProtocolError(400, "'outputs' must be a list of {\"name\": ...} objects")
        wanted = []
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise ProtocolError(400, f"outputs[{i}] must be an object with a 'name'")
            oparams = _parameters(o.get("parameters"), f"output {o['name']!r}")
            binary_flag = oparams.get("binary_data")
            if binary_flag is not None and not isinstance(binary_flag, bool):
                raise ProtocolError(400, f"output {o['name']!r}: binary_data must be true "
                                         f"or false")
            wanted.append((o["name"], binary_flag))
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError(400, "binary_data_output must be true or false")
    return InferRequest(req_id, decoded, wanted, binary_output, params)


def _parameters(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(400, f"{where}: 'parameters' must be an object")
    return value


# --------------------------------------------------------------------------- #
# Responses
# --------------------------------------------------------------------------- #


def encode_infer_response(model_name, model_version, request_id, outputs):
    """``(body, headers)`` of an inference response.

    ``outputs`` is a list of ``(name, array, binary)``; binary outputs follow the
    JSON header as raw little-endian bytes, in order.
    """
    tensors, tails = [], []
    for name, arr, binary in outputs:
        arr = np.ascontiguousarray(arr)
        t = {"name": name, "datatype": NAMES[arr.dtype.newbyteorder("<")
                                              if arr.dtype.byteorder == ">" else arr.dtype],
             "shape": list(arr.shape)}
        if binary:
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            t["parameters"] = {"binary_data_size": len(raw)}
            tails.append(raw)
        else:
            t["data"] = arr.ravel().tolist()
        tensors.append(t)
    body = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    head = orjson.dumps(body) if orjson is not None else json.dumps(
        body, separators=(",", ":")).encode()
    if not tails:
        return head, {"content-type": "application/json"}
    return b"".join([head, *tails]), {"content-type": "application/octet-stream",
                                      HEADER_LENGTH: str(len(head))}
