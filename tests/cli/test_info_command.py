"""handgrad info: what it prints of a model file, counts in the singular where they are 1;
handgrad info --system (handgrad.sysinfo, tested in tests/test_sysinfo.py)."""

import json

import pytest

from handgrad.cli import ExitCode, main


@pytest.mark.parametrize("epochs, words", [(1, "1 epoch,"), (2, "2 epochs,")])
def test_the_epoch_count_agrees_with_its_noun(tmp_path, capsys, epochs, words):
    path = tmp_path / "m.safetensors"
    assert main(["train", "--epochs", str(epochs), "--hidden", "8", "--quiet",
                 "--out", str(path)]) == ExitCode.OK
    capsys.readouterr()
    assert main(["info", str(path)]) == ExitCode.OK
    trained_on = next(l for l in capsys.readouterr().out.splitlines()
                      if l.startswith("trained on"))
    assert f"digits: {words} adam" in trained_on
    assert "1 epochs" not in trained_on


@pytest.mark.parametrize("n_iter, words", [(1, "1 iteration,"), (3, "3 iterations,")])
def test_the_iteration_count_of_an_estimator_agrees_with_its_noun(tmp_path, capsys, n_iter,
                                                                  words):
    pytest.importorskip("sklearn")
    import warnings

    import numpy as np

    import handgrad

    X = np.random.default_rng(0).normal(size=(40, 3))
    est = handgrad.MLPClassifier(hidden_layer_sizes=(4,), max_iter=n_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in so few iterations
        est.fit(X, (X[:, 0] > 0).astype(int))
    handgrad.save(est, tmp_path / "est.safetensors")
    assert main(["info", str(tmp_path / "est.safetensors")]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"handgrad.MLPClassifier: {words} final loss" in out


def test_info_system_prints_text_or_json(capsys):
    assert main(["info", "--system", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["blas"]
    assert main(["info", "--system"]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("python ")
    assert main(["info"]) == ExitCode.USAGE
    assert "--system" in capsys.readouterr().err
    assert main(["info", "m.safetensors", "--system"]) == ExitCode.USAGE
    assert "not both" in capsys.readouterr().err
