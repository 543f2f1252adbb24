"""``handgrad serve`` as a user runs it: loopback by default, clear errors, graceful SIGTERM."""

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")

from handgrad.cli import main  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, "-m", "handgrad", "serve", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_help_shows_every_limit_with_its_default(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--max-batch-size", "--batch-delay-ms", "--max-body-bytes",
                 "--timeout", "--max-concurrency", "--max-visitors", "--visitor-ttl"):
        assert flag in out
    assert "(default: 127.0.0.1)" in out and "(default: 64)" in out


def _listening_addresses(port):
    """Local addresses of sockets listening on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # LISTEN
                found.append(addr)
    return found


def test_binds_loopback_unless_told_otherwise(serve_process, digits_model):
    proc = serve_process(digits_model)
    assert proc.url.startswith("http://127.0.0.1:")
    port = int(proc.url.rsplit(":", 1)[1])
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read the listening address from")
    assert _listening_addresses(port) == ["0100007F"]  # 127.0.0.1 only, not 0.0.0.0
    assert httpx.get(f"{proc.url}/v2/health/ready").status_code == 200


def test_sigterm_lets_requests_in_flight_finish(serve_process, digits_model):
    # each batch waits 1.5 s for company, so a request is in flight when SIGTERM comes
    proc = serve_process(digits_model, "--batch-delay-ms", "1500", "--no-access-log")
    result = {}

    def request():
        r = httpx.post(f"{proc.url}/v2/models/digits/infer", timeout=30, json={"inputs": [
            {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]})
        result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.5)
    proc.proc.terminate()  # SIGTERM
    t.join(30)
    assert result["status"] == 200 and result["body"]["outputs"][1]["data"][0] in range(10)
    # uvicorn re-raises the signal once shut down: the shell sees 143, as for train
    assert proc.proc.wait(30) == -signal.SIGTERM
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{proc.url}/v2/health/live")


def test_a_damaged_model_file_is_named(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    r = run(bad)
    assert r.returncode == 3 and "bad.safetensors: not a safetensors file" in r.stderr
    r = run(tmp_path / "missing.safetensors")
    assert r.returncode == 3 and "no such file" in r.stderr


def test_a_regression_model_is_refused_with_the_reason(tmp_path):
    """A regressor's file (handgrad.save of an MLPRegressor) has no probabilities or labels
    to answer with: the server says so at start, instead of starting and then answering
    every inference request with 500."""
    import handgrad

    path = tmp_path / "reg.safetensors"
    handgrad.save(handgrad.MLP(4, 3, 2, output="identity", seed=0), path)
    r = run(path, "--port", "0")
    assert r.returncode == 3, r.stderr
    assert "reg.safetensors" in r.stderr and "'identity'" in r.stderr
    assert "classifier" in r.stderr


def test_a_busy_port_is_named(digits_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run(digits_model, "--port", port)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], "at most 65535"),
    (["--max-batch-size", "0"], "at least 1"),
    (["--timeout", "nan"], "must be above 0"),
])
def test_bad_flags_are_usage_errors(digits_model, args, words, capsys):
    assert main(["serve", str(digits_model), *args]) == 2
    assert words in capsys.readouterr().err


def test_names_must_be_distinct_and_valid(digits_model, capsys):
    assert main(["serve", str(digits_model), str(digits_model)]) == 1
    assert "name them apart with --name" in capsys.readouterr().err
    assert main(["serve", str(digits_model), "--name", "a/b"]) == 1
    assert "model name 'a/b'" in capsys.readouterr().err
    assert main(["serve", str(digits_model), "--max-queue", "8"]) == 1
    assert "--max-queue 8 must be at least --max-batch-size 64" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly(serve_process, digits_model):
    proc = serve_process(digits_model, "--no-access-log")
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(30) == 130
    assert proc.stderr().strip().endswith("stopped (Ctrl-C)")
