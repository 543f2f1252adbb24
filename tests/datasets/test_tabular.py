"""CSV and NumPy loaders, and the --dataset resolver."""

import pickle

import numpy as np
import pytest

from handgrad.datasets import (
    DataError,
    LabelColumn,
    load_csv,
    load_dataset,
    load_npy,
    load_npz,
    read_csv,
)


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


# --------------------------------------------------------------------------- #
# Which column holds the labels (issue #21: a label-first CSV trained on a pixel)
# --------------------------------------------------------------------------- #


def mnist_like_csv(tmp_path, rng, header=True, n=200):
    """Label first, then 16 "pixels": mostly 0, the last one with a few scattered values."""
    labels = np.arange(n) % 10
    pixels = np.zeros((n, 16), dtype=int)
    pixels[:, 5:9] = rng.integers(0, 256, (n, 4))
    pixels[rng.choice(n, 17, replace=False), -1] = rng.choice(np.arange(1, 256), 17,
                                                              replace=False)
    lines = [",".join(["label"] + [f"pixel{i}" for i in range(16)])] if header else []
    lines += [",".join(map(str, [lab, *row])) for lab, row in zip(labels, pixels)]
    return write(tmp_path, "train.csv", "\n".join(lines) + "\n"), labels


def test_a_header_named_like_a_label_is_the_label_wherever_it_is(tmp_path, rng):
    path, labels = mnist_like_csv(tmp_path, rng)
    table = read_csv(path)
    assert table.label == LabelColumn(0, "label", "named like a label", 17)
    assert str(table.label) == "'label' (0-based column 0 of 17, named like a label)"
    np.testing.assert_array_equal(table.y, labels)
    assert table.feature_names == [f"pixel{i}" for i in range(16)]
    ds = load_dataset(path)
    assert ds.classes == [str(i) for i in range(10)] and ds.label_column.name == "label"
    assert ds.x_train.shape[1] == 16


@pytest.mark.parametrize("names, expected", [
    ("a,Target,b", "Target"), ("x,y,label", "label"), ("CLASS,f", "CLASS"), ("f,g,Y", "Y"),
])
def test_label_names_in_any_case_and_in_order_of_preference(tmp_path, names, expected):
    rows = [names] + [",".join(str((i + k) % 3) for k in range(names.count(",") + 1))
                      for i in range(30)]
    table = read_csv(write(tmp_path, "t.csv", "\n".join(rows)))
    assert table.label.name == expected and table.label.how == "named like a label"


def test_without_a_label_name_the_last_column_is_taken_and_said_so(tmp_path, rng):
    rows = ["a,b,kind"] + [f"{rng.normal()},{rng.normal()},{'xyz'[i % 3]}" for i in range(60)]
    ds = load_dataset(write(tmp_path, "t.csv", "\n".join(rows)))
    assert str(ds.label_column) == "'kind' (0-based column 2 of 3, the last column)"
    assert ds.classes == ["x", "y", "z"]
    no_header = write(tmp_path, "n.csv", "\n".join(f"{rng.normal()},{i % 4}" for i in range(60)))
    table = read_csv(no_header)
    assert str(table.label) == "0-based column 1 of 2, the last column" and table.y.max() == 3


def test_a_headerless_label_first_file_is_refused_naming_the_fix(tmp_path, rng):
    path, _ = mnist_like_csv(tmp_path, rng, header=False)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "train.csv" in message and "0-based column 16 of 17, the last column" in message
    assert "scattered over" in message  # 18 distinct whole numbers over 0..255: a pixel
    assert "0-based column 0 does" in message
    assert "label_column=0" in message
    # the explicit choice is taken as given, with no guessing and no refusal
    ds = load_dataset(path, label_column=0)
    assert ds.n_classes == 10 and ds.label_column.how == "given"
    assert load_dataset(path, label_column=-1).label_column.index == 16


@pytest.mark.parametrize("column, problem", [
    ([f"{0.1 * i:.2f}" for i in range(40)], "not whole, such as '0.10'"),  # a measurement
    ([str(1000 + i) for i in range(40)], "40 distinct values in 40 rows"),  # an id
    (["7"] * 40, "all 40 rows hold the same value, '7'"),  # a constant (a blank pixel)
    ([str(i % 20) for i in range(40)], "20 distinct values in 40 rows"),
])
def test_a_guessed_column_that_does_not_look_like_labels_is_refused(tmp_path, rng, column,
                                                                    problem):
    rows = ["a,b,value"] + [f"{rng.normal()},{rng.normal()},{v}" for v in column]
    path = write(tmp_path, "t.csv", "\n".join(rows))
    with pytest.raises(DataError, match="does not look like a label column") as info:
        load_dataset(path)
    message = str(info.value)
    assert problem in message and "'value' (0-based column 2 of 3, the last column)" in message
    assert "label_column=NAME_OR_INDEX" in message
    # fractional values are refused by load_csv too; named explicitly, the column is used
    if "whole" in problem:
        with pytest.raises(DataError, match="not whole"):
            load_csv(path)
    X, y, _ = load_csv(path, label_column="value")
    assert len(y) == 40


def test_labels_named_like_a_label_are_checked_too(tmp_path, rng):
    rows = ["x,y"] + [f"{rng.normal()},{rng.normal()}" for _ in range(30)]
    with pytest.raises(DataError, match=r"'y' \(0-based column 1 of 2, named like a label\).*not whole"):
        read_csv(write(tmp_path, "xy.csv", "\n".join(rows)))


def test_small_files_are_not_judged_by_their_counts(tmp_path):
    # too few rows to tell labels from a feature by counting: taken as they are
    X, y, _ = load_csv(write(tmp_path, "s.csv", "1,2,5\n3,4,9\n5,6,7\n"))
    assert y.tolist() == [5, 9, 7]


def test_a_text_column_among_the_features_hints_at_the_label_column(tmp_path):
    rows = ["kind,a,b"] + [f"{'cat' if i % 2 else 'dog'},{i},{i % 3}" for i in range(30)]
    with pytest.raises(DataError) as info:
        load_csv(write(tmp_path, "t.csv", "\n".join(rows)))
    message = str(info.value)
    assert "line 2, kind: 'dog' is not a number" in message
    assert "'b' (0-based column 2 of 3, the last column)" in message
    assert "label_column='kind'" in message


def test_a_single_class_names_the_label_column(tmp_path, rng):
    rows = ["a,label"] + [f"{rng.normal()},3" for _ in range(10)]
    with pytest.raises(DataError, match=r"label column 'label' \(0-based column 1 of 2, named like a "
                                        r"label\): the labels hold a single class"):
        load_dataset(write(tmp_path, "one.csv", "\n".join(rows)))


def test_a_guessed_column_of_wildly_unbalanced_values_is_refused(tmp_path):
    """Digits with the label first and no header: the last pixel is 0 in most rows."""
    from handgrad.datasets import DataError, load_digits, read_csv

    images, labels = load_digits()
    rows = np.column_stack([labels, images.reshape(len(images), -1)])
    path = tmp_path / "nohdr.csv"
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    with pytest.raises(DataError, match="wildly unbalanced") as info:
        read_csv(path)
    assert "label_column=0" in str(info.value)
    table = read_csv(path, label_column=0)
    np.testing.assert_array_equal(table.y, labels)


@pytest.mark.parametrize("mmap", [False, True])
def test_npy_errors_say_what_the_file_is(tmp_path, mmap):
    """Review finding 8: a text file or a model named .npy is not "pickled objects", and a
    real object array is refused as pickled whether or not it is memory-mapped."""
    import handgrad

    text = tmp_path / "rows.npy"
    text.write_text("1,2,3\n4,5,6\n")
    model = handgrad.save(handgrad.MLP(2, 2, 2, seed=0), tmp_path / "m.safetensors")
    named = tmp_path / "model.npy"
    named.write_bytes(model.read_bytes())
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    for path, says in ((text, "holds text"), (named, "safetensors file")):
        with pytest.raises(DataError) as info:
            load_npy(path, mmap=mmap)
        message = str(info.value)
        assert message.startswith(f"{path}: not a .npy file") and says in message
        assert "pickled" not in message
    with pytest.raises(DataError) as info:
        load_npy(objects, mmap=mmap)
    assert "pickled Python objects" in str(info.value)
    assert "memory-mapped" not in str(info.value)
