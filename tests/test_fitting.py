"""handgrad.fit: the README's "Training from Python" runs as written, twice."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def training_from_python_blocks():
    text = README.read_text()
    section = text[text.index("## Training from Python"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.parametrize("index", [0, 1])
def test_readme_training_from_python_runs_and_reruns(tmp_path, index):
    """Each snippet runs as written in an empty folder; run again, it resumes from its
    finished checkpoint instead of training afresh."""
    code = training_from_python_blocks()[index]
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    checkpoints = sorted(p.relative_to(tmp_path).as_posix()
                         for p in tmp_path.rglob("checkpoint.safetensors"))
    assert checkpoints == [["runs/digits/checkpoint.safetensors"],
                           ["runs/trainer/checkpoint.safetensors"]][index]


def test_fit_refuses_an_unknown_divergence_policy():
    import numpy as np

    import handgrad

    with pytest.raises(ValueError, match="on_divergence must be one of stop, backoff"):
        handgrad.fit(handgrad.MLP(2, 2, 2), np.zeros((4, 2)), [0, 1, 0, 1],
                     on_divergence="ignore")
