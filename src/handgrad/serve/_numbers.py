"""A compiled reader of a JSON list of numbers, straight from a request's bytes (numba).

A JSON tensor's ``data`` is the bulk of an inference request: 784 numbers for one
MNIST image. Decoded as JSON, each number becomes a Python object (a float or an
int) and NumPy then reads those objects back one by one into an array: two passes of
per-object work that cost more than the rest of the request's decoding together.
:func:`read_numbers` reads the numbers' text into a float64 array in one pass, no
objects made. It is imported only where numba is (``handgrad[accel]``);
:mod:`handgrad.serve.protocol` decides when to use it and falls back to the JSON
decoder for everything it declines.

It declines (returns ``-1``) whatever it could not read to exactly the value the JSON
decoder and NumPy give, so that the fallback decides: anything but a flat list of
JSON numbers (nested lists, ``true``, ``null``, strings, ``NaN``, ``+1``, ``01``,
``1.``), and any number whose decimal digits, read as an integer m with a power of
ten e, do not satisfy m ≤ 2⁵³ and |e| ≤ 22. For those that do, m and 10^|e| are both
exact doubles, so the one product m·10^e (or quotient m/10^−e) is rounded once, as
IEEE arithmetic rounds: to the nearest double, the correctly rounded value of the
text that the JSON decoder gives (Clinger's fast path, as in every fast float
parser). ``121.0`` is 1210/10; ``0.0039215689`` is 39215689/10¹⁰. An integer's minus
sign is kept only where the JSON value is a float: ``-0`` decodes as the integer 0,
which NumPy reads as +0.0; ``-0.0`` stays −0.0.
"""

import numba
import numpy as np

__all__ = ["POWERS", "read_numbers"]

POWERS = np.array([10.0 ** k for k in range(23)])  # 10^0 … 10^22, each exact in float64
_EXACT = 1 << 53  # every integer up to 2^53 is an exact double


@numba.njit(cache=True, nogil=True)
def _space(buf, i):
    """The index of the first byte at or after ``i`` that is not JSON whitespace."""
    n = buf.shape[0]
    while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    return i


@numba.njit(cache=True, nogil=True)
def read_numbers(buf, i, out, powers):
    """Read the JSON list that opens at ``buf[i]`` (``[``) into ``out`` (float64).

    ``buf`` is the body's bytes (uint8). Returns ``(end, n)``: the index just past the
    list's ``]`` and how many numbers ``out[:n]`` holds; ``(-1, 0)`` when it declines
    (see the module's description) or ``out`` is too short.
    """
    size = buf.shape[0]
    n = 0
    i = _space(buf, i + 1)
    if i < size and buf[i] == 93:  # ]
        return i + 1, 0
    while True:
        if i >= size:
            return -1, 0
        negative = buf[i] == 45  # -
        if negative:
            i += 1
            if i >= size:
                return -1, 0
        m = 0  # the significant digits as an integer (at most 18: no overflow)
        digits = 0
        e = 0  # the power of ten: value = m · 10^e
        integer = True
        c = buf[i]
        if c == 48:  # a lone leading 0
            i += 1
            if i < size and 48 <= buf[i] <= 57:
                return -1, 0
        elif 49 <= c <= 57:
            while i < size and 48 <= buf[i] <= 57:
                if digits == 18:
                    return -1, 0
                m = m * 10 + (buf[i] - 48)
                digits += 1
                i += 1
        else:
            return -1, 0
        if i < size and buf[i] == 46:  # . and at least one digit
            integer = False
            i += 1
            start = i
            while i < size and 48 <= buf[i] <= 57:
                d = buf[i] - 48
                if digits == 0 and d == 0:  # a leading zero of the fraction
                    e -= 1
                elif digits == 18:
                    return -1, 0
                else:
                    m = m * 10 + d
                    digits += 1
                    e -= 1
                i += 1
            if i == start:
                return -1, 0
        if i < size and (buf[i] == 101 or buf[i] == 69):  # e or E, a sign, digits
            integer = False
            i += 1
            below = False
            if i < size and (buf[i] == 43 or buf[i] == 45):
                below = buf[i] == 45
                i += 1
            start = i
            x = 0
            while i < size and 48 <= buf[i] <= 57:
                if x < 100000:  # beyond any double's range already
                    x = x * 10 + (buf[i] - 48)
                i += 1
            if i == start:
                return -1, 0
            e += -x if below else x
        if m == 0:
            v = 0.0
        elif m <= _EXACT and -22 <= e <= 22:
            v = float(m) * powers[e] if e >= 0 else float(m) / powers[-e]
        else:
            return -1, 0
        if n == out.shape[0]:
            return -1, 0
        out[n] = -v if negative and not (integer and m == 0) else v
        n += 1
        i = _space(buf, i)
        if i >= size:
            return -1, 0
        if buf[i] == 44:  # ,
            i = _space(buf, i + 1)
        elif buf[i] == 93:  # ]
            return i + 1, n
        else:
            return -1, 0
