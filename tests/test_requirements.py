"""Packages: the model format is a core dependency; optional ones are checked up front."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from handgrad import _requirements
from handgrad._requirements import MissingPackageError, missing, require

ROOT = Path(__file__).resolve().parents[1]


def project():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def names(requirements):
    import re

    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_safetensors_and_threadpoolctl_come_with_the_core():
    # `pip install handgrad` alone must be able to write the model `train --out` asks for
    core = names(project()["dependencies"])
    assert {"numpy", "safetensors", "threadpoolctl"} <= core
    # and no extra repeats a core dependency
    for extra, reqs in project()["optional-dependencies"].items():
        if extra != "test":
            assert not core & names(reqs), extra


def test_every_optional_module_is_installed_by_the_extra_it_names():
    extras = project()["optional-dependencies"]
    distribution = {"PIL": "pillow", "sklearn": "scikit-learn"}
    for feature, (module, extra, _) in _requirements.OPTIONAL.items():
        assert distribution.get(module, module).lower() in names(extras[extra]), feature


def hide(monkeypatch, *modules):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in modules:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_require_names_the_missing_package_and_the_install_command(monkeypatch):
    require("plots", "onnx")  # installed in the test environment: no error
    hide(monkeypatch, "matplotlib", "onnx")
    assert missing("plots", "onnx", "images") == ["plots", "onnx"]
    with pytest.raises(MissingPackageError) as info:
        require("plots", "images", "onnx")
    message = str(info.value)
    assert "needs matplotlib" in message and "needs onnx" in message
    assert "pillow" not in message.lower()
    assert "pip install 'handgrad[cli,onnx]'" in message


def test_unknown_feature_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown feature 'plot'"):
        require("plot")


CORE_ONLY = """
import importlib.abc, sys

BLOCKED = {"tqdm", "matplotlib", "PIL", "sklearn", "scipy", "onnx", "onnxruntime", "torch",
           "mpi4py", "pandas"}

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())

import numpy as np
import handgrad
from handgrad._requirements import missing
from handgrad.datasets import Preprocessor, load_dataset
from handgrad.optim import Adam

assert missing("plots", "images", "onnx", "sklearn", "mpi") == [
    "plots", "images", "onnx", "sklearn", "mpi"]
ds = load_dataset("digits")
model = handgrad.MLP(64, 16, 10, seed=0)
model.preprocessor = Preprocessor().fit(ds.x_train)
model.classes = ds.classes
optimizer = Adam(1e-2)
trainer = handgrad.Trainer(model, model.prepare(ds.x_train), ds.y_train, optimizer=optimizer,
                           epochs=10, batch_size=32, seed=0)
trainer.run()
trainer.save_checkpoint("ck.safetensors")
handgrad.save(model, "m.safetensors")
back = handgrad.load("m.safetensors")
assert back.evaluate(back.prepare(ds.x_test), ds.y_test)[1] > 0.8
assert not any(name.split(".")[0] in BLOCKED for name in sys.modules)
print("ok")
"""


def test_training_and_saving_need_only_the_core_dependencies(tmp_path):
    """`pip install handgrad` alone: train, checkpoint and write the model file, with every
    optional package (the cli, sklearn, onnx and mpi extras, torch) unimportable."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", CORE_ONLY], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("module, call, feature", [
    ("onnx", lambda: __import__("handgrad.onnx", fromlist=["_onnx"])._onnx(), "onnx"),
    ("matplotlib", lambda: __import__("handgrad.plots", fromlist=["_pyplot"])._pyplot(),
     "plots"),
    ("PIL", lambda: __import__("handgrad.images", fromlist=["_pillow"])._pillow(), "images"),
    ("mpi4py", lambda: __import__("handgrad.distributed", fromlist=["_mpi"])._mpi(), "mpi"),
])
def test_every_optional_import_fails_with_missing_package_error(monkeypatch, module, call,
                                                                feature):
    import sys

    for name in list(sys.modules):
        if name.split(".")[0] == module:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(MissingPackageError, match=r"pip install 'handgrad\[") as info:
        call()
    assert info.value.features == (feature,)
    assert feature in _requirements.OPTIONAL


def test_a_fitted_estimator_file_without_scikit_learn(tmp_path, monkeypatch):
    import sys

    import handgrad

    pytest.importorskip("sklearn")
    X = np.random.default_rng(0).normal(size=(40, 3))
    est = handgrad.MLPClassifier(hidden_layer_sizes=(4,), max_iter=50, random_state=0)
    est.fit(X, (X[:, 0] > 0).astype(int))
    handgrad.save(est, tmp_path / "est.safetensors")
    for name in list(sys.modules):
        if name.split(".")[0] == "sklearn" or name == "handgrad.sklearn":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delattr(handgrad, "sklearn", raising=False)  # else `from . import` finds it
    with pytest.raises(MissingPackageError, match="needs scikit-learn") as info:
        handgrad.load(tmp_path / "est.safetensors")
    assert info.value.features == ("sklearn",)
    assert handgrad.serialization.load(tmp_path / "est.safetensors").n_inputs == 3


@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_the_estimators_without_scikit_learn_name_the_pip_install(monkeypatch, name):
    """``from handgrad import MLPClassifier`` without the sklearn extra: an ImportError
    (as Python code expects) that is handgrad's MissingPackageError, naming the install
    (review finding 13)."""
    import sys

    import handgrad

    for module in list(sys.modules):
        if module.split(".")[0] == "sklearn" or module == "handgrad.sklearn":
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.delattr(handgrad, "sklearn", raising=False)
    with pytest.raises(ImportError) as info:
        exec(f"from handgrad import {name}", {})
    assert isinstance(info.value, MissingPackageError)
    assert info.value.features == ("sklearn",) and info.value.name == "sklearn"
    assert "pip install 'handgrad[sklearn]'" in str(info.value)
    assert f"handgrad.{name}" in str(info.value)
