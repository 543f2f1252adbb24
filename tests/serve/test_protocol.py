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
