"""Users' own digit images, prepared the way MNIST's were (needs Pillow).

MNIST's digits are white on black, size-normalised to fit a 20×20 box with their
aspect ratio kept, and centred by centre of mass in a 28×28 field. A photo or
drawing of a digit gets the same treatment here: grayscale, invert a light
background, crop to the ink, scale into 20×20, centre by mass in 28×28.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ._requirements import MissingPackageError
from .datasets.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_PIXELS = 40_000_000  # larger images (or decompression bombs) are refused
MAX_FILE_BYTES = 64 << 20
FIELD, BOX = 28, 20


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise MissingPackageError("reading images needs Pillow: pip install 'handgrad[cli]'",
                                  ["images"]) from None
    return Image


def read_image(path, max_pixels=MAX_PIXELS):
    """Decode an image file to a grayscale float array in [0, 255] (H, W).

    A transparent background (PNG, GIF, WebP alpha) is filled in first: see
    :func:`flatten_alpha`.
    """
    Image = _pillow()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: over {MAX_FILE_BYTES >> 20} MiB, too large for a digit image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise DataError(f"{path}: {w}×{h} pixels, over the limit of "
                                    f"{max_pixels:,} (a decompression bomb?)")
                if _has_alpha(im):
                    la = im.convert("RGBA").convert("LA")  # (gray, alpha); RGBA reads a
                    # palette's or a tRNS chunk's transparency
                    la.load()
                    gray = None
                else:
                    im.draft("L", (w, h))
                    gray = im.convert("L")
                    gray.load()
    except DataError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(f"{path}: refused as a decompression bomb (too many pixels)") from None
    except Exception as exc:  # Pillow raises many types for damaged files
        raise DataError(f"{path}: cannot decode as an image ({type(exc).__name__}: {exc})") from None
    if gray is None:
        la = np.asarray(la, dtype=np.float64)  # (H, W, 2)
        try:
            return flatten_alpha(la[..., 0], la[..., 1] / 255.0)  # (H, W)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
    return np.asarray(gray, dtype=np.float64)


def _has_alpha(im):
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def flatten_alpha(gray, alpha):
    """A grayscale image (H, W) of ``gray`` (H, W) in [0, 255] over a plain background,
    by its opacity ``alpha`` (H, W) in [0, 1].

    Dropping the alpha would leave what the transparent pixels happen to store, often
    black under a black digit: a blank image. Where the opaque pixels cover most of the
    image they are the background, and the transparent ones take their usual gray; where
    they are the few, they are the ink, and the background becomes its opposite (white
    under dark ink, black under light), as on any page or screen the image is shown on.
    """
    opaque = alpha >= 0.5
    if opaque.all():
        return gray
    if not opaque.any():
        raise DataError("the image is fully transparent: no digit found")
    typical = float(np.median(gray[opaque]))  # the opaque pixels' usual gray
    if opaque.mean() > 0.5:
        background = typical  # the opaque pixels are mostly background
    else:
        background = 255.0 if typical < 128 else 0.0  # they are the ink
    return alpha * gray + (1.0 - alpha) * background  # (H, W)


def mnist_style(gray, size=FIELD, box=BOX):
    """A (size, size) uint8 image: white digit on black, in a box, centred by mass."""
    Image = _pillow()
    a = np.asarray(gray, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise DataError(f"expected a 2-D grayscale image, got shape {a.shape}")
    background = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    if background > 127:  # dark ink on a light background: invert
        a, background = 255.0 - a, 255.0 - background
    a = np.clip(a - background, 0, None)  # the background becomes 0
    peak = a.max()
    if peak <= 0:
        raise DataError("the image is blank: no digit found")
    a *= 255.0 / peak
    rows = np.flatnonzero(a.max(axis=1) > 0.1 * 255)
    cols = np.flatnonzero(a.max(axis=0) > 0.1 * 255)
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # crop to the ink
    h, w = a.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.asarray(Image.fromarray(a.astype(np.float32), mode="F")
                       .resize((new_w, new_h), Image.Resampling.LANCZOS), dtype=np.float64)
    small = np.clip(small, 0, 255)
    field = np.zeros((size, size))
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(round(size / 2 - cy))
    left = int(round(size / 2 - cx))
    top = min(max(top, 0), size - new_h)
    left = min(max(left, 0), size - new_w)
    field[top:top + new_h, left:left + new_w] = small
    return np.round(field).astype(np.uint8)


def load_digit_image(path, shape=(FIELD, FIELD), max_value=255.0):
    """Read ``path`` and prepare it like MNIST; resized to ``shape`` if it differs.

    The result is scaled to ``[0, max_value]`` (16 for the 8×8 digits) as float64.
    Errors name the file.
    """
    gray = read_image(path)
    try:
        return digit_input(gray, shape, max_value)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def digit_input(gray, shape=(FIELD, FIELD), max_value=255.0):
    """:func:`load_digit_image` for a grayscale array (H, W) already in memory."""
    img = mnist_style(gray)
    if tuple(shape) != (FIELD, FIELD):
        if len(shape) != 2:
            raise DataError(f"the model takes examples of shape {tuple(shape)}, not images")
        Image = _pillow()
        img = np.asarray(Image.fromarray(img).resize((shape[1], shape[0]),
                                                     Image.Resampling.LANCZOS))
    return img.astype(np.float64) * (max_value / 255.0)
