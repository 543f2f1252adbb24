"""Writers refuse to destroy a file that is not of the kind they write (review finding 1):
handgrad.save, checkpoints and ONNX export from Python; ``--out``/``export`` (with
``--force``) and never the training data on the command line."""

import numpy as np
import pytest

import handgrad
from handgrad._atomic import OverwriteRefusedError
from handgrad.callbacks import CHECKPOINT_NAME
from handgrad.cli import ExitCode, main
from handgrad.optim import Adam
from handgrad.serialization import load_checkpoint, save_checkpoint


@pytest.fixture
def model():
    return handgrad.MLP(4, 5, 3, seed=0)


@pytest.fixture
def table(tmp_path):
    """A small CSV data set: 4 features, labels a/b/c, in its own folder."""
    rng = np.random.default_rng(0)
    rows = ["f1,f2,f3,f4,label"]
    for i in range(60):
        k = i % 3
        x = rng.normal(k, 0.3, 4)
        rows.append(",".join(f"{v:.3f}" for v in x) + f",{'abc'[k]}")
    path = tmp_path / "data.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_save_refuses_a_data_file_and_keeps_it(tmp_path, model):
    data = tmp_path / "ten.npy"
    np.save(data, np.arange(10))
    before = data.read_bytes()
    with pytest.raises(FileExistsError) as info:
        handgrad.save(model, data)
    message = str(info.value)
    assert str(data) in message and "overwrite=True" in message
    assert "\n" not in message
    assert data.read_bytes() == before  # untouched
    handgrad.save(model, data, overwrite=True)  # on purpose
    assert handgrad.load(data).config == model.config


def test_save_replaces_a_previous_model(tmp_path, model):
    path = tmp_path / "m.safetensors"
    handgrad.save(model, path)
    retrained = handgrad.MLP(4, 5, 3, seed=1)
    handgrad.save(retrained, path)  # retraining to the same path stays allowed
    np.testing.assert_array_equal(handgrad.load(path).param_buffer, retrained.param_buffer)


def test_a_model_file_does_not_replace_a_checkpoint_nor_the_reverse(tmp_path, model):
    opt = Adam()
    ck = save_checkpoint(tmp_path / "ck.safetensors", model, opt, {"epoch": 0})
    with pytest.raises(OverwriteRefusedError, match="not a handgrad model file"):
        handgrad.save(model, ck)
    assert load_checkpoint(ck).trainer_state == {"epoch": 0}
    m = handgrad.save(model, tmp_path / "m.safetensors")
    with pytest.raises(OverwriteRefusedError, match="not a handgrad checkpoint"):
        save_checkpoint(m, model, opt, {"epoch": 1})
    save_checkpoint(ck, model, opt, {"epoch": 2})  # a checkpoint replaces its predecessor
    assert load_checkpoint(ck).trainer_state == {"epoch": 2}


def test_checkpoint_dir_holding_another_file_is_refused_before_training(tmp_path, model):
    (tmp_path / CHECKPOINT_NAME).write_text("my notes")
    X, y = np.random.default_rng(0).normal(size=(12, 4)), np.arange(12) % 3
    with pytest.raises(OverwriteRefusedError):
        handgrad.fit(model, X, y, epochs=1, checkpoint_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).read_text() == "my notes"


def test_export_onnx_refuses_a_png_and_replaces_its_own(tmp_path, model):
    pytest.importorskip("onnx")
    png = tmp_path / "precious.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    before = png.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        handgrad.export_onnx(model, png)
    assert png.read_bytes() == before
    out = handgrad.export_onnx(model, tmp_path / "m.onnx")
    handgrad.export_onnx(handgrad.MLP(4, 5, 3, seed=3), out)  # its own export: replaced
    handgrad.export_onnx(model, png, overwrite=True)
    assert png.read_bytes() != before


def test_cli_export_refuses_with_force_named(tmp_path, model, capsys):
    pytest.importorskip("onnx")
    m = handgrad.save(model, tmp_path / "m.safetensors")
    png = tmp_path / "precious.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert main(["export", str(m), str(png)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(png) in err and "--force" in err
    assert "overwrite=True" not in err
    assert png.read_bytes() == b"\x89PNG\r\n\x1a\n" + bytes(100)
    assert main(["export", str(m), str(png), "--force"]) == ExitCode.OK


def test_cli_train_never_overwrites_its_data_set(table, capsys):
    before = table.read_bytes()
    for extra in ([], ["--force"]):
        code = main(["train", "--dataset", str(table), "--hidden", "4", "--epochs", "1",
                     "--quiet", "--out", str(table), *extra])
        assert code == ExitCode.USAGE
        err = capsys.readouterr().err
        assert str(table) in err and "training data" in err
        assert table.read_bytes() == before


def test_cli_train_out_refuses_another_file_until_forced(table, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    args = ["train", "--dataset", str(table), "--hidden", "4", "--epochs", "1", "--quiet",
            "--out", str(notes)]
    assert main(args) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert "--force" in captured.err and str(notes) in captured.err
    assert "epoch" not in captured.out  # refused before training
    assert notes.read_text() == "mine"
    assert main([*args, "--force"]) == ExitCode.OK
    assert handgrad.load(notes).n_classes == 3
    assert main(args) == ExitCode.OK  # now a model file: retraining replaces it


@pytest.mark.parametrize("command", ["train", "export"])
def test_an_output_folder_that_does_not_exist_is_a_usage_error(tmp_path, model, capsys,
                                                               command):
    """README: exit code 2 for an output path that cannot work (review finding 10)."""
    target = tmp_path / "no" / "such" / "m.out"
    if command == "train":
        args = ["train", "--hidden", "4", "--epochs", "1", "--quiet", "--out", str(target)]
    else:
        pytest.importorskip("onnx")
        args = ["export", str(handgrad.save(model, tmp_path / "m.safetensors")), str(target)]
    assert main(args) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert f"folder {target.parent} does not exist" in err and "create it" in err


def test_save_of_something_else_names_what_it_takes(tmp_path):
    """Review finding 16: a Pipeline was "save expects a handgrad.MLP, got Pipeline"."""
    pytest.importorskip("sklearn")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), handgrad.MLPClassifier())
    with pytest.raises(TypeError) as info:
        handgrad.save(pipeline, tmp_path / "p.safetensors")
    message = str(info.value)
    assert "handgrad.MLPClassifier" in message and "handgrad.MLPRegressor" in message
    assert "sklearn.pipeline.Pipeline" in message and "pipeline[-1]" in message
    with pytest.raises(TypeError, match="got dict$"):
        handgrad.save({}, tmp_path / "d.safetensors")
    assert not list(tmp_path.iterdir())
