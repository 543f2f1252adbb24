"""One MNIST training epoch in handgrad and in the libraries it is compared with.

Every runner trains the same network (784-H-10, ReLU, softmax cross-entropy, float32),
from the same He-normal weights and zero biases (handgrad's initialisation, copied),
with the same batch size, optimizer and hyper-parameters, on a fresh shuffle per epoch
with the last partial batch included. Each has ``warm_up()`` (the one-time work: a few
steps of every batch shape, so compilers compile and kernels load; reported separately
as compile time) and ``epoch(seed)`` (one timed epoch; asynchronous runtimes are waited
for before it returns).

- ``handgrad``: :func:`handgrad.fit`, one epoch per call, as a user calls it;
- ``torch``: PyTorch eager, ``torch.optim`` (``foreach`` implementation, the default);
- ``torch-compile``: the model and loss compiled by ``torch.compile`` (inductor), and
  the optimizer's step compiled too, as PyTorch's tutorials recommend;
- ``jax``: the whole step (gather, forward, ``jax.value_and_grad``, update) under
  ``jax.jit`` with the parameters and optimizer state donated; the update is
  ``torch.optim``'s formulas written in ``jax.numpy``;
- ``sklearn``: ``MLPClassifier.partial_fit`` (its own initialisation; no warm-up);
- ``handgrad-estimator``: handgrad's scikit-learn-style ``handgrad.MLPClassifier``
  (``solver='sgd'``/``'adam'``) with the settings of the ``handgrad`` runner's
  :func:`handgrad.fit` (issue #15: it must be within 5% of ``handgrad.fit`` per epoch).

``epochs`` (default 1) trains that many epochs per timed call (one ``fit``); the time
returned is per epoch.

Used by ``speed.py`` (in one worker process per library) and ``mnist_accuracy.py time98``.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

LIBRARIES = ("handgrad", "handgrad-numpy", "handgrad-estimator", "torch", "torch-compile", "jax",
             "sklearn")


def threads():
    """Threads each library may use: $BENCH_THREADS (set by ``speed.py --threads``), or
    every core."""
    return int(os.environ.get("BENCH_THREADS") or os.cpu_count() or 1)


def thread_environment(n):
    """Environment variables that hold NumPy's OpenBLAS, PyTorch's OpenMP/MKL, numba and
    XLA to ``n`` threads (read when each library loads)."""
    env = {"BENCH_THREADS": str(n), "OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n),
           "MKL_NUM_THREADS": str(n), "NUMBA_NUM_THREADS": str(n)}
    if n == 1:  # XLA's CPU backend: no Eigen thread pool for its operations
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                  "--xla_cpu_multi_thread_eigen=false",
                                                  "intra_op_parallelism_threads=1"]))
    return env


def initial_weights(H, seed):
    """``(W1, b1, W2, b2)`` float32 arrays: handgrad's He-normal initialisation."""
    import handgrad

    model = handgrad.MLP(784, H, 10, seed=seed)
    return tuple(model.params[k].copy() for k in ("W1", "b1", "W2", "b2"))


def batches(n_rows, B):
    """The batch shapes of one epoch: B, and the last partial batch when there is one."""
    return sorted({B, n_rows % B or B}, reverse=True)


class HandgradRunner:
    """:func:`handgrad.fit`, as a user calls it."""

    def __init__(self, X, y, H, B, opt, lr, seed=0, epochs=1):
        import handgrad

        self.handgrad, self.X, self.y = handgrad, X, y
        self.H, self.B, self.opt, self.lr, self.seed = H, B, opt, lr, seed
        self.epochs = epochs

    def _optimizer(self):
        optim = self.handgrad.optim
        return optim.Adam(lr=self.lr) if self.opt == "adam" else optim.SGD(self.lr)

    def warm_up(self):
        """A short fit over a few batches of each shape (loads the accelerator's kernels)."""
        rows = self.B * 2 + (len(self.X) % self.B)
        model = self.handgrad.MLP(784, self.H, 10, seed=self.seed)
        self.handgrad.fit(model, self.X[:rows], self.y[:rows], optimizer=self._optimizer(),
                          epochs=1, batch_size=self.B, seed=self.seed)

    def epoch(self, seed):
        model = self.handgrad.MLP(784, self.H, 10, seed=seed)
        t0 = time.perf_counter()
        self.handgrad.fit(model, self.X, self.y, optimizer=self._optimizer(),
                          epochs=self.epochs, batch_size=self.B, seed=seed)
        return (time.perf_counter() - t0) / self.epochs


class EstimatorRunner:
    """``handgrad.MLPClassifier`` with :class:`HandgradRunner`'s settings: the same
    hidden width, batch, optimizer and hyper-parameters (``torch.optim``'s defaults:
    SGD without momentum, Adam's betas and epsilon), no penalty (``alpha=0``, as
    ``handgrad.fit``'s ``l2=0``), every epoch run (``tol=0``, no early stopping), the
    float32 data keeping float32 arithmetic. What differs is what the estimator does
    as scikit-learn's: its input validation, label encoding, Glorot initialisation and
    shuffles, and its end-of-epoch bookkeeping (``loss_curve_``)."""

    def __init__(self, X, y, H, B, opt, lr, seed=0, epochs=1):
        import handgrad

        self.handgrad, self.X, self.y = handgrad, X, y
        self.H, self.B, self.opt, self.lr, self.seed = H, B, opt, lr, seed
        self.epochs = epochs

    def _estimator(self, seed, epochs):
        return self.handgrad.MLPClassifier(
            hidden_layer_sizes=(self.H,), solver=self.opt, batch_size=self.B,
            learning_rate_init=self.lr, alpha=0.0, momentum=0.0, max_iter=epochs, tol=0.0,
            n_iter_no_change=float("inf"), shuffle=True, random_state=seed)

    def _fit(self, est, X, y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached
            est.fit(X, y)

    def warm_up(self):
        rows = self.B * 2 + (len(self.X) % self.B)
        self._fit(self._estimator(self.seed, 1), self.X[:rows], self.y[:rows])

    def epoch(self, seed):
        est = self._estimator(seed, self.epochs)
        t0 = time.perf_counter()
        self._fit(est, self.X, self.y)
        seconds = (time.perf_counter() - t0) / self.epochs
        assert est.n_iter_ == self.epochs, est.n_iter_
        return seconds


class TorchRunner:
    """PyTorch eager or, with ``compiled``, ``torch.compile`` (inductor)."""

    def __init__(self, X, y, H, B, opt, lr, seed=0, compiled=False):
        import torch

        self.torch, self.B, self.compiled = torch, B, compiled
        torch.set_num_threads(threads())
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        self.net = torch.nn.Sequential(torch.nn.Linear(784, H), torch.nn.ReLU(),
                                       torch.nn.Linear(H, 10))
        self._load(initial_weights(H, seed))
        self.optim = (torch.optim.Adam(self.net.parameters(), lr=lr) if opt == "adam"
                      else torch.optim.SGD(self.net.parameters(), lr=lr))
        loss_fn = torch.nn.CrossEntropyLoss()
        net = self.net

        def loss(x, t):
            return loss_fn(net(x), t)

        self.loss, self.step = loss, self.optim.step
        if compiled:
            # a fresh compile per configuration: dynamo caches by code object, and the
            # cells' shapes would otherwise pile up to its recompile limit (then: eager)
            torch._dynamo.reset()
            self.loss = torch.compile(loss, dynamic=False)
            self.step = torch.compile(self.optim.step, dynamic=False)

    def _load(self, weights):
        with self.torch.no_grad():
            for p, w in zip(self.net.parameters(), weights):
                p.copy_(self.torch.from_numpy(w))

    def _train(self, idx):
        self.optim.zero_grad(set_to_none=True)
        self.loss(self.X[idx], self.y[idx]).backward()
        self.step()

    def warm_up(self):
        """Two steps of each batch shape: torch.compile compiles each shape (dynamic=False)."""
        for size in batches(len(self.X), self.B):
            for _ in range(2):
                self._train(self.torch.arange(size))

    def epoch(self, seed):
        self.torch.manual_seed(seed)
        t0 = time.perf_counter()
        perm = self.torch.randperm(len(self.X))
        for i in range(0, len(self.X), self.B):
            self._train(perm[i:i + self.B])
        return time.perf_counter() - t0

    def predict(self, X):
        with self.torch.no_grad():
            return self.net(self.torch.from_numpy(X)).argmax(1).numpy()


class JaxRunner:
    """The whole training step under ``jax.jit``, parameters and state donated."""

    def __init__(self, X, y, H, B, opt, lr, seed=0):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.B = jax, jnp, B
        self.X, self.y = jnp.asarray(X), jnp.asarray(y.astype(np.int32))
        self.params = tuple(jnp.asarray(w) for w in initial_weights(H, seed))
        b1, b2, eps = 0.9, 0.999, 1e-8

        def loss_fn(params, x, t):
            W1, c1, W2, c2 = params
            h = jax.nn.relu(x @ W1.T + c1)  # (B, H)
            logp = jax.nn.log_softmax(h @ W2.T + c2)  # (B, M)
            return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))

        def update(params, grads, state):
            if opt == "sgd":
                return tuple(p - lr * g for p, g in zip(params, grads)), state
            m, v, t = state  # torch.optim.Adam's formulas
            t = t + 1
            m = tuple(b1 * mi + (1 - b1) * g for mi, g in zip(m, grads))
            v = tuple(b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads))
            step = lr / (1 - b1 ** t)
            root = jnp.sqrt(1 - b2 ** t)
            params = tuple(p - step * mi / (jnp.sqrt(vi) / root + eps)
                           for p, mi, vi in zip(params, m, v))
            return params, (m, v, t)

        def train_step(params, state, X, Y, idx):
            x, t = X[idx], Y[idx]  # the gather, inside the compiled step
            loss, grads = jax.value_and_grad(loss_fn)(params, x, t)
            params, state = update(params, grads, state)
            return params, state, loss

        self.state = ((tuple(jnp.zeros_like(p) for p in self.params),
                       tuple(jnp.zeros_like(p) for p in self.params),
                       jnp.zeros((), jnp.float32)) if opt == "adam" else ())
        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self.predict_fn = jax.jit(lambda params, x: jnp.argmax(
            jax.nn.relu(x @ params[0].T + params[1]) @ params[2].T + params[3], axis=1))

    def warm_up(self):
        """Compile the step for each batch shape, on copies: the real weights stay as
        initialised (the copies are donated and dropped)."""
        copy = lambda tree: self.jax.tree.map(self.jnp.copy, tree)  # noqa: E731
        for size in batches(self.X.shape[0], self.B):
            for _ in range(2):
                idx = np.arange(size, dtype=np.int32)
                out = self.train_step(copy(self.params), copy(self.state), self.X, self.y, idx)
        self.jax.block_until_ready(out)

    def epoch(self, seed):
        t0 = time.perf_counter()
        perm = np.random.default_rng(seed).permutation(self.X.shape[0]).astype(np.int32)
        for i in range(0, len(perm), self.B):
            self.params, self.state, loss = self.train_step(self.params, self.state, self.X,
                                                            self.y, perm[i:i + self.B])
        self.jax.block_until_ready(self.params)  # dispatch is asynchronous
        return time.perf_counter() - t0

    def predict(self, X):
        return np.asarray(self.predict_fn(self.params, self.jnp.asarray(X)))


class SklearnRunner:
    def __init__(self, X, y, H, B, opt, lr, seed=0):
        self.X, self.y, self.args = X, y, (H, B, opt, lr)

    def warm_up(self):
        pass

    def epoch(self, seed):
        from sklearn.neural_network import MLPClassifier

        H, B, opt, lr = self.args
        clf = MLPClassifier(hidden_layer_sizes=(H,), solver=opt, batch_size=B,
                            learning_rate_init=lr, alpha=0.0, momentum=0.0, max_iter=1,
                            shuffle=True, random_state=seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.partial_fit(self.X, self.y, classes=np.arange(10))
        return time.perf_counter() - t0


def make_runner(library, X, y, H, B, opt, lr, seed=0, epochs=1):
    if library in ("handgrad", "handgrad-numpy"):
        return HandgradRunner(X, y, H, B, opt, lr, seed, epochs)
    if library == "handgrad-estimator":
        return EstimatorRunner(X, y, H, B, opt, lr, seed, epochs)
    if epochs != 1:
        raise ValueError(f"{library} times one epoch per call (epochs=1)")
    if library in ("torch", "torch-compile"):
        return TorchRunner(X, y, H, B, opt, lr, seed, compiled=library == "torch-compile")
    if library == "jax":
        return JaxRunner(X, y, H, B, opt, lr, seed)
    if library == "sklearn":
        return SklearnRunner(X, y, H, B, opt, lr, seed)
    raise ValueError(f"unknown library {library!r}; choose from {', '.join(LIBRARIES)}")


def library_info(library):
    """The versions, BLAS and kernel of ``library`` as loaded in this process."""
    import handgrad
    from handgrad.sysinfo import numpy_blas

    info = {"numpy": np.__version__, "numpy_blas": numpy_blas()}
    if library.startswith("handgrad"):
        from handgrad import _accel

        info.update(handgrad=handgrad.__version__, accelerator=_accel.describe())
    elif library.startswith("torch"):
        import torch

        config = torch.__config__.show()
        line = next((s.strip(" -") for s in config.splitlines() if "Math Kernel" in s), None)
        dnn = next((s.strip(" -") for s in config.splitlines() if "MKL-DNN" in s
                    or "oneDNN" in s), None)
        info.update(torch=torch.__version__, blas=line or ("mkl" if torch.backends.mkl
                                                          .is_available() else None),
                    onednn=dnn, cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    threads=torch.get_num_threads())
        if library == "torch-compile":
            import torch._inductor.config as inductor

            info["inductor"] = {"cpp_wrapper": inductor.cpp_wrapper,
                                "freezing": inductor.freezing}
    elif library == "jax":
        import jax
        import jaxlib

        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__,
                    backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                    blas="XLA CPU (its own GEMM emitters and Eigen)",
                    xla_flags=os.environ.get("XLA_FLAGS"))
    elif library == "sklearn":
        import sklearn

        info.update(sklearn=sklearn.__version__, blas="SciPy's OpenBLAS or NumPy's")
    return info


def square_sgemm_gflops(library, n=2048, repeats=5):
    """The library's float32 n×n matrix product throughput (GFLOP/s, best of ``repeats``)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    if library.startswith("torch"):
        import torch

        a = torch.from_numpy(a)
        run = lambda: torch.matmul(a, a)  # noqa: E731
    elif library == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(a)
        f = jax.jit(lambda x: x @ x)
        run = lambda: f(a).block_until_ready()  # noqa: E731
    else:
        c = np.empty_like(a)
        run = lambda: np.matmul(a, a, out=c)  # noqa: E731
    run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9
