"""Atomic writes: the files handgrad writes get the permissions a user's new file gets."""

import hashlib
import os
import stat

import numpy as np
import pytest

import handgrad
from handgrad._atomic import atomic_write, remove_stale_temporaries
from handgrad.datasets import Checksums, download


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_gives_a_new_file_0666_minus_umask(tmp_path, umask):
    with atomic_write(tmp_path / "f.bin") as f:
        f.write(b"data")
    assert mode(tmp_path / "f.bin") == 0o666 & ~umask
    # the same as a file the user creates with open()
    (tmp_path / "plain").write_bytes(b"x")
    assert mode(tmp_path / "f.bin") == mode(tmp_path / "plain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "plain"]


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o640


def test_model_checkpoint_and_onnx_files(tmp_path, umask):
    model = handgrad.MLP(4, 3, 2, seed=0)
    expected = 0o666 & ~umask
    handgrad.save(model, tmp_path / "m.safetensors")
    handgrad.save_checkpoint(tmp_path / "c.safetensors", model, handgrad.optim.SGD(0.1),
                             {"epoch": 0})
    assert mode(tmp_path / "m.safetensors") == expected
    assert mode(tmp_path / "c.safetensors") == expected
    pytest.importorskip("onnx")
    handgrad.export_onnx(model, tmp_path / "m.onnx")
    assert mode(tmp_path / "m.onnx") == expected


def test_downloaded_files(tmp_path, umask, monkeypatch):
    import sys

    dl = sys.modules["handgrad.datasets.download"]  # the package exports a function of that name
    body = b"payload"

    def fake_stream(url, out, timeout, progress, name):
        out.write(body)

    monkeypatch.setattr(dl, "_stream", fake_stream)
    dest = download(["http://127.0.0.1:9/f"], tmp_path / "f.gz",
                    Checksums(md5=hashlib.md5(body).hexdigest()), progress=False)
    assert dest.read_bytes() == body and mode(dest) == 0o666 & ~umask


def test_a_failed_write_leaves_no_temporary_and_stale_ones_are_found(tmp_path):
    path = tmp_path / "f.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".f.bin.0123abcd.tmp"  # as a killed write leaves it
    stale.write_bytes(b"x")
    assert remove_stale_temporaries(path) == [stale] and not stale.exists()


def test_existing_target_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(victim)
    with atomic_write(tmp_path / "link") as f:
        f.write(np.arange(3).tobytes())
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "link").is_symlink()


def _virtual_fs_folder():
    """A folder on /proc or /sys, where files cannot be created (Linux), or None."""
    from handgrad._atomic import _file_system_type

    for folder in ("/proc", "/sys"):
        if os.path.isdir(folder) and _file_system_type(folder) in ("proc", "sysfs"):
            return folder
    return None


@pytest.mark.parametrize("what, given, problem", [
    ("file", "notes.txt/model.safetensors", "notes.txt is a file, not a folder"),
    ("file", "notes.txt/deeper/model.safetensors", "notes.txt is a file, not a folder"),
    ("file", "folder", "is a folder; give a file name"),
    ("dir", "notes.txt", "notes.txt: is a file, not a folder"),
    ("dir", "notes.txt/figures", "notes.txt is a file, not a folder"),
])
def test_a_path_that_cannot_work_is_an_output_path_error(tmp_path, monkeypatch, what, given,
                                                         problem):
    from handgrad._atomic import NotWritableError, OutputPathError, check_writable

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputPathError) as info:
        check_writable(given, what, create_folder=True)
    assert isinstance(info.value, NotWritableError)  # still an OSError, as before
    message = str(info.value)
    assert message.startswith(f"{given}: ") and problem in message
    assert "does not exist" not in message  # the old, misleading wording
    assert (tmp_path / "notes.txt").read_text() == "mine"  # nothing was touched


def test_a_device_is_not_an_output_file():
    from handgrad._atomic import OutputPathError, check_writable

    if not os.path.exists(os.devnull) or os.path.isfile(os.devnull):
        pytest.skip("no device file to test with")
    with pytest.raises(OutputPathError, match="is not a regular file"):
        check_writable(os.devnull, "file")


@pytest.mark.parametrize("what, name", [("file", "model.safetensors"), ("dir", "figures"),
                                         ("file", "x/model.safetensors")])
def test_a_virtual_file_system_is_named_as_such(what, name):
    from handgrad._atomic import OutputPathError, check_writable

    folder = _virtual_fs_folder()
    if folder is None:
        pytest.skip("no /proc or /sys file system on this machine")
    path = f"{folder}/{name}"
    with pytest.raises(OutputPathError) as info:
        check_writable(path, what)
    message = str(info.value)
    assert message.startswith(f"{path}: {folder} is on the kernel's virtual")
    assert "holds no ordinary files" in message


def test_permission_problems_stay_not_writable_errors(tmp_path, monkeypatch):
    """A folder that exists but refuses the probe is not a wrong path: NotWritableError
    (the CLI's exit code 1), not OutputPathError (its usage code 2)."""
    from handgrad._atomic import NotWritableError, OutputPathError, check_writable

    real = os.open

    def read_only(path, flags, *args, **kwargs):
        if os.path.dirname(str(path)) == str(tmp_path) and flags & os.O_CREAT:
            raise OSError(13, "Permission denied")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(NotWritableError, match="is not writable") as info:
        check_writable(tmp_path / "m.safetensors", "file")
    assert not isinstance(info.value, OutputPathError)
