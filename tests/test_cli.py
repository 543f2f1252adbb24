"""The handgrad command, end to end: through main(argv) and through subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import handgrad
from handgrad.cli import ExitCode, main

QUICK = ["--epochs", "3", "--hidden", "32", "--quiet"]


def run(*args, **kwargs):
    """The CLI as a user runs it: a subprocess with its exit code and both streams."""
    return subprocess.run([sys.executable, "-m", "handgrad", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = d / "digits.safetensors"
    assert main(["train", *QUICK, "--epochs", "8", "--out", str(model)]) == 0
    return model


def test_train_with_no_arguments_reaches_95_percent(capsys):
    assert main(["train"]) == ExitCode.OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    epoch_lines = [l for l in lines if l.startswith("epoch")]
    assert len(epoch_lines) == 30
    # the fixed per-epoch format
    assert epoch_lines[0].split()[:3] == ["epoch", "1/30", "loss"]
    assert "val_acc" in epoch_lines[0] and epoch_lines[0].endswith("s")
    final = lines[-1]
    assert final.startswith("test accuracy")
    assert float(final.split()[2]) >= 0.95


def test_train_json_summary(capsys):
    assert main(["train", *QUICK, "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert 0 <= summary["test_accuracy"] <= 1
    assert summary["layer_sizes"] == [64, 32, 10] and summary["epochs"] == 3
    assert len(summary["history"]["train_loss"]) == 3


def test_evaluate_predict_info(trained, capsys, tmp_path):
    assert main(["evaluate", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "confusion matrix" in out
    assert main(["evaluate", str(trained), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["confusion_matrix"]) == 10 and report["n_examples"] == 359

    assert main(["info", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "64 -> 32 -> 10" in out and "parameters" in out

    from handgrad.datasets import load_digits

    images, labels = load_digits()
    np.save(tmp_path / "some.npy", images[:5])
    assert main(["predict", str(trained), str(tmp_path / "some.npy"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in results] == [f"{tmp_path / 'some.npy'}[{i}]" for i in range(5)]
    model = handgrad.load(trained)
    expected = model.predict(model.prepare(images[:5]))
    assert [int(r["class"]) for r in results] == expected.tolist()


def draw_digit(path, digit, size=(120, 160), light_background=True):
    """Draw a digit with Pillow's default font, dark on light, like a photo of paper."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", size, 255 if light_background else 0)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=110)
    draw.text((25, 10), str(digit), fill=0 if light_background else 255, font=font)
    img.save(path)
    return path


def test_predict_on_png_files_the_test_draws(tmp_path, capsys):
    pytest.importorskip("PIL")
    from handgrad.images import load_digit_image

    path = draw_digit(tmp_path / "seven.png", 7)
    img = load_digit_image(path)
    assert img.shape == (28, 28)
    # white digit on black, centred by mass, within the 20x20 box
    rows, cols = np.nonzero(img > 0.1 * 255)
    assert img[0].max() == 0 and img[:, 0].max() == 0
    assert rows.max() - rows.min() < 22 and cols.max() - cols.min() < 22
    ys, xs = np.indices(img.shape)
    assert abs((ys * img).sum() / img.sum() - 14) < 1.5
    assert abs((xs * img).sum() / img.sum() - 14) < 1.5
    # a dark-background drawing gives the same image as a light one
    dark = load_digit_image(draw_digit(tmp_path / "dark.png", 7, light_background=False))
    np.testing.assert_allclose(dark, img, atol=2)
    # the CLI prints class and probability per image
    model = handgrad.MLP(64, 16, 10, seed=0)
    from handgrad.datasets import Preprocessor, load_digits

    images, _ = load_digits()
    model.preprocessor = Preprocessor().fit(images)
    handgrad.save(model, tmp_path / "m.safetensors")
    assert main(["predict", str(tmp_path / "m.safetensors"), str(path),
                 str(tmp_path / "dark.png"), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(path))
    assert len(lines[0].split()) == 1 + 2 * 3


def test_plots_are_written(tmp_path, trained):
    pytest.importorskip("matplotlib")
    assert main(["report", str(trained), "--out", str(tmp_path / "fig")]) == 0
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == ["confusion.png", "curves.png", "weights.png"]
    for name in names:
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gradcheck_command(capsys):
    assert main(["gradcheck", "--hidden", "6,5", "--activation", "tanh"]) == 0
    out = capsys.readouterr().out
    assert "W3" in out and out.strip().splitlines()[-1].startswith("passed")


def test_gradcheck_command_fails_a_wrong_gradient(capsys, monkeypatch):
    import handgrad.model as hm

    original = hm.linear_backward

    def broken(G, X, W, dW, db, dX=None, ones=None, columns=None):
        out = original(G, X, W, dW, db, dX, ones, columns)
        if db is not None:
            db *= 1.1  # a 10% error in every bias gradient
        return out

    monkeypatch.setattr(hm, "linear_backward", broken)
    assert main(["gradcheck"]) == ExitCode.ERROR
    out = capsys.readouterr().out
    assert "FAIL" in out and out.strip().splitlines()[-1].startswith("FAILED")


def test_gradcheck_command_passes_a_trained_model(trained, capsys):
    """Trained models' vanishing gradients are finite-difference noise, not failures."""
    assert main(["gradcheck", str(trained)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("passed")


@pytest.mark.parametrize("args, fragment", [
    (["train", "--hidden", "-3"], "--hidden"),
    (["train", "--epochs", "zero"], "'zero' is not a whole number"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--val-fraction", "1.5"], "--val-fraction"),
    (["train", "--optimizer", "rmsprop"], "rmsprop"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_arguments_exit_2_with_one_line(args, fragment):
    r = run(*args)
    assert r.returncode == ExitCode.USAGE
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert fragment in err[-1]
    assert "Traceback" not in r.stderr


def test_missing_dataset_path_is_a_data_error(tmp_path):
    r = run("train", "--dataset", tmp_path / "nothing.csv")
    assert r.returncode == ExitCode.DATA
    assert r.stderr.strip().count("\n") == 0 and "nothing.csv" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_and_damaged_model_files(tmp_path, trained):
    r = run("evaluate", tmp_path / "nope.safetensors")
    assert r.returncode == ExitCode.DATA and "no such file" in r.stderr
    data = trained.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    r = run("info", tmp_path / "cut.safetensors")
    assert r.returncode == ExitCode.DATA
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = run("--traceback", "info", tmp_path / "cut.safetensors")
    assert "Traceback" in r.stderr


def test_unwritable_output_fails_before_training(tmp_path):
    r = run("train", "--out", tmp_path / "no" / "such" / "dir" / "m.safetensors")
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert "epoch" not in r.stdout


def test_help_shows_defaults():
    r = run("train", "--help")
    assert r.returncode == 0 and "(default: 30)" in r.stdout and "(default: adam)" in r.stdout


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    common = ["--hidden", "16", "--batch-size", "16", "--quiet", "--seed", "5"]
    assert main(["train", *common, "--epochs", "4", "--out", str(tmp_path / "full.safetensors")]) == 0
    # a first run of 2 epochs, then resume to 4 from its checkpoint
    assert main(["train", *common, "--epochs", "2", "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    assert main(["train", "--resume", str(tmp_path / "ck" / "checkpoint.safetensors"),
                 "--epochs", "4", "--quiet", "--out", str(tmp_path / "resumed.safetensors")]) == 0
    full = handgrad.load(tmp_path / "full.safetensors")
    resumed = handgrad.load(tmp_path / "resumed.safetensors")
    np.testing.assert_array_equal(full.param_buffer, resumed.param_buffer)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path, sig, code):
    common = ["--hidden", "64", "--batch-size", "8", "--seed", "2", "--epochs", "40"]
    assert main(["train", *common, "--quiet", "--out", str(tmp_path / "full.safetensors")]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "handgrad", "train", *common,
                             "--checkpoint-dir", str(tmp_path / "ck")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait for the first epoch line, then interrupt mid-run
    line = proc.stdout.readline()
    while line and not line.startswith("epoch"):
        line = proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "checkpoint saved" in err and "--resume" in err
    ck = tmp_path / "ck" / "checkpoint.safetensors"
    r = run("train", "--resume", ck, "--quiet", "--out", tmp_path / "resumed.safetensors")
    assert r.returncode == 0, r.stderr
    full = handgrad.load(tmp_path / "full.safetensors")
    resumed = handgrad.load(tmp_path / "resumed.safetensors")
    np.testing.assert_array_equal(full.param_buffer, resumed.param_buffer)


def test_python_dash_m_and_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("handgrad ")


def test_train_on_real_mnist(mnist_dir, tmp_path):
    """handgrad train --dataset mnist trains on the real MNIST files."""
    env = dict(os.environ, HANDGRAD_DATA=str(mnist_dir.parent))
    r = run("train", "--dataset", "mnist", "--epochs", "1", "--hidden", "64",
            "--batch-size", "128", "--json", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["layer_sizes"] == [784, 64, 10]
    assert summary["test_accuracy"] > 0.9


def test_resume_with_schedule_and_early_stopping_is_bit_identical(tmp_path):
    """Stateful callbacks (plateau schedule, early stopping with its best weights, kept as a
    tensor in the checkpoint) come back on resume."""
    common = ["--hidden", "16", "--batch-size", "64", "--quiet", "--seed", "4",
              "--schedule", "plateau", "--n-iter-no-change", "2", "--early-stopping",
              "--dropout", "0.1", "--label-smoothing", "0.05"]
    assert main(["train", *common, "--epochs", "12",
                 "--out", str(tmp_path / "full.safetensors")]) == 0
    assert main(["train", *common, "--epochs", "5", "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    ck = tmp_path / "ck" / "checkpoint.safetensors"
    _, _, state, _ = handgrad.load_checkpoint(ck)
    assert any(isinstance(c, dict) and isinstance(c.get("best_params"), np.ndarray)
               for c in state["callbacks"])
    assert main(["train", "--resume", str(ck), "--epochs", "12", "--quiet",
                 "--out", str(tmp_path / "resumed.safetensors")]) == 0
    full = handgrad.load(tmp_path / "full.safetensors")
    resumed = handgrad.load(tmp_path / "resumed.safetensors")
    np.testing.assert_array_equal(full.param_buffer, resumed.param_buffer)
