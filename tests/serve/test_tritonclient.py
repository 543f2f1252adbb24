"""tritonclient's HTTP client, unchanged, against handgrad serve: JSON and binary tensors."""

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
httpclient = pytest.importorskip("tritonclient.http",
                                 reason="tritonclient[http] is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

import handgrad  # noqa: E402
from handgrad.datasets import load_dataset  # noqa: E402


@pytest.fixture
def client(live, make_app, digits_model):
    server = live(make_app(digits_model))
    c = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


@pytest.fixture
def expected(digits_model):
    model = handgrad.load(digits_model)
    x = load_dataset("digits").x_test[:7]  # (7, 8, 8) uint8
    return x, model.predict_proba(model.prepare(x))


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
    assert client.get_server_metadata()["name"] == "handgrad"
    assert client.get_model_config("digits")["max_batch_size"] == 64
    assert client.get_model_repository_index() == [
        {"name": "digits", "version": "1", "state": "READY"}]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("dtype, name", [(np.uint8, "UINT8"), (np.float32, "FP32"),
                                         (np.float64, "FP64")])
def test_infer(client, expected, binary, dtype, name):
    x, P = expected
    inp = httpclient.InferInput("input", list(x.shape), name)
    inp.set_data_from_numpy(x.astype(dtype), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary),
               httpclient.InferRequestedOutput("label", binary_data=binary)]
    result = client.infer("digits", [inp], outputs=outputs, request_id="r-1")
    # float32 rounding: the served pass sums W Aᵀ, the library X Wᵀ (test_served's rtol)
    np.testing.assert_allclose(result.as_numpy("probabilities"), P, rtol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("label"), P.argmax(1))
    assert result.get_response()["id"] == "r-1"


def test_infer_with_defaults_and_gzip(client, expected):
    x, P = expected
    inp = httpclient.InferInput("input", [len(x), 64], "FP32")
    inp.set_data_from_numpy(x.reshape(len(x), 64).astype(np.float32))  # binary by default
    result = client.infer("digits", [inp], request_compression_algorithm="gzip")
    # float32 rounding: the served pass sums W Aᵀ, the library X Wᵀ (test_served's rtol)
    np.testing.assert_allclose(result.as_numpy("probabilities"), P, rtol=1e-5)


def test_errors_reach_the_client_as_messages(client):
    inp = httpclient.InferInput("input", [1, 5], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 5), np.float32))
    with pytest.raises(InferenceServerException, match=r"\[N, 8, 8\] or \[N, 64\]"):
        client.infer("digits", [inp])
    with pytest.raises(InferenceServerException, match="no model named 'mnist'"):
        client.get_model_metadata("mnist")
