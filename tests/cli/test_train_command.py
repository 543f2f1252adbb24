"""handgrad train --resume: outputs restored from the checkpoint, interruptions, messages."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

import handgrad
from handgrad.callbacks import CHECKPOINT_NAME
from handgrad.cli import ExitCode, main

COMMON = ["--hidden", "64", "--batch-size", "8", "--seed", "2", "--epochs", "30"]


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "handgrad", "train", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def interrupt_after_first_epoch(proc):
    """SIGINT once the first epoch line is out: mid-run. Returns (stdout, stderr)."""
    seen = []
    line = proc.stdout.readline()
    while line and not line.startswith("epoch"):
        seen.append(line)
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return "".join(seen) + line + out, err


def test_resume_restores_out_checkpoint_dir_and_plot(tmp_path):
    """The command printed on Ctrl-C, run as is (from another folder), writes what the
    original run asked for; a second Ctrl-C saves into the original --checkpoint-dir."""
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    assert main(["train", *COMMON, "--quiet", "--out", str(tmp_path / "full.safetensors")]) == 0

    first = start(*COMMON, "--out", "m.safetensors", "--checkpoint-dir", "ck", "--plot", "figs",
                  cwd=run_dir)
    _, err = interrupt_after_first_epoch(first)
    assert first.returncode == ExitCode.INTERRUPTED, err
    ck = run_dir / "ck" / CHECKPOINT_NAME
    assert f"continue with: handgrad train --resume {ck}" in err  # absolute: works anywhere
    epoch_1 = handgrad.load_checkpoint(ck).trainer_state["epoch"]

    second = start("--resume", ck, cwd=elsewhere)
    out, err = interrupt_after_first_epoch(second)
    assert second.returncode == ExitCode.INTERRUPTED, err
    assert (f"writing the model to {run_dir / 'm.safetensors'}, checkpoints to {ck}, "
            f"figures to {run_dir / 'figs'}") in out
    assert f"checkpoint saved to {ck}" in err
    assert list(elsewhere.iterdir()) == []  # nothing written into the current folder
    assert handgrad.load_checkpoint(ck).trainer_state["epoch"] > epoch_1

    third = subprocess.run([sys.executable, "-m", "handgrad", "train", "--resume", str(ck),
                            "--quiet"], capture_output=True, text=True, cwd=elsewhere,
                           timeout=300)
    assert third.returncode == 0, third.stderr
    assert f"model saved to {run_dir / 'm.safetensors'}" in third.stdout
    resumed = handgrad.load(run_dir / "m.safetensors")
    np.testing.assert_array_equal(resumed.param_buffer,
                                  handgrad.load(tmp_path / "full.safetensors").param_buffer)
    assert sorted(p.name for p in (run_dir / "figs").iterdir()) == [
        "confusion.png", "curves.png", "weights.png"]
    assert resumed.training["config"]["out"] == str(run_dir / "m.safetensors")


def test_outputs_given_again_override_the_checkpoints(tmp_path, capsys):
    common = ["--hidden", "8", "--batch-size", "64", "--seed", "1", "--quiet"]
    assert main(["train", *common, "--epochs", "2", "--out", str(tmp_path / "a.safetensors"),
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    ck = tmp_path / "ck" / CHECKPOINT_NAME
    assert main(["train", "--resume", str(ck), "--epochs", "3", "--json",
                 "--out", str(tmp_path / "b.safetensors"),
                 "--checkpoint-dir", str(tmp_path / "ck2")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_path"] == str(tmp_path / "b.safetensors") and summary["epochs"] == 3
    assert handgrad.load_checkpoint(tmp_path / "ck2" / CHECKPOINT_NAME).trainer_state[
        "epoch"] == 3
    assert handgrad.load(tmp_path / "a.safetensors").training["history"]["epochs"] == [0, 1]


def test_resume_of_a_model_file_says_what_to_pass(tmp_path, capsys):
    model = handgrad.MLP(4, 3, 2)
    handgrad.save(model, tmp_path / "m.safetensors")
    assert main(["train", "--resume", str(tmp_path / "m.safetensors")]) == ExitCode.DATA
    err = capsys.readouterr().err
    assert "not a training checkpoint; --resume takes the checkpoint file from " \
           "--checkpoint-dir" in err


def test_resume_of_a_checkpoint_written_by_handgrad_0_1(tmp_path, capsys):
    """A 0.1 checkpoint (format version 1, a "settings" dict) still resumes."""
    assert main(["train", "--hidden", "8", "--batch-size", "64", "--epochs", "2", "--quiet",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    ck = tmp_path / "ck" / CHECKPOINT_NAME
    old = tmp_path / "old.safetensors"
    _rewrite_as_version_1(ck, old)
    assert main(["train", "--resume", str(old), "--epochs", "3", "--quiet",
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    assert handgrad.load(tmp_path / "m.safetensors").training["history"]["epochs"] == [0, 1, 2]


def _rewrite_as_version_1(path, out):
    """What handgrad 0.1 wrote: format_version 1, "settings" without the keys 0.1 lacked,
    callback states without their class names."""
    import struct

    from safetensors.numpy import load_file, save_file

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    meta["format_version"] = "1"
    ck = json.loads(meta["checkpoint"])
    settings = ck.pop("config")
    for key in ("shuffle", "l2", "on_divergence", "out", "checkpoint_dir", "plot"):
        del settings[key]
    ck["settings"] = settings
    ck["trainer"]["callbacks"] = [None if s is None else
                                  {k: v for k, v in s.items() if k != "__callback__"}
                                  for s in ck["trainer"]["callbacks"]]
    meta["checkpoint"] = json.dumps(ck)
    training = json.loads(meta["training"])
    meta["training"] = json.dumps(training)
    save_file(load_file(str(path)), str(out), metadata=meta)


def test_settings_given_with_resume_are_reported_as_ignored(tmp_path, capsys):
    """Every setting typed with --resume but the ones it takes gets the note, even one
    typed at its default value (--dataset digits); --lr applies (review findings 4, 5)."""
    assert main(["train", "--hidden", "8", "--batch-size", "64", "--epochs", "1", "--quiet",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    ck = tmp_path / "ck" / CHECKPOINT_NAME
    assert main(["train", "--resume", str(ck), "--epochs", "2", "--lr", "0.005", "--hidden",
                 "32", "--dataset", "digits"]) == 0
    captured = capsys.readouterr()
    assert "--dataset, --hidden ignored: a resumed run keeps its checkpoint's settings" \
        in captured.err
    assert "--lr ignored" not in captured.err and "--lr," not in captured.err.split("ignored")[0]
    assert "at epoch 2, batch 1 with learning rate 0.005 (was 0.001)" in captured.out
    resumed = handgrad.load_checkpoint(ck)
    assert resumed.config.lr == 0.005 and resumed.optimizer_state["hyperparameters"]["lr"] == 0.005


def test_flags_the_run_does_not_use_get_a_note(tmp_path, capsys):
    """Review finding 5: --nesterov --momentum with adam, --step-size without the step
    schedule, --warmup-epochs without cosine are not dropped silently."""
    assert main(["train", "--hidden", "4", "--epochs", "1", "--quiet", "--nesterov",
                 "--momentum", "0.5", "--step-size", "3", "--warmup-epochs", "5"]) == 0
    err = capsys.readouterr().err
    assert "note: --momentum, --nesterov ignored: they apply to --optimizer sgd" in err
    assert "note: --step-size ignored: it applies to --schedule step" in err
    assert "note: --warmup-epochs ignored: it applies to --schedule cosine" in err
    assert main(["train", "--hidden", "4", "--epochs", "2", "--quiet", "--optimizer", "sgd",
                 "--nesterov", "--momentum", "0.5", "--schedule", "cosine",
                 "--warmup-epochs", "1"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_resuming_a_finished_run_says_it_is_complete(tmp_path, capsys):
    """Review finding 14: nothing trained, exit 0, and the checkpoint is left alone."""
    assert main(["train", "--hidden", "4", "--batch-size", "64", "--epochs", "2", "--quiet",
                 "--checkpoint-dir", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    ck = tmp_path / "ck" / CHECKPOINT_NAME
    before = ck.read_bytes()
    assert main(["train", "--resume", str(ck)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"{ck}: the run is complete (2 of 2 epochs); nothing to train" in out
    assert "resuming from" not in out and "epoch 3" not in out
    assert ck.read_bytes() == before


def test_early_stopping_says_when_it_stopped_and_which_weights_it_kept(capsys):
    assert main(["train", "--hidden", "32", "--epochs", "200", "--early-stopping",
                 "--n-iter-no-change", "2", "--lr", "0.01", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    import re

    found = re.search(r"early stopping: no improvement in val_loss for more than 2 epochs; "
                      r"stopped after epoch (\d+) of 200, kept the weights of epoch (\d+) "
                      r"\(val_loss ([0-9.]+)\)", out)
    assert found, out
    stopped, kept = int(found[1]), int(found[2])
    assert kept < stopped < 200
    lines = [l for l in out.splitlines() if l.startswith("epoch")]
    assert len(lines) == stopped
    assert f"val_loss {found[3]}" in lines[kept - 1]  # the epoch whose loss it names


def test_a_ruined_run_gets_a_warning_and_keeps_exit_code_0(capsys):
    """Review finding 14: sgd at lr 100 ends far worse than a uniform guess."""
    assert main(["train", "--hidden", "16", "--epochs", "2", "--optimizer", "sgd", "--lr",
                 "100", "--quiet"]) == ExitCode.OK
    err = capsys.readouterr().err
    assert "handgrad: warning: training ruined the network" in err
    assert "uniform guess's (ln 10 = 2.3)" in err and "smaller --lr" in err
    assert main(["train", "--hidden", "16", "--epochs", "2", "--quiet"]) == ExitCode.OK
    assert "warning" not in capsys.readouterr().err


def test_divergence_advice_after_back_offs_can_be_followed(tmp_path, capsys):
    """Review finding 4: after the back-offs, the advice is a command that works (and not
    the back-off already used); the checkpoint holds the last complete epoch."""
    ck = tmp_path / "ck" / CHECKPOINT_NAME
    code = main(["train", "--hidden", "16", "--epochs", "3", "--optimizer", "sgd", "--lr",
                 "1e9", "--on-divergence", "backoff", "--quiet",
                 "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == ExitCode.DIVERGED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "5 automatic learning-rate back-offs (down to 3.125e+07) did not help" in err
    assert f"the weights of the last complete epoch are in {ck}" in err
    assert f"handgrad train --resume {ck} --lr 3.12e+06" in err
    assert "--on-divergence backoff" not in err
    state = handgrad.load_checkpoint(ck).trainer_state
    assert state["epoch"] == 0 and state["batch"] == 0  # the start: no epoch completed
    assert main(["train", "--resume", str(ck), "--lr", "0.05", "--quiet"]) == ExitCode.OK
    captured = capsys.readouterr()
    assert "ignored" not in captured.err
    assert "test accuracy" in captured.out


def test_model_files_of_handgrad_0_1_load_and_describe_their_run(tmp_path, capsys):
    """A 0.1 model file (format version 1, the run's "settings") loads, and info and
    evaluate read its settings."""
    assert main(["train", "--hidden", "8", "--batch-size", "64", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "new.safetensors")]) == 0
    capsys.readouterr()
    import struct

    from safetensors.numpy import load_file, save_file

    path = tmp_path / "new.safetensors"
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    training = json.loads(meta["training"])
    settings = training.pop("config")  # 0.1 had the same keys, less the ones added since
    for key in ("shuffle", "l2", "on_divergence", "out", "checkpoint_dir", "plot"):
        del settings[key]
    training["settings"] = settings
    meta.update(format_version="1", training=json.dumps(training))
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    assert main(["info", str(tmp_path / "old.safetensors")]) == 0
    assert "trained on   digits: 1 epoch, adam lr 0.001, batch 64, seed 0" in \
        capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "old.safetensors")]) == 0


def _label_first_csv(path, header):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=120)
    pixels = rng.integers(0, 256, size=(120, 6))
    pixels[:, -1] = rng.permutation(np.arange(120)) % 97  # spread out: not labels
    rows = [",".join(map(str, [label, *px])) for label, px in zip(y, pixels)]
    if header:
        rows.insert(0, ",".join(["label"] + [f"p{i}" for i in range(6)]))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_label_named_in_the_header_is_used_and_said(tmp_path, capsys):
    csv = _label_first_csv(tmp_path / "first.csv", header=True)
    assert main(["train", "--dataset", str(csv), "--epochs", "1", "--quiet"]) == 0
    assert main(["train", "--dataset", str(csv), "--epochs", "1"]) == 0
    assert "label column: 'label' (0-based column 0 of 7, named like a label)" in capsys.readouterr().out


def test_csv_last_column_that_is_no_label_is_refused_with_the_flag(tmp_path, capsys):
    csv = _label_first_csv(tmp_path / "first.csv", header=False)
    assert main(["train", "--dataset", str(csv), "--epochs", "1"]) == ExitCode.DATA
    err = capsys.readouterr().err
    assert "--label-column 0" in err and "label_column=" not in err
    assert main(["train", "--dataset", str(csv), "--epochs", "1", "--label-column", "0",
                 "--quiet"]) == 0


@pytest.mark.parametrize("flag_, value, problem", [
    ("--out", "notes.txt/model.safetensors", "notes.txt is a file, not a folder"),
    ("--out", "figs", "is a folder; give a file name"),
    ("--plot", "notes.txt", "notes.txt: is a file, not a folder"),
    ("--plot", "notes.txt/figs", "notes.txt is a file, not a folder"),
    ("--checkpoint-dir", "notes.txt", "notes.txt: is a file, not a folder"),
    ("--out", "/proc/model.safetensors", "is on the kernel's virtual proc file system"),
    ("--plot", "/proc/figures", "is on the kernel's virtual proc file system"),
])
def test_an_output_path_that_cannot_work_is_a_usage_error_before_training(
        tmp_path, monkeypatch, capsys, flag_, value, problem):
    if value.startswith("/proc"):
        from handgrad._atomic import _file_system_type

        if _file_system_type("/proc") != "proc":
            pytest.skip("no /proc file system on this machine")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "figs").mkdir()
    assert main(["train", "--epochs", "1", flag_, value]) == ExitCode.USAGE
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"handgrad: error: {value}: ")
    assert problem in err and "does not exist" not in err
    assert "epoch" not in captured.out  # refused before training
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_every_column_number_shown_is_what_label_column_takes(tmp_path, capsys):
    """Messages count columns from 0, as --label-column does: the number shown, passed
    back to the flag, names the same column."""
    import re

    rng = np.random.default_rng(0)
    rows = [f"{rng.normal():.3f},{i % 3},{rng.normal():.3f},{i % 3}" for i in range(90)]
    text = tmp_path / "t.csv"  # a text cell among the features, below a numeric first row
    text.write_text("\n".join(rows[:4] + ["0.5,b,0.5,1"] + rows[5:]) + "\n")
    assert main(["train", "--dataset", str(text), "--epochs", "1"]) == ExitCode.DATA
    err = capsys.readouterr().err
    found = re.search(r"line 5, 0-based column (\d+): 'b' is not a number; the labels were "
                      r"taken from 0-based column (\d+) of 4, the last column: if 0-based "
                      r"column (\d+) holds them, name it with --label-column (\d+)$", err.strip())
    assert found, err
    assert found[1] == found[3] == found[4] == "1" and found[2] == "3"

    # the column taken for the labels, as shown, is the one --label-column names
    numeric = tmp_path / "n.csv"
    numeric.write_text("\n".join(rows) + "\n")
    assert main(["train", "--dataset", str(numeric), "--epochs", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    shown = int(re.search(r"label column: 0-based column (\d+) of 4, the last column", out)[1])
    assert main(["train", "--dataset", str(numeric), "--epochs", "1", "--seed", "3",
                 "--label-column", str(shown)]) == 0
    again = capsys.readouterr().out
    assert f"label column: 0-based column {shown} of 4, given" in again
    final = [l for l in out.splitlines() if l.startswith("test accuracy")][0].split()[:5]
    assert [l for l in again.splitlines() if l.startswith("test accuracy")][0].split()[:5] \
        == final


def test_resume_of_a_folder_without_a_checkpoint_says_what_to_pass(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["train", "--resume", str(tmp_path / "runs")]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'runs'}: a folder without a checkpoint.safetensors" in err


def test_resume_of_a_checkpoint_dir_takes_its_checkpoint(tmp_path, capsys):
    args = ["--hidden", "8", "--batch-size", "64", "--seed", "2", "--quiet"]
    assert main(["train", *args, "--epochs", "1", "--checkpoint-dir", str(tmp_path / "ck"),
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    assert main(["train", "--resume", str(tmp_path / "ck"), "--epochs", "2", "--quiet"]) == 0
    ck = handgrad.load_checkpoint(tmp_path / "ck" / CHECKPOINT_NAME)
    assert ck.trainer_state["epoch"] == 2
