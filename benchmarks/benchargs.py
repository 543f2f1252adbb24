"""Command-line pieces the benchmark scripts share: --help with defaults, positive
integers, an output checked before any timing, and a scratch path for reduced runs."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's layout and shows every option's default (those
    whose default is None say in their help what happens without them)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def int_at_least(low):
    """argparse type: an integer ≥ ``low``, else a usage error naming the value."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be at least {low}")
        return value

    parse.__name__ = "positive_int" if low == 1 else f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)  # argparse type: an integer ≥ 1
non_negative_int = int_at_least(0)  # argparse type: an integer ≥ 0


def fraction(text):
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} must be in (0, 1]")
    return value


def check_out(path, what="file"):
    """Why ``path`` (a file, or with ``what="dir"`` a folder) cannot be written, or None."""
    from handgrad._atomic import check_writable

    try:
        check_writable(path, what, create_folder=True)
    except Exception as exc:  # noqa: BLE001 - OutputPathError / NotWritableError: say it
        return str(exc).replace("model.safetensors", "results.json")
    return None


def output_path(ap, args, default, reduced):
    """``--out`` as given; else ``default`` (the committed full result) unless the run is
    ``reduced`` (flags naming a smaller workload than the committed one), which then goes
    to a scratch file, said on stdout, so a quick run never replaces the full result."""
    if args.out is not None:
        return args.out
    if not reduced:
        return default
    scratch = Path(tempfile.gettempdir()) / f"{default.stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    print(f"{' '.join(reduced)} differs from the full run's settings: writing {scratch} "
          f"(not {default}; give --out to choose)", flush=True)
    return scratch


def changed(ap, args, names):
    """The flags among ``names`` given values other than their defaults, as ``--flag value``."""
    out = []
    for name in names:
        value = getattr(args, name)
        if value != ap.get_default(name):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            out.append(f"--{name.replace('_', '-')} {shown}")
    return out
