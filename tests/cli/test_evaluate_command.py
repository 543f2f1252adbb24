"""handgrad evaluate / explain on the recorded data set: its label column, its classes
matched to the model's by name, its path recorded absolute (review findings 2, 3, 12)."""

import numpy as np
import pytest

import handgrad
from handgrad.cli import ExitCode, main

SPECIES = ("setosa", "versicolor", "virginica")


def write_table(path, labels=SPECIES, rows_per_class=30, seed=0):
    """An iris-like CSV whose text labels are the FIRST column, headed 'species'."""
    rng = np.random.default_rng(seed)
    lines = ["species,a,b,c,d"]
    for i in range(rows_per_class * len(labels)):
        k = i % len(labels)
        x = rng.normal(SPECIES.index(labels[k]) if labels[k] in SPECIES else k, 0.2, 4)
        lines.append(f"{labels[k]}," + ",".join(f"{v:.3f}" for v in x))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    data = write_table(folder / "iris_first.csv")
    model = folder / "iris.safetensors"
    assert main(["train", "--dataset", str(data), "--label-column", "species", "--hidden", "8",
                 "--epochs", "30", "--lr", "0.05", "--quiet", "--out", str(model)]) == ExitCode.OK
    return model


def test_explain_reads_the_recorded_label_column(trained, capsys):
    assert main(["explain", str(trained), "--index", "0"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "test example 0 of iris_first.csv" in out
    assert any(f"label {name}" in out for name in SPECIES)


def test_evaluate_refuses_other_class_names(trained, tmp_path, capsys):
    other = write_table(tmp_path / "abc.csv", labels=("A", "B", "C"))
    assert main(["evaluate", str(trained), "--dataset", str(other)]) == ExitCode.DATA
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "A, B, C" in err and "setosa, versicolor, virginica" in err


def test_evaluate_matches_a_subset_of_the_classes_by_name(trained, tmp_path, capsys):
    """Data holding only two of the three classes: its labels are the model's indices."""
    two = write_table(tmp_path / "two.csv", labels=("versicolor", "virginica"))
    assert main(["evaluate", str(trained), "--dataset", str(two), "--json"]) == ExitCode.OK
    import json

    report = json.loads(capsys.readouterr().out)
    model = handgrad.load(trained)
    ds = handgrad.datasets.load_dataset(two, label_column="species")
    pred = model.predict(model.prepare(ds.x_test))
    truth = np.array([SPECIES.index(ds.classes[k]) for k in ds.y_test])
    assert report["accuracy"] == pytest.approx(float(np.mean(pred == truth)))
    assert report["accuracy"] > 0.8  # matched by position it would be far lower


def test_the_recorded_data_set_is_found_from_any_folder(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_table(run / "iris_mid.csv")
    monkeypatch.chdir(run)
    assert main(["train", "--dataset", "iris_mid.csv", "--label-column", "species",
                 "--hidden", "4", "--epochs", "2", "--quiet", "--out", "m.safetensors"]) == 0
    assert handgrad.load(run / "m.safetensors").training["dataset"] == str(run / "iris_mid.csv")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(run / "m.safetensors")]) == ExitCode.OK
    capsys.readouterr()


def test_a_recorded_path_that_is_gone_says_so_and_names_dataset(trained, tmp_path,
                                                                 monkeypatch, capsys):
    model = handgrad.load(trained)
    model.training["dataset"] = "iris_mid.csv"  # as handgrad recorded it before: relative
    old = handgrad.save(model, tmp_path / "old.safetensors")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(old)]) == ExitCode.DATA
    err = capsys.readouterr().err
    assert "records that it was trained on iris_mid.csv" in err
    assert f"relative to {tmp_path}" in err and "--dataset" in err
