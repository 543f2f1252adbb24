"""Hand a model to PyTorch (needs torch): an ``nn.Sequential`` with identical outputs."""

from __future__ import annotations


def to_torch(model, probabilities=False):
    """``nn.Sequential`` of ``Linear`` and activation modules with ``model``'s weights.

    It maps rows (N, D) *already preprocessed* (``model.prepare(raw)``: flattened
    and scaled as in training) to logits (the outputs O); with ``probabilities=True``
    the output function follows (``Softmax(dim=1)``, ``Sigmoid`` or ``Identity``:
    :meth:`MLP.output`'s values). The preprocessing is not part of the network (the
    ONNX graph of :func:`handgrad.export_onnx`, by contrast, takes raw pixels). The
    dtype follows the model (float32 or float64).
    """
    try:
        import torch
    except ImportError:
        raise RuntimeError("to_torch needs PyTorch installed") from None
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "logistic": torch.nn.Sigmoid,
            "identity": torch.nn.Identity}
    dtype = torch.float32 if model.config.dtype == "float32" else torch.float64
    layers = []
    sizes = model.config.layer_sizes
    for l in range(1, model.n_layers + 1):
        linear = torch.nn.Linear(sizes[l - 1], sizes[l], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(model.params[f"W{l}"]))  # (out, in) as stored
            linear.bias.copy_(torch.from_numpy(model.params[f"b{l}"]))
        layers.append(linear)
        if l < model.n_layers:
            layers.append(acts[model.config.activation]())
    if probabilities:
        output = {"softmax": lambda: torch.nn.Softmax(dim=1), "logistic": torch.nn.Sigmoid,
                  "identity": torch.nn.Identity}.get(model.config.output)
        if output is None:
            raise ValueError(f"to_torch(probabilities=True) has no module for the "
                             f"{model.config.output!r} output; take exp of the outputs")
        layers.append(output())
    return torch.nn.Sequential(*layers)
