"""Model files and checkpoints: round trips, torch compatibility, damaged and hostile files."""

import json
import os
import pickle
import struct

import numpy as np
import pytest

import handgrad
from handgrad.config import TrainConfig
from handgrad.datasets import Preprocessor
from handgrad.optim import SGD, Adam
from handgrad.serialization import (
    ModelFileError,
    load,
    load_checkpoint,
    load_with_optimizer,
    save,
    save_checkpoint,
)


@pytest.fixture
def model(rng):
    m = handgrad.MLP(4, (5, 3), 3, activation="tanh", seed=0)
    m.classes = ["cat", "dog", "eel"]
    m.preprocessor = Preprocessor("standardize").fit(rng.normal(size=(10, 2, 2)))
    m.training = {"dataset": "test", "test_accuracy": 0.5}
    return m


def test_round_trip_keeps_everything(tmp_path, model, rng):
    path = save(model, tmp_path / "m.safetensors")
    back = load(path)
    assert back.config == model.config
    np.testing.assert_array_equal(back.param_buffer, model.param_buffer)
    assert back.classes == model.classes and back.training == model.training
    raw = rng.normal(size=(6, 2, 2))
    np.testing.assert_array_equal(back.predict_proba(back.prepare(raw)),
                                  model.predict_proba(model.prepare(raw)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept(tmp_path, dtype):
    m = handgrad.MLP(3, 2, 2, dtype=dtype, seed=0)
    back = load(save(m, tmp_path / "m.safetensors"))
    assert back.param_buffer.dtype == np.dtype(dtype)


def test_torch_reads_the_tensors_directly(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    m = handgrad.MLP(6, 5, 3, seed=0)
    save(m, tmp_path / "m.safetensors")
    w = load_file(str(tmp_path / "m.safetensors"))
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    net.load_state_dict({"0.weight": w["W1"], "0.bias": w["b1"],
                         "2.weight": w["W2"], "2.bias": w["b2"]})
    X = rng.normal(size=(4, 6)).astype(np.float32)
    with torch.no_grad():
        ref = torch.softmax(net(torch.tensor(X)), dim=1).numpy()
    np.testing.assert_allclose(m.predict_proba(X), ref, rtol=1e-5, atol=1e-7)


def test_metadata_carries_format_and_version(tmp_path, model):
    path = save(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert meta["format"] == "handgrad-model" and meta["format_version"] == "2"
    assert json.loads(meta["config"])["hidden"] == [5, 3]


def read_parts(path):
    """A model file's ``(metadata, tensors)``, read with safetensors itself."""
    from safetensors.numpy import load_file

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n])["__metadata__"], load_file(str(path))


def rewrite_metadata(path, **changes):
    """Rewrite a model file's metadata in place (a valid safetensors file)."""
    from safetensors.numpy import save_file

    meta, tensors = read_parts(path)
    meta.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del meta[k]
    tensors = {k: v for k, v in tensors.items() if not k.startswith("__drop")}
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("changes, message", [
    ({"format": "something-else"}, "not a handgrad model"),
    ({"format_version": "7"}, "upgrade handgrad"),
    ({"config": "{not json"}, "not JSON"),
    ({"config": json.dumps({"n_inputs": 4, "hidden": [5, 3], "n_classes": 3,
                            "activation": "swish", "dtype": "float32"})}, "architecture"),
    ({"config": json.dumps({"n_inputs": 4, "hidden": [6, 3], "n_classes": 3,
                            "activation": "tanh", "dtype": "float32"})}, "W1 has shape"),
    ({"config": json.dumps({"n_inputs": 4, "hidden": [5, 3], "n_classes": 3,
                            "activation": "tanh", "dtype": "float64"})}, "float32"),
    ({"classes": json.dumps(["a"])}, "classes"),
    ({"preprocessing": json.dumps({"format": "x"})}, "preprocessing"),
    ({"training": None}, "training"),
])
def test_bad_metadata_raises_model_file_error(tmp_path, model, changes, message):
    path = save(model, tmp_path / "m.safetensors")
    rewrite_metadata(path, **changes)
    with pytest.raises(ModelFileError, match=message):
        load(path)


def test_non_finite_weights_are_refused(tmp_path, model):
    from safetensors.numpy import save_file

    path = save(model, tmp_path / "m.safetensors")
    meta, tensors = read_parts(path)
    tensors["b2"][1] = np.nan
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="b2 holds NaN"):
        load(path)
    model.params["W1"][0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        save(model, tmp_path / "other.safetensors")


def test_missing_tensor_and_wrong_dtype(tmp_path, model):
    from safetensors.numpy import save_file

    path = save(model, tmp_path / "m.safetensors")
    meta, tensors = read_parts(path)
    save_file({k: v for k, v in tensors.items() if k != "W3"}, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="W3"):
        load(path)
    save_file(tensors | {"W3": tensors["W3"].astype(np.int32)}, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="I32"):
        load(path)


@pytest.mark.parametrize("name", ["evil.safetensors", "evil.npz", "evil.pt"])
def test_a_pickle_is_refused_without_running_it(tmp_path, name):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / name).write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load(tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("data, message", [
    (b"", "not a safetensors"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "truncated"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00[]", "not a safetensors"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}", "not a safetensors"),
    (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "not a handgrad model"),
])
def test_garbage_files(tmp_path, data, message):
    (tmp_path / "g").write_bytes(data)
    with pytest.raises(ModelFileError, match=message):
        load(tmp_path / "g")


def test_truncated_model_file(tmp_path, model):
    path = save(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(ModelFileError, match="m.safetensors"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load(tmp_path / "nope.safetensors")


def test_failed_save_keeps_the_previous_file(tmp_path, model, monkeypatch):
    path = save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import handgrad._atomic as atomic

    monkeypatch.setattr(atomic.os, "fsync", boom)
    model.params["b1"][...] = 42
    with pytest.raises(OSError, match="No space"):
        save(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_checkpoint_round_trip(tmp_path, model, rng):
    opt = Adam(lr=0.01)
    model.loss_and_grads(rng.normal(size=(3, 4)), [0, 1, 2])
    opt.step(model.param_buffer, model.grad_buffer)
    state = {"epoch": 2, "batch": 5}
    save_checkpoint(tmp_path / "c.safetensors", model, opt, state, TrainConfig(seed=3))
    m2, opt_state, trainer_state, config = load_checkpoint(tmp_path / "c.safetensors")
    np.testing.assert_array_equal(m2.param_buffer, model.param_buffer)
    assert trainer_state == state and config == TrainConfig(seed=3)
    opt2 = Adam()
    opt2.load_state_dict(opt_state)
    assert opt2.lr == 0.01 and opt2.state["flat"]["t"] == 1
    np.testing.assert_array_equal(opt2.state["flat"]["m"], opt.state["flat"]["m"])
    # a checkpoint also loads as a model; a model file is not a checkpoint
    load(tmp_path / "c.safetensors")
    save(model, tmp_path / "m.safetensors")
    with pytest.raises(ModelFileError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_a_model_file_can_keep_its_optimizer_state(tmp_path, model, rng):
    opt = SGD(0.05, momentum=0.9, nesterov=True)
    model.loss_and_grads(rng.normal(size=(3, 4)), [0, 1, 2])
    opt.step(model.param_buffer, model.grad_buffer)
    path = save(model, tmp_path / "m.safetensors", optimizer=opt)
    meta, tensors = read_parts(path)
    assert meta["format"] == "handgrad-model" and "optimizer/flat/momentum_buffer" in tensors
    back, state = load_with_optimizer(path)
    np.testing.assert_array_equal(back.param_buffer, model.param_buffer)
    again = SGD(1.0)
    again.load_state_dict(state)
    assert again.hyperparameters() == opt.hyperparameters()
    np.testing.assert_array_equal(again.state["flat"]["momentum_buffer"],
                                  opt.state["flat"]["momentum_buffer"])
    # readers of the model alone see the same model; a file without one has no state
    np.testing.assert_array_equal(load(path).param_buffer, model.param_buffer)
    assert load_with_optimizer(save(model, tmp_path / "plain.safetensors")).optimizer_state \
        is None


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "{oops"}, "not JSON"),
    ({"optimizer": json.dumps({"type": "Adam"})}, "optimizer's stored state is damaged"),
    ({"optimizer": json.dumps({"type": "Adam", "hyperparameters": {},
                               "scalars": {"flat": {"t": "many"}}})}, "counter flat/t"),
])
def test_a_damaged_optimizer_state_is_named(tmp_path, model, rng, changes, message):
    opt = Adam(0.01)
    model.loss_and_grads(rng.normal(size=(3, 4)), [0, 1, 2])
    opt.step(model.param_buffer, model.grad_buffer)
    path = save(model, tmp_path / "m.safetensors", optimizer=opt)
    rewrite_metadata(path, **changes)
    with pytest.raises(ModelFileError, match=message):
        load_with_optimizer(path)
    load(path)  # the model itself is intact


def test_an_optimizer_state_of_the_wrong_shape_is_refused(tmp_path, model):
    from safetensors.numpy import save_file

    opt = Adam(0.01)
    path = save(model, tmp_path / "m.safetensors", optimizer=opt)
    meta, tensors = read_parts(path)
    tensors["optimizer/flat/m"] = np.zeros(3, np.float32)
    meta["optimizer"] = json.dumps({"type": "Adam", "hyperparameters": {}, "scalars": {}})
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="optimizer/flat/m has shape"):
        load_with_optimizer(path)
