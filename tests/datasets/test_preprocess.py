"""Preprocessing that travels with the model, and the stratified split."""

import json

import numpy as np
import pytest

from handgrad.datasets import DataError, Preprocessor, stratified_split


def test_divide_uses_the_training_maximum(rng):
    x = rng.integers(0, 17, (50, 8, 8)).astype(np.uint8)
    x[0, 0, 0] = 16
    p = Preprocessor("divide").fit(x)
    out = p.transform(x)
    assert p.scale == 16 and out.shape == (50, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, x.reshape(50, 64) / 16, rtol=1e-7)


def test_standardize_with_training_statistics(rng):
    x = rng.normal(3, 2, size=(500, 4))
    x[:, 3] = 1.0  # constant feature: only centred
    p = Preprocessor("standardize").fit(x)
    out = p.transform(x, dtype="float64")
    np.testing.assert_allclose(out[:, :3].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1, rtol=1e-12)
    np.testing.assert_array_equal(out[:, 3], 0)
    new = rng.normal(size=(3, 4))
    np.testing.assert_allclose(p.transform(new, "float64"), (new - p.mean) / p.std)


def test_json_round_trip(rng):
    x = rng.normal(size=(20, 2, 3))
    for scaling in ("divide", "standardize", "none"):
        p = Preprocessor(scaling).fit(x)
        q = Preprocessor.from_dict(json.loads(json.dumps(p.to_dict())))
        np.testing.assert_array_equal(p.transform(x), q.transform(x))


def test_transform_checks_shape_and_values(rng):
    p = Preprocessor().fit(np.ones((4, 2, 2)))
    assert p.transform(np.ones((3, 4))).shape == (3, 4)  # flat rows accepted
    with pytest.raises(DataError, match="expected"):
        p.transform(np.ones((3, 3, 3)))
    with pytest.raises(DataError, match="NaN"):
        p.transform(np.full((1, 2, 2), np.nan))


@pytest.mark.parametrize("d, message", [
    (None, "not handgrad"),
    ({"format": "handgrad-preprocessing", "version": 99}, "version"),
    ({"format": "handgrad-preprocessing", "version": 1, "scaling": "standardize", "scale": None,
      "input_shape": [2], "mean": [0.0], "std": [1.0, 1.0]}, "damaged"),
    ({"format": "handgrad-preprocessing", "version": 1, "scaling": "divide", "scale": -1,
      "input_shape": [2]}, "damaged"),
])
def test_damaged_metadata_raises(d, message):
    with pytest.raises(DataError, match=message):
        Preprocessor.from_dict(d)


def test_stratified_split_is_proportional_and_seeded():
    y = np.repeat(np.arange(4), [100, 50, 10, 2])
    tr, va = stratified_split(y, 0.2, seed=1)
    assert np.bincount(y[va]).tolist() == [20, 10, 2, 1]
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
    tr2, va2 = stratified_split(y, 0.2, seed=1)
    np.testing.assert_array_equal(va, va2)
    _, va3 = stratified_split(y, 0.2, seed=2)
    assert not np.array_equal(va, va3)
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(y, 1.0)
