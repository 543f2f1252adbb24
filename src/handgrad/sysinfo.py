"""What this machine gives handgrad: NumPy's BLAS, its kernel and threads, the CPU's
vector extensions, the optional accelerator, and whether the environment slows them.

NumPy's wheels ship OpenBLAS built for many CPUs at once (``DYNAMIC_ARCH``); at load
time it picks the kernel for the CPU it finds, unless ``OPENBLAS_CORETYPE`` names one.
A value set for an older CPU (for example ``Haswell``, AVX2, on a CPU with AVX-512)
makes every matrix product run on the older kernel; ``OPENBLAS_L2_SIZE`` overrides the
cache size its blocking is tuned for. Neither variable is read by PyTorch's or JAX's
BLAS, so a comparison run under them is not a fair one. :func:`system_info` reports the
kernel in use, the kernel OpenBLAS picks with those variables unset (asked of a child
process, as the variables are read once, when the library loads) and a one-line warning
with the fix when the environment forces a slower one.

    >>> import handgrad
    >>> print(handgrad.sysinfo.format_system_info(handgrad.system_info()))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np

#: Environment variables that change the kernel or blocking of NumPy's OpenBLAS.
OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: CPU flags (as /proc/cpuinfo names them) worth reporting for dense float maths.
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512cd", "avx512bw",
                "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                "amx_bf16", "amx_int8")

# The vector level each OpenBLAS kernel (its core name, lower case) is written for:
# 4 AVX-512, 3 AVX2 + FMA, 2 AVX, 1 SSE. Names not listed compare by name only.
_KERNEL_LEVEL = {
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), 4),
    **dict.fromkeys(("haswell", "zen", "zen3", "zen4", "zen5"), 3),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller",
                     "excavator"), 2),
    **dict.fromkeys(("prescott", "core2", "penryn", "dunnington", "nehalem", "atom",
                     "opteron", "opteron_sse3", "barcelona", "bobcat", "katmai",
                     "coppermine", "northwood", "banias"), 1),
}
_LEVEL_NAME = {4: "AVX-512", 3: "AVX2", 2: "AVX", 1: "SSE"}


# The core types OPENBLAS_CORETYPE may name, by machine (OpenBLAS's dynamic-arch
# ``corename`` lists; compared without case). Another value is not one it knows: it
# says "Core not found" and picks the kernel for the CPU it detects.
OPENBLAS_CORETYPES = {
    "x86_64": ("Katmai", "Coppermine", "Northwood", "Prescott", "Banias", "Atom", "Core2",
               "Penryn", "Dunnington", "Nehalem", "Athlon", "Opteron", "Opteron_SSE3",
               "Barcelona", "Nano", "Sandybridge", "Bobcat", "Bulldozer", "Piledriver",
               "Haswell", "Steamroller", "Excavator", "Zen", "SkylakeX", "Cooperlake",
               "SapphireRapids"),
    "aarch64": ("armv8", "cortexa53", "cortexa55", "cortexa57", "cortexa72", "cortexa73",
                "falkor", "thunderx", "thunderx2t99", "tsv110", "emag8180", "neoversen1",
                "neoversen2", "neoversev1", "neoversev2", "thunderx3t110", "a64fx", "armv9sme"),
}


def coretype_warning(env, machine=None):
    """One line when ``OPENBLAS_CORETYPE`` names no core type OpenBLAS knows on this
    machine (with the ones it accepts); else None."""
    value = env.get("OPENBLAS_CORETYPE")
    machine = (machine or platform.machine()).lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    known = OPENBLAS_CORETYPES.get(machine)
    if value is None or known is None or value.strip().lower() in {k.lower() for k in known}:
        return None
    return (f"warning: OPENBLAS_CORETYPE={value!r} is not a core type OpenBLAS knows on "
            f"{machine}, so it ignores it and picks the CPU's own kernel; "
            f"unset it, or name one of {', '.join(known)}")


def cpu_vector_level(flags):
    """4 for AVX-512 (F, BW, VL, DQ), 3 for AVX2 with FMA, 2 for AVX, 1 otherwise."""
    flags = set(flags)
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return 4
    if {"avx2", "fma"} <= flags:
        return 3
    return 2 if "avx" in flags else 1


def kernel_level(kernel):
    """The vector level an OpenBLAS kernel is written for, or None if unknown."""
    return None if not kernel else _KERNEL_LEVEL.get(str(kernel).lower())


def cpu_flags(path="/proc/cpuinfo"):
    """``(model name, set of flags)`` of the first CPU in ``path``; ``(None, None)`` where
    there is no such file (not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None, None
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:  # x86 / ARM
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags


def _numpy_blas_threadpoolctl():
    """NumPy's BLAS as threadpoolctl sees it (the entry loaded from NumPy's own files)."""
    from threadpoolctl import threadpool_info

    root = os.path.dirname(os.path.dirname(np.__file__))  # site-packages
    mine = [d for d in threadpool_info() if d.get("user_api") == "blas"
            and os.path.realpath(d.get("filepath", "")).startswith(os.path.realpath(root))
            and "numpy" in os.path.basename(os.path.dirname(d.get("filepath", "")))]
    blas = [d for d in threadpool_info() if d.get("user_api") == "blas"]
    d = (mine or blas or [None])[0]
    if d is None:
        return None
    return {"library": d.get("internal_api"), "version": d.get("version"),
            "kernel": d.get("architecture"), "threads": d.get("num_threads"),
            "threading_layer": d.get("threading_layer"), "path": d.get("filepath"),
            "source": "threadpoolctl"}


def _numpy_blas_ctypes():
    """The same, asked of NumPy's OpenBLAS through ctypes (no threadpoolctl)."""
    import ctypes

    from . import _blas

    lib = _blas._numpy_library()
    for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"),
                           ("scipy_openblas", ""), ("openblas", "")):
        try:
            corename = getattr(lib, f"{prefix}_get_corename{suffix}")
            threads = getattr(lib, f"{prefix}_get_num_threads{suffix}")
            config = getattr(lib, f"{prefix}_get_config{suffix}")
        except AttributeError:
            continue
        corename.restype = config.restype = ctypes.c_char_p
        threads.restype = ctypes.c_int
        version = config().decode(errors="replace").split()
        return {"library": "openblas", "version": version[1] if len(version) > 1 else None,
                "kernel": corename().decode(errors="replace"), "threads": int(threads()),
                "threading_layer": None, "path": None, "source": "ctypes"}
    return None


def numpy_blas():
    """``{library, version, kernel, threads, threading_layer, path, source}`` of the
    BLAS NumPy calls, or the build's own description where neither threadpoolctl nor
    OpenBLAS's query functions are available."""
    for probe in (_numpy_blas_threadpoolctl, _numpy_blas_ctypes):
        try:
            found = probe()
        except (ImportError, OSError):
            found = None
        if found:
            return found
    try:
        built = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # noqa: BLE001 - an old NumPy without mode="dicts"
        built = {}
    return {"library": built.get("name"), "version": built.get("version"), "kernel": None,
            "threads": None, "threading_layer": None, "path": None, "source": "numpy build"}


_PROBE = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
          "from handgrad.sysinfo import numpy_blas; print(json.dumps(numpy_blas()))")


def native_kernel(timeout=60):
    """The kernel NumPy's OpenBLAS picks with :data:`OPENBLAS_ENV` unset, asked of a
    child Python (the variables are read when the library loads); None if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_ENV}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([here])], env=env,
                           capture_output=True, text=True, timeout=timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])["kernel"] if r.returncode == 0 \
            else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return None


def kernel_warning(env, kernel, native, flags):
    """One line saying the environment forces a slower BLAS kernel, with the fix; or None.

    ``env`` maps the set :data:`OPENBLAS_ENV` variables to their values, ``kernel`` is
    the kernel in use, ``native`` the one picked without them (None if unknown) and
    ``flags`` the CPU's flags (None if unknown).
    """
    forced = {k: v for k, v in env.items() if k in OPENBLAS_ENV}
    if not forced or not kernel:
        return None
    cpu = cpu_vector_level(flags) if flags else None
    have, best = kernel_level(kernel), kernel_level(native)
    if best is None and cpu is not None and native is None:
        best = cpu  # no child answer: the CPU's own level is what OpenBLAS would use
    slower = ((have is not None and best is not None and have < best)
              or (native is not None and have is None and best is None
                  and kernel.lower() != native.lower()))
    if not slower:
        return None
    names = " ".join(f"{k}={v}" for k, v in forced.items())
    ran = f"{kernel} ({_LEVEL_NAME[have]})" if have else kernel
    could = (f"{native} ({_LEVEL_NAME[best]})" if native and best
             else native or f"its {_LEVEL_NAME[best]} kernel")
    unset = " ".join(f"-u {k}" for k in forced)
    return (f"warning: {names} {'forces' if len(forced) == 1 else 'force'} NumPy's OpenBLAS "
            f"onto {ran} where this CPU runs {could}, so matrix products are slower; unset "
            f"{'it' if len(forced) == 1 else 'them'} (`unset {' '.join(forced)}`, or "
            f"`env {unset} handgrad ...` for one command)")


def system_info(probe_native=True):
    """A JSON-able dict: Python, NumPy, NumPy's BLAS (kernel, threads), the CPU's vector
    extensions, the OpenBLAS environment variables that are set, the kernel picked
    without them, the accelerator, and ``warning`` (a line, or None)."""
    from . import _accel

    model, flags = cpu_flags()
    blas = numpy_blas()
    env = {k: os.environ[k] for k in OPENBLAS_ENV if k in os.environ}
    native = blas.get("kernel")
    if env and probe_native and blas.get("library") == "openblas":
        native = native_kernel()
    elif env:
        native = None  # not asked: the kernel in use may be a forced one
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": {"model": model or platform.processor() or None,
                "cores": os.cpu_count(),
                "vector_extensions": None if flags is None
                else [f for f in VECTOR_FLAGS if f in flags],
                "vector_level": None if flags is None else _LEVEL_NAME[cpu_vector_level(flags)]},
        "blas": blas,
        "environment": env,
        "native_kernel": native,
        "accelerator": _accel.describe(),
        "warning": "\n".join(w for w in (coretype_warning(env), kernel_warning(
            env, blas.get("kernel"), native, flags)) if w) or None,
    }


def format_system_info(info):
    """The lines ``handgrad info --system`` prints for :func:`system_info`'s dict."""
    b, c = info["blas"], info["cpu"]
    ext = c["vector_extensions"]
    lines = [
        f"python       {info['python']} ({info['platform']})",
        f"numpy        {info['numpy']}",
        f"blas         {b.get('library') or 'unknown'} {b.get('version') or ''}".rstrip(),
        f"  kernel     {b.get('kernel') or 'unknown'}"
        + (f" (without {', '.join(info['environment'])}: {info['native_kernel']})"
           if info["environment"] and info["native_kernel"] else ""),
        f"  threads    {b.get('threads') or 'unknown'}"
        + (f" ({b['threading_layer']})" if b.get("threading_layer") else ""),
        f"cpu          {c['model'] or 'unknown'}, {c['cores']} logical cores",
        f"  vectors    {' '.join(ext) if ext else 'unknown'}"
        + (f" (best: {c['vector_level']})" if c["vector_level"] else ""),
        f"environment  {' '.join(f'{k}={v}' for k, v in info['environment'].items()) or 'no OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE set'}",
    ]
    a = info["accelerator"]
    lines.append(f"accelerator  {a['backend'] + ' ' + a['version'] if a['backend'] else 'none'}"
                 f" ({a['status']})")
    if info["warning"]:
        lines.append(info["warning"])
    return "\n".join(lines)
