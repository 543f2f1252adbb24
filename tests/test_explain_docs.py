"""docs/explain.md is `handgrad explain --format markdown` verbatim; docs/explain.ipynb runs."""

import importlib.util
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def make_explain():
    spec = importlib.util.spec_from_file_location("make_explain", DOCS / "make_explain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worked_example_is_fresh_output_of_handgrad_explain():
    fresh = make_explain().fresh_markdown()
    committed = (DOCS / "explain.md").read_text(encoding="utf-8")
    assert committed == fresh, "docs/explain.md is stale: run python docs/make_explain.py"
    for name in ["Q", "h", "O", "P", "L", "dL/dP", "dP/dO", "dL/dO", "dL/db2", "dL/dW2",
                 "dL/dh", "a", "dL/dQ", "dL/db1", "dL/dW1"]:
        assert f"· `{name}`" in committed
    assert committed.rstrip().endswith("(tolerance 1e-06)")


def test_the_notebook_runs_and_shows_the_html_view():
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[test]')")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    nb = nbformat.read(DOCS / "explain.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # what is checked below comes from this run
    make_explain().execute(nb, timeout=600)
    html = [out["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.outputs if "text/html" in out.get("data", {})]
    assert len(html) == 2  # the demonstration network's trace and the trained one
    for page in html:
        assert '<div class="hg-trace">' in page and "<math" in page and "<script" not in page
        assert "✓ all 15 steps agree" in page
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs if out.get("output_type") == "stream")
    assert "all checks pass: True" in printed


def test_the_committed_notebook_matches_its_generator():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
    committed = nbformat.read(DOCS / "explain.ipynb", as_version=4)
    built = make_explain().build_notebook()
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in built.cells]
