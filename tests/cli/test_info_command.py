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


def test_info_on_a_checkpoint_says_so_and_where_the_run_stands(tmp_path, capsys):
    """Review finding 16."""
    assert main(["train", "--epochs", "3", "--hidden", "8", "--quiet", "--batch-size", "64",
                 "--checkpoint-dir", str(tmp_path)]) == ExitCode.OK
    capsys.readouterr()
    ck = tmp_path / "checkpoint.safetensors"
    assert main(["info", str(ck)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert (f"checkpoint   of a training run: 3 of 3 epochs done: complete; continue it "
            f"with: handgrad train --resume {ck}") in out
    assert main(["info", str(ck), "--json"]) == ExitCode.OK
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "checkpoint" and info["checkpoint"]["epochs_done"] == 3
    assert main(["train", "--epochs", "1", "--hidden", "8", "--quiet",
                 "--out", str(tmp_path / "m.safetensors")]) == ExitCode.OK
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.safetensors"), "--json"]) == ExitCode.OK
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "model" and info["checkpoint"] is None


def test_info_on_an_estimator_rounds_its_loss_and_names_its_features(tmp_path, capsys):
    """Review finding 16: ``final loss 0.4232072639504035`` and no feature names."""
    pytest.importorskip("sklearn")
    pd = pytest.importorskip("pandas")
    import warnings

    import numpy as np

    import handgrad

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)),
                     columns=["width", "height", "depth"])
    est = handgrad.MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, (X["width"] > 0).astype(int))
    handgrad.save(est, tmp_path / "est.safetensors")
    assert main(["info", str(tmp_path / "est.safetensors")]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"final loss {est.loss_:.6f}\n" in out
    assert "features     width, height, depth" in out


def test_info_and_train_say_a_network_without_hidden_layer_has_no_activation(tmp_path,
                                                                             capsys):
    """Review finding 16: ``--hidden 0`` was shown as "64-10 (relu, ...)"."""
    path = tmp_path / "m.safetensors"
    assert main(["train", "--hidden", "0", "--epochs", "1", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert "training 64-10 (no hidden layer: multinomial logistic regression, float32)" in out
    assert main(["info", str(path)]) == 0
    assert "activation   none (no hidden layer)" in capsys.readouterr().out
