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


# --------------------------------------------------------------------------- #
# Settings are applied or reported, never silently dropped (review finding 5)
# --------------------------------------------------------------------------- #


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def test_resume_with_another_learning_rate_trains_at_it(tmp_path):
    import numpy as np

    import handgrad
    from handgrad.optim import SGD

    X, y = _data()
    runs = {}
    for lr in (0.1, 0.5):
        model = handgrad.MLP(5, 8, 3, seed=0)
        ck = tmp_path / f"ck{lr}"
        handgrad.fit(model, X, y, optimizer=SGD(0.1), epochs=2, batch_size=16, seed=0,
                     checkpoint_dir=ck)
        handgrad.fit(model, X, y, optimizer=SGD(lr), epochs=4, batch_size=16, seed=0,
                     checkpoint_dir=ck, resume=True)
        runs[lr] = model.param_buffer.copy()
        assert handgrad.load_checkpoint(ck / "checkpoint.safetensors").config.lr == lr
    reference = handgrad.MLP(5, 8, 3, seed=0)  # the same rate: as if never interrupted
    handgrad.fit(reference, X, y, optimizer=SGD(0.1), epochs=4, batch_size=16, seed=0)
    np.testing.assert_array_equal(runs[0.1], reference.param_buffer)
    assert not np.array_equal(runs[0.5], runs[0.1])


def test_resume_reports_the_optimizer_settings_it_keeps(tmp_path):
    import handgrad
    from handgrad.optim import SGD
    from handgrad.train import ResumeWarning

    X, y = _data()
    model = handgrad.MLP(5, 8, 3, seed=0)
    handgrad.fit(model, X, y, optimizer=SGD(0.1, momentum=0.9), epochs=1, batch_size=16,
                 seed=0, checkpoint_dir=tmp_path)
    with pytest.warns(ResumeWarning, match=r"momentum=0\.9 \(not 0\.5\)"):
        handgrad.fit(model, X, y, optimizer=SGD(0.1, momentum=0.5), epochs=2, batch_size=16,
                     seed=0, checkpoint_dir=tmp_path, resume=True)


def test_fit_verbose_reports_the_run(tmp_path, capsys):
    import handgrad
    from handgrad.optim import SGD

    X, y = _data()
    model = handgrad.MLP(5, 8, 3, seed=0)
    handgrad.fit(model, X, y, optimizer=SGD(0.1), epochs=2, batch_size=16, seed=0,
                 checkpoint_dir=tmp_path, verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert [l.split()[:2] for l in out] == [["epoch", "1/2"], ["epoch", "2/2"]]
    handgrad.fit(model, X, y, optimizer=SGD(0.2), epochs=3, batch_size=16, seed=0,
                 checkpoint_dir=tmp_path, resume=True, verbose=True)
    out = capsys.readouterr().out.splitlines()
    ck = tmp_path / "checkpoint.safetensors"
    assert out[0] == f"resuming from {ck} at epoch 3, batch 1 with learning rate 0.2 (was 0.1)"
    assert out[1].startswith("epoch 3/3")
    with pytest.raises(handgrad.DivergenceError):
        handgrad.fit(handgrad.MLP(5, 8, 3, seed=0), X, y, optimizer=SGD(1e9), epochs=1,
                     batch_size=16, seed=0, on_divergence="backoff", verbose=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and out[0].startswith("diverged at epoch 1, batch ")
    assert out[-1].endswith("with learning rate 3.125e+07")
    handgrad.fit(model, X, y, epochs=1)  # verbose off: silent
    assert capsys.readouterr().out == ""


def test_fit_names_itself_and_what_it_takes_for_an_unknown_argument():
    import handgrad

    X, y = _data()
    with pytest.raises(TypeError) as info:
        handgrad.fit(handgrad.MLP(5, 8, 3, seed=0), X, y, verbos=True)
    message = str(info.value)
    assert message.startswith("fit() got an unexpected keyword argument 'verbos'")
    assert "verbose" in message and "dropout" in message and "Trainer" not in message


@pytest.mark.parametrize("option", ["dropout", "callbacks", "validation_data"])
def test_lbfgs_refuses_the_options_it_would_ignore(option):
    pytest.importorskip("sklearn")
    import handgrad
    from handgrad import MLPClassifier

    X, y = _data()
    params = {"dropout": {"dropout": 0.5},
              "callbacks": {"callbacks": [handgrad.Callback()]}}.get(option, {})
    fit_args = {"validation_data": (X, y)} if option == "validation_data" else {}
    clf = MLPClassifier(solver="lbfgs", max_iter=20, random_state=0, **params)
    with pytest.raises(ValueError, match=f"solver='lbfgs' would ignore {option}"):
        clf.fit(X, y, **fit_args)
    MLPClassifier(solver="adam", max_iter=5, random_state=0, **params).fit(X, y, **fit_args)


def test_fit_documents_every_option_it_takes():
    """Each of fit's ``**options`` is named in its docstring."""
    import handgrad
    from handgrad.fitting import TRAINER_OPTIONS

    doc = " ".join(handgrad.fit.__doc__.split())
    assert [o for o in TRAINER_OPTIONS if f"``{o}``" not in doc] == []
