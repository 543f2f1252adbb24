"""Augmentation: random affine maps and elastic distortions of image rows."""

import numpy as np
import pytest

import handgrad
from handgrad.augment import Augmenter, bilinear_sample


# --------------------------------------------------------------------------- #
# Augmentation
# --------------------------------------------------------------------------- #


@pytest.fixture
def digits_rows():
    from handgrad.datasets import load_digits

    images, _ = load_digits()
    up = np.kron(images[:64] / 16, np.ones((1, 3, 3)))  # (64, 24, 24)
    return np.pad(up, ((0, 0), (2, 2), (2, 2))).reshape(64, -1).astype(np.float32)  # (64, 784)


@pytest.mark.parametrize("kwargs", [
    {"rotation": 15}, {"scale": 0.1, "shear": 10}, {"translate": 3},
    {"elastic_alpha": 34, "elastic_sigma": 4},
    {"rotation": 10, "scale": 0.1, "shear": 10, "translate": 2, "elastic_alpha": 34},
])
def test_augmentation_keeps_shape_dtype_range_and_is_seeded(digits_rows, kwargs):
    aug = Augmenter((28, 28), **kwargs)
    a = digits_rows.copy()
    b = digits_rows.copy()
    aug(a, np.random.default_rng(5))
    aug(b, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # deterministic under a seed
    assert a.shape == digits_rows.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not np.array_equal(a, digits_rows)  # it did change the images
    c = digits_rows.copy()
    aug(c, np.random.default_rng(6))
    assert not np.array_equal(a, c)
    # the ink stays roughly the same: a distortion, not a different picture
    ratio = a.sum(axis=1) / digits_rows.sum(axis=1)
    assert 0.6 < np.median(ratio) < 1.4


def test_identity_transform_changes_nothing(digits_rows):
    H = W = 28
    ys, xs = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    out = bilinear_sample(digits_rows.reshape(-1, H, W),
                          np.broadcast_to(ys.ravel(), (64, 784)).astype(float),
                          np.broadcast_to(xs.ravel(), (64, 784)).astype(float))
    np.testing.assert_allclose(out, digits_rows, atol=1e-6)


def test_half_pixel_shift_interpolates():
    img = np.zeros((1, 3, 3), np.float32)
    img[0, 1, 1] = 1.0
    out = bilinear_sample(img, np.array([[1.0]]), np.array([[1.5]]))
    assert out[0, 0] == pytest.approx(0.5)


def test_training_with_augmentation_is_reproducible(digits_rows):
    y = np.arange(64) % 10
    aug = Augmenter((28, 28), rotation=10, elastic_alpha=20)
    a = handgrad.MLP(784, 16, 10, seed=0)
    b = handgrad.MLP(784, 16, 10, seed=0)
    handgrad.fit(a, digits_rows, y, epochs=2, batch_size=16, seed=3, augment=aug)
    handgrad.fit(b, digits_rows, y, epochs=2, batch_size=16, seed=3, augment=aug)
    np.testing.assert_array_equal(a.param_buffer, b.param_buffer)


def test_bad_augmentation_settings():
    with pytest.raises(ValueError, match="rotation"):
        Augmenter(rotation=-1)
    with pytest.raises(ValueError, match="scale"):
        Augmenter(scale=1.5)
    with pytest.raises(ValueError, match="784 values are not"):
        Augmenter((20, 20), rotation=5)(np.zeros((2, 784), np.float32), np.random.default_rng())
