"""Packages: the model format is a core dependency; optional ones are checked up front."""

import importlib.util
from pathlib import Path

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
