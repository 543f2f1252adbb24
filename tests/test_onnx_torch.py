"""ONNX export checked by onnx and run by onnxruntime; the PyTorch hand-off."""

import numpy as np
import pytest

import handgrad
from handgrad.datasets import Preprocessor
from handgrad.model import ACTIVATIONS


def ort_session(path_or_bytes):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("scaling", ["divide", "standardize", "none"])
def test_onnx_matches_handgrad_on_raw_inputs(tmp_path, rng, activation, scaling):
    onnx = pytest.importorskip("onnx")
    raw = rng.integers(0, 256, (50, 6, 5)).astype(np.float32)
    model = handgrad.MLP(30, (12, 7), 4, activation=activation, seed=1)
    model.preprocessor = Preprocessor(scaling).fit(raw)
    model.classes = ["a", "b", "c", "d"]
    path = handgrad.export_onnx(model, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort_session(str(path))
    for batch in (1, 50):  # the batch dimension is dynamic
        probs, labels = sess.run(["probabilities", "label"], {"input": raw[:batch]})
        expected = model.predict_proba(model.prepare(raw[:batch]))
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert '"a"' in meta["classes"]


def test_onnx_float64_model(rng):
    model = handgrad.MLP(5, 4, 3, dtype="float64", seed=0)
    X = rng.normal(size=(7, 5))
    sess = ort_session(handgrad.to_onnx_bytes(model))
    (probs,) = sess.run(["probabilities"], {"input": X})
    np.testing.assert_allclose(probs, model.predict_proba(X), rtol=1e-12)


def test_onnx_on_the_mnist_test_set(mnist_dir, monkeypatch):
    """onnxruntime's probabilities match handgrad's within 1e-5 on all 10,000 test images."""
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    from handgrad.datasets import load_mnist

    (x_train, y_train), (x_test, _) = load_mnist(download_missing=False)
    model = handgrad.MLP(784, 64, 10, seed=0)
    model.preprocessor = Preprocessor().fit(x_train[:5000])
    handgrad.fit(model, model.prepare(x_train[:5000]), y_train[:5000], epochs=2, seed=0)
    sess = ort_session(handgrad.to_onnx_bytes(model))
    probs, labels = sess.run(["probabilities", "label"], {"input": x_test.astype(np.float32)})
    expected = model.predict_proba(model.prepare(x_test))
    assert np.abs(probs - expected).max() < 1e-5
    assert (labels == expected.argmax(axis=1)).mean() > 0.999
    # and the IDX files' uint8 pixels as they are, through a uint8 graph
    sess = ort_session(handgrad.to_onnx_bytes(model, input_dtype="uint8"))
    probs, _ = sess.run(["probabilities", "label"], {"input": x_test})
    assert np.abs(probs - expected).max() < 1e-5


def test_export_command(tmp_path):
    from handgrad.cli import main

    m = handgrad.MLP(4, 3, 2, seed=0)
    handgrad.save(m, tmp_path / "m.safetensors")
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx")]) == 0
    sess = ort_session(str(tmp_path / "m.onnx"))
    X = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(sess.run(["probabilities"], {"input": X})[0],
                               m.predict_proba(X), rtol=1e-5)


def test_export_command_takes_uint8_pixels(tmp_path, capsys):
    from handgrad.cli import main
    from handgrad.datasets import Preprocessor

    pixels = np.arange(24, dtype=np.uint8).reshape(6, 4) * 10  # (N, D) raw, 0..230
    m = handgrad.MLP(4, 3, 2, seed=0)
    m.preprocessor = Preprocessor("divide").fit(pixels)
    handgrad.save(m, tmp_path / "m.safetensors")
    assert main(["export", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"),
                 "--input-dtype", "uint8"]) == 0
    assert "raw uint8 values" in capsys.readouterr().out
    sess = ort_session(str(tmp_path / "m.onnx"))
    np.testing.assert_allclose(sess.run(["probabilities"], {"input": pixels})[0],
                               m.predict_proba(m.prepare(pixels)), rtol=1e-5)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_gives_identical_outputs(rng, activation, dtype):
    torch = pytest.importorskip("torch")
    model = handgrad.MLP(9, (8, 5), 4, activation=activation, dtype=dtype, seed=2)
    net = handgrad.to_torch(model, probabilities=True)
    X = rng.normal(size=(16, 9)).astype(dtype)
    with torch.no_grad():
        probs = net(torch.from_numpy(X)).numpy()
        logits = net[:-1](torch.from_numpy(X)).numpy()
    tol = 1e-6 if dtype == "float32" else 1e-13
    np.testing.assert_allclose(logits, model.logits(X), rtol=tol, atol=tol)
    np.testing.assert_allclose(probs, model.predict_proba(X), rtol=tol, atol=tol)


@pytest.mark.parametrize("scaling", ["divide", "standardize"])
def test_onnx_graph_takes_uint8_pixels_as_images_come(tmp_path, rng, scaling):
    onnx = pytest.importorskip("onnx")
    pixels = rng.integers(0, 256, (40, 7, 6)).astype(np.uint8)
    model = handgrad.MLP(42, 10, 3, seed=0)
    model.preprocessor = Preprocessor(scaling).fit(pixels)
    path = handgrad.export_onnx(model, tmp_path / "m.onnx", input_dtype="uint8")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in proto.metadata_props}
    assert '"dtype": "uint8"' in meta["input"]
    sess = ort_session(str(path))
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    probs, labels = sess.run(["probabilities", "label"], {"input": pixels})
    expected = model.predict_proba(model.prepare(pixels))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    # the default graph keeps the model's float type for its input
    sess = ort_session(handgrad.to_onnx_bytes(model))
    assert sess.get_inputs()[0].type == "tensor(float)"
    np.testing.assert_allclose(sess.run(["probabilities"], {"input": pixels.astype(np.float32)})[0],
                               expected, rtol=1e-5, atol=1e-6)


def test_onnx_input_dtype_is_checked(rng):
    pytest.importorskip("onnx")
    model = handgrad.MLP(4, 3, 2, seed=0)
    with pytest.raises(ValueError, match="input_dtype must be one of float32, float64, uint8"):
        handgrad.to_onnx_bytes(model, input_dtype="int16")
    assert handgrad.to_onnx_bytes(model, input_dtype=np.float64)  # a NumPy dtype works too


def test_to_torch_takes_prepared_rows_while_onnx_takes_raw_pixels(rng):
    """The two hand-offs differ in what they are fed, as their documentation says."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pixels = rng.integers(0, 256, (12, 4, 4)).astype(np.uint8)
    model = handgrad.MLP(16, 6, 3, seed=0)
    model.preprocessor = Preprocessor("divide").fit(pixels)
    expected = model.predict_proba(model.prepare(pixels))
    net = handgrad.to_torch(model, probabilities=True)
    with torch.no_grad():
        via_torch = net(torch.from_numpy(model.prepare(pixels))).numpy()
    np.testing.assert_allclose(via_torch, expected, rtol=1e-6, atol=1e-7)
    sess = ort_session(handgrad.to_onnx_bytes(model, input_dtype="uint8"))
    np.testing.assert_allclose(sess.run(["probabilities"], {"input": pixels})[0], expected,
                               rtol=1e-5, atol=1e-6)
