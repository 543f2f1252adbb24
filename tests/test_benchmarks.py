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
    pytest.importorskip("torch")
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--hidden", "32", "--batch", "256",
                        "--optimizer", "sgd", "--repeats", "1", "--rows", "2048", "--out", out],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    row = doc["results"][0]
    assert row["seconds"]["handgrad"] > 0 and row["speedup_vs_torch"] > 0
    assert doc["gemm_throughput_gflops"] > 0


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


def test_estimator_speed_smoke(mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    out = tmp_path / "estimator_speed.json"
    r = subprocess.run([sys.executable, BENCH / "estimator_speed.py", "--repeats", "1",
                        "--rows", "1024", "--regression-rows", "2000", "--sparse-rows", "1000",
                        "--sparse-cols", "2000", "--out", out],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 6 and all(row["seconds"]["handgrad"] > 0 for row in rows)
    sparse = rows[-1]
    assert sparse["sparse"] and sparse["peak_growth_bytes"]["handgrad"] < 200 * 2**20
