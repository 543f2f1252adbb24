"""The app over real HTTP on 127.0.0.1: the protocol, operations endpoints and the page's API."""

import base64
import hashlib
import json
import logging
import threading

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")

import handgrad  # noqa: E402
from handgrad.datasets import load_dataset  # noqa: E402

# The served forward multiplies W @ Aᵀ (faster for small batches) where the library multiplies
# X @ Wᵀ: the same float32 products summed in another order by whichever BLAS kernel the CPU
# gets, so probabilities agree to a few float32 ulps (ε ≈ 1.2e-7, widened by the softmax).
FP32_RTOL = 1e-5


@pytest.fixture
def digits_server(live, make_app, digits_model):
    return live(make_app(digits_model))


def infer(url, name, data, shape, datatype="FP32", **extra):
    body = {"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                        "data": np.asarray(data).ravel().tolist()}], **extra}
    return httpx.post(f"{url}/v2/models/{name}/infer", json=body)


def test_health_metadata_and_readiness(digits_server):
    url = digits_server.url
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    server = httpx.get(f"{url}/v2").json()
    assert server["name"] == "handgrad" and "binary_tensor_data" in server["extensions"]
    meta = httpx.get(f"{url}/v2/models/digits").json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                               {"name": "label", "datatype": "INT64", "shape": [-1]}]
    assert httpx.get(f"{url}/v2/models/digits/versions/1").json() == meta
    assert httpx.get(f"{url}/v2/models/digits/ready").json()["ready"] is True
    config = httpx.get(f"{url}/v2/models/digits/config").json()
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [8, 8]


def test_a_multilabel_estimator_is_served_with_its_predict(live, make_app, tmp_path):
    """``handgrad.save`` of a multilabel MLPClassifier, served: the label output is the
    estimator's predict (an indicator row per example, BOOL [N, M])."""
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 4)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)
    clf = handgrad.MLPClassifier(solver="lbfgs", random_state=0, max_iter=300).fit(X, Y)
    handgrad.save(clf, tmp_path / "tags.safetensors")
    server = live(make_app(tmp_path / "tags.safetensors"))
    meta = httpx.get(f"{server.url}/v2/models/tags").json()
    assert meta["outputs"][1] == {"name": "label", "datatype": "BOOL", "shape": [-1, 2]}
    r = infer(server.url, "tags", X[:6], [6, 4], "FP32")
    assert r.status_code == 200, r.text
    label = r.json()["outputs"][1]
    assert label["datatype"] == "BOOL" and label["shape"] == [6, 2]
    assert label["data"] == clf.predict(X[:6]).astype(bool).ravel().tolist()


def test_infer_matches_the_library_for_every_input_form(digits_server, digits_model):
    model = handgrad.load(digits_model)
    x = load_dataset("digits").x_test[:5]  # (5, 8, 8) uint8, 0–16
    expected = model.predict_proba(model.prepare(x))
    url = digits_server.url
    for data, shape, datatype in [(x, [5, 8, 8], "UINT8"), (x, [5, 64], "FP32"),
                                  (x.astype(np.float64), [5, 8, 8], "FP64"),
                                  (x, [5, 8, 8], "INT64")]:
        r = infer(url, "digits", data, shape, datatype, id="abc")
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == "digits" and out["id"] == "abc"
        probs, labels = out["outputs"]
        assert probs["shape"] == [5, 10] and labels["shape"] == [5]
        np.testing.assert_allclose(np.array(probs["data"]).reshape(5, 10), expected,
                                   rtol=FP32_RTOL)
        assert labels["data"] == expected.argmax(1).tolist()


def test_binary_request_and_response(digits_server, digits_model):
    model = handgrad.load(digits_model)
    x = load_dataset("digits").x_test[:3].astype(np.float32)
    header = {"inputs": [{"name": "input", "shape": [3, 8, 8], "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "label", "parameters": {"binary_data": True}},
                          {"name": "probabilities", "parameters": {"binary_data": True}}]}
    head = json.dumps(header).encode()
    r = httpx.post(f"{digits_server.url}/v2/models/digits/infer", content=head + x.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(head)),
                            "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    out = json.loads(r.content[:n])
    assert [o["name"] for o in out["outputs"]] == ["label", "probabilities"]
    labels = np.frombuffer(r.content[n:n + 24], "<i8")
    P = np.frombuffer(r.content[n + 24:], "<f4").reshape(3, 10)
    np.testing.assert_allclose(P, model.predict_proba(model.prepare(x)), rtol=FP32_RTOL)
    np.testing.assert_array_equal(labels, P.argmax(1))


def test_concurrent_requests_are_batched(live, make_app, digits_model):
    server = live(make_app(digits_model, batch_delay=0.05))
    x = load_dataset("digits").x_test[:1]
    results = []

    def one():
        with httpx.Client() as c:
            results.append(c.post(f"{server.url}/v2/models/digits/infer", json={"inputs": [
                {"name": "input", "shape": [1, 8, 8], "datatype": "UINT8",
                 "data": x.ravel().tolist()}]}).status_code)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 16
    metrics = httpx.get(f"{server.url}/metrics").text
    count = _sample(metrics, 'handgrad_batch_size_count{model="digits"}')
    total = _sample(metrics, 'handgrad_batch_size_sum{model="digits"}')
    assert total == 16 and count < 16  # 16 rows in fewer passes than requests


def _sample(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def test_metrics_parse_as_prometheus_and_count_what_happened(digits_server):
    from prometheus_client.parser import text_string_to_metric_families

    url = digits_server.url
    infer(url, "digits", np.zeros(64), [1, 64])
    infer(url, "nope", np.zeros(64), [1, 64])
    r = httpx.get(f"{url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("handgrad_requests", "handgrad_request_errors",
                 "handgrad_request_duration_seconds", "handgrad_batch_size",
                 "handgrad_requests_in_flight", "handgrad_visitor_copies"):
        assert name in families, name
    req = {(s.labels["route"], s.labels["status"]): s.value
           for s in families["handgrad_requests"].samples if s.name.endswith("_total")}
    assert req[("/v2/models/{name}/infer", "200")] == 1
    assert req[("/v2/models/{name}/infer", "404")] == 1
    # hostile model names do not become label values
    assert not any("nope" in line for line in r.text.splitlines())


def test_openapi_document_is_valid_and_covers_every_route(digits_server):
    from openapi_spec_validator import validate

    doc = httpx.get(f"{digits_server.url}/openapi.json").json()
    validate(doc)
    routes = {r.path for r in digits_server.app.server.routes() if hasattr(r, "methods")}
    routes.add("/static/{path}")
    assert routes == set(doc["paths"])


def test_access_log_is_one_json_object_per_request(digits_server, caplog):
    with caplog.at_level(logging.INFO, logger="handgrad.serve.access"):
        httpx.get(f"{digits_server.url}/v2/health/live", headers={"x-request-id": "probe-1"})
        infer(digits_server.url, "digits", [1, 2], [1, 2])
    records = [json.loads(r.getMessage()) for r in caplog.records
               if r.name == "handgrad.serve.access"]
    assert [r["status"] for r in records] == [200, 400]
    first = records[0]
    assert first["request_id"] == "probe-1" and first["path"] == "/v2/health/live"
    assert first["client"].startswith("127.0.0.1:") and first["duration_ms"] >= 0
    assert records[1]["route"] == "/v2/models/{name}/infer"


def drawing_of_a_seven(side=140):
    """A 7 drawn as two thick white strokes on black, as the page sends it."""
    img = np.zeros((side, side), np.uint8)
    ys, xs = np.mgrid[0:side, 0:side]

    def stroke(p, q, width):
        p, q = np.array(p, float), np.array(q, float)
        d = q - p
        t = np.clip(((ys - p[1]) * d[1] + (xs - p[0]) * d[0]) / (d @ d), 0, 1)
        dist = np.hypot(ys - (p[1] + t * d[1]), xs - (p[0] + t * d[0]))
        img[dist <= width / 2] = 255

    stroke((35, 30), (105, 30), 12)
    stroke((105, 30), (60, 118), 12)
    return {"pixels": base64.b64encode(img.tobytes()).decode(), "width": side, "height": side}


def test_page_look_learn_reset_on_a_visitor_copy(live, make_app, mnist_model):
    digest = hashlib.sha256(mnist_model.read_bytes()).hexdigest()
    server = live(make_app(mnist_model))
    url = server.url
    with httpx.Client(base_url=url) as visitor, httpx.Client(base_url=url) as other:
        info = visitor.get("/api/models").json()
        assert info["models"][0]["image"] and info["models"][0]["example_shape"] == [28, 28]
        seven = drawing_of_a_seven()
        look = visitor.post("/api/models/mnist/look", json=seven).json()
        assert len(look["probabilities"]) == 10 and abs(sum(look["probabilities"]) - 1) < 1e-4
        assert np.array(look["input"]).shape == (28, 28)
        assert look["hidden"][0]["units"] == 64 and len(look["hidden"][0]["values"]) == 64
        assert np.array(look["units"][0]["weights"]).shape == (28, 28)
        acts = [u["activation"] for u in look["units"]]
        assert acts == sorted(acts, reverse=True)
        served_before = infer(url, "mnist", np.zeros((1, 784)), [1, 784]).json()
        label = int(np.argsort(look["probabilities"])[-2])  # not the predicted class
        p = look["probabilities"][label]
        for step in range(1, 4):
            r = visitor.post("/api/models/mnist/learn", json={**seven, "label": label, "lr": 0.005})
            assert r.status_code == 200, r.text
            learned = r.json()
            assert learned["steps"] == step and learned["loss_after"] < learned["loss_before"]
            assert learned["probabilities"][label] > p
            p = learned["probabilities"][label]
        assert "handgrad_visitor" in visitor.cookies
        # the visitor sees their copy; another visitor and the protocol see the served model
        assert visitor.post("/api/models/mnist/look", json=seven).json()["steps"] == 3
        fresh = other.post("/api/models/mnist/look", json=seven).json()
        assert fresh["steps"] == 0 and fresh["probabilities"] == look["probabilities"]
        assert infer(url, "mnist", np.zeros((1, 784)), [1, 784]).json() == served_before
        assert visitor.post("/api/models/mnist/reset").json()["reset"] is True
        again = visitor.post("/api/models/mnist/look", json=seven).json()
        assert again["steps"] == 0 and again["probabilities"] == look["probabilities"]
    assert hashlib.sha256(mnist_model.read_bytes()).hexdigest() == digest


def test_page_serves_its_assets_from_the_package(digits_server):
    url = digits_server.url
    html = httpx.get(url + "/").text
    for element in ('id="pad"', 'id="clear"', 'id="prediction"', 'id="probabilities"'):
        assert element in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        r = httpx.get(url + asset)
        assert r.status_code == 200 and "https://" not in r.text


def test_blas_threads_are_limited_while_serving_and_restored_after(live, make_app, digits_model):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    server = live(make_app(digits_model, blas_threads=1))
    assert blas_threads() == [1] * len(before)
    server.stop()
    assert blas_threads() == before


@pytest.mark.parametrize("settings, words", [
    ({"blas_threads": 0}, "blas_threads"), ({"max_batch_size": 0}, "max_batch_size"),
    ({"request_timeout": 0}, "request_timeout"), ({"page_lr": 20}, "page_lr"),
    ({"max_queue": 2}, "max_queue=2 must be at least max_batch_size=64"),
])
def test_serve_config_names_bad_settings(settings, words):
    from handgrad.serve import ServeConfig

    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ServeConfig(**settings)


def test_the_guards_direct_inference_path_answers_as_the_router_does(live, make_app, digits_model):
    """POST on an infer path skips Starlette's router (Guard → Server.infer_direct); every
    answer, errors included, is the one the routed endpoint gives."""
    direct_app = make_app(digits_model)
    calls = []
    infer_direct = direct_app.direct.infer_direct

    async def counted(*args):
        calls.append(args[0]["path"])
        return await infer_direct(*args)

    direct_app.direct.infer_direct = counted
    direct = live(direct_app)
    app = make_app(digits_model)
    app.direct = None  # every request through Starlette's router and middleware
    routed = live(app)
    x = load_dataset("digits").x_test[:2].astype(np.float32)
    good = {"inputs": [{"name": "input", "shape": [2, 8, 8], "datatype": "FP32",
                        "data": x.ravel().tolist()}], "id": "r-1"}
    head = json.dumps({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    binary = {"content": head + x.tobytes(),
              "headers": {"Inference-Header-Content-Length": str(len(head))}}
    nan = {"inputs": [{**good["inputs"][0], "data": [float("nan")] * 128}]}
    cases = [("/v2/models/digits/infer", {"json": good}),
             ("/v2/models/digits/versions/1/infer", {"json": good}),
             ("/v2/models/digits/infer", binary),
             ("/v2/models/digits/infer", {"content": b'{"inputs": [', "headers": {}}),
             ("/v2/models/digits/infer", {"content": json.dumps(nan)}),
             ("/v2/models/digits/infer", {"json": {"inputs": [{**good["inputs"][0],
                                                               "shape": [2, 7]}]}}),
             ("/v2/models/nope/infer", {"json": good}),
             ("/v2/models/digits/versions/7/infer", {"json": good})]
    statuses = []
    for path, kwargs in cases:
        a = httpx.post(direct.url + path, **kwargs)
        b = httpx.post(routed.url + path, **kwargs)
        assert (a.status_code, a.headers["content-type"], a.content) == \
               (b.status_code, b.headers["content-type"], b.content), path
        statuses.append(a.status_code)
        if a.status_code == 200 and "binary_data_output" not in str(kwargs):
            out = a.json()["outputs"]
            np.testing.assert_allclose(np.array(out[0]["data"]).reshape(2, 10),
                                       handgrad.load(digits_model).predict_proba(
                                           handgrad.load(digits_model).prepare(x)), rtol=1e-5)
    assert statuses == [200, 200, 200, 400, 422, 400, 404, 404]
    assert calls == [path for path, _ in cases]  # each took the direct path
    metrics = httpx.get(f"{direct.url}/metrics").text
    assert ('handgrad_requests_total{method="POST",route="/v2/models/{name}/versions/{version}'
            '/infer",status="200"} 1.0') in metrics
    assert httpx.get(f"{direct.url}/v2/models/digits/infer").status_code == 405  # routed


def test_a_large_request_is_decoded_off_the_event_loop_and_answered(digits_server, digits_model):
    from handgrad.serve.app import OFFLOAD_BYTES

    model = handgrad.load(digits_model)
    x = np.tile(load_dataset("digits").x_test[:10].astype(np.float32), (100, 1, 1))  # (1000, 8, 8)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1000, 64], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    assert len(body) > OFFLOAD_BYTES
    r = httpx.post(f"{digits_server.url}/v2/models/digits/infer", content=body)
    assert r.status_code == 200, r.text
    P = np.array(r.json()["outputs"][0]["data"]).reshape(1000, 10)
    np.testing.assert_allclose(P, model.predict_proba(model.prepare(x)), rtol=1e-5)
    bad = body.replace(b"]}]}", b', "x"]}]}')  # one string among the numbers: 400
    r = httpx.post(f"{digits_server.url}/v2/models/digits/infer", content=bad)
    assert r.status_code == 400 and "'data' must be numbers" in r.json()["error"]
