"""Property-based fuzzing of every loader that reads users' files.

Each target mutates a valid file (bit flips, truncation, insertion, appended bytes) or
feeds arbitrary bytes, and accepts only a correct load or the loader's own error type.
CI runs a short pass; a longer one: HANDGRAD_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py
(the IDX loader's target lives in tests/datasets/test_idx.py). Every crash found becomes a
regression test below.
"""

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import handgrad
from handgrad.datasets import DataError, Preprocessor, load_csv
from handgrad.serialization import ModelFileError

EXAMPLES = int(os.environ.get("HANDGRAD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def mutate(data, draw):
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "append", "delete"]))
        if kind == "flip" and buf:
            buf[draw(st.integers(0, len(buf) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            buf = buf[: draw(st.integers(0, len(buf)))]
        elif kind == "insert":
            i = draw(st.integers(0, len(buf)))
            buf[i:i] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "append":
            buf += draw(st.binary(min_size=1, max_size=12))
        elif kind == "delete" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            del buf[i:i + draw(st.integers(1, 8))]
    return bytes(buf)


# --------------------------------------------------------------------------- #
# CSV
# --------------------------------------------------------------------------- #

VALID_CSV = b"a,b,label\n1,2.5,x\n-3,4e-2,y\n5,6,x\n"


@FUZZ
@given(data=st.data())
@example(data=None)
def test_csv_loader_accepts_or_raises_data_error(tmp_path, data):
    raw = VALID_CSV if data is None else (
        mutate(VALID_CSV, data.draw) if data.draw(st.booleans())
        else data.draw(st.binary(max_size=200)))
    path = tmp_path / "f.csv"
    path.write_bytes(raw)
    try:
        X, y, names = load_csv(path)
    except DataError:
        return
    assert X.ndim == 2 and np.all(np.isfinite(X)) and len(y) == len(X)


# --------------------------------------------------------------------------- #
# Model files
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    m = handgrad.MLP(4, 3, 2, seed=0)
    m.classes = ["no", "yes"]
    m.preprocessor = Preprocessor("standardize").fit(np.arange(12.0).reshape(3, 4))
    handgrad.save(m, d / "m.safetensors")
    return (d / "m.safetensors").read_bytes()


@FUZZ
@given(data=st.data())
def test_model_loader_accepts_or_raises_model_file_error(tmp_path, model_bytes, data):
    raw = mutate(model_bytes, data.draw)
    path = tmp_path / "m.safetensors"
    path.write_bytes(raw)
    try:
        model = handgrad.load(path)
    except ModelFileError:
        return
    # a mutation that loads must still be a usable, finite model
    assert np.all(np.isfinite(model.param_buffer))
    p = model.predict_proba(np.zeros((1, model.n_inputs)))
    assert np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-5


# --------------------------------------------------------------------------- #
# Images for predict
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def png_bytes():
    PIL = pytest.importorskip("PIL.Image")
    img = PIL.new("L", (40, 40), 255)
    img.paste(0, (10, 8, 26, 32))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_image_decoding_accepts_or_raises_data_error(tmp_path, png_bytes, data):
    from handgrad.images import load_digit_image

    path = tmp_path / "x.png"
    path.write_bytes(mutate(png_bytes, data.draw))
    try:
        img = load_digit_image(path)
    except DataError:
        return
    assert img.shape == (28, 28) and np.all(np.isfinite(img))


def test_png_decompression_bomb_is_refused(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from handgrad.images import read_image

    # 10000 × 10000 pixels of one colour: a few hundred kB on disk, 100 MB decoded
    PIL.new("L", (10000, 10000), 0).save(tmp_path / "bomb.png", optimize=True)
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    with pytest.raises(DataError, match="pixels"):
        read_image(tmp_path / "bomb.png", max_pixels=10_000_000)


def test_blank_image_is_a_clear_error(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from handgrad.images import load_digit_image

    PIL.new("L", (30, 30), 255).save(tmp_path / "blank.png")
    with pytest.raises(DataError, match="blank"):
        load_digit_image(tmp_path / "blank.png")
