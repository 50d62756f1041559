"""Reconstruction filters of filtered back-projection, for mode 1 (pure numpy).

A filter multiplies the 1-D Fourier transform of every projection along its detector coordinate
t by W_v(f), f in cycles per pixel (0 .. 0.5), before the back-projection. ``W_v`` may differ
between views v by a per-view factor (IMOD's tilt-density weight, AreTomo's cos(theta)).

Since the filter acts along t only (the tilt axis y is untouched), the 3-D power spectrum of
filtered noise, relative to that of unfiltered noise of the same geometry, is
``|W(k_xz)|^2`` with ``k_xz = sqrt(kx^2 + kz^2)``: the distance to the tilt axis, which is the
radius of the (kz, kx) spectrum that ``mwr-dask inspect`` measures, not the 3-D radius |k|.

Filters (see docs/filters.md for the sources and what is reproduced exactly):

``none``
    W = 1 (unfiltered back-projection; today's mode 1).
``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann``
    skimage ``iradon``'s filters (IsoNet's ``make_noise_folder`` choices): |f| times 1,
    sin(pi f)/(pi f), cos(pi f), 0.54 + 0.46 cos(2 pi f), 0.5 + 0.5 cos(2 pi f). The ramp is
    skimage's Kak-Slaney ramp: its DC is small but not 0 (:func:`kak_slaney_dc`).
``imod``
    IMOD ``tilt``'s radial weighting (``RADIAL cutoff falloff`` with ``FalloffIsTrueSigma 1``):
    |f| up to the cutoff, then ``W(cutoff) exp(-(f - cutoff)^2 / (2 falloff^2))``; DC 0.2 of
    the first frequency step; each view weighted by :func:`imod_view_weights`.
``sirt-like``
    IMOD's ``FakeSIRTiterations N``: ``a_v f [1 - (1 - 0.00195 / f)^(N' + 0.3)]`` for
    f >= 0.00195 (the plain ramp below), with the radial fall-off of ``imod`` beyond the cutoff.
``aretomo``
    AreTomo2's weighted back-projection (``Recon/GRWeight.cu``): 2 f (0.55 + 0.45 cos 2 pi f),
    each view scaled by cos(theta) (``Recon/GWeightProjs.cu``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mwr_dask.noise import exactmath

if TYPE_CHECKING:
    import numpy as np

#: Filter names, as ``--filter`` takes them.
FILTERS: tuple[str, ...] = (
    "none",
    "ramp",
    "shepp-logan",
    "cosine",
    "hamming",
    "hann",
    "imod",
    "sirt-like",
    "aretomo",
)
#: skimage ``iradon`` windows (ramp times a window).
SKIMAGE_FILTERS: tuple[str, ...] = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
#: Filters that take ``--radial CUTOFF FALLOFF``.
RADIAL_FILTERS: tuple[str, ...] = ("imod", "sirt-like")
#: etomo's default ``RADIAL 0.35 0.035`` (cycles/pixel; falloff a true Gaussian sigma).
DEFAULT_RADIAL: tuple[float, float] = (0.35, 0.035)
#: IMOD's default for ``FakeSIRTiterations`` in mwr-dask (``--sirt-iterations``).
DEFAULT_SIRT_ITERATIONS = 10
#: Frequency (cycles/pixel) below which IMOD's SIRT-like filter is the plain ramp.
SIRT_F0 = 0.00195
#: IMOD's weights of the angular gaps to the first and second neighbours on each side.
IMOD_GAP_WEIGHTS: tuple[float, float] = (2.0, 2.0 / 3.0)


@dataclass(frozen=True)
class FilterSpec:
    """A reconstruction filter and its parameters (frozen, hashable).

    Build it with :func:`make_filter`, which fills the defaults and validates. The names, the
    specification and its validation import nothing heavy (numpy is imported by the functions
    that compute), so the command line can check options at once.

    Attributes
    ----------
    name : str
        One of :data:`FILTERS`.
    cutoff, falloff : float or None
        Radial cutoff and Gaussian sigma of the fall-off, cycles/pixel (``imod``,
        ``sirt-like``); None for the other filters.
    sirt_iterations : int or None
        ``FakeSIRTiterations`` (``sirt-like``); None for the other filters.
    """

    name: str = "none"
    cutoff: float | None = None
    falloff: float | None = None
    sirt_iterations: int | None = None

    @property
    def is_none(self) -> bool:
        """True for the unfiltered back-projection."""
        return self.name == "none"

    def label(self) -> str:
        """Text recording the filter, e.g. ``filter=imod radial=0.35,0.035`` (<= 80 chars)."""
        out = f"filter={self.name}"
        if self.cutoff is not None:
            out += f" radial={exactmath.shortest(self.cutoff)},{exactmath.shortest(self.falloff)}"
        if self.sirt_iterations is not None:
            out += f" sirt={self.sirt_iterations}"
        return out

    def describe(self) -> str:
        """One phrase for people, e.g. ``imod radial filter, cutoff 0.35, sigma 0.035``."""
        if self.is_none:
            return "unfiltered back-projection"
        text = f"{self.name} filter"
        if self.cutoff is not None:
            cutoff, sigma = exactmath.shortest(self.cutoff), exactmath.shortest(self.falloff)
            text += f", radial cutoff {cutoff}, fall-off sigma {sigma}"
        if self.sirt_iterations is not None:
            text += f", {self.sirt_iterations} SIRT-like iterations"
        return text


NO_FILTER = FilterSpec()


def filter_problems(
    name: str,
    radial: tuple[float, float] | None = None,
    sirt_iterations: int | None = None,
    mode: int = 1,
) -> list[str]:
    """One sentence per problem with a filter request (empty if it is valid).

    Parameters
    ----------
    name : str
        ``--filter``.
    radial : tuple of float or None
        ``--radial CUTOFF FALLOFF`` if given, cycles/pixel.
    sirt_iterations : int or None
        ``--sirt-iterations`` if given.
    mode : int
        ``--mode``; filters apply to mode 1 only.
    """
    if name not in FILTERS:
        return [f"--filter must be one of {', '.join(FILTERS)}, not {name!r}."]
    out = []
    if mode != 1 and name != "none":
        out.append(
            f"--filter {name} applies to mode 1 (back-projection) only; mode {mode} has no"
            " projections to filter."
        )
    if radial is not None:
        if name not in RADIAL_FILTERS:
            out.append(f"--radial applies to --filter imod and sirt-like only, not to {name}.")
        else:
            cutoff, falloff = radial
            if not (math.isfinite(cutoff) and 0 < cutoff <= 0.5):
                out.append(f"--radial CUTOFF must lie in (0, 0.5] cycles/pixel, not {cutoff}.")
            if not (math.isfinite(falloff) and falloff > 0):
                out.append(
                    f"--radial FALLOFF must be a positive sigma in cycles/pixel, not {falloff}."
                )
    if sirt_iterations is not None:
        if name != "sirt-like":
            out.append(f"--sirt-iterations applies to --filter sirt-like only, not to {name}.")
        elif sirt_iterations < 1:
            out.append(f"--sirt-iterations must be at least 1, not {sirt_iterations}.")
    return out


@functools.lru_cache(maxsize=64)
def make_filter(
    name: str = "none",
    radial: tuple[float, float] | None = None,
    sirt_iterations: int | None = None,
) -> FilterSpec:
    """Build the :class:`FilterSpec` of a request, defaults filled in.

    Raises
    ------
    ValueError
        With the sentences of :func:`filter_problems` if the request is invalid.
    """
    problems = filter_problems(name, radial, sirt_iterations)
    if problems:
        raise ValueError(" ".join(problems))
    cutoff = falloff = None
    if name in RADIAL_FILTERS:
        cutoff, falloff = (float(v) for v in (radial or DEFAULT_RADIAL))
    if name == "sirt-like":
        sirt_iterations = DEFAULT_SIRT_ITERATIONS if sirt_iterations is None else sirt_iterations
    return FilterSpec(
        name, cutoff, falloff, None if sirt_iterations is None else int(sirt_iterations)
    )


def imod_view_weights(angles: np.ndarray) -> np.ndarray:
    """IMOD ``tilt``'s tilt-density weight a_v of each view (its default ``DENSWEIGHT``).

    For view v, the angular gaps to its nearest and second-nearest used views on each side are
    weighted 2 and 2/3 (``1 / (i - 0.5)``); their weighted sum is divided by the sum of the
    weights present (one side only at the ends) and by the mean interval
    ``(max - min) / (n - 1)``. A regular scheme gives 1 everywhere; views next to a gap (an
    excluded view) get more weight.

    Parameters
    ----------
    angles : numpy.ndarray
        Tilt angles of the used views, degrees, ascending.

    Returns
    -------
    numpy.ndarray
        float64 weights, one per view (1 for a single view).
    """
    import numpy as np

    a = np.asarray(angles, dtype=np.float64)
    n = a.size
    if n < 2:
        return np.ones(n)
    gaps = np.diff(a)
    mean_interval = (a[-1] - a[0]) / (n - 1)
    out = np.empty(n)
    for v in range(n):
        total = weight = 0.0
        for i, w in enumerate(IMOD_GAP_WEIGHTS, start=1):
            if v - i >= 0:  # gap between views v - i and v - i + 1
                total += w * gaps[v - i]
                weight += w
            if v + i <= n - 1:  # gap between views v + i - 1 and v + i
                total += w * gaps[v + i - 1]
                weight += w
        out[v] = total / weight / mean_interval
    return out


def view_weights(spec: FilterSpec, angles: np.ndarray) -> np.ndarray:
    """Per-view factor of a filter: IMOD's a_v, AreTomo's cos(theta), else 1."""
    import numpy as np

    a = np.asarray(angles, dtype=np.float64)
    if spec.name in RADIAL_FILTERS:
        return imod_view_weights(a)
    if spec.name == "aretomo":
        return _each(lambda t: exactmath.cos_turns(t / 360.0), a)
    return np.ones(a.size)


def kak_slaney_dc(length: int) -> float:
    """DC of skimage's ramp at FFT length ``length``, in the units where the ramp is |f|.

    skimage builds the ramp as the FFT of the sampled band-limited ramp kernel (Kak and Slaney,
    eq. 61): ``h(0) = 1/4``, ``h(n) = -1 / (pi n)^2`` for odd n, truncated to the padded
    length, so its DC is ``1/4 - 2 sum 1 / (pi n)^2`` (about 0.2 of the first step 1/length).
    """
    import numpy as np

    odd = np.concatenate([np.arange(1, length // 2 + 1, 2), np.arange(length // 2 - 1, 0, -2)])
    return float(0.25 - np.sum(1.0 / (np.pi * odd) ** 2))


def _sirt_power(iterations: int) -> float:
    """IMOD's effective exponent N' + 0.3 of ``FakeSIRTiterations N``."""
    n = float(iterations)
    if n <= 15:
        eff = n
    elif n <= 30:
        eff = 15 + 0.8 * (n - 15)
    else:
        eff = 27 + 0.6 * (n - 30)
    return eff + 0.3


def _each(function, values):
    """Apply ``function`` to every element of ``values``: a float64 array of their shape."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    flat = [function(float(v)) for v in values.ravel()]
    return np.array(flat, dtype=np.float64).reshape(values.shape)


def base_response(spec: FilterSpec, f: np.ndarray, *, length: int | None = None) -> np.ndarray:
    """W(f) of a filter without per-view factors, f in cycles/pixel (sign ignored).

    Parameters
    ----------
    spec : FilterSpec
        The filter.
    f : numpy.ndarray
        Frequencies, cycles/pixel.
    length : int or None
        FFT length (pixels) the filter is sampled at. If given, W at f = 0 is the DC the
        software sets for that length (skimage's Kak-Slaney DC, IMOD's 0.2 of the first step);
        if None, the continuous W(0).

    Returns
    -------
    numpy.ndarray
        float64, shape of ``f``.
    """
    import numpy as np

    a = np.abs(np.asarray(f, dtype=np.float64))
    name = spec.name
    if name == "none":
        return np.ones_like(a)
    # cos, sinc, exp and pow from exactmath: the weights, hence the volumes, are the same
    # bits on every CPU (numpy's transcendental functions are not)
    if name == "aretomo":
        return 2.0 * a * (0.55 + 0.45 * _each(exactmath.cos_turns, a))
    if name in SKIMAGE_FILTERS:
        window = {
            "ramp": lambda: np.ones_like(a),
            "shepp-logan": lambda: _each(exactmath.sinc, a),  # sin(pi f) / (pi f)
            "cosine": lambda: _each(exactmath.cos_turns, a / 2.0),
            "hamming": lambda: 0.54 + 0.46 * _each(exactmath.cos_turns, a),
            "hann": lambda: 0.5 + 0.5 * _each(exactmath.cos_turns, a),
        }[name]()
        w = a * window
        if length is not None:
            w = np.where(a == 0, kak_slaney_dc(length), w)
        return w
    if name in RADIAL_FILTERS:
        cutoff, sigma = float(spec.cutoff), float(spec.falloff)

        def ramp(x: np.ndarray) -> np.ndarray:
            if name == "imod":
                return x
            p = _sirt_power(spec.sirt_iterations)
            x = np.asarray(x, dtype=np.float64)
            safe = np.where(x >= SIRT_F0, x, 1.0)
            sirt = safe * (1.0 - _each(lambda b: exactmath.power(b, p), 1.0 - SIRT_F0 / safe))
            return np.where(x >= SIRT_F0, sirt, x)

        at_cut = ramp(np.array(cutoff))
        gauss = _each(exactmath.exp, -((a - cutoff) ** 2) / (2 * sigma**2))
        w = np.where(a <= cutoff, ramp(a), at_cut * gauss)
        if length is not None:
            w = np.where(a == 0, 0.2 / length, w)
        return w
    raise ValueError(f"unknown filter {name!r}")


def response(
    spec: FilterSpec, f: np.ndarray, angles: np.ndarray, *, length: int | None = None
) -> np.ndarray:
    """W_v(f) of every view: the factor applied to the Fourier transform of each projection.

    Parameters
    ----------
    spec : FilterSpec
        The filter.
    f : numpy.ndarray
        1-D frequencies along the detector, cycles/pixel.
    angles : numpy.ndarray
        Tilt angles of the views, degrees, ascending.
    length : int or None
        FFT length the filter is sampled at (sets the DC; see :func:`base_response`).

    Returns
    -------
    numpy.ndarray
        float64, shape (n_views, n_f).
    """
    import numpy as np

    base = base_response(spec, np.asarray(f, dtype=np.float64).ravel(), length=length)
    return view_weights(spec, angles)[:, None] * base[None, :]
