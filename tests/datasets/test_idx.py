"""The IDX reader and writer, against valid, damaged and hostile files."""

import gzip
import hashlib
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handgrad.datasets import DataError, load_idx, save_idx
from handgrad.datasets.mnist import DATASETS, PARTS, find_part

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compressed", [False, True])
def test_round_trip_every_type_code(tmp_path, rng, dtype, compressed):
    a = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    save_idx(path, a)
    b = load_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)


def test_compression_is_decided_by_content_not_name(tmp_path, rng):
    a = rng.integers(0, 255, size=(7, 3)).astype(np.uint8)
    save_idx(tmp_path / "x.gz", a)
    (tmp_path / "x.gz").rename(tmp_path / "plain-looking-name")
    np.testing.assert_array_equal(load_idx(tmp_path / "plain-looking-name"), a)
    save_idx(tmp_path / "y", a)
    (tmp_path / "y").rename(tmp_path / "y.gz")
    np.testing.assert_array_equal(load_idx(tmp_path / "y.gz"), a)


def test_header_is_big_endian_as_specified(tmp_path):
    save_idx(tmp_path / "a.idx", np.array([[1, 2]], dtype=np.int16))
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0, 1, 0, 2])


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def header(code, dims):
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, code, len(dims), *dims)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\x00\x00", "too short"),
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "type code"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (b"\x00\x00\x08\x40" + b"\x00" * 400, "64 dimensions"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
    (header(0x08, [3, 2]) + b"\x01" * 5, "truncated"),
    (header(0x08, [3, 2]) + b"\x01" * 7, "trailing"),
    (header(0x0D, [2]) + b"\x00" * 7, "truncated"),
])
def test_malformed_files_raise_data_error_naming_the_file(tmp_path, data, message, compress):
    path = write(tmp_path / "bad.idx", data, compress)
    with pytest.raises(DataError, match=message) as info:
        load_idx(path)
    assert "bad.idx" in str(info.value)


def test_huge_declared_size_fails_at_once(tmp_path):
    """A 20-byte file declaring 2^31 × 2^31 must fail before any allocation."""
    path = write(tmp_path / "huge.idx", header(0x08, [2**31, 2**31]) + b"\x00" * 8)
    assert path.stat().st_size == 20
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="over the limit"):
        load_idx(path)
    assert time.perf_counter() - t0 < 1.0


def test_gzip_bomb_is_rejected_without_inflating_it(tmp_path):
    """A tiny header followed by 1 GiB of zeros compresses to about 1 MB."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    parts = [comp.compress(header(0x08, [4]) + b"\x01\x02\x03\x04")]
    zeros = b"\x00" * (1 << 20)
    for _ in range(1024):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    path = tmp_path / "bomb.idx.gz"
    path.write_bytes(b"".join(parts))
    assert path.stat().st_size < 2_000_000
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="trailing"):
        load_idx(path)
    assert time.perf_counter() - t0 < 1.0  # inflating 1 GiB would take seconds


def test_bomb_declaring_a_large_shape_is_refused_by_the_limit(tmp_path):
    path = write(tmp_path / "big.idx", header(0x08, [1 << 20, 1 << 10]) + b"\x00" * 16, True)
    with pytest.raises(DataError, match="over the limit"):
        load_idx(path, max_bytes=100 << 20)


def test_corrupt_gzip_raises_data_error(tmp_path, rng):
    save_idx(tmp_path / "a.gz", rng.integers(0, 255, size=(100, 100)).astype(np.uint8))
    data = bytearray((tmp_path / "a.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "a.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="a.gz"):
        load_idx(tmp_path / "a.gz")
    (tmp_path / "cut.gz").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match="cut.gz"):
        load_idx(tmp_path / "cut.gz")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="directory"):
        load_idx(tmp_path)


def test_save_refuses_types_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        save_idx(tmp_path / "a", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        save_idx(tmp_path / "a", np.float32(1.0))


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    out = []
    for i, dtype in enumerate(DTYPES):
        a = (rng.normal(size=(2, 3)) * 10).astype(dtype)
        for compressed in (False, True):
            p = d / f"v{i}{'.gz' if compressed else ''}"
            save_idx(p, a)
            out.append((p.read_bytes(), a))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_load_correctly_or_raise_data_error(tmp_path, valid_files, data):
    raw, original = data.draw(st.sampled_from(valid_files))
    buf = bytearray(raw)
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    if kind == "flip" and buf:
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    elif kind == "append":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    path = tmp_path / "mutant"
    path.write_bytes(bytes(buf))
    try:
        result = load_idx(path, max_bytes=1 << 20)
    except DataError:
        return
    # a load that succeeds must be a well-formed array (the mutation may have hit
    # only the data bytes, or gzip's header fields that do not affect the content)
    assert isinstance(result, np.ndarray) and result.dtype.isnative
    assert result.nbytes <= 1 << 20


def test_real_mnist_checksums_and_shapes(mnist_dir):
    """The decompressed payloads hash to the SHA-256 published in the data's README."""
    for part in PARTS:
        path = find_part(mnist_dir, part)
        with gzip.open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert digest == DATASETS["mnist"].checksums[part].raw_sha256, part
    images = load_idx(find_part(mnist_dir, "train-images-idx3-ubyte"))
    labels = load_idx(find_part(mnist_dir, "train-labels-idx1-ubyte"))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels.max() == 9 and images.max() == 255
