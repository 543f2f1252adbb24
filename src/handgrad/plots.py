"""PNG figures of a training run and a model (needs matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._requirements import MissingPackageError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingPackageError("plots need matplotlib: pip install 'handgrad[cli]'",
                                  ["plots"]) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def plot_history(history, path):
    """Loss and accuracy per epoch, train and validation, side by side."""
    plt = _pyplot()
    fig = history_figure(history)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def history_figure(history):
    """The figure of :func:`plot_history` (matplotlib's), not yet saved."""
    plt = _pyplot()
    epochs = [e + 1 for e in history["epochs"]]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, title in ((ax_loss, "loss", "Cross-entropy loss"),
                           (ax_acc, "accuracy", "Accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="train")
        val = [v for v in history[f"val_{key}"] if v is not None]
        if val and len(val) == len(epochs):
            ax.plot(epochs, val, "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))  # epochs: 1, 2, ...
        if len(epochs) == 1:  # one point: its epoch alone, not matplotlib's 0.96..1.04
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            ax.set_xticks(epochs)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    return fig


def plot_confusion(matrix, classes, path, title="Confusion matrix (test set)"):
    plt = _pyplot()
    m = np.asarray(matrix)
    n = len(classes)
    size = max(5, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), constrained_layout=True)
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), labels=classes, rotation=45 if max(map(len, classes)) > 2 else 0,
                  ha="right" if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = m.max() / 2 if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > threshold else "black")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_first_layer(W1, image_shape, path, max_units=64):
    """The first layer's weight rows as images (one tile per hidden unit)."""
    plt = _pyplot()
    n = min(W1.shape[0], max_units)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            w = W1[k].reshape(image_shape)
            lim = np.abs(w).max() or 1.0
            ax.imshow(w, cmap="seismic", vmin=-lim, vmax=lim)
    fig.suptitle(f"First-layer weights ({n} of {W1.shape[0]} hidden units; red > 0, blue < 0)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
