"""Models and live servers for the serve tests.

Two small trained models: one on the embedded 8×8 digits, and one MNIST-shaped
(28×28) trained on a slice of real MNIST when ``HANDGRAD_DATA`` has it, else on
synthetic strokes, since the page must work for any image-shaped model.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import handgrad
from handgrad.datasets import Preprocessor, load_dataset


def _train(x_train, y_train, classes, hidden, epochs, seed=0):
    prep = Preprocessor("divide").fit(x_train)
    model = handgrad.MLP(prep.n_features, hidden, len(classes), seed=seed)
    model.preprocessor, model.classes = prep, list(classes)
    handgrad.fit(model, prep.transform(x_train), y_train, epochs=epochs, batch_size=64,
                 seed=seed)
    return model


def synthetic_strokes(n, rng):
    """28×28 uint8 images of ten kinds of line drawings (class k: a line at angle k·18°
    through a random centre), for an MNIST-shaped model without MNIST."""
    ys, xs = np.mgrid[0:28, 0:28]
    labels = rng.integers(0, 10, n)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(labels):
        angle = np.pi * k / 10
        cy, cx = 14 + rng.normal(0, 1.5, 2)
        d = np.abs((ys - cy) * np.cos(angle) - (xs - cx) * np.sin(angle))
        along = np.abs((ys - cy) * np.sin(angle) + (xs - cx) * np.cos(angle))
        images[i] = np.where((d < 1.5) & (along < 9), 255, 0)
    return images, labels


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-models")


@pytest.fixture(scope="session")
def digits_model(models_dir):
    ds = load_dataset("digits")
    model = _train(ds.x_train, ds.y_train, ds.classes, (32,), epochs=30)
    path = models_dir / "digits.safetensors"
    handgrad.save(model, path)
    return path


@pytest.fixture(scope="session")
def mnist_model(models_dir):
    """A 784-64-10 model: real MNIST (12,000 images, 3 epochs) or synthetic strokes."""
    root = os.environ.get("HANDGRAD_DATA")
    mnist = Path(root) / "mnist" if root else None
    if mnist is not None and (mnist / "train-images-idx3-ubyte.gz").exists():
        ds = load_dataset("mnist", root=mnist, progress=False)
        x, y, classes = ds.x_train[:12000], ds.y_train[:12000], ds.classes
        data = "mnist"
    else:
        x, y = synthetic_strokes(3000, np.random.default_rng(0))
        classes = [str(k) for k in range(10)]
        data = "synthetic strokes"
    model = _train(x, y, classes, (64,), epochs=3)
    model.training = {"data": data}  # what the tests may expect of it
    path = models_dir / "mnist.safetensors"
    handgrad.save(model, path)
    return path


@pytest.fixture(scope="session")
def iris_model(models_dir):
    """A 4-8-3 model of tabular examples with named classes, as one trained on iris.csv:
    the page has nothing to draw for it."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    x = rng.normal(0, 0.4, (150, 4)) + np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3],
                                                  [6.6, 3.0, 5.6, 2.0]])[y]
    prep = Preprocessor("standardize").fit(x)
    model = handgrad.MLP(4, (8,), 3, seed=0)
    model.preprocessor, model.classes = prep, ["setosa", "versicolor", "virginica"]
    handgrad.fit(model, prep.transform(x), y, epochs=20, batch_size=16, seed=0)
    path = models_dir / "iris.safetensors"
    handgrad.save(model, path)
    return path


class LiveServer:
    """An app served by uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        from handgrad.serve.server import bind

        self.app = app
        self.sock = bind("127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture
def live():
    """``live(app)`` serves an app for the test; every server stops at the end."""
    servers = []

    def start(app):
        s = LiveServer(app)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def make_app():
    """``make_app(*model_paths, **ServeConfig settings)``: the app for model files."""
    from handgrad.serve import ServeConfig, create_app, load_models

    def make(*paths, **config):
        return create_app(load_models(paths), ServeConfig(**config))

    return make


class ServeProcess:
    """``handgrad serve`` as a user runs it: a subprocess on a free port."""

    def __init__(self, *args, env=None):
        import tempfile

        self.log = tempfile.TemporaryFile("w+")  # stderr: the access log, never a full pipe
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "handgrad", "serve", "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.url = None
        deadline = time.monotonic() + 60
        lines = []
        while self.url is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("handgrad serve exited: " + "".join(lines) + self.stderr())
            lines.append(line)
            if line.startswith("page: "):
                self.url = line.split()[1].rstrip("/")
            if time.monotonic() > deadline:
                raise RuntimeError("handgrad serve did not start")

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def serve_process():
    procs = []

    def start(*args, **kwargs):
        p = ServeProcess(*args, **kwargs)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
        p.proc.stdout.close()
        p.log.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
