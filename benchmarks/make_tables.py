"""Regenerate the README's result tables from the JSON files in benchmarks/results/.

    python benchmarks/make_tables.py            # rewrites the marked sections of README.md
    python benchmarks/make_tables.py --check    # exit 1 if README.md is out of date

Each table sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers; nothing
in them is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
RESULTS = HERE / "results"


def _load(name):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(doc):
    m = doc.get("machine", {})
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})"
                     for b in m.get("blas", []) if b.get("internal_api") != "openmp")
    return (f"{m.get('cpu_count')} cores, Python {m.get('python')}, NumPy {m.get('numpy')}"
            + (f", {blas}" if blas else "") + f"; {doc.get('date')}")


LABELS = {"handgrad": "handgrad", "handgrad-numpy": "handgrad (NumPy path)", "torch": "PyTorch",
          "torch-compile": "torch.compile", "jax": "JAX jit", "sklearn": "scikit-learn"}


def _peer_versions(doc):
    libs = doc.get("libraries", {})
    out = []
    hg = libs.get("handgrad", libs.get("handgrad-numpy"))
    if hg:
        b = hg["info"]["numpy_blas"]
        acc = (libs.get("handgrad") or {}).get("info", {}).get("accelerator") or {}
        out.append(f"handgrad {hg['info']['handgrad']} on NumPy {hg['info']['numpy']}'s "
                   f"{b.get('library')} {b.get('version')} ({b.get('kernel')} kernel, "
                   f"{b.get('threads')} thread{'s' if b.get('threads') != 1 else ''})"
                   + (f", accelerator {acc['backend']} {acc['version']}"
                      if acc.get("backend") else ""))
    t = (libs.get("torch") or libs.get("torch-compile") or {}).get("info")
    if t:
        blas = (t.get("blas") or "").split(" Version ")
        mkl = f"MKL {blas[1].split('-')[0]}" if len(blas) > 1 else (t.get("blas") or "?")
        dnn = (t.get("onednn") or "").split(" (")[0].replace("Intel(R) MKL-DNN", "oneDNN")
        out.append(f"PyTorch {t['torch']} ({mkl}, {dnn}, CPU capability "
                   f"{t.get('cpu_capability')}, {t.get('threads')} thread"
                   f"{'s' if t.get('threads') != 1 else ''})")
    j = (libs.get("jax") or {}).get("info")
    if j:
        out.append(f"JAX {j['jax']} (XLA, {j['backend']})")
    return "; ".join(out)


def _env_note(doc):
    removed = doc.get("removed_env") or {}
    if removed:
        return ("the timed processes ran without "
                + ", ".join(f"`{k}={v}`" for k, v in removed.items())
                + ", which this machine sets (NumPy's OpenBLAS on its native kernel)")
    return "no OpenBLAS kernel variable was set (NumPy's OpenBLAS on its native kernel)"


def _threads_note(doc):
    if doc.get("threads") and doc["threads"] != doc["machine"]["cpu_count"]:
        return (f"Every library was held to {doc['threads']} thread"
                f"{'s' if doc['threads'] > 1 else ''} (`--threads`). ")
    return ""


def speed_table(name="speed.json"):
    doc = _load(name)
    if doc is None:
        return "_No speed results yet: run `python benchmarks/speed.py`._"
    libs = [lib for lib in LABELS if lib in doc.get("libraries", {})]
    m = doc["machine"]
    lines = [
        f"Measured by `python benchmarks/{doc['command']}` on {m['cpu_count']} cores "
        f"({m['cpu'].get('model')}, {m['cpu'].get('vector_level')}), Python {m['python']}, "
        f"{doc['date']}: {_peer_versions(doc)}. {_env_note(doc)[0].upper() + _env_note(doc)[1:]}. "
        f"{_threads_note(doc)}Seconds per "
        f"MNIST epoch (784-H-10, {doc['results'][0]['rows'] if doc['results'] else 0:,} "
        f"images, float32), medians of interleaved repeats, compile time excluded; "
        f"*vs fastest*: the fastest of PyTorch eager, torch.compile and JAX jit divided by "
        f"handgrad's time (> 1: handgrad is faster). *GEMM bound*: the epoch's "
        f"matrix-product FLOPs at the fastest 2048² sgemm measured in the run "
        f"({doc['gemm_throughput_gflops']:.0f} GFLOP/s); *% bound*: handgrad's share of it; "
        f"*ceiling*: the fastest peer's time over NumPy's own-shape GEMMs alone (the epoch's "
        f"products back to back, timed once after the cell's epochs, so not interleaved "
        f"with them): the ratio handgrad would reach if everything but its matrix products "
        f"took no time.",
        "",
        "| optimizer | H | batch | " + " | ".join(f"{LABELS[lib]} s" for lib in libs)
        + " | fastest peer | handgrad vs fastest | NumPy path vs fastest | GEMM bound s "
          "| % bound | ceiling |",
        "|---|---|---|" + "---|" * len(libs) + "---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s = r["seconds"]
        cells = [f"{s[lib]:.3f}" if lib in s else "–" for lib in libs]

        def ratio(lib):
            v = r.get(f"{lib}_speedup")
            return "–" if v is None else (f"**{v:.2f}×**" if v < 1 else f"{v:.2f}×")

        share = r["gemm_share"].get("handgrad")
        lines.append(
            f"| {r['optimizer']} | {r['hidden']} | {r['batch']} | " + " | ".join(cells)
            + f" | {LABELS.get(r.get('fastest_peer'), '–')} | {ratio('handgrad')} | "
              f"{ratio('handgrad-numpy')} | {r['gemm_bound_s']:.3f} | "
              f"{'–' if share is None else f'{100 * share:.0f}%'} | {_ceiling(r)} |")
    if doc.get("stopped_early"):
        lines += ["", f"The run was stopped after {len(doc['results'])} of its "
                      f"{doc['cells_planned']} planned cells; the table holds those it finished."]
    lines += _compile_times(doc, libs)
    lines += _speed_targets(doc)
    p = doc.get("predict") or {}
    if p.get("handgrad_s"):
        ort = (f", onnxruntime {1e3 * p['onnxruntime_s']:.1f} ms "
               f"({p['onnxruntime_s'] / p['handgrad_s']:.2f}× handgrad's time)"
               if p.get("onnxruntime_s") else "")
        lines += ["", f"`predict_proba` on the 10,000 test images (784-256-10): handgrad "
                      f"{1e3 * p['handgrad_s']:.1f} ms{ort}."]
    return "\n".join(lines)


def _ceiling(r):
    peer = r.get("fastest_peer")
    if not peer or not r.get("shaped_gemm_s"):
        return "–"
    return f"{r['seconds'][peer] / r['shaped_gemm_s']:.2f}×"


def _compile_times(doc, libs):
    """Warm-up (compile) seconds per library over the cells: excluded from the epochs."""
    spans = []
    for lib in libs:
        v = [r["compile_s"][lib] for r in doc["results"] if lib in r.get("compile_s", {})]
        if v:
            spans.append(f"{LABELS[lib]} {min(v):.1f}–{max(v):.1f} s" if len(v) > 1
                         else f"{LABELS[lib]} {v[0]:.1f} s")
    if not spans:
        return []
    return ["", "Warm-up before each cell's epochs (compilation for torch.compile and JAX; "
                "for handgrad, loading the accelerator's cached kernels and building "
                "buffers), not counted in the epochs: " + "; ".join(spans) + "."]


def _speed_targets(doc):
    """The speed issue's per-cell targets against this run."""
    rows = [r for r in doc["results"] if "fastest_peer" in r]
    checks = []
    for lib, need, name in (("handgrad", 1.2, "with the accelerator: ≥ 1.2× the fastest peer"),
                            ("handgrad-numpy", 1.0,
                             "without it (NumPy path): no slower than the fastest peer")):
        have = [r for r in rows if f"{lib}_speedup" in r]
        if not have:
            continue
        misses = [r for r in have if r[f"{lib}_speedup"] < need]
        worst = min(have, key=lambda r: r[f"{lib}_speedup"])
        where = ", ".join(f"{r['optimizer']} H={r['hidden']} B={r['batch']} "
                          f"({r[f'{lib}_speedup']:.2f}×)" for r in misses)
        checks.append((f"every cell, {name}", f"{len(have) - len(misses)} of {len(have)} "
                       f"cells; lowest {worst[f'{lib}_speedup']:.2f}×",
                       not misses, where or "–"))
    if not checks:
        return []
    out = ["", "Targets of the speed issue in this run (cells run: those in the table above):",
           "", "| target | measured | met | cells that miss |", "|---|---|---|---|"]
    out += [f"| {name} | {value} | {'yes' if ok else '**no**'} | {miss} |"
            for name, value, ok, miss in checks]
    return out


def profile_table():
    doc = _load("profile-step.json")
    if doc is None:
        return "_No profile yet: run `python benchmarks/profile_step.py`._"
    b = doc["numpy_blas"]
    removed = doc.get("removed_env") or {}
    lines = [f"Measured by `python benchmarks/{doc['command']}` on {doc['cpu_count']} cores, "
             f"{doc['date']}, NumPy's {b.get('library')} {b.get('version')} "
             f"({b.get('kernel')} kernel, {b.get('threads')} thread"
             f"{'s' if b.get('threads') != 1 else ''})"
             + (f", run without {', '.join(f'`{k}`' for k in removed)}" if removed else "")
             + ".", ""]
    results = doc["results"]
    phases = list(results[0]["phases_us"])
    lines += ["| configuration | " + " | ".join(phases) + " | **step (measured fit)** |",
              "|---|" + "---|" * (len(phases) + 1)]
    for r in results:
        lines.append(f"| {r['optimizer']} H={r['hidden']} B={r['batch']}, "
                     f"{'accelerator' if r['accelerator'] else 'NumPy path'} | "
                     + " | ".join(f"{r['phases_us'].get(p, 0):.0f}" for p in phases)
                     + f" | **{r['fit_step_us']:.0f}** |")
    return "\n".join(lines)


def accuracy_table():
    rows = [_load(f"accuracy-{t}.json") for t in ("plain", "elastic")]
    lines = ["| target | published | handgrad test error | target met | epochs | "
             "training time | command |", "|---|---|---|---|---|---|---|"]
    for doc, label in zip(rows, ("784-800-10, no augmentation",
                                 "784-800-10, elastic + affine augmentation")):
        if doc is None:
            lines.append(f"| {label} | | not run yet | | | | |")
            continue
        lines.append(
            f"| {label} (≤ {doc['target_error_percent']}%) | {doc['published_error_percent']}% "
            f"| **{doc['test_error_percent']:.2f}%** | {'yes' if doc['met'] else 'no'} | "
            f"{doc['epochs']} | {doc['train_time_s'] / 60:.1f} min | `{doc['command']}` |")
    done = [d for d in rows if d]
    if done:
        lines += ["", f"Machine: {_machine(done[0])}. Published: LeCun's MNIST table, "
                      f"\"2-layer NN, 800 HU, Cross-Entropy Loss\" (Simard, Steinkraus & Platt, "
                      f"ICDAR 2003). Regenerate: `python benchmarks/mnist_accuracy.py plain "
                      f"elastic`."]
    cost = _load("augment-cost.json")
    if cost is not None:
        lines += ["", f"Augmentation (elastic + affine, as in target 2) costs "
                      f"{cost['augment_seconds_per_epoch']:.2f} s per MNIST epoch against "
                      f"{cost['train_seconds_per_epoch']:.2f} s of training (784-800-10, batch "
                      f"128, SGD): {100 * cost['fraction_of_epoch']:.0f}% of an augmented epoch "
                      f"(`python benchmarks/mnist_accuracy.py augment-cost`)."]
    t98 = _load("accuracy-time98.json")
    if t98 is not None:
        setup = t98["setup"]
        removed = t98.get("removed_env") or {}
        env = (" Each library ran in its own process without "
               + ", ".join(f"`{k}={v}`" for k, v in removed.items())
               + " (NumPy's OpenBLAS on its native kernel)." if removed else "")
        held = t98.get("threads") and t98["threads"] != t98["machine"].get("cpu_count")
        command = "python benchmarks/mnist_accuracy.py time98"
        if held:
            env += (f" Every library was held to {t98['threads']} thread"
                    f"{'s' if t98['threads'] != 1 else ''}.")
            command += f" --threads {t98['threads']}"
        lines += ["", f"Time to {100 * setup['goal']:.0f}% test accuracy, 784-{setup['hidden']}"
                      f"-10, Adam (lr {setup['lr']}), batch {setup['batch']}, same run "
                      f"(`{command}`; {t98['date']}).{env} "
                      f"Compile time (JAX's jit; handgrad's accelerator loading its cached "
                      f"kernels) is not in the training seconds; it is shown apart:", "",
                  "| library | epochs | training seconds | test accuracy then |",
                  "|---|---|---|---|"]
        for name, lib in t98["libraries"].items():
            r = lib["reached"]
            if r is None:
                last = lib["curve"][-1]
                lines.append(f"| {name} | not within {setup['max_epochs']} | – | "
                             f"{last['test_accuracy']:.4f} |")
            else:
                extra = (f" (+ {r['compile_seconds']:.1f} compile)"
                         if r.get("compile_seconds") is not None else "")
                lines.append(f"| {name} | {r['epoch']} | {r['train_seconds']:.1f}{extra} | "
                             f"{r['test_accuracy']:.4f} |")
    return "\n".join(lines)


def scaling_table():
    doc = _load("scaling.json")
    if doc is None:
        return "_No scaling results yet: run `python benchmarks/scaling.py`._"
    lines = [f"Measured by `python benchmarks/scaling.py` on {doc['cpu_count']} cores "
             f"({doc['date']}); BLAS threads per rank = cores / ranks.", "",
             "| H | batch | ranks | examples/s | step ms | gradient MB | Allreduce ms |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['hidden']} | {r['batch']} | {r['ranks']} | "
                     f"{r['examples_per_second']:.0f} | {1e3 * r['step_seconds']:.2f} | "
                     f"{r['gradient_bytes'] / 1e6:.2f} | {1e3 * r['allreduce_seconds']:.3f} |")
    return "\n".join(lines)


# Nominal link rates (bytes/s) for the scaling model: inputs, not measurements.
LINKS = (("10 Gb/s Ethernet", 10e9 / 8), ("200 Gb/s InfiniBand", 200e9 / 8))


def scaling_model():
    """The communication model's figures, computed from the architecture."""
    import handgrad

    n = handgrad.MLP(784, 800, 10).n_params
    grad = 4 * n  # float32 bytes sent per step, whatever the batch
    ring = 2 * grad  # a ring all-reduce moves about twice the buffer per rank
    times = "; ".join(f"{name} ({rate / 1e9:.2f} GB/s): {1e3 * ring / rate:.2f} ms"
                      for name, rate in LINKS)
    return (f"784-800-10 has {n:,} parameters, a {grad / 1e6:.2f} MB float32 gradient; a ring "
            f"all-reduce moves about {ring / 1e6:.2f} MB per rank per step. At nominal link "
            f"rates that exchange takes: {times}.")


def speed_table_all_threads():
    """A second run with every library on all its threads, where one was made."""
    if _load("speed-2threads.json") is None:
        return "_Not run: `python benchmarks/speed.py --out benchmarks/results/speed-2threads.json`._"
    return speed_table("speed-2threads.json")


SECTIONS = {"speed-table": speed_table, "speed-table-2threads": speed_table_all_threads,
            "speed-profile": profile_table, "accuracy-table": accuracy_table,
            "scaling-model": scaling_model, "scaling-table": scaling_table}


def render(text):
    for name, fn in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- {name}:start --> ... :end --> markers")
        text = pattern.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), text)
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("README.md tables are out of date: run python benchmarks/make_tables.py")
            return 1
        return 0
    README.write_text(new)
    print("README.md tables regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
