"""Counts in messages: ``1 epoch``, ``2 epochs``."""

from __future__ import annotations


def count(n, noun, plural=None):
    """``n`` and ``noun``, plural unless ``n`` is exactly 1: ``count(1, "epoch")`` is
    ``"1 epoch"``, ``count(3, "epoch")`` ``"3 epochs"``; ``plural`` where ``noun + "s"``
    is wrong (``count(2, "class", "classes")``)."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
