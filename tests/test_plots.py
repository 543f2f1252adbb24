"""handgrad.plots: the training-curve figure's axes."""

import pytest


def _history(n):
    return {"epochs": list(range(n)), "train_loss": [1.0 / (e + 1) for e in range(n)],
            "train_accuracy": [0.5 + 0.01 * e for e in range(n)],
            "val_loss": [None] * n, "val_accuracy": [None] * n}


@pytest.mark.parametrize("n", [1, 3, 40])
def test_the_epoch_axis_shows_whole_epochs_only(n):
    """Review finding 16: one epoch's curves had ticks 0.96, 0.98, ... 1.04."""
    pytest.importorskip("matplotlib")
    from handgrad.plots import _pyplot, history_figure

    fig = history_figure(_history(n))
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert 1 in ticks or n > 10
        if n == 1:
            assert ticks == [1]
    _pyplot().close(fig)
