"""Hostile requests: every safety limit of ``handgrad serve`` answers with a JSON error
that names the problem, never a stack trace, and the server keeps serving."""

import base64
import gzip
import json
import socket
import threading
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")

from handgrad.serve import page  # noqa: E402


def body(data, shape, datatype="FP32", name="input"):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def assert_error(r, status, *words):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    payload = r.json()
    assert list(payload) == ["error"] and isinstance(payload["error"], str)
    for w in words:
        assert w in payload["error"], payload["error"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return payload["error"]


@pytest.fixture
def server(live, make_app, digits_model):
    return live(make_app(digits_model, max_body_bytes=64 << 10))


def still_serves(url):
    ok = httpx.post(f"{url}/v2/models/digits/infer", json=body([0] * 64, [1, 64]))
    assert ok.status_code == 200


def test_malformed_json(server):
    url = f"{server.url}/v2/models/digits/infer"
    assert_error(httpx.post(url, content=b'{"inputs": [}'), 400, "not valid JSON", "line 1")
    assert_error(httpx.post(url, content=b"[" * 50_000), 400, "JSON")
    assert_error(httpx.post(url, content=b""), 400, "empty")
    assert_error(httpx.post(url, json={"inputs": "x"}), 400, "'inputs'")
    still_serves(server.url)


def test_wrong_datatype(server):
    url = f"{server.url}/v2/models/digits/infer"
    assert_error(httpx.post(url, json=body(["a"] * 64, [1, 64], "BYTES")), 400, "BYTES")
    assert_error(httpx.post(url, json=body([1] * 64, [1, 64], "FLOAT")), 400, "unknown datatype")
    assert_error(httpx.post(url, json=body([-1] * 64, [1, 64], "UINT8")), 400, "UINT8")
    assert_error(httpx.post(url, json=body(["x"] * 64, [1, 64])), 400, "must be numbers")


def test_wrong_shape(server):
    url = f"{server.url}/v2/models/digits/infer"
    assert_error(httpx.post(url, json=body([0] * 784, [1, 28, 28])), 400, "[1, 28, 28]",
                 "[N, 8, 8]", "[N, 64]")
    assert_error(httpx.post(url, json=body([0] * 64, [64])), 400, "shape [64]")
    assert_error(httpx.post(url, json=body([0] * 63, [1, 64])), 400, "needs 64 values")
    assert_error(httpx.post(url, json=body([], [0, 64])), 400, "no examples")


def test_nan_and_infinity(server):
    url = f"{server.url}/v2/models/digits/infer"
    raw = json.dumps(body([0] * 64, [1, 64])).replace("0]", "NaN]", 1).encode()
    assert_error(httpx.post(url, content=raw), 422, "NaN or infinity", "example 0")
    x = np.zeros((2, 64), "<f4")
    x[1, 5] = np.inf
    header = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}]}
    head = json.dumps(header).encode()
    r = httpx.post(url, content=head + x.tobytes(),
                   headers={"inference-header-content-length": str(len(head))})
    assert_error(r, 422, "example 1, position [5]")
    assert_error(httpx.post(url, json=body([1e300] * 64, [1, 64], "FP64")), 422,
                 "too large for float32")
    # a finite number FP32 cannot hold is out of range, not NaN or infinity
    message = assert_error(httpx.post(url, json=body([0] * 63 + [1e39], [1, 64])), 400,
                           "out of the FP32 range", "1e+39")
    assert "NaN" not in message
    # JSON true/false are not numbers, even among numbers
    assert_error(httpx.post(url, json=body([0] * 63 + [True], [1, 64])), 400, "true or false")
    still_serves(server.url)


def test_unknown_model_version_input_and_output(server):
    base = server.url
    assert_error(httpx.post(f"{base}/v2/models/mnist/infer", json=body([0] * 64, [1, 64])),
                 404, "no model named 'mnist'", "'digits'")
    assert_error(httpx.get(f"{base}/v2/models/mnist"), 404, "'mnist'")
    assert_error(httpx.get(f"{base}/v2/models/digits/versions/7"), 404, "no version '7'")
    assert_error(httpx.post(f"{base}/v2/models/digits/infer",
                            json=body([0] * 64, [1, 64], name="pixels")), 400,
                 "no input 'pixels'", "'input'")
    # the name is the first thing wrong, whatever its data: named before the data's count
    assert_error(httpx.post(f"{base}/v2/models/digits/infer",
                            json=body([0], [1, 784], name="image")), 400,
                 "no input 'image'", "'input'")
    assert_error(httpx.post(f"{base}/v2/models/digits/infer",
                            json=body(["x"], [1, 64], "BYTES", name="image")), 400,
                 "no input 'image'")
    r = httpx.post(f"{base}/v2/models/digits/infer",
                   json={**body([0] * 64, [1, 64]), "outputs": [{"name": "logits"}]})
    assert_error(r, 400, "no output 'logits'")
    assert_error(httpx.get(f"{base}/v3/anything"), 404, "no such endpoint")
    assert_error(httpx.delete(f"{base}/v2/models/digits/infer"), 405, "DELETE")


def test_body_limit(server):
    url = f"{server.url}/v2/models/digits/infer"
    big = b'{"inputs": [' + b" " * (100 << 10) + b"]}"
    assert_error(httpx.post(url, content=big), 413, "limit is 65,536")

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b" " * 1024

    assert_error(httpx.post(url, content=chunks()), 413, "over the limit")
    bomb = gzip.compress(json.dumps(body([0] * 64, [1, 64])).encode() + b" " * (10 << 20))
    assert len(bomb) < 64 << 10
    assert_error(httpx.post(url, content=bomb, headers={"content-encoding": "gzip"}), 413,
                 "expands beyond")
    assert_error(httpx.post(url, content=b"{}", headers={"content-encoding": "br"}), 415, "br")
    still_serves(server.url)


def test_per_request_timeout(live, make_app, digits_model):
    # a batch that waits 2 s for company outlives a 0.3 s limit
    server = live(make_app(digits_model, batch_delay=2.0, request_timeout=0.3))
    start = time.monotonic()
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=body([0] * 64, [1, 64]))
    assert_error(r, 504, "longer than the limit of 0.3 s")
    assert time.monotonic() - start < 1.5
    # a body that trickles in slower than the limit is cut off too
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        s.settimeout(5)
        reply = s.recv(4096)
    assert b" 504 " in reply.split(b"\r\n")[0] and b"longer than the limit" in reply


def test_concurrency_limit_answers_503_and_probes_still_answer(live, make_app, digits_model):
    server = live(make_app(digits_model, max_concurrency=2, batch_delay=1.0))
    statuses = []

    def one():
        statuses.append(httpx.post(f"{server.url}/v2/models/digits/infer",
                                   json=body([0] * 64, [1, 64]), timeout=10).status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # two requests wait in the batch; the other four were refused
    live_probe = httpx.get(f"{server.url}/v2/health/live")
    waiting = httpx.get(f"{server.url}/metrics").text  # read as the scrape is answered
    refused = httpx.post(f"{server.url}/v2/models/digits/infer", json=body([0] * 64, [1, 64]))
    for t in threads:
        t.join()
    assert "handgrad_requests_in_flight 3.0" in waiting  # the two in the batch and the scrape
    assert 'handgrad_queue_rows{model="digits"} 2.0' in waiting
    assert live_probe.status_code == 200
    assert_error(refused, 503, "limit of 2 requests")
    assert refused.headers["retry-after"] == "1"
    assert sorted(statuses) == [200, 200, 503, 503, 503, 503]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'handgrad_requests_rejected_total{reason="concurrency"} 5.0' in metrics
    still_serves(server.url)


def test_queue_bound_answers_503(live, make_app, digits_model):
    # batches of 8 rows wait 1 s for company; requests of 3 rows: two fit the queue of 8
    server = live(make_app(digits_model, max_batch_size=8, max_queue=8, batch_delay=1.0))
    statuses = []

    def one():
        statuses.append(httpx.post(f"{server.url}/v2/models/digits/infer",
                                   json=body([0] * 192, [3, 64]), timeout=10))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in statuses) == [200, 200, 503, 503]
    assert_error(next(r for r in statuses if r.status_code == 503), 503, "queue of 8")


def seven():
    img = np.zeros((28, 28), np.uint8)
    img[4:7, 6:22] = 255
    for i in range(18):
        img[6 + i, 20 - i // 2:23 - i // 2] = 255
    return {"pixels": base64.b64encode(img.tobytes()).decode(), "width": 28, "height": 28}


def test_visitor_copies_are_bounded_and_expire(live, make_app, digits_model):
    app = make_app(digits_model, max_visitors=2, visitor_ttl=1.0)
    now = [1000.0]  # the copies' clock, moved by the test: a slow machine expires nothing early
    app.server.visitors.clock = lambda: now[0]
    server = live(app)
    visitors = [httpx.Client(base_url=server.url) for _ in range(3)]
    try:
        for v in visitors:
            r = v.post("/api/models/digits/learn", json={**seven(), "label": 3})
            assert r.status_code == 200 and r.json()["steps"] == 1
        steps = [v.post("/api/models/digits/look", json=seven()).json()["steps"]
                 for v in visitors]
        assert steps == [0, 1, 1]  # the least recently used copy made room
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "handgrad_visitor_copies 2.0" in metrics
        now[0] += 1.3  # past the 1 s time to live
        assert visitors[2].post("/api/models/digits/look", json=seven()).json()["steps"] == 0
        deadline = time.monotonic() + 10  # a loaded machine may be slow to answer
        while ("handgrad_visitor_copies 0.0" not in httpx.get(f"{server.url}/metrics").text
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert "handgrad_visitor_copies 0.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        for v in visitors:
            v.close()


def test_no_visitor_copies_at_all(live, make_app, digits_model):
    server = live(make_app(digits_model, max_visitors=0))
    r = httpx.post(f"{server.url}/api/models/digits/learn", json={**seven(), "label": 3})
    assert_error(r, 503, "max_visitors is 0")


def test_bad_page_requests(server):
    url = f"{server.url}/api/models/digits"
    good = seven()
    assert_error(httpx.post(f"{url}/look", json={**good, "width": 5000}), 400, "8 to 1024")
    assert_error(httpx.post(f"{url}/look", json={**good, "pixels": "***"}), 400, "base64")
    assert_error(httpx.post(f"{url}/look", json={**good, "width": 27}), 400, "holds 784 bytes")
    blank = {**good, "pixels": base64.b64encode(bytes(784)).decode()}
    assert_error(httpx.post(f"{url}/look", json=blank), 422, "blank")
    assert_error(httpx.post(f"{url}/learn", json={**good, "label": 10}), 400, "0 to 9")
    assert_error(httpx.post(f"{url}/learn", json={**good, "label": 3, "lr": -1}), 400, "'lr'")
    assert_error(httpx.post(f"{url}/learn", json={**good, "label": 3, "lr": 1e9}), 400, "'lr'")
    # an empty learning-rate box arrives as null: said so, not as the string 'None'
    message = assert_error(httpx.post(f"{url}/learn", json={**good, "label": 3, "lr": None}),
                           400, "'lr' must be a number", "got null")
    assert "None" not in message
    assert_error(httpx.post(f"{url}/look", content=b"nope"), 400, "not valid JSON")


def test_an_internal_error_is_json_without_a_trace(server, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(page, "look", broken)
    r = httpx.post(f"{server.url}/api/models/digits/look", json=seven(),
                   headers={"x-request-id": "bad-1"})
    message = assert_error(r, 500, "internal error", "bad-1")
    assert "secret" not in message
    assert any("secret internals" in (rec.exc_text or "") for rec in caplog.records)
    still_serves(server.url)


def test_static_files_stay_inside_the_package(server):
    for path in ("/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/server.py",
                 "/static/../../serialization.py"):
        r = httpx.get(server.url + path)
        assert r.status_code == 404, path
        assert "import" not in r.text


def test_an_internal_error_while_inferring_is_json_without_a_trace(server, monkeypatch, caplog):
    from handgrad.serve.served import ServedModel

    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ServedModel, "outputs", broken)
    r = httpx.post(f"{server.url}/v2/models/digits/infer", json=body([0] * 64, [1, 64]),
                   headers={"x-request-id": "bad-2"})
    message = assert_error(r, 500, "internal error", "bad-2")
    assert "secret" not in message
    assert any("secret internals" in (rec.exc_text or "") for rec in caplog.records)
    monkeypatch.undo()
    still_serves(server.url)
