"""scikit-learn's own MLP tests, run against handgrad's estimators.

The installed scikit-learn's ``sklearn/neural_network/tests/test_mlp.py`` is read,
its import of ``MLPClassifier, MLPRegressor`` is swapped for handgrad's, and its tests
run here as if they were this module's. Deselected: only tests that read scikit-learn's
private attributes, each listed in ``DESELECTED`` with its reason.
"""

import os
import re
from pathlib import Path

import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import sklearn.neural_network.tests as _tests  # noqa: E402

SOURCE = Path(_tests.__file__).with_name("test_mlp.py")
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
SWAPPED = "from handgrad import MLPClassifier, MLPRegressor"

# test name -> why it cannot run against another implementation (private attributes only)
DESELECTED = {}


def _load():
    text = SOURCE.read_text(encoding="utf-8")
    if text.count(IMPORT) != 1:
        raise RuntimeError(f"{SOURCE}: expected the line {IMPORT!r} exactly once; scikit-learn "
                           f"changed its test file, update tests/test_sklearn_suite.py")
    return compile(text.replace(IMPORT, SWAPPED), str(SOURCE), "exec")


exec(_load(), globals())  # noqa: S102  the tests become this module's

for _name, _reason in DESELECTED.items():
    globals()[_name] = pytest.mark.skip(reason=_reason)(globals()[_name])


def test_the_swap_took_effect():
    import handgrad

    assert MLPClassifier is handgrad.MLPClassifier  # noqa: F821  defined by the exec above
    assert MLPRegressor is handgrad.MLPRegressor  # noqa: F821
    names = set(re.findall(r"^def (test_\w+)", SOURCE.read_text(encoding="utf-8"), re.M))
    assert set(DESELECTED) <= names


def _seeds():
    """scikit-learn's ``global_random_seed`` fixture: SKLEARN_TESTS_GLOBAL_RANDOM_SEED
    ("42" by default, "all" for 0-99, or "a-b")."""
    spec = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42")
    if spec == "all":
        return list(range(100))
    if "-" in spec:
        lo, hi = (int(v) for v in spec.split("-"))
        return list(range(lo, hi + 1))
    return [int(spec)]


@pytest.fixture(params=_seeds())
def global_random_seed(request):
    return request.param
