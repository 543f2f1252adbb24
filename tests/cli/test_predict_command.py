"""handgrad predict: which input files it reads, by suffix or content, and which it refuses."""

import gzip

import numpy as np
import pytest

import handgrad
from handgrad.cli import ExitCode, main
from handgrad.datasets import load_digits, save_idx


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "digits.safetensors"
    assert main(["train", "--epochs", "2", "--hidden", "16", "--quiet", "--out",
                 str(path)]) == ExitCode.OK
    return path


@pytest.fixture(scope="module")
def examples():
    images, _ = load_digits()
    return images[:3]


def expected(model_path, rows):
    model = handgrad.load(model_path)
    return model.predict(model.prepare(rows)).tolist()


def predicted(capsys):
    import json

    return [int(r["class"]) for r in json.loads(capsys.readouterr().out)]


@pytest.mark.parametrize("name, write", [
    ("rows.txt", lambda p, x: p.write_text("\n".join(",".join(map(str, r.ravel())) for r in x))),
    ("model.json", lambda p, x: p.write_text('{"a": 1}')),
    ("notes", lambda p, x: p.write_text("hello")),
    ("data.bin", lambda p, x: p.write_bytes(b"\x01\x02\x03\x04" * 8)),
    ("archive.zip", lambda p, x: p.write_bytes(b"PK\x03\x04" + bytes(40))),
    ("rows.csv.gz", lambda p, x: p.write_bytes(__import__("gzip").compress(b"1,2,3\n4,5,6\n"))),
])
def test_an_unknown_format_is_refused_listing_the_supported_ones(model_path, examples, tmp_path,
                                                                  capsys, name, write):
    path = tmp_path / name
    write(path, examples)
    assert main(["predict", str(model_path), str(path)]) == ExitCode.DATA
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and err.startswith(f"handgrad: error: {path}: ")
    assert "none of the formats predict reads" in err
    for fmt in ("PNG", "JPEG", ".npy", ".csv", "IDX"):
        assert fmt in err
    assert "magic" not in err  # not the IDX reader's complaint
    assert captured.out == ""


def test_a_bad_input_is_refused_before_anything_is_printed(model_path, examples, tmp_path,
                                                           capsys):
    np.save(tmp_path / "good.npy", examples)
    (tmp_path / "bad.txt").write_text("1,2,3")
    code = main(["predict", str(model_path), str(tmp_path / "good.npy"),
                 str(tmp_path / "bad.txt")])
    assert code == ExitCode.DATA
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name, compress", [
    ("t10k-images-idx3-ubyte", False), ("t10k-images-idx3-ubyte.gz", True),
    ("digits.idx", False), ("digits.gz", True),
    ("examples", False), ("examples.dat", True),  # no telling suffix: by content
])
def test_idx_files_are_recognised_by_name_or_content(model_path, examples, tmp_path, capsys,
                                                     name, compress):
    path, plain = tmp_path / name, tmp_path / "plain-idx"
    save_idx(plain, examples)
    path.write_bytes(gzip.compress(plain.read_bytes()) if compress else plain.read_bytes())
    assert main(["predict", str(model_path), str(path), "--json"]) == ExitCode.OK
    assert predicted(capsys) == expected(model_path, examples)


def test_an_npy_file_without_its_suffix_is_read_by_content(model_path, examples, tmp_path,
                                                           capsys):
    np.save(tmp_path / "x.npy", examples)
    (tmp_path / "x.npy").rename(tmp_path / "x.array")
    assert main(["predict", str(model_path), str(tmp_path / "x.array"), "--json"]) == 0
    assert predicted(capsys) == expected(model_path, examples)


def test_a_missing_input_is_named(model_path, tmp_path, capsys):
    assert main(["predict", str(model_path), str(tmp_path / "gone")]) == ExitCode.DATA
    assert f"{tmp_path / 'gone'}: no such file" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_command_quietly(model_path, tmp_path):
    """``handgrad predict m x.npy | head -1``: no "Broken pipe" error, 128 + SIGPIPE
    (review finding 11). 20,000 lines do not fit in the pipe: the write must fail."""
    import subprocess
    import sys

    rows = tmp_path / "many.npy"
    np.save(rows, np.tile(load_digits()[0][:1], (20000, 1, 1)))
    proc = subprocess.Popen([sys.executable, "-m", "handgrad", "predict", str(model_path),
                             str(rows)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert first.startswith(str(rows).encode())
    assert err == ""
    assert proc.returncode == ExitCode.BROKEN_PIPE
