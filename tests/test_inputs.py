"""Users' input files (handgrad.inputs): one reader for predict and explain alike."""

import numpy as np
import pytest

import handgrad
from handgrad.cli import ExitCode, main
from handgrad.datasets import DataError, Preprocessor, load_digits, save_idx
from handgrad.inputs import input_format, read_examples
from handgrad.tracing import explain


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits()
    return images[:6], labels[:6]


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory, digits):
    images, _ = load_digits()
    model = handgrad.MLP(64, 12, 10, seed=0)
    model.preprocessor = Preprocessor("divide").fit(images)
    model.classes = [str(k) for k in range(10)]
    path = tmp_path_factory.mktemp("inputs") / "digits.safetensors"
    handgrad.save(model, path)
    return path


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    """A tabular model with named classes, like one trained on iris.csv."""
    rng = np.random.default_rng(0)
    X = rng.normal(5, 1, size=(30, 4))
    model = handgrad.MLP(4, 8, 3, seed=0)
    model.preprocessor = Preprocessor("standardize").fit(X)
    model.classes = ["setosa", "versicolor", "virginica"]
    path = tmp_path_factory.mktemp("inputs") / "iris.safetensors"
    handgrad.save(model, path)
    return path


def write_all_formats(folder, images):
    """The same examples as a .npy, a CSV without header, a CSV with one, and IDX."""
    np.save(folder / "rows.npy", images)
    rows = images.reshape(len(images), -1)
    np.savetxt(folder / "rows.csv", rows, fmt="%d", delimiter=",")
    header = ",".join(f"p{i}" for i in range(rows.shape[1]))
    np.savetxt(folder / "named.csv", rows, fmt="%d", delimiter=",", header=header,
               comments="")
    save_idx(folder / "rows-idx3-ubyte", images.astype(np.uint8))
    return ["rows.npy", "rows.csv", "named.csv", "rows-idx3-ubyte"]


def test_every_format_gives_the_same_examples(tmp_path, digits, digits_model):
    images, _ = digits
    model = handgrad.load(digits_model)
    for name in write_all_formats(tmp_path, images):
        names, raw = read_examples(tmp_path / name, model)
        assert len(names) == len(images) and names[2] == f"{tmp_path / name}[2]"
        np.testing.assert_array_equal(np.asarray(raw, dtype=np.float64).reshape(len(images), -1),
                                      images.reshape(len(images), -1))
    assert [input_format(tmp_path / n) for n in ("rows.npy", "rows.csv", "rows-idx3-ubyte")] \
        == ["npy", "csv", "idx"]


def test_explain_reads_every_file_predict_reads(tmp_path, digits, digits_model, capsys):
    images, labels = digits
    model = handgrad.load(digits_model)
    for name in write_all_formats(tmp_path, images):
        t = explain(digits_model, tmp_path / name, index=3, label=int(labels[3]))
        assert t.ok, name
        np.testing.assert_allclose(t.x, model.prepare(images[3:4])[0], rtol=1e-6)
        assert f"{name}[3]" in t.description
        # and the command line, as predict does with the same file
        assert main(["explain", str(digits_model), str(tmp_path / name), "--index", "3"]) == 0
        assert main(["predict", str(digits_model), str(tmp_path / name)]) == 0
        capsys.readouterr()


def test_explain_a_csv_row_of_a_tabular_model(tmp_path, iris_model, capsys):
    (tmp_path / "flowers.csv").write_text(
        "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    assert main(["predict", str(iris_model), str(tmp_path / "flowers.csv")]) == 0
    predicted = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert main(["explain", str(iris_model), str(tmp_path / "flowers.csv"), "--index", "1",
                 "--format", "json"]) == ExitCode.OK
    import json

    d = json.loads(capsys.readouterr().out)
    model = handgrad.load(iris_model)
    np.testing.assert_allclose(d["x"], model.prepare(np.array([[6.7, 3.0, 5.2, 2.3]]))[0],
                               rtol=1e-6)
    assert model.classes[int(np.argmax(d["y"]))] == predicted[1]  # its own prediction
    # several rows and no --index: told to pick one
    assert main(["explain", str(iris_model), str(tmp_path / "flowers.csv")]) == ExitCode.USAGE
    assert "holds 2 examples" in capsys.readouterr().err


def test_a_file_of_another_shape_or_format_is_refused_naming_it(tmp_path, iris_model):
    np.savetxt(tmp_path / "five.csv", np.ones((2, 5)), delimiter=",")
    with pytest.raises(DataError, match=r"five.csv: holds an array of shape \(2, 5\)"):
        explain(iris_model, tmp_path / "five.csv", index=0)
    (tmp_path / "notes.txt").write_text("1 2 3 4")
    with pytest.raises(DataError, match="none of the formats explain reads: PNG"):
        explain(iris_model, tmp_path / "notes.txt")
