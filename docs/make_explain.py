"""Regenerate docs/explain.md and docs/explain.ipynb from handgrad itself.

    python docs/make_explain.py           # rewrite explain.md, execute the notebook in place
    python docs/make_explain.py --check   # exit 1 if explain.md differs from fresh output

``docs/explain.md`` is exactly what ``handgrad explain --format markdown`` prints (the
demonstration network: 3 inputs, 4 hidden units, 3 classes, 4 decimals);
``tests/test_explain_docs.py`` compares the committed file with fresh output and executes
the notebook. Nothing in either file is typed by hand.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
MARKDOWN = DOCS / "explain.md"
NOTEBOOK = DOCS / "explain.ipynb"
COMMAND = ["explain", "--format", "markdown"]


def fresh_markdown():
    """What ``handgrad explain --format markdown`` writes, as a string."""
    from handgrad.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "explain.md"
        code = main([*COMMAND, "--out", str(out)])
        if code != 0:
            raise SystemExit(f"handgrad {' '.join(COMMAND)} failed with exit code {code}")
        return out.read_text(encoding="utf-8")


CELLS = [
    ("markdown", "# `handgrad.trace`: the derivation with numbers\n\n"
                 "Every quantity of the specification (`docs/derivation.md`, F1–F5 and B1–B7) "
                 "for one example, computed by handgrad's own layer functions and checked "
                 "independently. In Jupyter a trace shows itself as HTML with MathML formulas: "
                 "nothing is fetched from the network. The same view is "
                 "`handgrad explain MODEL --index 0 --format html --out trace.html`."),
    ("code", "import numpy as np\n\nimport handgrad\nfrom handgrad.tracing import demo\n\n"
             "model, x, y = demo()  # a 3-4-3 ReLU network and one example, checkable by hand\n"
             "t = handgrad.trace(model, x, y)\nt"),
    ("markdown", "Each step is there by name, with its value, its formula and its check:"),
    ("code", "step = t[\"dL/dW1\"]\nprint(step.eq, step.text)\nprint(step.value)\n"
             "print(f\"{step.check.method}: worst relative error {step.check.error:.1e}\")"),
    ("markdown", "## A trained network\n\nTrain on the 8×8 digits bundled with handgrad, then "
                 "trace one test example through the 64-32-10 network. Large arrays are "
                 "summarised by their norm and largest entries; every gradient is checked by "
                 "central differences (a sample of the entries in the larger steps)."),
    ("code", "from handgrad.datasets import Preprocessor, load_dataset\n\n"
             "ds = load_dataset(\"digits\")\n"
             "prep = Preprocessor(\"divide\").fit(ds.x_train)\n"
             "net = handgrad.MLP(64, 32, 10, seed=0)\n"
             "net.preprocessor = prep  # stored with the model; the trace draws the 8×8 input\n"
             "handgrad.fit(net, prep.transform(ds.x_train), ds.y_train, epochs=10, batch_size=32,"
             " seed=0)\n"
             "trained = handgrad.trace(net, net.prepare(ds.x_test[:1])[0], ds.y_test[0])\n"
             "trained"),
    ("code", "print(\"all checks pass:\", trained.ok)"),
]


def build_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        nb.cells.append(make(source))
    return nb


def execute(nb, timeout=600):
    """Run every cell in a fresh kernel (raises on the first error)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(DOCS)}}).execute()
    return nb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare docs/explain.md with fresh output")
    args = parser.parse_args(argv)
    text = fresh_markdown()
    if args.check:
        if MARKDOWN.read_text(encoding="utf-8") != text:
            print(f"{MARKDOWN} is stale: run python docs/make_explain.py", file=sys.stderr)
            return 1
        return 0
    MARKDOWN.write_text(text, encoding="utf-8")
    print(f"wrote {MARKDOWN}")
    import nbformat

    nbformat.write(execute(build_notebook()), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
