"""A bounded load test on 127.0.0.1: 5,000 requests from 32 concurrent clients."""

import http.client
import json
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")

import handgrad  # noqa: E402
from handgrad.datasets import load_dataset  # noqa: E402

REQUESTS, CLIENTS = 5000, 32


@pytest.mark.slow
def test_5000_requests_from_32_clients_without_an_error(serve_process, digits_model):
    proc = serve_process(digits_model)
    host, port = proc.url.removeprefix("http://").split(":")
    x = load_dataset("digits").x_test[:CLIENTS]  # one example per client: (32, 8, 8)
    model = handgrad.load(digits_model)
    want = model.predict(model.prepare(x))
    bodies = [json.dumps({"inputs": [{"name": "input", "shape": [1, 8, 8], "datatype": "UINT8",
                                      "data": xi.ravel().tolist()}]}).encode() for xi in x]
    counts = [REQUESTS // CLIENTS + (i < REQUESTS % CLIENTS) for i in range(CLIENTS)]
    failures, answered = [], [0] * CLIENTS

    def client(i):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # keep-alive
        try:
            for _ in range(counts[i]):
                conn.request("POST", "/v2/models/digits/infer", bodies[i],
                             {"content-type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                label = json.loads(payload)["outputs"][1]["data"][0] if r.status == 200 else None
                if r.status != 200 or label != want[i]:
                    failures.append((r.status, payload[:200]))
                answered[i] += 1
        except Exception as exc:  # a refused or dropped connection is a failure too
            failures.append(repr(exc))
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    seconds = time.monotonic() - start
    assert failures == [] and sum(answered) == REQUESTS
    # and the server still answers, and counted every example
    assert httpx.get(f"{proc.url}/v2/health/ready").json() == {"ready": True}
    metrics = httpx.get(f"{proc.url}/metrics").text
    inferred = next(float(line.split()[-1]) for line in metrics.splitlines()
                    if line.startswith('handgrad_inferences_total{model="digits"}'))
    assert inferred == REQUESTS
    errors = [line for line in metrics.splitlines()
              if line.startswith("handgrad_request_errors_total")]
    assert errors == []
    print(f"{REQUESTS} requests from {CLIENTS} clients in {seconds:.1f} s "
          f"({REQUESTS / seconds:.0f}/s)")
