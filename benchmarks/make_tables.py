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


def speed_table():
    doc = _load("speed.json")
    if doc is None:
        return "_No speed results yet: run `python benchmarks/speed.py`._"
    lines = [
        f"Measured by `python benchmarks/{doc['command']}` on {_machine(doc)}, torch "
        f"{doc['torch']}, {doc['threads']} threads; float32 GEMM throughput "
        f"{doc['gemm_throughput_gflops']:.0f} GFLOP/s (2048² sgemm). Seconds per MNIST epoch "
        f"(60,000 images, 784-H-10), medians of interleaved repeats; ratios > 1 mean handgrad "
        f"is faster. *GEMM bound*: the epoch's matrix-product FLOPs at that throughput; "
        f"*own-shape GEMMs*: the same products at the epoch's own shapes, back to back.",
        "",
        "| optimizer | H | batch | handgrad s | PyTorch s | vs PyTorch | scikit-learn s "
        "| vs scikit-learn | % of GEMM bound | % of own-shape GEMMs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s = r["seconds"]
        sk = f"{s['sklearn']:.3f}" if s.get("sklearn") else "–"
        skr = f"{r['speedup_vs_sklearn']:.2f}×" if r.get("speedup_vs_sklearn") else "–"
        lines.append(
            f"| {r['optimizer']} | {r['hidden']} | {r['batch']} | {s['handgrad']:.3f} | "
            f"{s['torch']:.3f} | {r['speedup_vs_torch']:.2f}× | {sk} | {skr} | "
            f"{100 * r['gemm_efficiency']:.0f}% | {100 * r['shaped_gemm_efficiency']:.0f}% |")
    lines += _speed_targets(doc)
    lines += _predict_line(doc.get("predict") or {})
    return "\n".join(lines)


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


def _speed_targets(doc):
    """Issue #6's targets against this run: measured value, whether it is met, and its ceiling.

    The ceiling is the value an implementation would reach if everything but the
    epoch's own-shape GEMMs (the products alone, back to back, in the same run) took
    no time: a target above its ceiling cannot be met with this BLAS on this machine.
    """
    rows = {(r["optimizer"], r["hidden"], r["batch"]): r for r in doc["results"]}
    checks = []
    for opt in ("sgd", "adam"):
        r = rows.get((opt, 256, 128))
        if r:
            s, gemms = r["seconds"], r["shaped_gemm_s"]
            checks.append((f"784-256-10, batch 128, {opt}: ≥ 1.5× PyTorch's speed",
                           f"{r['speedup_vs_torch']:.2f}×", r["speedup_vs_torch"] >= 1.5,
                           f"{s['torch'] / gemms:.2f}×"))
            if r.get("speedup_vs_sklearn"):
                checks.append((f"784-256-10, batch 128, {opt}: ≥ 3× scikit-learn's speed",
                               f"{r['speedup_vs_sklearn']:.2f}×", r["speedup_vs_sklearn"] >= 3,
                               f"{s['sklearn'] / gemms:.2f}×"))
    r = rows.get(("sgd", 256, 256))
    if r:
        checks.append(("784-256-10, batch 256, sgd: ≥ 75% of the GEMM bound",
                       f"{100 * r['gemm_efficiency']:.0f}%", r["gemm_efficiency"] >= 0.75,
                       f"{100 * r['gemm_bound_s'] / r['shaped_gemm_s']:.0f}%"))
    p = doc.get("predict") or {}
    if p.get("handgrad_s") and p.get("onnxruntime_s"):
        checks.append(("`predict_proba`, 10,000 images: at least as fast as onnxruntime",
                       f"handgrad {p['onnxruntime_s'] / p['handgrad_s']:.2f}× as fast",
                       p["handgrad_s"] <= p["onnxruntime_s"], "–"))
    if not checks:
        return []
    intro = ("Targets of the speed issue, in this run. *Ceiling*: the value if everything "
             "but the own-shape GEMMs took no time (a target above it needs a faster BLAS, "
             "not less overhead):")
    out = ["", intro, "", "| target | measured | met | ceiling |", "|---|---|---|---|"]
    out += [f"| {name} | {value} | {'yes' if ok else '**no**'} | {ceiling} |"
            for name, value, ok, ceiling in checks]
    return out


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
        lines += ["", f"Time to {100 * setup['goal']:.0f}% test accuracy, 784-{setup['hidden']}"
                      f"-10, Adam (lr {setup['lr']}), batch {setup['batch']}, same run "
                      f"(`python benchmarks/mnist_accuracy.py time98`):", "",
                  "| library | epochs | training seconds | test accuracy then |",
                  "|---|---|---|---|"]
        for name, lib in t98["libraries"].items():
            r = lib["reached"]
            if r is None:
                last = lib["curve"][-1]
                lines.append(f"| {name} | not within {setup['max_epochs']} | – | "
                             f"{last['test_accuracy']:.4f} |")
            else:
                lines.append(f"| {name} | {r['epoch']} | {r['train_seconds']:.1f} | "
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
        + (f" (1-minute load average {load[0][0]:.1f} before, {load[1][0]:.1f} after: other "
           f"work shared the machine)" if all(load) else "")
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
        f"both, medians of interleaved repeats; ratios > 1 mean handgrad is faster (target: 2×).",
        "",
        "| row | handgrad s | scikit-learn s | vs scikit-learn | peak memory growth (handgrad / "
        "scikit-learn) |",
        "|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s = r["seconds"]
        memory = "–"
        if r.get("sparse"):
            peak = r["peak_growth_bytes"]
            memory = (f"{peak['handgrad'] / 2**20:.0f} / {peak['sklearn'] / 2**20:.0f} MiB "
                      f"(bound: {r['memory_bound_bytes'] / 2**20:.0f} MiB, twice the sparse "
                      f"data plus the model)")
        lines.append(f"| {r['row']} | {s['handgrad']:.3f} | {s['sklearn']:.3f} | "
                     f"{r['speedup_vs_sklearn']:.2f}× | {memory} |")
    return "\n".join(lines)


SECTIONS = {"speed-table": speed_table, "accuracy-table": accuracy_table,
            "scaling-model": scaling_model, "scaling-table": scaling_table,
            "serve-table": serve_table,
            "estimator-speed-table": estimator_table}


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
