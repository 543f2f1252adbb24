"""``handgrad info --system``: what this machine gives handgrad (see :mod:`handgrad.sysinfo`).

The ``info`` subcommand's module adds the flag with :func:`add_arguments` and, when
``args.system`` is set, returns :func:`run`'s exit code instead of reading a model file.
"""

from __future__ import annotations

import json
import sys

FLAG_HELP = ("print NumPy's BLAS (its kernel and threads), the CPU's vector extensions and "
             "the accelerator, and warn when OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE force a "
             "slower BLAS kernel; no model file needed")


def add_arguments(parser):
    """Add ``--system`` to the ``info`` parser (its ``model`` argument must be optional)."""
    parser.add_argument("--system", action="store_true", help=FLAG_HELP)


def run(as_json=False, out=None):
    """Print the system report (text, or JSON with ``as_json``); returns exit code 0."""
    from .sysinfo import format_system_info, system_info

    out = sys.stdout if out is None else out
    info = system_info()
    if as_json:
        out.write(json.dumps(info, indent=2) + "\n")
    else:
        out.write(format_system_info(info) + "\n")
    return 0
