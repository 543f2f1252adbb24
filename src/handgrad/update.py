"""One training step's last half: the weight gradients (B3, B4, B7) and the optimizer's update.

After :meth:`MLP.backward` has left ``∂L/∂Q`` of every layer in the workspace, an
:class:`Update` finishes the step::

    model.forward(xb, ws)                 # F1–F4
    loss = model.loss(ws, yb, w)          # F5
    model.backward(ws, yb, w)             # B2, B5, B6
    if not update(ws):                    # B3, B4, B7 and the optimizer's step
        ...                               # the gradient was not finite: nothing changed

Behind that call sit the two speed-ups of the fast path (docs/derivation.md, "The
finite-gradient check, and SGD fused into B4/B7"):

- *the gradient bound*: each layer's ``‖∂L/∂Q‖ ‖input‖`` bounds every gradient entry
  (:meth:`MLP.grads_bounded`), so most steps prove the gradient finite without reading
  it; only when the bound proves nothing is the gradient formed and checked entry by entry;
- *fusion*: with SGD (any variant but Nesterov's) the weight-gradient GEMMs accumulate
  straight into the weights or the momentum buffer (:meth:`SGD.fused_step` through
  :meth:`MLP.accumulate_grads`), so the gradient of a large matrix is never written out.

Data-parallel training passes ``reduce``, which sums the gradient over the workers before
the step: then the gradient is always formed, summed and checked exactly (a bound on one
worker's part says nothing about the sum).
"""

from __future__ import annotations

from functools import partial

from . import _blas
from .model import all_finite


class Update:
    """``update(ws, input_norm2=None, l2=0.0) -> bool``: B3, B4, B7 and one optimizer step.

    Returns False, changing nothing, when the gradient holds a NaN or an infinity.
    ``input_norm2`` is a bound on ``‖X‖²`` of the batch (see :meth:`MLP.grads_bounded`);
    ``l2`` the coefficient ``c`` of :meth:`MLP.l2_penalty` (0: no penalty).
    ``fuse=False`` turns fusion off (the values agree up to rounding).
    """

    def __init__(self, model, optimizer, *, fuse=True, reduce=None):
        self.model, self.optimizer, self.reduce = model, optimizer, reduce
        self.fused = bool(fuse and reduce is None and optimizer.can_fuse
                          and _blas.available(model.dtype))

    def __call__(self, ws, input_norm2=None, l2=0.0):
        model, optimizer = self.model, self.optimizer
        if self.reduce is None and model.grads_bounded(ws, input_norm2, l2):
            if self.fused:  # the weight-gradient GEMMs go straight into the update
                optimizer.fused_step(model.param_buffer,
                                     partial(model.accumulate_grads, ws, l2=l2))
                return True
            if l2:  # the penalty's c W (R1) is the step's: inside a compiled pass if it can
                model.weight_grads(ws)
                optimizer.step(model.param_buffer, model.grad_buffer,
                               penalty=(l2, model.weight_ranges()))
                return True
            model.weight_grads(ws)
        else:
            model.weight_grads(ws, l2)
            if self.reduce is not None:
                self.reduce(model.grad_buffer)  # the whole batch's gradient, in place
            if not all_finite(model.grad_buffer):
                return False
        optimizer.step(model.param_buffer, model.grad_buffer)
        return True
