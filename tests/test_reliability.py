"""Faults: SIGKILL at random moments, full disks, unwritable outputs, divergence, signals."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.callbacks import CHECKPOINT_NAME
from handgrad.cli import ExitCode, main
from handgrad.train import SignalHandler

SMALL = ["--hidden", "16", "--batch-size", "64", "--seed", "1", "--val-fraction", "0.1"]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "handgrad", "train", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """At least 20 SIGKILLs at seeded random moments, most while checkpoints are written
    (one per epoch, every few milliseconds); after each, the last checkpoint loads, and
    resuming from it ends with weights bit-identical to an uninterrupted run."""
    epochs = 3000  # about 10 s of training: every kill lands mid-run
    assert main(["train", *SMALL, "--epochs", str(epochs), "--quiet",
                 "--out", str(tmp_path / "ref.safetensors")]) == 0
    reference = handgrad.load(tmp_path / "ref.safetensors").param_buffer

    ck_dir = tmp_path / "ck"
    ck = ck_dir / CHECKPOINT_NAME
    rng = np.random.default_rng(2024)
    # The first run is killed just after its first checkpoint: how long this machine takes
    # to start (imports, numba's with the accelerator) and train an epoch. The kills that
    # follow land that long and up to 0.55 s more after each start: during training.
    proc = start(*SMALL, "--epochs", epochs, "--checkpoint-dir", ck_dir, "--quiet")
    t0 = time.perf_counter()
    while not ck.exists() and proc.poll() is None and time.perf_counter() - t0 < 120:
        time.sleep(0.005)
    startup = time.perf_counter() - t0
    proc.kill()
    proc.wait(timeout=60)
    assert ck.exists(), proc.stderr.read()
    kills = 1
    finished_early = 0
    epochs_seen = []
    while kills < 20:
        args = (["--resume", ck] if ck.exists() else [*SMALL, "--epochs", epochs])
        proc = start(*args, "--checkpoint-dir", ck_dir, "--quiet")
        time.sleep(startup + rng.uniform(0.0, 0.55))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        else:
            finished_early += 1
        proc.wait(timeout=60)
        if ck.exists():
            _, _, state, _ = handgrad.load_checkpoint(ck)  # always complete and loadable
            epochs_seen.append(state["epoch"])
        if finished_early > 5:
            break
    assert kills >= 20
    assert not list(ck_dir.glob("*.part"))
    r = subprocess.run([sys.executable, "-m", "handgrad", "train", "--resume", str(ck),
                        "--checkpoint-dir", str(ck_dir), "--quiet",
                        "--out", str(tmp_path / "resumed.safetensors")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = handgrad.load(tmp_path / "resumed.safetensors").param_buffer
    np.testing.assert_array_equal(resumed, reference)
    # stale temporaries from writes that a kill interrupted are cleaned up by later runs
    assert not list(ck_dir.glob(".checkpoint.safetensors.*.tmp"))
    assert epochs_seen == sorted(epochs_seen)  # progress is never lost or rewound


def test_full_disk_stops_with_one_line_and_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch, capsys):
    import handgrad._atomic as atomic

    ck_dir = tmp_path / "ck"
    real_fsync = atomic.os.fsync
    calls = {"n": 0}

    def fsync_then_full(fd):
        calls["n"] += 1
        if calls["n"] > 4:  # two checkpoints (file + folder each) succeed, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_then_full)
    code = main(["train", *SMALL, "--epochs", "5", "--quiet", "--checkpoint-dir", str(ck_dir)])
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.ERROR
    assert err.count("\n") == 0 and "No space left on device" in err
    assert str(ck_dir / CHECKPOINT_NAME) in err
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    _, _, state, _ = handgrad.load_checkpoint(ck_dir / CHECKPOINT_NAME)
    assert state["epoch"] == 2  # the last good checkpoint, untouched
    assert sorted(p.name for p in ck_dir.iterdir()) == [CHECKPOINT_NAME]  # no partial file


def test_unwritable_output_is_detected_before_training(tmp_path, monkeypatch, capsys):
    real = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only file system under ro/
        if Path(path).parent == tmp_path / "ro" and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, flags, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    code = main(["train", "--out", str(tmp_path / "ro" / "m.safetensors")])
    captured = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert "not writable" in captured.err and "Read-only file system" in captured.err
    assert "epoch" not in captured.out  # nothing trained


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_directory_by_permissions(tmp_path):
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        r = subprocess.run([sys.executable, "-m", "handgrad", "train", "--out",
                            str(d / "m.safetensors")], capture_output=True, text=True)
        assert r.returncode == ExitCode.ERROR and "not writable" in r.stderr
    finally:
        d.chmod(0o755)


def test_huge_learning_rate_gives_the_divergence_message(tmp_path, capsys):
    ck = tmp_path / "ck"
    code = main(["train", *SMALL, "--epochs", "3", "--lr", "1e6", "--quiet",
                 "--checkpoint-dir", str(ck)])
    err = capsys.readouterr().err
    assert code == ExitCode.DIVERGED
    assert "diverged" in err and "learning rate" in err and "epoch 1" in err
    model, _, state, _ = handgrad.load_checkpoint(ck / CHECKPOINT_NAME)
    assert np.all(np.isfinite(model.param_buffer))  # the last finite weights


def test_backoff_retries_with_smaller_learning_rates(capsys, tmp_path):
    code = main(["train", *SMALL, "--epochs", "4", "--optimizer", "sgd", "--lr", "3000",
                 "--on-divergence", "backoff", "--out", str(tmp_path / "m.safetensors")])
    out = capsys.readouterr().out
    assert code == ExitCode.OK, out
    assert "retrying from epoch 1 with learning rate 1500" in out
    assert "with learning rate 750" in out
    model = handgrad.load(tmp_path / "m.safetensors")  # finished, with finite weights
    assert model.training["config"]["lr"] == 3000


def test_backoff_gives_up_after_five_tries(capsys):
    code = main(["train", *SMALL, "--epochs", "2", "--lr", "1e9", "--optimizer", "sgd",
                 "--on-divergence", "backoff", "--quiet"])
    captured = capsys.readouterr()
    assert code == ExitCode.DIVERGED
    assert "5 automatic learning-rate back-offs (down to 3.125e+07) did not help" in captured.err
    assert "start again with a smaller --lr (e.g. --lr 3.12e+06)" in captured.err
    assert "--on-divergence backoff" not in captured.err  # what was done already


def test_second_signal_stops_at_once():
    stopper = SignalHandler()
    stopper._handle(signal.SIGINT, None)
    assert stopper.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stopper._handle(signal.SIGINT, None)


def test_predict_streams_large_npy_files(tmp_path, capsys):
    """predict memory-maps .npy inputs and evaluates them in chunks."""
    model = handgrad.MLP(8, 4, 3, seed=0)
    handgrad.save(model, tmp_path / "m.safetensors")
    rows = np.random.default_rng(0).normal(size=(20000, 8)).astype(np.float32)
    np.save(tmp_path / "big.npy", rows)
    assert main(["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "big.npy"),
                 "--json"]) == 0
    import json

    results = json.loads(capsys.readouterr().out)
    assert len(results) == 20000
    assert [int(r["class"]) for r in results[:50]] == model.predict(rows[:50]).tolist()
