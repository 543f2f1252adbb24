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
    runs = _runs(doc)
    if len(runs) > 1:  # cells merged from several runs: say so, and which is which
        number = {(r.get("date"), r.get("command")): i for i, r in enumerate(runs, 1)}
        measured = (f"Cells merged from {len(runs)} runs (the *run* column says which "
                    f"measured each; each cell's GEMM bound uses its own run's sgemm): "
                    + "; ".join(f"({i}) `python benchmarks/{r.get('command')}` on "
                                f"{r.get('date')}" for i, r in enumerate(runs, 1))
                    + f". The latest ran")
    else:
        measured = f"Measured by `python benchmarks/{doc['command']}`"
    lines = [
        f"{measured} on {m['cpu_count']} cores "
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
          "| % bound | ceiling |" + (" run |" if len(runs) > 1 else ""),
        "|---|---|---|" + "---|" * len(libs) + "---|---|---|---|---|---|"
        + ("---|" if len(runs) > 1 else ""),
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
              f"{'–' if share is None else f'{100 * share:.0f}%'} | {_ceiling(r)} |"
            + (f" ({number[_run_key(doc, r)]}) |" if len(runs) > 1 else ""))
    if doc.get("stopped_early"):
        latest = sum(_run_key(doc, r) == (doc.get("date"), doc.get("command"))
                     for r in doc["results"])
        lines += ["", f"The run `python benchmarks/{doc['command']}` was stopped after {latest} "
                      f"of its {doc['cells_planned']} planned cells; the table holds those it "
                      f"finished."]
    measured = sorted({r["measured_rows"] for r in doc["results"] if r.get("extrapolation")})
    if measured:
        lines += ["", f"**Extrapolated:** each cell timed epochs of "
                      f"{', '.join(f'{n:,}' for n in measured)} rows (`--extrapolate`) and "
                      f"scaled every time, GEMM bound and own-shape GEMMs included, to a "
                      f"whole epoch of {doc['results'][0]['rows']:,} images. A timed call's fixed "
                      f"costs (a `fit`'s setup, a permutation's draw) are multiplied with "
                      f"the rest, so these times lean slightly high, for every library."]
    lines += _compile_times(doc, libs)
    lines += _speed_targets(doc)
    lines += _estimator_rows(doc.get("estimator"))
    lines += _predict_line(doc.get("predict") or {})
    return "\n".join(lines)


def _run_key(doc, row):
    """(date, command) of the run that measured ``row`` (the file's own when not recorded)."""
    run = row.get("run") or {}
    return (run.get("date", doc.get("date")), run.get("command", doc.get("command")))


def _runs(doc):
    """The runs whose cells the speed result holds, in order of first appearance."""
    keys = list(dict.fromkeys(_run_key(doc, r) for r in doc.get("results", [])))
    return [{"date": d, "command": c} for d, c in keys] or [
        {"date": doc.get("date"), "command": doc.get("command")}]


def _estimator_rows(est):
    """handgrad.MLPClassifier against handgrad.fit, same settings, same run (issue #15)."""
    if not est or not est.get("results"):
        return []
    first = est["results"][0]
    acc = (est.get("accelerator") or {}).get("status")
    epochs = first["epochs_per_fit"]
    out = ["", f"`handgrad.MLPClassifier` (the scikit-learn-style estimator) against "
               f"`handgrad.fit` with the same settings: 784-{first['hidden']}-10, batch "
               f"{first['batch']}, {est['rows']:,} rows, {epochs} epoch"
               f"{'s' if epochs != 1 else ''} per `fit` call, seconds per epoch, medians of {est['repeats']} interleaved calls "
               f"(`python benchmarks/{est['command']}`, {est['date']}"
               + (f"; accelerator {acc}" if acc else "") + "). Target: the estimator within "
               "5% of `handgrad.fit`.", "",
           "| optimizer | handgrad.fit s | MLPClassifier s | estimator / fit | within 5% |",
           "|---|---|---|---|---|"]
    for r in est["results"]:
        s = r["seconds"]
        fit, clf = s.get("handgrad"), s.get("handgrad-estimator")
        ratio = r.get("estimator_vs_fit")
        out.append(f"| {r['optimizer']} | {'–' if fit is None else f'{fit:.3f}'} | "
                   f"{'–' if clf is None else f'{clf:.3f}'} | "
                   f"{'–' if ratio is None else f'{ratio:.3f}'} | "
                   f"{'–' if ratio is None else 'yes' if r['within_5_percent'] else '**no**'} |")
    return out


def _ceiling(r):
    peer = r.get("fastest_peer")
    if not peer or not r.get("shaped_gemm_s"):
        return "–"
    return f"{r['seconds'][peer] / r['shaped_gemm_s']:.2f}×"
def _predict_line(p):
    """What the predict_proba vs onnxruntime run shows, with how and where it ran."""
    if not p.get("handgrad_s"):
        return []
    h = p["handgrad_s"]
    text = f"`predict_proba` on the 10,000 test images (784-256-10): handgrad {1e3 * h:.1f} ms"
    o = p.get("onnxruntime_s")
    if o:
        text += f", onnxruntime {1e3 * o:.1f} ms"
        if "samples" in p:
            text += f" (medians of {p['repeats']} interleaved calls each"
            spread = {k: (min(v), max(v)) for k, v in p["samples"].items()}
            text += (f"; ranges {1e3 * spread['handgrad_s'][0]:.1f}–"
                     f"{1e3 * spread['handgrad_s'][1]:.1f} and "
                     f"{1e3 * spread['onnxruntime_s'][0]:.1f}–"
                     f"{1e3 * spread['onnxruntime_s'][1]:.1f} ms)")
        text += (f": handgrad is {o / h:.2f}× as fast as onnxruntime" if h <= o else
                 f": onnxruntime is {h / o:.2f}× as fast as handgrad")
    text += "."
    if p.get("command"):
        kernels = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                            f"{b['num_threads']} threads)" for b in p.get("blas", [])
                            if b.get("internal_api") != "openmp")
        unset = [k for k, v in (p.get("openblas_env") or {}).items() if v is None]
        threads = (f", onnxruntime {p['onnxruntime']} with {p['onnxruntime_threads']} "
                   f"intra-op threads" if p.get("onnxruntime") else "")
        env = f" with {' and '.join(unset)} unset" if unset else ""
        load = p.get("load_average_before_after")
        busy = (f"; the machine was shared, load average {load[0]:.1f} before and "
                f"{load[1]:.1f} after on {p['machine']['cpu_count']} cores"
                if load and p.get("machine") else "")
        text += (f" Measured by `python benchmarks/{p['command']}`{env} on {p['date']}: "
                 f"{kernels or 'BLAS kernel not recorded'}{threads}{busy}.")
    return ["", text]


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
        dates = {n: lib.get("date", t98["date"]) for n, lib in t98["libraries"].items()}
        when = (f"same run (`{command}`; {t98['date']})" if len(set(dates.values())) <= 1
                else f"libraries from more than one run of `{command}` (" + ", ".join(
                    f"{n} {d}" for n, d in dates.items()) + ")")
        lines += ["", f"Time to {100 * setup['goal']:.0f}% test accuracy, 784-{setup['hidden']}"
                      f"-10, Adam (lr {setup['lr']}), batch {setup['batch']}, {when}.{env} "
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
    rule = ("BLAS threads per rank by handgrad's rule (the node's cores / its ranks)"
            if all(r.get("blas_threads_source") == "auto" for r in doc["results"])
            else "BLAS threads per rank = cores / ranks")
    lines = [f"Measured by `python benchmarks/scaling.py` on {doc['cpu_count']} cores "
             f"({doc['date']}); {rule}.", "",
             "| H | batch | ranks | examples/s | step ms | gradient MB | Allreduce ms |",
             "|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        lines.append(f"| {r['hidden']} | {r['batch']} | {r['ranks']} | "
                     f"{r['examples_per_second']:.0f} | {1e3 * r['step_seconds']:.2f} | "
                     f"{r['gradient_bytes'] / 1e6:.2f} | {1e3 * r['allreduce_seconds']:.3f} |")
    note = _load_note(doc)
    if note:
        lines += ["", note.strip()]
    lines += _epoch_rows(doc.get("epoch"), doc["cpu_count"])
    return "\n".join(lines)


def _epoch_rows(epoch, cpu_count):
    """One epoch on 1 and 2 ranks, and 2 ranks with a full BLAS pool each, if measured."""
    if not epoch:
        return []
    rows = epoch["results"]
    kernels = sorted({f"{b['internal_api']} {b['version']} ({b['architecture']})"
                      for r in rows for b in r.get("blas", [])})
    how = (f"Measured by `python benchmarks/{epoch['command']}` ({epoch['date']}): "
           if epoch.get("command") else "")
    out = ["", f"{how}one epoch of {epoch['rows']:,} MNIST-shaped rows, 784-{epoch['hidden']}"
               f"-10, batch {epoch['batch']}, {epoch['optimizer'].capitalize()} (the settings "
               f"of `mpiexec -n 2 handgrad train --distributed --hidden {epoch['hidden']}` "
               f"above), medians of {epoch['repeats']} interleaved runs; "
               f"{', '.join(kernels) or 'BLAS kernel not recorded'}:", "",
           "| ranks | BLAS threads per rank | seconds per epoch | vs 1 rank |", "|---|---|---|---|"]
    one = rows[0]["seconds_per_epoch"]
    for r in rows:
        how = {"auto": "handgrad's rule",
               "environment": "a full pool each, as before the rule: `HANDGRAD_BLAS_THREADS`",
               "argument": "as asked"}[r["blas_threads_source"]]
        secs = f"{r['seconds_per_epoch']:.2f}"
        if r["extrapolated"]:
            secs += f" (from {r['steps_timed']} steps)"
        out.append(f"| {r['ranks']} | {r['blas_threads_per_rank']} ({how}) | {secs} | "
                   f"{one / r['seconds_per_epoch']:.2f}× |")
    out += ["", f"2 ranks no slower per epoch than 1 on this machine: "
                f"{'yes' if epoch['two_ranks_no_slower'] else '**no**'} "
                f"({epoch['two_ranks_vs_one']:.2f}× the speed of 1 rank)."
                + (" " + _load_note(dict(epoch, cpu_count=cpu_count)).strip()
                   if epoch.get("load_average_before_after") else "")]
    return out


def _load_note(doc):
    load = doc.get("load_average_before_after")
    if not load:
        return ""
    return (f" The machine was shared with other work (load average {load[0]:.1f} before, "
            f"{load[1]:.1f} after, on {doc['cpu_count']} cores): absolute times are inflated "
            f"and noisy.")


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
    """A second run with another thread count, where one was made (and is kept)."""
    doc = _load("speed-2threads.json")
    if doc is None:
        return ("_No second run with another thread count (`python benchmarks/speed.py "
                "--threads N --out benchmarks/results/speed-2threads.json` makes one)._")
    threads = doc.get("threads")
    return (f"The same comparison in a second run, every library on {threads} thread"
            f"{'s' if threads != 1 else ''} (on a machine other jobs share, a cell where "
            f"one library's time jumps far above its neighbours' was hit by that load, not "
            f"by the library):\n\n" + speed_table("speed-2threads.json"))




def serve_table():
    doc = _load("serve.json")
    if doc is None:
        return "_No serving results yet: run `python benchmarks/serve.py`._"
    peer = (f"MLServer {doc['mlserver']} (scikit-learn {doc['peer_sklearn']})"
            if doc.get("mlserver") else "FastAPI + onnxruntime" if doc["peer"] == "onnx"
            else "no peer")
    m = doc["machine"]
    load = (m.get("load_average_before"), m.get("load_average_after"))
    lines = [
        f"Measured by `python benchmarks/{doc['command'].strip()}` on {_machine(doc)}"
        + (f" (1-minute load average {load[0][0]:.1f} before the run and {load[1][0]:.1f} "
           f"after it, its own servers and load generator included)" if all(load) else "")
        + f"; {' '.join(doc['client'].split()[:2])}, closed loop; peer: {peer}. Network "
        f"{'-'.join(map(str, doc['network']))}, single-example JSON requests; medians of "
        f"{doc['repeats']} interleaved {doc['duration_s']:g} s runs per row.",
        "",
        "| server | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(doc["results"], key=lambda r: (r["clients"], r["server"])):
        lines.append(f"| {r['server']} | {r['clients']} | {r['throughput']:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    s = doc["summary"]
    lines += ["", f"At {s['clients']} clients dynamic batching gives "
                  f"{s['batching_speedup']:.2f}× the unbatched throughput (target ≥ 3×)"
              + (f" and {s['vs_best_peer']:.2f}× the best peer configuration, "
                 f"{s['best_peer']} (target ≥ 2×)." if "vs_best_peer" in s else ".")]
    return "\n".join(lines)


def estimator_table():
    doc = _load("estimator_speed.json")
    if doc is None:
        return ("_No estimator speed results yet: run `python benchmarks/estimator_speed.py` "
                "on an otherwise idle machine._")
    lines = [
        f"Measured by `python benchmarks/{doc['command']}` on {_machine(doc)}, scikit-learn "
        f"{doc['sklearn']}. Seconds per epoch (`partial_fit`), the same settings and arrays for "
        f"both, medians of interleaved repeats, each epoch in a fresh process; ratios > 1 mean "
        f"handgrad is faster (target: 2×). "
        f"*Products alone*: the epoch's matrix products in NumPy, back to back (float32, the "
        f"row's shapes), which both libraries must compute; *ceiling*: scikit-learn's time over "
        f"them, the ratio handgrad would reach if everything but its products took no time.",
        "",
        "| row | handgrad s | scikit-learn s | vs scikit-learn | products alone s | ceiling "
        "| peak memory growth (handgrad / scikit-learn) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s = r["seconds"]
        memory = "–"
        if r.get("sparse"):
            peak = r["peak_growth_bytes"]
            memory = (f"{peak['handgrad'] / 2**20:.0f} / {peak['sklearn'] / 2**20:.0f} MiB "
                      f"(bound: {r['memory_bound_bytes'] / 2**20:.0f} MiB, twice the sparse "
                      f"data plus the model)")
        gemm = r.get("shaped_gemm_s")
        products = "–" if gemm is None else f"{gemm:.3f}"
        ceiling = "–" if gemm is None else f"{s['sklearn'] / gemm:.2f}×"
        lines.append(f"| {r['row']} | {s['handgrad']:.3f} | {s['sklearn']:.3f} | "
                     f"{r['speedup_vs_sklearn']:.2f}× | {products} | {ceiling} | {memory} |")
    return "\n".join(lines)


SECTIONS = {"speed-table": speed_table, "speed-table-2threads": speed_table_all_threads,
            "speed-profile": profile_table, "accuracy-table": accuracy_table,
            "scaling-model": scaling_model, "scaling-table": scaling_table,
            "serve-table": serve_table, "estimator-speed-table": estimator_table}


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
