"""Short smoke runs of the benchmark scripts, and the README's tables match their results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def test_readme_tables_are_generated_from_the_results():
    r = subprocess.run([sys.executable, BENCH / "make_tables.py", "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_accuracy_smoke(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    r = subprocess.run([sys.executable, BENCH / "mnist_accuracy.py", "smoke", "--out-dir",
                        tmp_path], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "accuracy-smoke.json").read_text())
    assert result["epochs"] == 1 and result["test_error_percent"] < 6
    assert result["command"].startswith("handgrad train --dataset mnist")


def test_speed_smoke(mnist_dir, tmp_path, monkeypatch):
    """One tiny cell through the worker processes: handgrad with and without the
    accelerator, PyTorch eager, and JAX where it is installed (torch.compile's compile
    takes minutes, so the smoke run leaves it out); the OpenBLAS kernel variable is
    removed for the workers and recorded."""
    pytest.importorskip("torch")
    import importlib.util

    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")  # removed for the timed workers
    libs = ["handgrad", "handgrad-numpy", "torch"]
    if importlib.util.find_spec("jax"):
        libs.append("jax")
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--hidden", "32", "--batch", "256",
                        "--optimizer", "adam", "--repeats", "2", "--rows", "2048",
                        "--no-predict", "--libraries", *libs, "--out", out],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    row = doc["results"][0]
    assert set(row["seconds"]) == set(libs) and not row["errors"]
    assert all(len(v) == 2 for v in row["samples"].values())
    assert row["fastest_peer"] in libs and row["handgrad_speedup"] > 0
    assert row["gemm_bound_s"] > 0 and row["gemm_share"]["handgrad"] > 0
    assert doc["removed_env"] == {"OPENBLAS_L2_SIZE": "1048576"}
    assert doc["libraries"]["handgrad-numpy"]["info"]["accelerator"]["status"].startswith("off")
    assert doc["libraries"]["torch"]["info"]["torch"]
    assert doc["gemm_throughput_gflops"] > 0
    sys.path.insert(0, str(BENCH))
    try:
        import make_tables

        monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
        table = make_tables.speed_table()
    finally:
        sys.path.remove(str(BENCH))
    assert "| adam | 32 | 256 |" in table and "OPENBLAS_L2_SIZE=1048576" in table


def test_scaling_smoke(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "scaling.json"
    r = subprocess.run([sys.executable, BENCH / "scaling.py", "--hidden", "16", "--batch", "64",
                        "--ranks", "1", "2", "--steps", "10", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())["results"]
    assert [x["ranks"] for x in results] == [1, 2]
    assert all(x["allreduce_seconds"] > 0 for x in results)
