"""The Open Inference Protocol's wire format: JSON and binary tensors, both ways."""

import gzip
import json
import zlib

import numpy as np
import pytest

from handgrad.serve import protocol
from handgrad.serve.protocol import (ProtocolError, decompress, encode_infer_response,
                                     parse_infer_request, split_body)


@pytest.fixture(params=["orjson", "stdlib"], autouse=True)
def json_parser(request, monkeypatch):
    """Every test runs with orjson (when installed) and with the standard library alone."""
    if request.param == "stdlib":
        monkeypatch.setattr(protocol, "orjson", None)
    elif protocol.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


def request(data, shape, datatype="FP32", **extra):
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}],
            **extra}


def error_of(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.status, info.value.message


def test_json_tensor_flat_and_nested_give_the_same_array():
    flat = parse_infer_request(request([1, 2, 3, 4, 5, 6], [2, 3]))
    nested = parse_infer_request(request([[1, 2, 3], [4, 5, 6]], [2, 3]))
    assert flat.inputs[0].data.shape == (2, 3) and flat.inputs[0].data.dtype == np.float32
    np.testing.assert_array_equal(flat.inputs[0].data, nested.inputs[0].data)
    np.testing.assert_array_equal(flat.inputs[0].data, [[1, 2, 3], [4, 5, 6]])


def test_binary_tensor_data_is_read_in_input_order():
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.arange(4, dtype="u1").reshape(2, 2)
    header = {"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32",
         "parameters": {"binary_data_size": a.nbytes}},
        {"name": "b", "shape": [2, 2], "datatype": "UINT8",
         "parameters": {"binary_data_size": b.nbytes}}]}
    head = json.dumps(header).encode()
    parsed = parse_infer_request(*split_body(head + a.tobytes() + b.tobytes(), str(len(head))))
    np.testing.assert_array_equal(parsed.inputs[0].data, a)
    np.testing.assert_array_equal(parsed.inputs[1].data, b)
    assert parsed.inputs[1].data.dtype == np.uint8


@pytest.mark.parametrize("body, status, words", [
    (b"{", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"", 400, "empty"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b"[" * 100000 + b"]" * 100000, 400, "JSON"),
])
def test_malformed_bodies_are_named(body, status, words):
    s, message = error_of(split_body, body, None)
    assert s == status and words in message


@pytest.mark.parametrize("req, words", [
    ({"inputs": []}, "non-empty list"),
    ({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "BYTES"),
    ({"inputs": [{"name": "input", "shape": [1], "datatype": "BOOL", "data": [True]}]}, "BOOL"),
    ({"inputs": [{"name": "input", "shape": [1], "datatype": "FP128", "data": [1]}]},
     "unknown datatype"),
    (request([1, 2, 3], [2, 2]), "needs 4 values"),
    (request([[1, 2], [3, 4]], [1, 4]), "nested 'data' has shape [2, 2]"),
    (request(["1", "2"], [2]), "must be numbers"),
    (request([1, None], [2]), "must be numbers"),
    (request([1, 2], [-1, 2]), "non-negative integers"),
    (request([300], [1], "UINT8"), "whole numbers in [0, 255]"),
    (request([1.5], [1], "INT32"), "whole numbers"),
    ({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]}, "no 'data'"),
    ({**request([1], [1]), "outputs": [{"parameters": {}}]}, "'name'"),
])
def test_bad_tensors_are_400_and_named(req, words):
    status, message = error_of(parse_infer_request, req)
    assert status == 400 and words in message, message


def test_binary_sizes_must_add_up():
    a = np.zeros(4, "<f4").tobytes()
    header = {"inputs": [{"name": "input", "shape": [4], "datatype": "FP32",
                          "parameters": {"binary_data_size": 16}}]}
    head = json.dumps(header).encode()
    assert "left over" in error_of(parse_infer_request, header, a + b"xx")[1]
    assert "runs past the end" in error_of(parse_infer_request, header, a[:8])[1]
    header["inputs"][0]["parameters"]["binary_data_size"] = 12
    assert "needs 16 bytes" in error_of(parse_infer_request, header, a)[1]
    assert "Inference-Header-Content-Length is 999" in error_of(split_body, head + a, "999")[1]
    assert "whole number" in error_of(split_body, head + a, "ten")[1]


def test_json_response_and_binary_response():
    P = np.array([[0.25, 0.75]], np.float32)
    label = np.array([1], np.int64)
    body, headers = encode_infer_response("m", "1", "req-1",
                                          [("probabilities", P, False), ("label", label, False)])
    out = json.loads(body)
    assert headers["content-type"] == "application/json" and out["id"] == "req-1"
    assert out["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [1, 2],
                                 "data": [0.25, 0.75]}
    body, headers = encode_infer_response("m", "1", None,
                                          [("probabilities", P, True), ("label", label, False)])
    n = int(headers["inference-header-content-length"])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 8
    np.testing.assert_array_equal(np.frombuffer(body[n:], "<f4"), P.ravel())
    assert head["outputs"][1]["data"] == [1]


def test_output_choice_per_output_or_per_request():
    req = parse_infer_request({**request([1], [1]), "parameters": {"binary_data_output": True},
                               "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                                           {"name": "probabilities"}]})
    assert req.wants_binary("probabilities") and not req.wants_binary("label")


def test_compressed_bodies_and_bombs():
    raw = json.dumps(request([1, 2], [2])).encode()
    assert decompress(gzip.compress(raw), "gzip", 1000) == raw
    assert decompress(zlib.compress(raw), "deflate", 1000) == raw
    bomb = gzip.compress(b"0" * (50 << 20))  # 50 MiB of zeros in about 50 KiB
    assert len(bomb) < 100_000
    assert error_of(decompress, bomb, "gzip", 1 << 20)[0] == 413
    assert error_of(decompress, b"not gzip", "gzip", 1000)[0] == 400
    assert error_of(decompress, raw, "br", 1000)[0] == 415
    assert error_of(decompress, gzip.compress(raw)[:-12], "gzip", 1000)[0] == 400


def test_nan_in_json_is_read_for_the_tensor_checks_to_name():
    header, _ = split_body(b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", '
                           b'"data": [1, NaN]}]}', None)
    x = parse_infer_request(header).inputs[0].data
    assert np.isnan(x[1])


@pytest.mark.parametrize("data, shape", [
    ([1.0, True, 0.5], [3]),
    ([[1, 2], [False, 3]], [2, 2]),
    ([[[0.5, 1.5]], [[True, 0.0]]], [2, 1, 2]),
    (True, [1]),
])
def test_json_true_and_false_are_not_numbers(data, shape):
    status, message = error_of(parse_infer_request, request(data, shape))
    assert status == 400 and ("true or false" in message or "must be numbers" in message), \
        message
    # the app's cheap search of the body's bytes finds them, so the values are looked at
    assert protocol.may_hold_literals(json.dumps(request(data, shape)).encode())


def test_a_body_without_true_or_false_skips_the_search_and_reads_the_same():
    body = json.dumps(request([0.5, 1, 0], [3])).encode()
    assert not protocol.may_hold_literals(body)
    header, _ = split_body(body, None)
    np.testing.assert_array_equal(parse_infer_request(header, literals=False).inputs[0].data,
                                  parse_infer_request(header).inputs[0].data)


@pytest.mark.parametrize("datatype, value, limit", [("FP32", 1e39, "3.4028235e+38"),
                                                   ("FP16", 70000.0, "65504")])
def test_a_number_beyond_the_datatype_is_named_out_of_range(datatype, value, limit):
    status, message = error_of(parse_infer_request, request([1.0, -value], [2], datatype))
    assert status == 400, message
    assert f"out of the {datatype} range" in message and limit in message
    assert "(value 1 of 'data')" in message and "NaN" not in message
    # FP64 holds it; NaN and infinity themselves are left for the model's checks to name
    assert parse_infer_request(request([1.0, -value], [2], "FP64")).inputs[0].data[1] == -value


@pytest.mark.parametrize("extra, holds", [
    ({}, False),
    ({"id": "parallel-world"}, False),  # the letters r and l alone: the words are looked for
    ({"id": "true"}, True),  # the search is of bytes: a word in a string counts
    ({"parameters": {"binary_data_output": False}}, True),
])
def test_the_search_for_true_and_false_finds_each_word(extra, holds):
    body = json.dumps({**request([0.5, 1, 0], [3]), **extra}).encode()
    assert protocol.may_hold_literals(body) is holds


@pytest.mark.parametrize("datatype", ["FP16", "FP32"])
def test_the_largest_finite_value_of_a_datatype_is_accepted(datatype):
    largest = float(np.finfo(protocol.DATATYPES[datatype]).max)
    data = parse_infer_request(request([-largest, 0.5, largest], [3], datatype)).inputs[0].data
    assert data.dtype == protocol.DATATYPES[datatype]
    np.testing.assert_array_equal(data, np.array([-largest, 0.5, largest], data.dtype))


# -- the compiled reader of JSON number lists (handgrad.serve._numbers) ----------------


@pytest.fixture
def reader():
    """The compiled reader on (numba installed); each test compares it with the decoder."""
    from handgrad import _accel

    if not _accel.installed():
        pytest.skip("numba is not installed (pip install 'handgrad[accel]')")
    old = _accel.use(True)
    if protocol.numbers_reader() is None:
        _accel.use(old)
        pytest.skip("numba is installed but does not import here")
    yield
    _accel.use(old)


def decoded(body, reader_on):
    """What the request in ``body`` decodes to: ``("ok", array)`` or ``("error", status,
    message)``, with the compiled reader on or off; and whether the reader read it."""
    from handgrad import _accel

    old = _accel.use(reader_on)
    read = False
    try:
        header, binary = split_body(body, None)
        inputs = header.get("inputs")
        read = (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)
                and isinstance(inputs[0].get("data"), protocol.JSONNumbers))
        return ("ok", parse_infer_request(header, binary).inputs[0].data), read
    except ProtocolError as exc:
        return ("error", exc.status, exc.message), read
    finally:
        _accel.use(old)


def same(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return a == b
    x, y = a[1], b[1]
    return (x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
            and np.array_equal(np.signbit(x), np.signbit(y)))


def numbers_text(rng, kind):
    """A JSON list's text of 20 numbers of one kind, as clients write them."""
    if kind == "pixels":
        values = [float(v) for v in rng.integers(0, 256, 20)]
    elif kind == "integers":
        values = rng.integers(-10**6, 10**6, 20).tolist()
    elif kind == "rounded":
        values = np.round(rng.normal(0, 100, 20), int(rng.integers(0, 9))).tolist()
    elif kind == "float32":  # 17 significant digits often: beyond the reader, decoded
        values = rng.random(20).astype(np.float32).tolist()
    elif kind == "scaled":
        values = (rng.random(20) * 10.0 ** rng.integers(-30, 30, 20)).tolist()
    else:  # the edges
        values = [0, -0.0, -0, 0.0, 1e22, 1e-22, 2**53, 2**53 + 1, 5e-324, 1e23, -1e-23,
                  123.456e-20, 0.1, 0.30000000000000004, 3.4028235e38, 65504.0, 1, -1, 7, 0.5]
    seps = [b",", b", ", b" ,\n\t", b" , "]
    sep = seps[int(rng.integers(0, len(seps)))]
    text = b"[" + sep.join(json.dumps(v).encode() for v in values) + b"]"
    if rng.random() < 0.3:
        text = text.replace(b"e", b"E")
    if rng.random() < 0.3:
        text = b"[ " + text[1:-1] + b" ]"
    return text


@pytest.mark.parametrize("kind", ["pixels", "integers", "rounded", "float32", "scaled",
                                  "edges"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "FP16", "INT32", "UINT8"])
def test_the_reader_gives_what_the_decoder_gives(reader, kind, datatype):
    rng = np.random.default_rng([hash(kind) % 1000, len(datatype)])
    for _ in range(40):
        text = numbers_text(rng, kind)
        body = (b'{"inputs": [{"name": "input", "shape": [20], "datatype": "'
                + datatype.encode() + b'", "data": ' + text + b'}]}')
        want, _ = decoded(body, reader_on=False)
        got, _ = decoded(body, reader_on=True)
        assert same(got, want), (body, got, want)


def test_the_common_request_is_read_by_the_reader(reader):
    x = np.random.default_rng(1).integers(0, 256, 784).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                   "data": x.tolist()}]}).encode()
    (status, arr), read = decoded(body, reader_on=True)
    assert read and status == "ok"
    np.testing.assert_array_equal(arr, x.reshape(1, 784))
    compact = body.replace(b", ", b",").replace(b": ", b":")
    assert decoded(compact, reader_on=True)[1]


DATA = b'"data": [1, 2.5, -0, -0.0, 1e3]'
INPUT = b'{"name": "input", "shape": [5], "datatype": "FP32", ' + DATA + b'}'


@pytest.mark.parametrize("body, read", [
    (b'{"inputs": [' + INPUT + b']}', True),
    (b'{"inputs":[' + INPUT + b'],"id":"x","outputs":[{"name":"label"}]}', True),
    # escapes anywhere: decoded as ever
    (b'{"inputs": [' + INPUT + b'], "id": "a\\"b"}', False),
    (b'{"inputs": [' + INPUT.replace(b'"input"', b'"in\\u0070ut"') + b']}', False),
    # a second "data", or "data" as a string value or in a string: decoded as ever
    (b'{"inputs": [' + INPUT + b', ' + INPUT + b']}', False),
    (b'{"inputs": [' + INPUT + b'], "id": "data"}', False),
    (b'{"inputs": [' + INPUT + b'], "id": "\\"data\\": [1]"}', False),
    (b'{"id": "x\\"data\\": [1, 2]", "inputs": [{"name": "input", "shape": [1], '
     b'"datatype": "FP32", "data": [3]}]}', False),
    # "data" outside the one tensor of inputs
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}], "data": [1]}', False),
    (b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "x": {"data": [1]}}]}',
     False),
    # lists the reader declines: nested, literals, null, strings, NaN, signs, big numbers
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [[1], [2]]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, true]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, null]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, "2"]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, NaN]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", '
     b'"data": [1, -Infinity]}]}', False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, +2]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, 02]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, 2.]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, .2]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, 2,]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1 2]}]}',
     False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", '
     b'"data": [1, 18446744073709551616]}]}', False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "INT64", '
     b'"data": [1, 9007199254740993]}]}', False),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "FP32", "data": [1, 1e39]}]}',
     False),
    # read, then refused exactly as the decoder refuses
    (b'{"inputs": [{"name": "input", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}',
     True),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "INT8", "data": [1, 200]}]}',
     True),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "UINT8", "data": [1, 2.5]}]}',
     True),
    (b'{"inputs": [{"name": "input", "shape": [0], "datatype": "FP32", "data": [ ]}]}', True),
    (b'{"inputs": [{"name": "input", "shape": [2], "datatype": "BOOL", "data": [1, 0]}]}',
     True),
    (b'{"inputs": [{"name": 7, "shape": [2], "datatype": "FP32", "data": [1, 0]}]}', True),
    # broken JSON around a good list: refused with the decoder's message
    (b'{"inputs": [' + INPUT + b']', False),
    (b'{"inputs": [' + INPUT + b']}}', False),
    (b'{"inputs": [{"name": "input", "shape": [5], "datatype": "FP32", "data" ' + DATA[7:]
     + b'}]}', False),
    (b'[{"data": [1]}]', False),
])
def test_the_reader_reads_only_what_it_can_and_the_answer_is_the_decoders(reader, body, read):
    want, _ = decoded(body, reader_on=False)
    got, was_read = decoded(body, reader_on=True)
    assert was_read is read
    assert same(got, want), (got, want)


def test_without_the_accelerator_the_decoder_reads_everything(reader):
    from handgrad import _accel

    _accel.use(False)
    assert protocol.numbers_reader() is None
    body = b'{"inputs": [' + INPUT + b']}'
    assert decoded(body, reader_on=False)[1] is False
