"""Run-level features of the library: checkpoints, resume, signals, divergence policies."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import handgrad
from handgrad.callbacks import (
    CHECKPOINT_NAME,
    BackupAndRestore,
    Callback,
    LearningRateBackoff,
    ModelCheckpoint,
    StopTraining,
    TerminateOnNaN,
)
from handgrad.optim import SGD, Adam
from handgrad.schedules import ReduceOnPlateau, StepLR
from handgrad.train import DivergenceError, Trainer, TrainingInterrupted

# A training script run as its own process: data, model and settings fixed, so every run
# (fresh, resumed, killed) trains the same weights. argv: checkpoint dir ("-": none),
# output .npy, epochs.
JOB = """
    import sys
    import numpy as np
    import handgrad
    from handgrad.model import Dropout
    from handgrad.optim import SGD
    from handgrad.schedules import EarlyStopping, StepLR

    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 12)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)
    ck, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = handgrad.MLP(12, 16, 3, seed=1)
    opt = SGD(0.05, momentum=0.9)
    callbacks = [StepLR(opt, step_size=50, gamma=0.9),
                 EarlyStopping(model, "val_loss", n_iter_no_change=10 ** 6, tol=0.0)]
    try:
        handgrad.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=32, seed=3,
                     validation_data=(X[:48], y[:48]), callbacks=callbacks,
                     dropout=Dropout(0.1, 0.2), checkpoint_dir=None if ck == "-" else ck,
                     resume=True, handle_signals=True)
    except handgrad.TrainingInterrupted as exc:
        print(f"interrupted {exc.signum} {exc.checkpoint}", flush=True)
        sys.exit(130)
    np.save(out, model.param_buffer)
"""


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(JOB).replace("resume=True", "resume=ck != '-'"))
    return path


def start(job, *args, **kwargs):
    return subprocess.Popen([sys.executable, str(job), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, job):
    """handgrad.fit(checkpoint_dir=..., resume=True) killed by SIGKILL at 20+ seeded random
    moments (most while a checkpoint is being written: one per epoch, every few
    milliseconds) and simply run again each time ends bit-identical to an uninterrupted
    run, with a schedule, early stopping's best weights and dropout in the state."""
    epochs = 4000  # long enough on a quiet machine that 20 kills land before the end
    ref = start(job, "-", tmp_path / "ref.npy", epochs)
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    reference = np.load(tmp_path / "ref.npy")

    ck_dir = tmp_path / "ck"
    ck = ck_dir / CHECKPOINT_NAME
    rng = np.random.default_rng(2025)
    t0 = time.monotonic()
    first = start(job, ck_dir, tmp_path / "out.npy", epochs)
    while not ck.exists() and first.poll() is None:
        time.sleep(0.005)
    startup = time.monotonic() - t0  # imports and setup, on this machine, now
    first.kill()
    first.wait(timeout=60)
    kills, finished_early, epochs_seen = 1, 0, []
    while kills < 20 and finished_early <= 5:
        proc = start(job, ck_dir, tmp_path / "out.npy", epochs)
        time.sleep(startup + rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        else:
            finished_early += 1
        proc.wait(timeout=60)
        if ck.exists():
            state = handgrad.load_checkpoint(ck).trainer_state  # always complete
            epochs_seen.append(state["epoch"])
    assert kills >= 20
    final = start(job, ck_dir, tmp_path / "resumed.npy", epochs)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), reference)
    assert epochs_seen == sorted(epochs_seen) and epochs_seen[-1] > 0  # never rewound
    # temporaries of writes a kill interrupted are removed by the next run
    assert sorted(p.name for p in ck_dir.iterdir()) == [CHECKPOINT_NAME]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_the_batch_writes_a_checkpoint_and_resumes(tmp_path, job, sig):
    ref = start(job, "-", tmp_path / "ref.npy", 300)
    assert ref.wait(timeout=300) == 0
    ck_dir = tmp_path / "ck"
    proc = start(job, ck_dir, tmp_path / "out.npy", 300)
    deadline = time.monotonic() + 60
    while not (ck_dir / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the first epoch's checkpoint: training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert out.startswith(f"interrupted {int(sig)} {ck_dir / CHECKPOINT_NAME}")
    state = handgrad.load_checkpoint(ck_dir / CHECKPOINT_NAME).trainer_state
    assert 0 < state["epoch"] < 300
    again = start(job, ck_dir, tmp_path / "resumed.npy", 300)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "resumed.npy"), np.load(tmp_path / "ref.npy"))


def test_handle_signals_restores_the_previous_handlers(rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    handgrad.fit(handgrad.MLP(3, 4, 2, seed=0), X, y, epochs=2, batch_size=8, seed=0,
                 handle_signals=True)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_signal_in_process_raises_training_interrupted_with_the_position(rng, tmp_path):
    X, y = rng.normal(size=(64, 3)), rng.integers(0, 2, 64)

    class SignalAt(Callback):
        def on_batch_end(self, batch, loss):
            if batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted) as info:
        handgrad.fit(handgrad.MLP(3, 4, 2, seed=0), X, y, epochs=3, batch_size=8, seed=0,
                     callbacks=[SignalAt()], checkpoint_dir=tmp_path, handle_signals=True)
    exc = info.value
    assert (exc.signum, exc.epoch, exc.batch) == (signal.SIGTERM, 0, 3)
    assert exc.checkpoint == tmp_path / CHECKPOINT_NAME
    assert handgrad.load_checkpoint(exc.checkpoint).trainer_state["batch"] == 3


def _digits_rows():
    from handgrad.datasets import Preprocessor, load_digits

    images, labels = load_digits()
    return Preprocessor().fit(images).transform(images), labels


def test_resume_through_fit_is_bit_identical(tmp_path):
    X, y = _digits_rows()

    def run(epochs, **kwargs):
        model = handgrad.MLP(64, 16, 10, seed=0)
        opt = Adam(1e-2)
        history = handgrad.fit(model, X, y, optimizer=opt, epochs=epochs, batch_size=100,
                               seed=4, callbacks=[ReduceOnPlateau(opt, patience=1)], **kwargs)
        return model, history

    full, full_history = run(6)
    run(3, checkpoint_dir=tmp_path)  # a first run of 3 epochs, then one to 6 from it
    resumed, history = run(6, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.param_buffer, full.param_buffer)
    assert history.train_loss == full_history.train_loss
    # the same from a checkpoint path, without a checkpoint folder
    again, _ = run(6, resume=tmp_path / CHECKPOINT_NAME)
    np.testing.assert_array_equal(again.param_buffer, full.param_buffer)


def test_resume_true_without_a_checkpoint_starts_afresh(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    a, b = handgrad.MLP(3, 4, 2, seed=0), handgrad.MLP(3, 4, 2, seed=0)
    handgrad.fit(a, X, y, epochs=2, batch_size=8, seed=0)
    handgrad.fit(b, X, y, epochs=2, batch_size=8, seed=0, checkpoint_dir=tmp_path / "new",
                 resume=True)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)
    assert (tmp_path / "new" / CHECKPOINT_NAME).exists()


def test_resume_refuses_another_network_or_data(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot resume: the checkpoint holds MLP"):
        handgrad.fit(handgrad.MLP(3, 5, 2), X, y, epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="n_rows"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X[:30], y[:30], epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(handgrad.ModelFileError, match="no such file"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, resume=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="pass checkpoint_dir"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, resume=True)


def test_resume_refuses_other_data_of_the_same_size(tmp_path, rng):
    """Same row count, other rows (a cross-validation fold): refused, naming the
    checkpoint, what differs and the fix; the same data still resumes."""
    X, y = rng.normal(size=(80, 3)), rng.integers(0, 2, 80)
    handgrad.fit(handgrad.MLP(3, 4, 2), X[:40], y[:40], epochs=1, batch_size=8,
                 checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors.*training X, y differ.*"
                                         r"another checkpoint folder.*resume=False"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X[40:], y[40:], epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    y2 = y[:40].copy()
    y2[0] = 1 - y2[0]
    with pytest.raises(ValueError, match=r"the training y differs"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X[:40], y2, epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    history = handgrad.fit(handgrad.MLP(3, 4, 2), X[:40], y[:40], epochs=2, batch_size=8,
                           checkpoint_dir=tmp_path, resume=True)
    assert len(history.train_loss) == 2


def test_resume_fingerprints_sparse_data(tmp_path, rng):
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(40, 6, density=0.3, format="csr", random_state=0)
    y = rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(6, 4, 2), X, y, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    X2 = X.copy()
    X2.data[0] += 1.0
    with pytest.raises(ValueError, match="training X differs"):
        handgrad.fit(handgrad.MLP(6, 4, 2), X2, y, epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    handgrad.fit(handgrad.MLP(6, 4, 2), X, y, epochs=2, batch_size=8, checkpoint_dir=tmp_path,
                 resume=True)


def test_a_checkpoint_without_a_data_fingerprint_still_resumes(tmp_path, rng):
    """Checkpoints written before the fingerprint: the row and batch checks only."""
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    ck = handgrad.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert "data" in ck.trainer_state
    del ck.trainer_state["data"]
    trainer = handgrad.Trainer(handgrad.MLP(3, 4, 2), X[::-1].copy(), y[::-1].copy(), epochs=2,
                               batch_size=8, seed=0)
    trainer.restore(ck)
    assert trainer.run().train_loss[1] > 0


def test_checkpoint_folder_is_probed_and_stale_temporaries_removed(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    stale = tmp_path / f".{CHECKPOINT_NAME}.abc123.tmp"  # as a killed atomic write leaves it
    stale.write_bytes(b"partial")
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, batch_size=8, checkpoint_dir=tmp_path)
    assert not stale.exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=f"{re.escape(str(blocker))} is a file, not a folder"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, checkpoint_dir=blocker / "ck")


def test_stop_request_writes_a_checkpoint_and_run_continues(rng, tmp_path):
    X, y = rng.normal(size=(64, 3)), rng.integers(0, 2, 64)

    class StopOnce(Callback):
        done = False

        def on_batch_end(self, batch, loss):
            if batch == 4 and not self.done:
                self.done = True
                raise StopTraining

    model = handgrad.MLP(3, 4, 2, seed=0)
    backup = BackupAndRestore(tmp_path)
    trainer = Trainer(model, X, y, epochs=2, batch_size=8, seed=0,
                      callbacks=[StopOnce(), backup])
    trainer.run()
    assert not trainer.finished and backup.last_written == tmp_path / CHECKPOINT_NAME
    assert handgrad.load_checkpoint(backup.last_written).trainer_state["batch"] == 5
    trainer.run()  # carries on where it stopped (no second restore)
    reference = handgrad.MLP(3, 4, 2, seed=0)
    handgrad.fit(reference, X, y, epochs=2, batch_size=8, seed=0)
    np.testing.assert_array_equal(model.param_buffer, reference.param_buffer)


# --------------------------------------------------------------------------- #
# Divergence
# --------------------------------------------------------------------------- #


def test_divergence_raises_with_its_data_and_keeps_the_last_finite_weights(tmp_path, rng):
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    model = handgrad.MLP(5, 8, 3, seed=0)
    with pytest.raises(DivergenceError) as info:
        handgrad.fit(model, X, y, optimizer=SGD(1e9), epochs=3, batch_size=16, seed=0,
                     checkpoint_dir=tmp_path)
    exc = info.value
    assert exc.lr == 1e9 and exc.epoch == 0 and exc.batch >= 1 and exc.backoffs == 0
    assert "--" not in str(exc)  # the library names no command-line flag
    assert np.all(np.isfinite(model.param_buffer))
    saved = handgrad.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    np.testing.assert_array_equal(saved.model.param_buffer, model.param_buffer)
    assert saved.trainer_state["batch"] == exc.batch  # resumable at the offending batch


def test_backoff_halves_the_rate_and_finishes(rng):
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    model = handgrad.MLP(5, 8, 3, seed=0)
    opt = SGD(30.0)  # diverges at 30 and 15 on this data; 7.5 trains
    history = handgrad.fit(model, X, y, optimizer=opt, epochs=4, batch_size=16, seed=0,
                           on_divergence="backoff")
    assert len(history.epochs) == 4 and np.all(np.isfinite(history.train_loss))
    assert opt.lr == 7.5
    assert np.all(np.isfinite(model.param_buffer))


def test_backoff_gives_up_after_max_backoffs_and_scales_schedules(rng):
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    opt = SGD(1e12)
    step = StepLR(opt, step_size=1, gamma=0.5)
    reports = []
    backoff = LearningRateBackoff(0.5, 3, report=lambda e, t: reports.append(t.optimizer.lr))
    with pytest.raises(DivergenceError) as info:
        handgrad.fit(handgrad.MLP(5, 8, 3, seed=0), X, y, optimizer=opt, epochs=2,
                     batch_size=16, seed=0, callbacks=[step, backoff])
    assert info.value.backoffs == 3 and len(reports) == 3
    assert step.base_lr == 1e12 / 8  # the schedule backed off with the optimizer
    assert reports == [5e11, 2.5e11, 1.25e11]


def test_terminate_on_nan_stops_quietly(rng):
    X, y = rng.normal(size=(64, 5)), rng.integers(0, 3, 64)
    model = handgrad.MLP(5, 8, 3, seed=0)
    stop = TerminateOnNaN()
    history = handgrad.fit(model, X, y, optimizer=SGD(1e9), epochs=3, batch_size=16, seed=0,
                           callbacks=[stop])
    assert isinstance(stop.error, DivergenceError) and len(history.epochs) < 3
    assert np.all(np.isfinite(model.param_buffer))


# --------------------------------------------------------------------------- #
# ModelCheckpoint
# --------------------------------------------------------------------------- #


def test_model_checkpoint_keeps_the_best_epochs_model(tmp_path, rng):
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    Xv, yv = rng.normal(size=(30, 4)), rng.integers(0, 2, 30)  # noise: overfits soon
    model = handgrad.MLP(4, 32, 2, seed=0)
    snapshots = {}

    class Keep(Callback):
        def on_epoch_end(self, epoch, history):
            snapshots[epoch] = model.param_buffer.copy()

    best = ModelCheckpoint(tmp_path / "best.safetensors", "val_loss", save_best_only=True)
    every = ModelCheckpoint(tmp_path / "runs" / "m-{epoch:02d}-{val_loss:.3f}.safetensors")
    history = handgrad.fit(model, X, y, optimizer=Adam(0.05), epochs=12, batch_size=16,
                           seed=0, validation_data=(Xv, yv), callbacks=[Keep(), best, every])
    epoch = int(np.argmin(history.val_loss))
    np.testing.assert_array_equal(handgrad.load(tmp_path / "best.safetensors").param_buffer,
                                  snapshots[epoch])
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(files) == 12 and files[0] == f"m-01-{history.val_loss[0]:.3f}.safetensors"
    with pytest.raises(ValueError, match="cannot monitor"):
        ModelCheckpoint(tmp_path / "x", monitor="loss")


def test_resume_with_fewer_epochs_than_the_checkpoint_trained_is_refused(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=4, batch_size=8, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint\.safetensors: it has trained 4 epochs, "
                                         r"more than this run's epochs=2; pass epochs=4"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)
    # the same epochs: complete, nothing to train; more: continues
    assert len(handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=4, batch_size=8,
                            checkpoint_dir=tmp_path, resume=True).train_loss) == 4
    assert len(handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=5, batch_size=8,
                            checkpoint_dir=tmp_path, resume=True).train_loss) == 5


def test_resume_from_a_folder_takes_its_checkpoint(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, batch_size=8, seed=0,
                 checkpoint_dir=tmp_path / "runs")
    history = handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=2, batch_size=8, seed=0,
                           resume=tmp_path / "runs")
    assert len(history.train_loss) == 2  # the first epoch came from the checkpoint
    (tmp_path / "empty").mkdir()
    with pytest.raises(handgrad.ModelFileError,
                       match="empty: a folder without a checkpoint.safetensors"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, resume=str(tmp_path / "empty"))


def test_resume_with_another_optimizer_names_the_checkpoints(tmp_path, rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, batch_size=8,
                 optimizer=handgrad.optim.SGD(0.1), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint was trained with the SGD optimizer, "
                                         r"this run uses Adam; resume with optimizer=SGD"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=2, batch_size=8,
                     checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_handle_signals_must_be_a_bool(rng, value):
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, 20)
    with pytest.raises(ValueError, match=f"handle_signals must be True or False, got "
                                         f"{re.escape(repr(value))}"):
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=1, handle_signals=value)
    with pytest.raises(ValueError, match="handle_signals must be True or False"):
        handgrad.Trainer(handgrad.MLP(3, 4, 2), X, y, epochs=1).run(handle_signals=value)


def test_a_backoff_that_gives_up_says_how_many_back_offs_it_tried(rng):
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    with pytest.raises(handgrad.DivergenceError,
                       match=r"after 5 learning-rate back-offs \(down to [0-9.e+]+\) did not "
                             r"help") as info:
        handgrad.fit(handgrad.MLP(3, 4, 2), X, y, epochs=2, batch_size=8,
                     optimizer=handgrad.optim.SGD(1e300), on_divergence="backoff")
    assert info.value.backoffs == 5
