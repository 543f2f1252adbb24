"""ServedModel: the served forward pass (transposed, for small batches) and the rows it takes."""

import json

import numpy as np
import pytest

import handgrad
from handgrad.datasets import Preprocessor
from handgrad.serve.protocol import parse_infer_request
from handgrad.serve.served import ServedModel


def image_model(dtype="float32", activation="relu", output="softmax", hidden=(12, 9)):
    model = handgrad.MLP(36, hidden, 4, activation=activation, output=output, dtype=dtype,
                         seed=3)
    rng = np.random.default_rng(0)
    for name, p in model.params.items():  # non-zero biases, so F1/F3's "+ b" is exercised
        if name.startswith("b"):
            p[...] = rng.standard_normal(p.shape)
    model.preprocessor = Preprocessor("divide", scale=255.0).fit(np.zeros((1, 6, 6), np.uint8))
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("output", ["softmax", "logistic"])
def test_the_served_forward_pass_is_the_librarys(dtype, activation, output):
    model = image_model(dtype, activation, output)
    served = ServedModel("m", model)
    rng = np.random.default_rng(1)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for B in (1, 2, 5, 64):
        X = rng.integers(0, 256, (B, 36)).astype(dtype)  # raw pixels (B, D)
        P = served.predict_proba(X)  # (B, M)
        assert P.shape == (B, 4) and P.dtype == model.dtype
        assert P.flags.c_contiguous  # a request's rows are one contiguous slice
        np.testing.assert_allclose(P, model.predict_proba(model.prepare(X)), rtol=tol,
                                   atol=tol * 1e-3)
        if output == "softmax":
            np.testing.assert_allclose(P.sum(axis=1), 1, rtol=tol)


def test_the_served_forward_pass_without_hidden_layers_or_preprocessing():
    model = handgrad.MLP(5, (), 3, seed=0)  # multinomial logistic regression: F3–F4 only
    X = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    np.testing.assert_allclose(ServedModel("m", model).predict_proba(X),
                               model.predict_proba(X), rtol=1e-5)


def test_a_model_without_probabilities_is_refused_when_it_is_served():
    """From Python as from the command line: a regression model is refused up front,
    not answered with a 500 per request."""
    model = handgrad.MLP(4, 3, 2, output="identity", seed=0)
    with pytest.raises(ValueError, match="output is 'identity' .*cannot be served"):
        ServedModel("m", model)


def test_a_binary_classifier_is_served_with_its_two_classes():
    """A binary MLPClassifier has one logistic output, the probability of its second
    class: the served label is the class the estimator predicts (not the argmax of one
    column, always 0), and the metadata names both classes."""
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from handgrad import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    clf = MLPClassifier(solver="lbfgs", random_state=0).fit(X, y)
    served = ServedModel("m", clf.to_mlp())
    assert served.classes == ["no", "yes"]
    assert served.metadata()["parameters"]["classes"] == ["no", "yes"]
    P = served.predict_proba(X)
    req = request(X.ravel().tolist(), [80, 3], "FP64")
    outputs = dict((name, arr) for name, arr, _ in served.outputs(req, P))
    labels = np.array(served.classes)[outputs["label"]]
    assert (labels == clf.predict(X)).all()
    assert 0 < (labels == "yes").mean() < 1  # both classes are predicted


def test_a_multilabel_classifier_is_served_with_its_label_indicator():
    """A multilabel MLPClassifier has one logistic output per label: the served label is
    its predict's indicator row (a label on where its probability exceeds ½), BOOL
    [N, M], in the metadata, the configuration and the JSON and binary responses."""
    pytest.importorskip("sklearn")
    from handgrad import MLPClassifier
    from handgrad.serve.protocol import encode_infer_response

    rng = np.random.default_rng(1)
    X = rng.standard_normal((120, 4))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0.5], axis=1).astype(int)
    clf = MLPClassifier(solver="lbfgs", random_state=0, max_iter=500).fit(X, Y)
    served = ServedModel("m", clf.to_mlp())
    assert served.multilabel and served.n_classes == 3
    label = served.metadata()["outputs"][1]
    assert label == {"name": "label", "datatype": "BOOL", "shape": [-1, 3]}
    assert served.config(8)["output"][1] == {"name": "label", "data_type": "TYPE_BOOL",
                                              "dims": [3]}
    P = served.predict_proba(X)
    outputs = {name: arr for name, arr, _ in served.outputs(request(X.ravel().tolist(),
                                                                    [120, 4], "FP64"), P)}
    assert outputs["label"].dtype == bool and outputs["label"].shape == (120, 3)
    np.testing.assert_array_equal(outputs["label"], clf.predict(X).astype(bool))
    assert 0 < outputs["label"].mean() < 1  # labels both on and off
    body, _ = encode_infer_response("m", "1", None, [("label", outputs["label"][:2], False)])
    tensor = json.loads(body)["outputs"][0]
    assert tensor["datatype"] == "BOOL" and tensor["shape"] == [2, 3]
    assert tensor["data"] == outputs["label"][:2].ravel().tolist()
    body, headers = encode_infer_response("m", "1", None, [("label", outputs["label"], True)])
    assert body[int(headers["inference-header-content-length"]):] == \
        outputs["label"].tobytes()  # one byte per element, as Triton's BOOL


def request(data, shape, datatype):
    return parse_infer_request({"inputs": [{"name": "input", "shape": shape,
                                            "datatype": datatype, "data": data}]})


def test_rows_are_the_request_data_in_the_models_dtype():
    served = ServedModel("m", image_model("float32"))
    fp32 = request(list(range(72)), [2, 6, 6], "FP32")
    X = served.rows(fp32)
    assert X.shape == (2, 36) and X.dtype == np.float32
    assert np.shares_memory(X, fp32.inputs[0].data)  # already float32: no copy
    X = served.rows(request(list(range(36)), [1, 36], "UINT8"))
    assert X.dtype == np.float32 and X[0, 35] == 35
    with pytest.raises(Exception, match="too large for float32"):
        served.rows(request([1e300] * 36, [1, 36], "FP64"))
