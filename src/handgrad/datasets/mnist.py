"""The MNIST family (MNIST, Fashion-MNIST, Kuzushiji-MNIST): find, download, load.

Shape key: N images of 28×28 pixels.

Where the files are looked for: ``root`` if given; else ``$HANDGRAD_DATA/<name>``
when it holds them; else the per-user cache ``$XDG_CACHE_HOME/handgrad/<name>``
(default ``~/.cache/handgrad/<name>``). Missing files are downloaded into
``root`` (when given) or the cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import Checksums, DownloadError, download
from .errors import DataError
from .idx import load_idx

PARTS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class FamilyMember:
    title: str
    mirrors: tuple
    checksums: dict  # part -> Checksums of "<part>.gz"
    classes: tuple
    license: str


DATASETS = {
    "mnist": FamilyMember(
        title="MNIST",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        checksums={
            # MD5 of the .gz files as published by the mirrors; SHA-256 of the
            # decompressed files (these identify a recompressed copy too).
            "train-images-idx3-ubyte": Checksums(
                md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
                raw_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
            "train-labels-idx1-ubyte": Checksums(
                md5="d53e105ee54ea40749a09fcbcd1e9432",
                raw_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
            "t10k-images-idx3-ubyte": Checksums(
                md5="9fb629c4189551a2d022fa330f9573f3",
                raw_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
            "t10k-labels-idx1-ubyte": Checksums(
                md5="ec29112dd5afa0611ce80d1b7f02629c",
                raw_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
        },
        classes=tuple("0123456789"),
        license="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
    ),
    "fashion-mnist": FamilyMember(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
        checksums={
            "train-images-idx3-ubyte": Checksums(md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels-idx1-ubyte": Checksums(md5="25c81989df183df01b3e8a0aad5dffbe"),
            "t10k-images-idx3-ubyte": Checksums(md5="bef4ecab320f06d8554ea6380940ec79"),
            "t10k-labels-idx1-ubyte": Checksums(md5="bb300cfdad3c16e7a12a480ee83cd310"),
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        license="MIT (Zalando Research)",
    ),
    "kmnist": FamilyMember(
        title="Kuzushiji-MNIST",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                 "https://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        checksums={
            "train-images-idx3-ubyte": Checksums(md5="bdb82020997e1d708af4cf47b453dcf7"),
            "train-labels-idx1-ubyte": Checksums(md5="e144d726b3acfaa3e44228e80efcd344"),
            "t10k-images-idx3-ubyte": Checksums(md5="5c965bf0a639b31b8f53240b1b52f4d7"),
            "t10k-labels-idx1-ubyte": Checksums(md5="7320c461ea6c1c855c0b718fb2a4b134"),
        },
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        license="CC BY-SA 4.0 (ROIS-DS Center for Open Data in the Humanities)",
    ),
}


def cache_dir(name):
    """The per-user cache folder of data set ``name``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "handgrad" / name


def find_part(directory, part):
    """``<part>.gz`` or ``<part>`` in ``directory``, or None."""
    for candidate in (Path(directory) / f"{part}.gz", Path(directory) / part):
        if candidate.is_file():
            return candidate
    return None


def _has_all(directory):
    return directory is not None and all(find_part(directory, p) for p in PARTS)


def locate(name="mnist", root=None):
    """The folder to read ``name`` from, and the folder to download missing files into."""
    if root is not None:
        return Path(root), Path(root)
    env = os.environ.get("HANDGRAD_DATA")
    if env and _has_all(Path(env) / name):
        return Path(env) / name, None
    cache = cache_dir(name)
    return cache, cache


def load_mnist(root=None, name="mnist", *, download_missing=True, mirrors=None,
               progress=True, timeout=30.0):
    """Load ``mnist``, ``fashion-mnist`` or ``kmnist`` as Keras does.

    Returns ``(x_train, y_train), (x_test, y_test)``: uint8 arrays (N, 28, 28)
    and (N,). ``mirrors`` overrides the data set's mirror URLs (base URLs
    ending in ``/``).
    """
    folder = mnist_files(root, name, download_missing=download_missing, mirrors=mirrors,
                         progress=progress, timeout=timeout)
    x_train, y_train = _load_pair(folder, "train")
    x_test, y_test = _load_pair(folder, "t10k")
    return (x_train, y_train), (x_test, y_test)


def mnist_files(root=None, name="mnist", *, download_missing=True, mirrors=None,
                progress=True, timeout=30.0):
    """The folder holding all four files of ``name``, downloading missing ones."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    member = DATASETS[name]
    folder, download_to = locate(name, root)
    missing = [p for p in PARTS if find_part(folder, p) is None]
    if missing and download_missing and download_to is not None:
        failures = []  # (where, why, file)
        for part in missing:
            bases = mirrors or member.mirrors
            try:
                download([base + part + ".gz" for base in bases], download_to / f"{part}.gz",
                         member.checksums[part], timeout=timeout, progress=progress)
            except DownloadError as exc:
                failures += [(base, why, f"{part}.gz")
                             for base, (_, why) in zip(bases, exc.failures)]
            except OSError as exc:
                failures.append((f"writing into {download_to}", exc.strerror or str(exc),
                                 f"{part}.gz"))
        missing = [p for p in PARTS if find_part(folder, p) is None]
        if missing:
            raise DataError(_offline_message(member, folder, missing, failures))
    elif missing:
        raise DataError(_offline_message(member, folder, missing, []))
    return folder


def _offline_message(member, folder, missing, failures):
    """A few lines: which files are missing, where to put them, what each mirror said."""
    files = [f"{p}.gz" for p in missing]
    lines = [f"{member.title}: {len(files)} file{'s' * (len(files) != 1)} missing: "
             f"{', '.join(files)}",
             f"Put {'them' if len(files) > 1 else 'it'} into {folder}, or set HANDGRAD_DATA "
             f"to a folder whose {folder.name}/ holds all four files."]
    env = os.environ.get("HANDGRAD_DATA")
    if env and Path(env) / folder.name != folder:
        where = Path(env) / folder.name
        resolved = "" if where.is_absolute() else f" (from {os.getcwd()}: {where.absolute()})"
        lines.append(f"HANDGRAD_DATA is set to {env!r}, but {where}{resolved} does not hold "
                     f"all four files.")
    if failures:
        grouped = {}  # (mirror, reason) -> files: one line per mirror when all failed alike
        for where, why, name in failures:
            grouped.setdefault((where, why), []).append(name)
        lines.append("Downloading failed:")
        for (where, why), names in grouped.items():
            which = "" if len(names) == len(files) else f" ({', '.join(names)})"
            lines.append(f"  {where}: {why}{which}")
    return "\n".join(lines)


def _load_pair(folder, split):
    images_path = find_part(folder, f"{split}-images-idx3-ubyte")
    labels_path = find_part(folder, f"{split}-labels-idx1-ubyte")
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got "
                        f"{images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got "
                        f"{labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} "
                        f"images in {images_path.name}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0-9")
    return images, labels
