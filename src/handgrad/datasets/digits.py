"""The embedded 8×8 handwritten digits: a data set that works offline.

1,797 images of 8×8 pixels with values 0–16, ten classes. The file
``data/digits.csv.gz`` is the copy bundled with scikit-learn (BSD-3-Clause),
taken from the UCI ML "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin and C. Kaynak, 1998; CC BY 4.0). Each row is 64 pixel values then
the label.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

from .errors import DataError

N_IMAGES = 1797


def load_digits():
    """Return ``(images, labels)``: uint8 (1797, 8, 8) with values 0–16, and (1797,)."""
    ref = resources.files(__package__).joinpath("data", "digits.csv.gz")
    with ref.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (N_IMAGES, 65):
        raise DataError(f"{ref}: the embedded digits file is damaged "
                        f"(shape {table.shape}, expected ({N_IMAGES}, 65)); reinstall handgrad")
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)  # (N, 8, 8)
    labels = table[:, 64].astype(np.uint8)  # (N,)
    return images, labels
