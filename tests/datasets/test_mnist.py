"""The MNIST family loader and the downloader, against a real HTTP server on 127.0.0.1."""

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from handgrad.datasets import Checksums, DataError, download, load_mnist, save_idx
from handgrad.datasets import mnist as mnist_module
from handgrad.datasets.mnist import PARTS, FamilyMember


# --------------------------------------------------------------------------- #
# A tiny local mirror
# --------------------------------------------------------------------------- #


class Server:
    """Serves ``files`` (path -> bytes); ``cut`` paths send half their body then close."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, prefix=""):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make_family(tmp_path, n_train=20, n_test=8):
    """Fixture IDX files of MNIST's layout, their gz bytes and checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    blobs, sums = {}, {}
    for part, a in arrays.items():
        p = save_idx(tmp_path / f"src-{part}.gz", a)
        blobs[part] = p.read_bytes()
        sums[part] = Checksums(md5=hashlib.md5(blobs[part]).hexdigest())
    return arrays, blobs, sums


@pytest.fixture
def family(tmp_path, monkeypatch):
    arrays, blobs, sums = make_family(tmp_path)
    member = FamilyMember("Test-MNIST", (), sums, tuple("0123456789"), "test")
    monkeypatch.setitem(mnist_module.DATASETS, "test-mnist", member)
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return arrays, blobs


def cache_files(tmp_path):
    folder = tmp_path / "cache" / "handgrad" / "test-mnist"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def check_loaded(result, arrays):
    (xtr, ytr), (xte, yte) = result
    np.testing.assert_array_equal(xtr, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ytr, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(xte, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(yte, arrays["t10k-labels-idx1-ubyte"])


def test_download_into_cache_then_load_offline(tmp_path, family, server):
    arrays, blobs = family
    for part in PARTS:
        server.files[f"/m/{part}.gz"] = blobs[part]
    result = load_mnist(name="test-mnist", mirrors=[server.url("m/")], progress=False)
    check_loaded(result, arrays)
    assert cache_files(tmp_path) == sorted(f"{p}.gz" for p in PARTS)
    # second load: served from the cache, no request made
    n = len(server.requests)
    check_loaded(load_mnist(name="test-mnist", mirrors=[server.url("m/")], progress=False),
                 arrays)
    assert len(server.requests) == n


def test_404_falls_back_to_the_next_mirror(tmp_path, family, server):
    arrays, blobs = family
    for part in PARTS:
        server.files[f"/good/{part}.gz"] = blobs[part]
    result = load_mnist(name="test-mnist", mirrors=[server.url("missing/"), server.url("good/")],
                        progress=False)
    check_loaded(result, arrays)
    assert any(r.startswith("/missing/") for r in server.requests)


def test_checksum_mismatch_is_rejected_and_nothing_is_kept(tmp_path, family, server):
    arrays, blobs = family
    for part in PARTS:
        server.files[f"/m/{part}.gz"] = blobs[part]
    server.files["/m/t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"not the real file")
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(name="test-mnist", mirrors=[server.url("m/")], progress=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    # the three good files are complete and verified; the bad one left nothing behind
    assert cache_files(tmp_path) == sorted(f"{p}.gz" for p in PARTS[:3])


def test_connection_cut_mid_file_leaves_nothing_half_written(tmp_path, family, server):
    arrays, blobs = family
    for part in PARTS:
        server.files[f"/cut/{part}.gz"] = blobs[part]
        server.files[f"/ok/{part}.gz"] = blobs[part]
    server.cut.add("/cut/train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="connection lost"):
        load_mnist(name="test-mnist", mirrors=[server.url("cut/")], progress=False)
    assert "train-images-idx3-ubyte.gz" not in cache_files(tmp_path)
    assert not any(name.endswith(".part") for name in cache_files(tmp_path))
    # with a working fallback the same call succeeds
    check_loaded(load_mnist(name="test-mnist", mirrors=[server.url("cut/"), server.url("ok/")],
                            progress=False), arrays)


def test_offline_error_says_which_files_to_put_where(tmp_path, family):
    with pytest.raises(DataError) as info:
        load_mnist(name="test-mnist", mirrors=["http://127.0.0.1:9/"], progress=False,
                   timeout=2)
    message = str(info.value)
    for part in PARTS:
        assert f"{part}.gz" in message
    assert str(tmp_path / "cache" / "handgrad" / "test-mnist") in message
    assert "HANDGRAD_DATA" in message
    # a few lines, not one of 1,600 characters: files, where to put them, each mirror once
    lines = message.splitlines()
    assert len(lines) == 4 and all(len(line) < 120 + len(str(tmp_path)) for line in lines)
    assert lines[3].startswith("  http://127.0.0.1:9/: cannot connect")
    assert message.count("127.0.0.1:9") == 1


def test_offline_error_names_a_handgrad_data_that_does_not_hold_the_files(
        tmp_path, family, monkeypatch):
    """A relative HANDGRAD_DATA read from another folder: the error says where it looked."""
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setenv("HANDGRAD_DATA", "../data")
    with pytest.raises(DataError) as info:
        load_mnist(name="test-mnist", download_missing=False)
    message = str(info.value)
    assert "HANDGRAD_DATA is set to '../data'" in message
    assert str(tmp_path / "elsewhere" / ".." / "data" / "test-mnist") in message


def test_offline_error_lists_each_mirror_and_the_files_it_failed(tmp_path, family, server):
    arrays, blobs = family
    for part in PARTS[:2]:
        server.files[f"/m/{part}.gz"] = blobs[part]
    server.files["/m/t10k-labels-idx1-ubyte.gz"] = gzip.compress(b"not the real file")
    with pytest.raises(DataError) as info:
        load_mnist(name="test-mnist", mirrors=[server.url("none/"), server.url("m/")],
                   progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == ("Test-MNIST: 2 files missing: t10k-images-idx3-ubyte.gz, "
                        "t10k-labels-idx1-ubyte.gz")
    assert lines[1].startswith("Put them into ")
    assert lines[2] == "Downloading failed:"
    assert lines[3] == f"  {server.url('none/')}: HTTP 404 Not Found"  # both files alike
    assert lines[4] == f"  {server.url('m/')}: HTTP 404 Not Found (t10k-images-idx3-ubyte.gz)"
    assert lines[5].startswith(f"  {server.url('m/')}: checksum mismatch")
    assert lines[5].endswith("(t10k-labels-idx1-ubyte.gz)") and len(lines) == 6


def test_handgrad_data_takes_precedence_over_the_cache(tmp_path, family, monkeypatch):
    arrays, blobs = family
    d = tmp_path / "data" / "test-mnist"
    d.mkdir(parents=True)
    for part in PARTS:
        (d / f"{part}.gz").write_bytes(blobs[part])
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "data"))
    check_loaded(load_mnist(name="test-mnist", download_missing=False), arrays)


def test_root_with_uncompressed_files(tmp_path, family):
    arrays, _ = family
    (tmp_path / "raw").mkdir()
    for part, a in arrays.items():
        save_idx(tmp_path / "raw" / part, a)  # no .gz: stored uncompressed
    check_loaded(load_mnist(tmp_path / "raw", name="test-mnist", download_missing=False),
                 arrays)


def test_mismatched_image_and_label_counts(tmp_path, family):
    arrays, _ = family
    root = tmp_path / "bad"
    root.mkdir()
    for part, a in arrays.items():
        save_idx(root / part, a[:5] if part == "t10k-labels-idx1-ubyte" else a)
    with pytest.raises(DataError, match="5 labels for 8 images"):
        load_mnist(root, name="test-mnist", download_missing=False)


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set"):
        load_mnist(name="cifar")


def test_download_helper_verifies_raw_sha256_of_recompressed_files(tmp_path, server):
    payload = b"\x00\x00\x08\x01\x00\x00\x00\x03abc"
    server.files["/x.gz"] = gzip.compress(payload, mtime=0)
    sums = Checksums(md5="0" * 32, raw_sha256=hashlib.sha256(payload).hexdigest())
    out = download([server.url("x.gz")], tmp_path / "x.gz", sums, progress=False)
    assert gzip.decompress(out.read_bytes()) == payload


def test_real_mnist_from_handgrad_data(mnist_dir, monkeypatch):
    monkeypatch.setenv("HANDGRAD_DATA", str(Path(mnist_dir).parent))
    (xtr, ytr), (xte, yte) = load_mnist(download_missing=False)
    assert xtr.shape == (60000, 28, 28) and xtr.dtype == np.uint8
    assert ytr.shape == (60000,) and ytr.dtype == np.uint8
    assert xte.shape == (10000, 28, 28) and yte.shape == (10000,)
    assert np.bincount(yte).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
