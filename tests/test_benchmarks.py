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
                        "--no-predict", "--libraries", *libs, "--estimator-hidden", "32",
                        "--estimator-batch", "256", "--estimator-epochs", "2", "--out", out],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    row = doc["results"][0]
    # issue #15's row: handgrad.MLPClassifier against handgrad.fit, same settings, same run
    est = doc["estimator"]["results"]
    assert [(e["optimizer"], e["hidden"], e["batch"], e["epochs_per_fit"]) for e in est] == [
        ("adam", 32, 256, 2)]
    assert set(est[0]["seconds"]) == {"handgrad", "handgrad-estimator"} and not est[0]["errors"]
    assert est[0]["estimator_vs_fit"] == pytest.approx(
        est[0]["seconds"]["handgrad-estimator"] / est[0]["seconds"]["handgrad"])
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
    assert "`handgrad.MLPClassifier`" in table and "| adam | " in table.split("estimator / fit")[1]
    assert "Extrapolated" not in table  # whole epochs of --rows were timed


def test_speed_estimator_only_and_extrapolated_cells(mnist_dir, tmp_path, monkeypatch):
    """--estimator-only updates just that part of the result; --extrapolate scales each
    time to a whole MNIST epoch and the table says so."""
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    out = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--hidden", "16", "--batch", "512",
                        "--optimizer", "sgd", "--repeats", "1", "--rows", "1024",
                        "--extrapolate", "--no-predict", "--no-estimator", "--libraries",
                        "handgrad", "--out", out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    row = doc["results"][0]
    assert row["rows"] == 60000 and row["measured_rows"] == 1024
    assert row["seconds"]["handgrad"] == pytest.approx(
        row["samples"]["handgrad"][0] * 60000 / 1024)
    assert "estimator" not in doc
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--estimator-only", "--optimizer",
                        "sgd", "adam", "--repeats", "1", "--rows", "1024", "--estimator-hidden",
                        "16", "--estimator-batch", "512", "--estimator-epochs", "1", "--out",
                        out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    again = json.loads(out.read_text())
    assert again["results"] == doc["results"]
    est = again["estimator"]
    assert [e["optimizer"] for e in est["results"]] == ["sgd", "adam"]
    assert est["command"].startswith("speed.py --estimator-only") and est["rows"] == 1024
    sys.path.insert(0, str(BENCH))
    try:
        import make_tables

        monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
        table = make_tables.speed_table()
    finally:
        sys.path.remove(str(BENCH))
    assert "**Extrapolated:** each cell timed epochs of 1,024 rows" in table
    for e in est["results"]:
        verdict = "yes" if e["estimator_vs_fit"] <= 1.05 else "**no**"
        assert f"| {e['optimizer']} | {e['seconds']['handgrad']:.3f} | " in table
        assert f"{e['estimator_vs_fit']:.3f} | {verdict} |" in table


def test_scaling_smoke(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "scaling.json"
    r = subprocess.run([sys.executable, BENCH / "scaling.py", "--hidden", "16", "--batch", "64",
                        "--ranks", "1", "2", "--steps", "10", "--epoch-rows", "1200",
                        "--epoch-hidden", "16", "--epoch-batch", "64", "--epoch-repeats", "1",
                        "--contrast-steps", "5", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    results = doc["results"]
    assert [x["ranks"] for x in results] == [1, 2]
    assert all(x["allreduce_seconds"] > 0 for x in results)
    # BLAS threads come from handgrad's own rule, recorded with the kernel
    assert all(x["blas_threads_source"] == "auto" and x["blas"] is not None for x in results)
    epoch = doc["epoch"]["results"]
    assert [(x["ranks"], x["extrapolated"]) for x in epoch[:2]] == [(1, False), (2, False)]
    assert all(x["seconds_per_epoch"] > 0 for x in epoch)
    assert doc["epoch"]["two_ranks_vs_one"] > 0 and doc["epoch"]["date"]
    # the epoch part alone: the grid already there is kept
    r = subprocess.run([sys.executable, BENCH / "scaling.py", "--epoch-only", "--epoch-rows",
                        "1200", "--epoch-hidden", "16", "--epoch-batch", "64", "--epoch-repeats",
                        "1", "--contrast-steps", "0", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    again = json.loads(out.read_text())
    assert again["results"] == results and len(again["epoch"]["results"]) == 2
    assert again["epoch"]["command"].startswith("scaling.py --epoch-only")


def test_speed_predict_only_updates_just_that_part(mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    out = tmp_path / "speed.json"
    out.write_text(json.dumps({"benchmark": "speed", "results": ["kept"]}))
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--predict-only", "--repeats", "2",
                        "--out", out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["results"] == ["kept"]
    p = doc["predict"]
    assert p["handgrad_s"] > 0 and p["onnxruntime_s"] > 0 and p["rows"] == 10000
    assert len(p["samples"]["handgrad_s"]) == 2 and p["command"].startswith("speed.py")
    assert p["blas"] and set(p["openblas_env"]) == {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}


def test_the_predict_line_says_which_is_faster():
    sys.path.insert(0, str(BENCH))
    try:
        import make_tables
    finally:
        sys.path.remove(str(BENCH))
    base = {"repeats": 3, "command": "speed.py --predict-only", "date": "2026-01-01",
            "blas": [{"internal_api": "openblas", "version": "0.3", "architecture": "Haswell",
                      "num_threads": 2}],
            "openblas_env": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": "1"},
            "onnxruntime": "1.2", "onnxruntime_threads": 2}
    slow = dict(base, handgrad_s=0.030, onnxruntime_s=0.025,
                samples={"handgrad_s": [0.03, 0.031, 0.029], "onnxruntime_s": [0.025] * 3})
    text = make_tables._predict_line(slow)[1]
    assert "onnxruntime is 1.20× as fast as handgrad" in text
    assert "ranges 29.0–31.0 and 25.0–25.0 ms" in text
    assert "with OPENBLAS_CORETYPE unset" in text and "openblas 0.3 (Haswell, 2 threads)" in text
    fast = dict(slow, handgrad_s=0.020)
    assert "handgrad is 1.25× as fast as onnxruntime" in make_tables._predict_line(fast)[1]


def test_serve_smoke(tmp_path):
    import shutil

    pytest.importorskip("starlette", reason="the serve extra is not installed")
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk): benchmarks/serve.py needs it")
    out = tmp_path / "serve.json"
    r = subprocess.run([sys.executable, BENCH / "serve.py", "--hidden", "16", "--peer", "none",
                        "--concurrency", "1", "4", "--duration", "1", "--warmup", "0",
                        "--repeats", "1", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert {(x["server"], x["clients"]) for x in doc["results"]} == {
        (s, c) for s in ("handgrad, dynamic batching", "handgrad, no batching") for c in (1, 4)}
    assert all(x["throughput"] > 0 and x["errors"] == 0 for x in doc["results"])
    assert doc["summary"]["batching_speedup"] > 0 and doc["machine"]["cpu_count"] >= 1


def test_serve_forward_smoke(tmp_path):
    out = tmp_path / "serve-forward.json"
    r = subprocess.run([sys.executable, BENCH / "serve_forward.py", "--hidden", "16",
                        "--batch", "1", "3", "--repeats", "1", "--out", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert [x["B"] for x in doc["results"]] == [1, 3] and doc["network"] == [784, 16, 10]
    assert all(x[k] > 0 for x in doc["results"]
               for k in ("x_wt_us", "w_xt_us", "library_pass_us", "served_pass_us"))
    assert doc["blas"] and all(d["num_threads"] == 1 for d in doc["blas"])


def test_estimator_speed_smoke(mnist_dir, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    # a reduced run without --out goes to a scratch file it names, not the committed result
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    committed = (BENCH / "results" / "estimator_speed.json").read_bytes()
    r = subprocess.run([sys.executable, BENCH / "estimator_speed.py", "--repeats", "1",
                        "--rows", "1024", "--regression-rows", "2000", "--sparse-rows", "1000",
                        "--sparse-cols", "2000"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (BENCH / "results" / "estimator_speed.json").read_bytes() == committed
    [out] = tmp_path.glob("estimator_speed-*.json")
    assert (f"--rows 1024 --regression-rows 2000 --sparse-rows 1000 --sparse-cols 2000 differs "
            f"from the full run's settings: writing {out}") in r.stdout
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 6 and all(row["seconds"]["handgrad"] > 0 for row in rows)
    for row in rows[:5]:  # the dense rows carry their products' time and the ceiling
        assert row["shaped_gemm_s"] > 0
        assert row["ceiling_vs_sklearn"] == pytest.approx(
            row["seconds"]["sklearn"] / row["shaped_gemm_s"])
    sparse = rows[-1]
    assert "shaped_gemm_s" not in sparse
    assert sparse["sparse"] and sparse["peak_growth_bytes"]["handgrad"] < 200 * 2**20


def _speed_doc_for_this_machine():
    """The committed full speed result, as if measured on this machine's cores and threads
    (so a run here may merge into it)."""
    import os

    doc = json.loads((BENCH / "results" / "speed.json").read_text())
    doc["machine"]["cpu_count"] = doc["threads"] = os.cpu_count()
    return doc


def test_speed_subset_run_merges_into_the_earlier_results(mnist_dir, tmp_path, monkeypatch):
    """A run of one cell replaces that cell of --out and keeps the other 31, and the
    estimator and predict parts it did not run; the table says the cells come from two
    runs and which run measured which."""
    monkeypatch.setenv("HANDGRAD_DATA", str(mnist_dir.parent))
    earlier = _speed_doc_for_this_machine()
    out = tmp_path / "speed.json"
    out.write_text(json.dumps(earlier))
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--hidden", "128", "--batch", "512",
                        "--optimizer", "sgd", "--repeats", "1", "--rows", "1024",
                        "--extrapolate", "--no-predict", "--no-estimator", "--libraries",
                        "handgrad", "--out", out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"wrote 1 cell into {out}; 31 kept from an earlier run" in r.stdout
    assert "estimator and predict parts kept" in r.stdout
    doc = json.loads(out.read_text())
    assert len(doc["results"]) == 32
    assert doc["estimator"] == earlier["estimator"] and doc["predict"] == earlier["predict"]
    ours = [c for c in doc["results"] if c["run"]["command"].startswith("speed.py --hidden 128")]
    assert [(c["optimizer"], c["hidden"], c["batch"]) for c in ours] == [("sgd", 128, 512)]
    assert ours[0]["measured_rows"] == 1024
    before = {(c["optimizer"], c["hidden"], c["batch"]): c for c in earlier["results"]}
    for c in doc["results"]:
        if c is not ours[0]:
            assert c["run"] == {"date": earlier["date"], "command": earlier["command"]}
            assert c["seconds"] == before[(c["optimizer"], c["hidden"], c["batch"])]["seconds"]
    assert len(doc["runs"]) == 2
    sys.path.insert(0, str(BENCH))
    try:
        import make_tables

        monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
        table = make_tables.speed_table()
    finally:
        sys.path.remove(str(BENCH))
    assert table.startswith("Cells merged from 2 runs")
    assert f"(1) `python benchmarks/{earlier['command']}` on {earlier['date']}" in table
    assert "(2) `python benchmarks/speed.py --hidden 128 --batch 512" in table
    row = next(line for line in table.splitlines() if line.startswith("| sgd | 128 | 512 |"))
    assert row.endswith("| (2) |")
    assert next(line for line in table.splitlines()
                if line.startswith("| adam | 128 | 512 |")).endswith("| (1) |")


def test_speed_refuses_to_merge_cells_that_would_not_compare(tmp_path):
    """Cells of another --rows (or thread count) are not mixed into one table: the run
    stops before any timing and says how to keep both."""
    out = tmp_path / "speed.json"
    out.write_text(json.dumps(_speed_doc_for_this_machine()))
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--rows", "1024", "--libraries",
                        "handgrad", "--out", out], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "rows per epoch (--rows/--extrapolate) 60000, this run 1024" in r.stderr
    assert "--replace" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--hidden", "0"], "argument --hidden: 0 must be at least 1"),
    (["--hidden", "-5"], "argument --hidden: -5 must be at least 1"),
    (["--batch", "0"], "argument --batch: 0 must be at least 1"),
    (["--rows", "-5"], "argument --rows: -5 must be at least 1"),
    (["--repeats", "0"], "argument --repeats: 0 must be at least 1"),
    (["--threads", "-2"], "argument --threads: -2 must be at least 1"),
    (["--estimator-epochs", "x"], "argument --estimator-epochs: 'x' is not an integer"),
    (["--predict-only", "--estimator-only"], "not allowed with argument"),
    (["--libraries", "numpy"], "unknown library 'numpy'"),
    (["--out", "/proc/x.json"], "virtual proc file system"),
])
def test_speed_bad_flags_stop_before_any_work(flags, message):
    r = subprocess.run([sys.executable, BENCH / "speed.py", *flags], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_speed_out_folder_and_missing_library_say_so_up_front(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--out", tmp_path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"--out {tmp_path}: is a folder" in r.stderr
    import importlib.util

    real = importlib.util.find_spec
    torch_installed = real("torch") is not None
    # jax hidden whether or not it is installed: with it, main() would time a whole benchmark
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "jax" else real(name, *a, **k))
    monkeypatch.syspath_prepend(str(BENCH))
    import speed

    # pytorch: mnist_accuracy.py's spelling, accepted for torch
    problem = speed.check_libraries(["handgrad", "torch", "jax"])
    with_torch = speed.main(["--libraries", "handgrad", "pytorch", "jax", "--out",
                             str(tmp_path / "s.json")])
    assert with_torch == 2
    expected = ("jax not installed: pip install 'jax>=0.4.30' 'jaxlib>=0.4.30', or leave it "
                "out with --libraries ")
    assert problem.startswith(expected)
    assert problem.endswith("handgrad torch" if torch_installed else "handgrad")
    assert not (tmp_path / "s.json").exists()


def test_speed_help_shows_defaults():
    r = subprocess.run([sys.executable, BENCH / "speed.py", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    assert "(default: 3)" in r.stdout and "(default: [128, 256, 800, 2048])" in r.stdout
    assert "    python benchmarks/speed.py --hidden 256 800" in r.stdout  # layout kept


@pytest.mark.parametrize("mode", [[], ["--predict-only"], ["--estimator-only"]])
def test_speed_unreadable_out_is_refused_before_timing(tmp_path, mode):
    out = tmp_path / "speed.json"
    out.write_text("{not json")
    r = subprocess.run([sys.executable, BENCH / "speed.py", *mode, "--libraries", "handgrad",
                        "--out", out],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"--out {out} holds no readable results" in r.stderr
    assert out.read_text() == "{not json"


@pytest.mark.parametrize("script, flags, message", [
    ("estimator_speed.py", ["--rows", "0"], "argument --rows: 0 must be at least 1"),
    ("estimator_speed.py", ["--density", "2"], "argument --density: 2.0 must be in (0, 1]"),
    ("estimator_speed.py", ["--out", "/proc/e.json"], "virtual proc file system"),
    ("serve.py", ["--concurrency", "0"], "argument --concurrency: 0 must be at least 1"),
    ("serve.py", ["--warmup", "-1"], "argument --warmup: -1 must be at least 0"),
    ("mnist_accuracy.py", ["time98", "--threads", "0"], "argument --threads: 0 must be at "
                                                        "least 1"),
    ("mnist_accuracy.py", ["smoke", "--out-dir", "/proc/x"], "virtual proc file system"),
])
def test_other_benchmarks_check_flags_up_front(script, flags, message):
    r = subprocess.run([sys.executable, BENCH / script, *flags], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_other_benchmarks_help_shows_defaults():
    for script, default in [("estimator_speed.py", "(default: 60000)"),
                            ("serve.py", "(default: [1, 8, 64])"),
                            ("mnist_accuracy.py", "(default: ['handgrad', 'pytorch', 'jax', "
                                                  "'scikit-learn'])")]:
        r = subprocess.run([sys.executable, BENCH / script, "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and default in " ".join(r.stdout.split()), script


def test_time98_of_some_libraries_keeps_the_others(tmp_path, monkeypatch):
    """time98 --libraries handgrad keeps the other libraries' curves in the file, each with
    its own date, and the README's line says they come from more than one run."""
    import os
    import types

    sys.path.insert(0, str(BENCH))
    try:
        import make_tables
        import mnist_accuracy
    finally:
        sys.path.remove(str(BENCH))
    point = {"epoch": 1, "train_seconds": 1.5, "test_accuracy": 0.99}
    earlier = {"target": "time98", "setup": dict(mnist_accuracy.T98), "date": "2026-01-01",
               "threads": os.cpu_count(), "machine": {"cpu_count": os.cpu_count()},
               "libraries": {n: {"curve": [point], "reached": point, "machine": {}}
                             for n in ("handgrad", "pytorch")}}
    (tmp_path / "accuracy-time98.json").write_text(json.dumps(earlier))
    assert mnist_accuracy.time98_mismatch(tmp_path, None) is None
    assert "would not compare" in mnist_accuracy.time98_mismatch(tmp_path, os.cpu_count() + 1)
    child = json.dumps({"curve": [dict(point, train_seconds=0.5)], "machine": {}})
    monkeypatch.setattr(mnist_accuracy.subprocess, "run", lambda *a, **k: types.SimpleNamespace(
        returncode=0, stdout=child + "\n", stderr=""))
    mnist_accuracy.run_time98(tmp_path, ["handgrad"])
    doc = json.loads((tmp_path / "accuracy-time98.json").read_text())
    assert list(doc["libraries"]) == ["handgrad", "pytorch"]
    assert doc["libraries"]["handgrad"]["reached"]["train_seconds"] == 0.5
    assert doc["libraries"]["pytorch"] == dict(earlier["libraries"]["pytorch"], date="2026-01-01")
    monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
    text = make_tables.accuracy_table()
    assert (f"libraries from more than one run of `python benchmarks/mnist_accuracy.py time98` "
            f"(handgrad {doc['date']}, pytorch 2026-01-01)") in text
