"""Data augmentation for image rows: random affine maps and elastic distortions.

Shape key: B images per batch, each H×W pixels, stored as rows of D = H·W values.

Every output pixel p of image b samples the input image at
``A_b (p − c) + c + t_b + α · d_b(p)`` (bilinear interpolation, zero outside):
``A_b`` rotates, scales and shears about the centre ``c``, ``t_b`` translates, and
``d_b`` is a Simard-style elastic displacement field (Simard, Steinkraus & Platt,
ICDAR 2003): uniform random displacements in [−1, 1] smoothed by a Gaussian of
width σ. The smoothed fields are drawn once into a bank and each image takes one
at random, flipped or not about each axis (4 variants: as drawn, either mirror
image, or turned by a half turn) and with a random sign, which keeps the per-batch
cost to a few vectorised gathers. Deterministic given the ``rng``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Augmenter:
    """Callable ``augment(rows, rng)`` that distorts a batch of image rows in place.

    ``rotation`` and ``shear`` are maximum angles in degrees, ``scale`` the maximum
    relative zoom (0.1: ×0.9 to ×1.1), ``translate`` the maximum shift in pixels,
    ``elastic_alpha`` the elastic displacement scale in pixels (0: none) and
    ``elastic_sigma`` its smoothness in pixels.
    """

    image_shape: tuple = (28, 28)
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 4.0
    bank_size: int = 1024
    seed: int = 0

    def __post_init__(self):
        if len(self.image_shape) != 2 or min(self.image_shape) < 2:
            raise ValueError(f"augmentation needs 2-D images, got shape {self.image_shape}")
        for name in ("rotation", "scale", "shear", "translate", "elastic_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.scale >= 1:
            raise ValueError(f"scale must lie in [0, 1), got {self.scale!r}")
        if self.elastic_sigma <= 0:
            raise ValueError(f"elastic_sigma must be positive, got {self.elastic_sigma!r}")
        self.image_shape = tuple(int(d) for d in self.image_shape)
        H, W = self.image_shape
        ys, xs = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64),
                             indexing="ij")
        self._grid = np.stack([ys.ravel() - (H - 1) / 2, xs.ravel() - (W - 1) / 2])  # (2, D)
        self._bank = self._field_bank() if self.elastic_alpha > 0 else None

    @property
    def active(self):
        return any((self.rotation, self.scale, self.shear, self.translate, self.elastic_alpha))

    def _field_bank(self):
        """``bank_size`` smoothed displacement fields (K, 2, H, W), unit-free."""
        H, W = self.image_shape
        rng = np.random.default_rng(self.seed)
        raw = rng.uniform(-1, 1, size=(self.bank_size, 2, H, W))  # (K, 2, H, W)
        return gaussian_smooth(raw, self.elastic_sigma)

    def __call__(self, rows, rng):
        """Distort ``rows`` (B, D) in place; returns them."""
        if not self.active:
            return rows
        B, D = rows.shape
        H, W = self.image_shape
        if D != H * W:
            raise ValueError(f"rows of {D} values are not {H}×{W} images")
        # per-image affine maps about the centre: (B, 2, 2)
        theta = np.radians(rng.uniform(-self.rotation, self.rotation, B))
        shear = np.radians(rng.uniform(-self.shear, self.shear, B))
        zoom = 1.0 / rng.uniform(1 - self.scale, 1 + self.scale, B)  # output → input
        cos, sin = np.cos(theta), np.sin(theta)
        A = np.empty((B, 2, 2))
        A[:, 0, 0], A[:, 0, 1] = zoom * cos, zoom * (-sin + np.tan(shear) * cos)
        A[:, 1, 0], A[:, 1, 1] = zoom * sin, zoom * (cos + np.tan(shear) * sin)
        shift = rng.uniform(-self.translate, self.translate, (B, 2, 1))  # (B, 2, 1)
        src = A @ self._grid + shift  # (B, 2, D) source offsets from the centre
        src[:, 0] += (H - 1) / 2
        src[:, 1] += (W - 1) / 2
        if self._bank is not None:
            src += self.elastic_alpha * self._pick_fields(B, rng)  # (B, 2, D)
        out = bilinear_sample(rows.reshape(B, H, W), src[:, 0], src[:, 1])  # (B, D)
        rows[...] = out
        return rows

    def _pick_fields(self, B, rng):
        idx = rng.integers(0, self.bank_size, B)
        fields = self._bank[idx]  # (B, 2, H, W)
        flips = rng.integers(0, 2, (B, 2))
        fields[flips[:, 0] == 1] = fields[flips[:, 0] == 1, :, ::-1, :]
        fields[flips[:, 1] == 1] = fields[flips[:, 1] == 1, :, :, ::-1]
        fields *= rng.choice([-1.0, 1.0], (B, 1, 1, 1))
        return fields.reshape(B, 2, -1)


def bilinear_sample(images, ys, xs):
    """Sample ``images`` (B, H, W) at coordinates ``ys, xs`` (B, D), zero outside."""
    B, H, W = images.shape
    Wp = W + 2
    padded = np.zeros((B, H + 2, Wp), images.dtype)  # a zero border for outside samples
    padded[:, 1:-1, 1:-1] = images
    ys = np.clip(ys, -1.0, H).astype(np.float32) + 1.0  # padded coordinates, in [0, H + 1]
    xs = np.clip(xs, -1.0, W).astype(np.float32) + 1.0
    y0 = np.minimum(np.floor(ys), H)  # (B, D)
    x0 = np.minimum(np.floor(xs), W)
    wy, wx = ys - y0, xs - x0  # (B, D) weights of the lower-right neighbours
    index = (y0 * Wp + x0).astype(np.int32)  # (B, D) top-left neighbour
    index += (np.arange(B, dtype=np.int32) * ((H + 2) * Wp))[:, None]
    flat = padded.reshape(-1)
    # four gathers ("clip" skips bounds checks: the border keeps every index inside)
    v00 = np.take(flat, index, mode="clip")
    index += 1
    v01 = np.take(flat, index, mode="clip")
    index += Wp
    v11 = np.take(flat, index, mode="clip")
    index -= 1
    v10 = np.take(flat, index, mode="clip")
    v01 -= v00
    v01 *= wx
    v00 += v01  # top row, interpolated along x
    v11 -= v10
    v11 *= wx
    v10 += v11  # bottom row
    v10 -= v00
    v10 *= wy
    v00 += v10  # and along y
    return v00  # (B, D)


def gaussian_smooth(a, sigma):
    """Smooth the last two axes of ``a`` with a Gaussian of width ``sigma`` (zero padding)."""
    radius = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    out = a
    for axis in (-2, -1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad)
        acc = np.zeros_like(out)
        for i, weight in enumerate(k):
            acc += weight * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out
