"""Every ```python block of the README runs as shown, each in a fresh interpreter.

A block is run from an empty folder (the files it writes land there) with the
environment of the test run, so ``HANDGRAD_DATA`` finds real MNIST as it does for
the other tests. A block is skipped only with a stated reason: it needs MNIST and
``HANDGRAD_DATA`` does not provide it, it imports an optional package that is not
installed, or it is a client of a running server (tested against one in tests/serve).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# import name -> distribution, for the optional packages a block may use
OPTIONAL = {"torch": "torch", "onnxruntime": "onnxruntime", "onnx": "onnx",
            "sklearn": "scikit-learn", "safetensors": "safetensors"}
# handgrad names that import an optional package
IMPLIED = {"MLPClassifier": "sklearn", "export_onnx": "onnx", "to_onnx_bytes": "onnx"}


def blocks():
    text = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        heading = re.findall(r"^#+ (.*)$", text[:match.start()], re.M)
        section = heading[-1] if heading else "top"
        found.append(pytest.param(match.group(1), id=f"line{line}-{section}"))
    return found


def test_the_readme_has_python_blocks():
    assert len(blocks()) >= 3
    assert needs("import torch\nfrom handgrad import MLPClassifier\nimport handgrad") == [
        "sklearn", "torch"]


def needs(code):
    """The optional modules a block imports, directly or through handgrad."""
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", code, re.M))
    imported |= {module for name, module in IMPLIED.items() if re.search(rf"\b{name}\b", code)}
    return sorted(imported & set(OPTIONAL))


@pytest.mark.slow
@pytest.mark.parametrize("code", blocks())
def test_readme_python_block_runs_as_shown(code, tmp_path, request):
    import importlib.util

    for module in needs(code):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the block needs {OPTIONAL[module]}, which is not installed")
    if "InferenceServerClient(" in code:
        pytest.skip("a client of a running `handgrad serve MODEL`: tests/serve/"
                    "test_tritonclient.py makes the same calls against a live server")
    if "load_mnist" in code or '"mnist"' in code:
        request.getfixturevalue("mnist_dir")  # skips, saying why, without real MNIST
    env = dict(os.environ, MPLBACKEND="Agg", XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{r.stderr}"


NO_PANDAS = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def sklearn_blocks():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## scikit-learn's MLPClassifier"):]
    section = section[:section.index("\n## ", 1)]
    return [pytest.param(m.group(1), id=f"block{i}") for i, m in enumerate(FENCE.finditer(section))]


@pytest.mark.slow
@pytest.mark.parametrize("code", sklearn_blocks())
def test_the_scikit_learn_examples_need_only_the_sklearn_extra(code, tmp_path):
    """'handgrad[sklearn]' installs scikit-learn and SciPy, not pandas: each example of
    the estimators' section runs without pandas (the save/load one once needed it)."""
    pytest.importorskip("sklearn")
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", NO_PANDAS + code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"README block failed without pandas:\n{code}\n{r.stderr}"
