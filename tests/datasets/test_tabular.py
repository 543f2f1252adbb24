"""CSV and NumPy loaders, and the --dataset resolver."""

import pickle

import numpy as np
import pytest

from handgrad.datasets import DataError, load_csv, load_dataset, load_npy, load_npz


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_header_and_named_label(tmp_path):
    p = write(tmp_path, "d.csv", "a,b,kind\n1,2,cat\n3.5,-4,dog\n")
    X, y, names = load_csv(p, label_column="kind")
    np.testing.assert_array_equal(X, [[1, 2], [3.5, -4]])
    assert y.tolist() == ["cat", "dog"] and names == ["a", "b"]


def test_csv_without_header_label_by_index(tmp_path):
    p = write(tmp_path, "d.csv", "0,1,2\n1,3,4\n\n")
    X, y, names = load_csv(p, label_column=0)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert y.dtype == np.int64 and y.tolist() == [0, 1] and names is None


def test_csv_all_features(tmp_path):
    X, y, _ = load_csv(write(tmp_path, "d.csv", "1,2\n3,4\n"), label_column=None)
    assert X.shape == (2, 2) and y is None


@pytest.mark.parametrize("text, kwargs, message", [
    ("a,b,c\n1,2,0\n1,x,1\n", {}, r"line 3, b: 'x' is not a number"),
    ("1,2,0\n1,2\n", {}, "line 2: 2 columns, expected 3"),
    ("1,nan,0\n", {}, "not finite"),
    ("", {}, "no rows"),
    ("a,b\n", {}, "no data rows"),
    ("1,2\n", {"label_column": "b"}, "no header"),
    ("a,b\n1,2\n", {"label_column": "c"}, "no column named 'c'"),
    ("1,2\n", {"label_column": 5}, "out of range"),
    ("1\n2\n", {}, "at least one feature"),
])
def test_csv_bad_input(tmp_path, text, kwargs, message):
    with pytest.raises(DataError, match=message) as info:
        load_csv(write(tmp_path, "bad.csv", text), **kwargs)
    assert "bad.csv" in str(info.value)


def test_csv_size_limit_and_binary(tmp_path):
    p = write(tmp_path, "big.csv", "1,2\n" * 100)
    with pytest.raises(DataError, match="size limit"):
        load_csv(p, max_bytes=50)
    b = tmp_path / "bin.csv"
    b.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(DataError, match="UTF-8"):
        load_csv(b)


def test_npy_and_npz_round_trip(tmp_path):
    a = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_npy(tmp_path / "a.npy"), a)
    np.savez(tmp_path / "b.npz", X=a, y=np.array([0, 1]))
    d = load_npz(tmp_path / "b.npz")
    assert set(d) == {"X", "y"}


def test_pickles_are_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("evil.npy", "evil.npz"):
        (tmp_path / name).write_bytes(pickle.dumps(Evil()))
        loader = load_npy if name.endswith("npy") else load_npz
        with pytest.raises(DataError, match=name):
            loader(tmp_path / name)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        load_npy(tmp_path / "obj.npy")
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_npz(tmp_path / "obj.npz")
    assert not marker.exists()


def test_damaged_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="d.npz"):
        load_npz(tmp_path / "d.npz")


# --------------------------------------------------------------------------- #
# load_dataset: every --dataset form
# --------------------------------------------------------------------------- #


def test_dataset_digits():
    ds = load_dataset("digits")
    assert ds.x_train.shape[1:] == (8, 8) and len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.classes == [str(i) for i in range(10)]
    # stratified: every class in both splits, in proportion
    assert np.bincount(ds.y_test).min() >= 30


def test_dataset_csv_with_string_labels(tmp_path, rng):
    rows = ["f1,f2,label"] + [f"{rng.normal()},{rng.normal()},{'ab'[i % 2]}" for i in range(50)]
    p = write(tmp_path, "t.csv", "\n".join(rows))
    ds = load_dataset(p, label_column="label")
    assert ds.classes == ["a", "b"] and len(ds.x_train) == 40 and len(ds.x_test) == 10
    assert ds.feature_names == ["f1", "f2"]


def test_dataset_npz_forms(tmp_path, rng):
    x = rng.integers(0, 255, (30, 4, 4)).astype(np.uint8)
    y = np.array([3, 7] * 15)
    np.savez(tmp_path / "split.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:],
             y_test=y[20:])
    ds = load_dataset(tmp_path / "split.npz")
    assert ds.classes == ["3", "7"] and set(ds.y_train) == {0, 1} and len(ds.x_test) == 10
    np.savez(tmp_path / "xy.npz", X=x, y=y)
    assert len(load_dataset(tmp_path / "xy.npz").x_test) == 6
    np.savez(tmp_path / "odd.npz", images=x)
    with pytest.raises(DataError, match="expected arrays"):
        load_dataset(tmp_path / "odd.npz")


def test_dataset_idx_folder(tmp_path, rng):
    from handgrad.datasets import save_idx

    for split, n in (("train", 12), ("t10k", 6)):
        save_idx(tmp_path / f"{split}-images-idx3-ubyte.gz",
                 rng.integers(0, 255, (n, 5, 5)).astype(np.uint8))
        save_idx(tmp_path / f"{split}-labels-idx1-ubyte", (np.arange(n) % 3).astype(np.uint8))
    ds = load_dataset(tmp_path)
    assert ds.x_train.shape == (12, 5, 5) and ds.n_classes == 3
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels"):
        load_dataset(tmp_path)


def test_dataset_unknown_spec(tmp_path):
    with pytest.raises(DataError, match="not a known data set"):
        load_dataset("no-such-thing")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        load_dataset(tmp_path / "a.txt")
