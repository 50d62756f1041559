"""Elementary functions with the same bits on every CPU (plain Python float arithmetic).

numpy's and libm's ``cos``, ``exp``, ``log`` and ``pow`` take other code paths on other
instruction sets (AVX-512, AVX2/FMA, SSE) and may differ in the last bit. What feeds the bytes
of a volume (the reconstruction filters' weights) is computed here instead, from operations
that IEEE 754 rounds exactly (``+ - * /``, ``math.ldexp``, ``math.frexp``) on Python floats:
float64 results within a few units in the last place of the true value, identical everywhere.
"""

from __future__ import annotations

import math

_LN2 = 0.6931471805599453  # nearest double to log(2)
_PI = math.pi  # a constant, the same everywhere


def shortest(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` (integers without a point)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _poly(x: float, coefficients: list[float]) -> float:
    """Horner evaluation of ``sum c_k x^k`` (coefficients from the highest power down)."""
    total = 0.0
    for c in coefficients:
        total = total * x + c
    return total


_EXP_TAYLOR = [1.0 / math.factorial(k) for k in range(20, -1, -1)]


def exp(x: float) -> float:
    """``e**x``: exact reduction by powers of two, then the Taylor series on |r| <= ln2 / 2."""
    x = float(x)
    if x != x:
        return x
    if x > 709.0:
        return math.inf
    if x < -745.0:
        return 0.0
    k = round(x / _LN2)
    r = x - k * _LN2
    return math.ldexp(_poly(r, _EXP_TAYLOR), k)


def log(x: float) -> float:
    """Natural logarithm of ``x`` > 0: exact split into 2^e m, then 2 atanh((m - 1) / (m + 1))."""
    x = float(x)
    if not x > 0:
        return -math.inf if x == 0 else math.nan
    if x == math.inf:
        return x
    m, e = math.frexp(x)  # x = m 2^e, m in [0.5, 1)
    if m < math.sqrt(0.5):
        m, e = 2.0 * m, e - 1
    s = (m - 1.0) / (m + 1.0)  # |s| < 0.172
    s2 = s * s
    series = 0.0
    for k in range(27, -1, -1):  # atanh(s) / s = sum s^(2k) / (2k + 1)
        series = series * s2 + 1.0 / (2 * k + 1)
    return 2.0 * s * series + e * _LN2


def power(base: float, exponent: float) -> float:
    """Return ``base ** exponent`` for base > 0, as ``exp(exponent log base)``."""
    if base == 1.0 or exponent == 0.0:
        return 1.0
    return exp(exponent * log(base))


def cos_sin_degrees(angle: float) -> tuple[float, float]:
    """Cosine and sine of an angle in degrees, the same bits on every CPU.

    Reduced exactly to [-45, 45] degrees by quarter turns, then Taylor series to the 17th
    power in float64 (error below 1e-16 on that range) with plain Python arithmetic: libm's
    and numpy's cos and sin take other code paths on other instruction sets.
    """
    quarter = round(angle / 90.0)
    x = (angle - 90.0 * quarter) * (_PI / 180.0)
    x2 = x * x
    sin = cos = 0.0
    for k in range(8, -1, -1):  # sum of (-1)^k x^(2k+1) / (2k+1)!, (-1)^k x^(2k) / (2k)!
        sin = sin * x2 + (-1.0) ** k / math.factorial(2 * k + 1)
        cos = cos * x2 + (-1.0) ** k / math.factorial(2 * k)
    sin *= x
    for _ in range(quarter % 4):
        cos, sin = -sin, cos
    return cos, sin


def cos_turns(t: float) -> float:
    """``cos(2 pi t)``, reduced exactly by quarter turns (see :func:`cos_sin_degrees`)."""
    return cos_sin_degrees(360.0 * float(t))[0]


def sin_turns(t: float) -> float:
    """``sin(2 pi t)``."""
    return cos_sin_degrees(360.0 * float(t))[1]


def sinc(t: float) -> float:
    """``sin(pi t) / (pi t)`` (numpy's normalised sinc), 1 at 0."""
    if t == 0:
        return 1.0
    return sin_turns(0.5 * t) / (_PI * t)
