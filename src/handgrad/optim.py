"""Optimizers with exactly PyTorch's update formulas, updating arrays in place.

``step(params, grads)`` takes either two arrays (such as a model's contiguous
``param_buffer`` and ``grad_buffer``: one pass over memory per operation) or two
dicts of arrays with the same keys. State is named as in the papers: the momentum
buffer of SGD, and ``m``, ``v``, ``t`` of Adam (Kingma & Ba, 2015).

An update makes several elementwise passes over the parameters, the gradient
and the state. It makes them one block of :data:`BLOCK` elements at a time
(cache blocking), so every pass after the first finds its operands in the
CPU's cache instead of main memory; the values are the same as whole-array
passes, element by element. Scaled sums such as ``m ← β1 m + (1 − β1) g`` and
``p ← p − lr d`` are one BLAS pass each (:mod:`handgrad._blas`: ``axpby``,
``axpy``) instead of two or three NumPy passes; they equal PyTorch's values up
to rounding.
"""

from __future__ import annotations

import math

import numpy as np

from . import _accel, _blas

FLAT = "flat"  # state key used when step() is given a single array
# Elements per block of an update. The BLAS passes split a block between the
# cores, so each core's share of Adam's five operands (parameter, gradient, m, v,
# scratch) stays within its L2 cache while the calls per step stay few.
BLOCK = 1 << 17


class Optimizer:
    """Base class: validation, the params/grads walk and the state dict."""

    def __init__(self, lr):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a positive number, got {lr!r}")
        self.lr = float(lr)
        self.state = {}  # key -> {name: ndarray or number}
        self._scratch = {}  # (key, slot) -> temporary buffer, not part of the state

    def step(self, params, grads, penalty=None):
        """Apply one update to ``params`` in place.

        ``penalty = (c, ranges)`` (flat arrays only) adds the L2 penalty's gradient
        ``c p`` (R1) to ``g`` on the flat ``(start, stop)`` ranges (the weights, not the
        biases) as part of the step: inside the compiled update where the accelerator
        takes it (no pass of its own), else added to ``grads`` in place first.
        """
        if isinstance(params, np.ndarray):
            self._check_pair(FLAT, params, grads)
            segments = None
            if penalty is not None and penalty[0]:
                known = self.__dict__.setdefault("_segments", {})  # not state: a cache
                key = (params.size, *penalty)
                segments = known.get(key)
                if segments is None:  # worked out once per coefficient and layout
                    if len(known) >= 16:  # (a run has two: the full and the last batch)
                        known.clear()
                    segments = known[key] = penalty_segments(params.size, *penalty)
                if not self.takes_penalty(FLAT, params, grads):
                    for start, stop, c in segments:
                        if c:  # g + c p (R1)
                            _blas.axpy(c, params[start:stop], grads[start:stop],
                                       scratch=self._tmp(FLAT, params[start:stop], 2))
                    segments = None
            self.update(FLAT, params, grads, segments)
            return
        if penalty is not None:
            raise ValueError("penalty= needs params and grads as two flat arrays")
        if set(params) != set(grads):
            raise ValueError(f"params and grads have different keys: "
                             f"{sorted(params)} vs {sorted(grads)}")
        for key in params:
            self._check_pair(key, params[key], grads[key])
            self.update(key, params[key], grads[key])

    def update(self, key, p, g, segments=None):
        """One step of ``p`` with gradient ``g``; ``segments`` ``((start, stop, c), ...)``
        covering ``p`` (flat) add ``c p`` to ``g`` on each (only where
        :meth:`takes_penalty` said yes)."""
        raise NotImplementedError

    def takes_penalty(self, key, p, g):
        """True when :meth:`update` folds a penalty into its compiled pass."""
        return False

    #: Whether :meth:`fused_step` can take the gradient as an operation instead.
    can_fuse = False

    def fused_step(self, p, accumulate):
        """One update of the flat array ``p`` whose gradient exists only as an operation.

        ``accumulate(out, α, β)`` sets ``out ← β out + α g`` for a flat ``out`` shaped
        like ``p``, with ``g`` the gradient at ``p`` as it was when ``fused_step`` began
        (``p`` may change only through ``accumulate``): the training loop passes the
        weight-gradient GEMMs themselves, so ``g`` is never written out and read back.
        Only where :attr:`can_fuse`.
        """
        raise NotImplementedError(f"{type(self).__name__} needs the gradient itself")

    @staticmethod
    def _check_pair(key, p, g):
        if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError(f"gradient of {key!r} must be an array of shape {p.shape} "
                             f"and dtype {p.dtype}")

    def _buffer(self, key, name, like):
        """A state array created as zeros on first use."""
        st = self.state.setdefault(key, {})
        if name not in st:
            st[name] = np.zeros_like(like)
        return st[name]

    def _tmp(self, key, like, slot):
        """Scratch buffer number ``slot`` for ``key``, shaped like ``like`` (not state).

        Sized by the largest block seen, so later (smaller) blocks reuse it and a
        step allocates nothing.
        """
        buf = self._scratch.get((key, slot))
        if buf is None or buf.size < like.size or buf.dtype != like.dtype:
            buf = self._scratch[(key, slot)] = np.empty(like.size, like.dtype)
        return buf[:like.size].reshape(like.shape)

    @staticmethod
    def blocks(*arrays):
        """Matching blocks of same-shaped ``arrays``, :data:`BLOCK` elements each.

        Arrays that are not all C-contiguous come back whole, as one block.
        """
        if not all(a.flags.c_contiguous for a in arrays):
            yield arrays
            return
        flat = [a.reshape(-1) for a in arrays]  # views: contiguous
        for i in range(0, flat[0].size, BLOCK):
            yield [f[i:i + BLOCK] for f in flat]

    # -- checkpoints -----------------------------------------------------------

    def hyperparameters(self):
        raise NotImplementedError

    def state_dict(self):
        """Hyper-parameters and a deep copy of the state (arrays and numbers)."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "state": {k: {n: (v.copy() if isinstance(v, np.ndarray) else v)
                          for n, v in st.items()} for k, st in self.state.items()},
        }

    def load_state_dict(self, state_dict):
        if state_dict.get("type") != type(self).__name__:
            raise ValueError(f"state dict is for {state_dict.get('type')!r}, "
                             f"not {type(self).__name__}")
        for name, value in state_dict["hyperparameters"].items():
            setattr(self, name, tuple(value) if isinstance(value, list) else value)
        self.state = {k: {n: (np.array(v) if isinstance(v, np.ndarray) else v)
                          for n, v in st.items()}
                      for k, st in state_dict["state"].items()}


def penalty_segments(size, coef, ranges):
    """``((start, stop, c), ...)`` covering ``range(size)`` in order: ``c = coef`` on the
    ``ranges`` (sorted, disjoint ``(start, stop)`` pairs), 0 between them."""
    segments, at = [], 0
    for start, stop in ranges:
        if not at <= start <= stop <= size:
            raise ValueError(f"penalty range ({start}, {stop}) is not sorted, disjoint and "
                             f"inside the {size} parameters")
        if start > at:
            segments.append((at, start, 0.0))
        segments.append((start, stop, float(coef)))
        at = stop
    if at < size:
        segments.append((at, size, 0.0))
    return tuple(segments)


def _check_nonneg(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


class SGD(Optimizer):
    """``torch.optim.SGD``: weight decay, momentum (with dampening) and Nesterov."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        super().__init__(lr)
        self.momentum = _check_nonneg("momentum", momentum)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.dampening = _check_nonneg("dampening", dampening)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and dampening = 0")

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "dampening": self.dampening}

    def takes_penalty(self, key, p, g):
        st = self.state.get(key, {})
        return bool(self.momentum) and _accel.takes(
            p, g, *([st["momentum_buffer"]] if "momentum_buffer" in st else []),
            contiguous=True)

    def update(self, key, p, g, segments=None):
        operands = [p, g]
        first = False
        if self.momentum:
            st = self.state.setdefault(key, {})
            first = "momentum_buffer" not in st
            if first:
                st["momentum_buffer"] = np.empty_like(p)
            operands.append(st["momentum_buffer"])
            if _accel.takes(p, g, st["momentum_buffer"], contiguous=True):
                # the same update as the loop below, as one compiled pass (handgrad._accel)
                _accel.sgd_momentum_update(
                    p.reshape(-1), g.reshape(-1), st["momentum_buffer"].reshape(-1),
                    lr=self.lr, momentum=self.momentum, dampening=self.dampening,
                    weight_decay=self.weight_decay, nesterov=self.nesterov, first=first,
                    segments=segments)
                return
        assert segments is None, "a penalty is folded in only where takes_penalty said so"
        for pb, gb, *bb in self.blocks(*operands):
            d = gb
            if self.weight_decay:
                d = self._tmp(key, pb, 0)
                np.multiply(pb, self.weight_decay, out=d)
                d += gb  # d = g + λ p
            if self.momentum:
                buf = bb[0]
                if first:
                    np.copyto(buf, d)  # first step: b = d
                else:
                    # b = μ b + (1 − τ) d in one BLAS pass
                    _blas.axpby(1.0 - self.dampening, d, self.momentum, buf,
                                scratch=self._tmp(key, pb, 2))
                if self.nesterov:
                    look = self._tmp(key, pb, 1)
                    np.copyto(look, d)
                    _blas.axpy(self.momentum, buf, look, scratch=self._tmp(key, pb, 2))
                    d = look  # d = d + μ b
                else:
                    d = buf
            # p = p − lr d in one BLAS pass
            _blas.axpy(-self.lr, d, pb, scratch=self._tmp(key, pb, 2))

    @property
    def can_fuse(self):
        """Every variant but Nesterov's, whose step reads ``g`` itself (``d = g + μ b``)."""
        return not self.nesterov

    def fused_step(self, p, accumulate):
        """The same update with ``g`` given as ``accumulate(out, α, β)``: ``out ← β out + α g``.

        Without momentum the products land straight in the parameters,
        ``p ← (1 − lr λ) p − lr g``. With momentum
        they update the buffer, ``b ← μ b + (1 − τ)(g + λ p)``, and one pass follows,
        ``p ← p − lr b``. The values equal :meth:`step`'s up to rounding.
        """
        assert self.can_fuse, "Nesterov momentum needs the gradient itself"
        lr, mu, wd, tau = self.lr, self.momentum, self.weight_decay, self.dampening
        if not mu:
            # p ← (1 − lr λ) p − lr g: the decay rides on the products' β, and g is
            # formed from the weights as they were before this step
            accumulate(p, -lr, 1.0 - lr * wd)
            return
        st = self.state.setdefault(FLAT, {})
        buf = st.get("momentum_buffer")
        if buf is None:  # first step: b = d = g + λ p
            buf = st["momentum_buffer"] = np.zeros_like(p)
            if wd:
                np.multiply(p, wd, out=buf)
            accumulate(buf, 1.0, 1.0)
        elif wd:  # b = μ b + (1 − τ) λ p, then + (1 − τ) g
            for pb, bb in self.blocks(p, buf):
                _blas.axpby((1.0 - tau) * wd, pb, mu, bb, scratch=self._tmp(FLAT, pb, 2))
            accumulate(buf, 1.0 - tau, 1.0)
        else:  # b = μ b + (1 − τ) g
            accumulate(buf, 1.0 - tau, mu)
        for pb, bb in self.blocks(p, buf):
            _blas.axpy(-lr, bb, pb, scratch=self._tmp(FLAT, pb, 2))  # p = p − lr b


class Adam(Optimizer):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient)."""

    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        b1, b2 = betas
        for name, b in (("beta1", b1), ("beta2", b2)):
            if not (isinstance(b, (int, float)) and 0 <= b < 1):
                raise ValueError(f"{name} must lie in [0, 1), got {b!r}")
        self.betas = (float(b1), float(b2))
        self.eps = _check_nonneg("eps", eps)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def takes_penalty(self, key, p, g):
        st = self.state.get(key, {})
        return _accel.takes(p, g, *(st[n] for n in ("m", "v") if n in st), contiguous=True)

    def update(self, key, p, g, segments=None):
        b1, b2 = self.betas
        st = self.state.setdefault(key, {})
        st["t"] = t = st.get("t", 0) + 1
        m = self._buffer(key, "m", p)
        v = self._buffer(key, "v", p)
        # p = p − (lr / (1 − β1^t)) m / (√v / √(1 − β2^t) + ε), with √(1 − β2^t)
        # moved out of the denominator: one pass over memory fewer, same value.
        bias1 = 1.0 - b1 ** t
        bias2_sqrt = math.sqrt(1.0 - b2 ** t)
        eps_hat = self.eps * bias2_sqrt
        scale = self.lr * bias2_sqrt / bias1
        if _accel.takes(p, g, m, v, contiguous=True):  # one float dtype, C order
            # the same update as the loop below, as one compiled pass (handgrad._accel)
            wd, decoupled = self.weight_decay, self.decoupled
            _accel.adam_update(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                               beta1=b1, beta2=b2, scale=scale, eps_hat=eps_hat,
                               weight_decay=0.0 if decoupled else wd,
                               shrink=1.0 - self.lr * wd if decoupled else 1.0,
                               segments=segments)
            return
        assert segments is None, "a penalty is folded in only where takes_penalty said so"
        for pb, gb, mb, vb in self.blocks(p, g, m, v):
            if self.weight_decay and self.decoupled:
                pb *= 1.0 - self.lr * self.weight_decay  # AdamW: p = p (1 − lr λ)
            if self.weight_decay and not self.decoupled:
                decayed = self._tmp(key, pb, 1)
                np.multiply(pb, self.weight_decay, out=decayed)
                decayed += gb  # Adam: g = g + λ p
                gb = decayed
            tmp = self._tmp(key, pb, 0)
            # m = β1 m + (1 − β1) g in one BLAS pass (PyTorch writes it as the lerp
            # m + (1 − β1)(g − m): the same value up to rounding)
            _blas.axpby(1.0 - b1, gb, b1, mb, scratch=tmp)
            # v = β2 v + (1 − β2) g²  (np.square: the same values, a faster loop than
            # np.multiply(g, g), whose two operands are one array)
            np.square(gb, out=tmp)
            _blas.axpby(1.0 - b2, tmp, b2, vb, scratch=tmp)
            np.sqrt(vb, out=tmp)
            tmp += eps_hat
            np.divide(mb, tmp, out=tmp)
            _blas.axpy(-scale, tmp, pb, scratch=tmp)  # p = p − scale m / (√v + ε̂)


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled weight decay (default 0.01)."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def make_optimizer(name, lr=None, momentum=0.0, weight_decay=None, nesterov=False):
    """Build an optimizer by its CLI name (``sgd``, ``adam`` or ``adamw``)."""
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    kwargs = {}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    if key == "sgd":
        return SGD(0.01 if lr is None else lr, momentum=momentum, nesterov=nesterov, **kwargs)
    return OPTIMIZERS[key](**({} if lr is None else {"lr": lr}), **kwargs)
