"""Dose weighting of the tilt images: the models, each view's pre-exposure, the weights.

A view v that had received N_v electrons per square angstrom before its own exposure (its
*pre-exposure*) is weighted in 2-D, at the spatial frequency k (1/A) of its image, by

``grant-grigorieff``
    ``exp(-N_v / (2 Ne(k)))``, ``Ne(k) = s (0.245 k^-1.665 + 2.81)`` e/A^2 (Grant & Grigorieff
    2015; RELION ``src/jaz/optics/damage.cpp``). ``s`` = 1 at 300 kV; RELION's
    ``src/motioncorr_runner.cpp`` divides the doses by 0.8 at 200 kV and by 0.64 at 100 kV,
    i.e. ``s`` = 0.8 and 0.64. Other voltages are refused.
``bfactor``
    Warp's ``exp(B k^2 / 4)`` with ``B = -4 N_v`` A^2 (``TiltSeries.GetCTFsForOneParticle``:
    ``Bfactor = -Dose * 4``; gtom ``CTF.cuh``: ``exp(Bfactor / 4 * k^2)``), i.e.
    ``exp(-N_v k^2)``. Warp also scales each view by cos(theta); that is not modelled here.

In 3-D the weight of view v acts on its central plane at the full |k|. The pre-exposures come
from the tilt files (:func:`file_doses`) or from a dose per view and an order of acquisition
(:func:`with_doses`, :func:`range_doses`, :func:`acquisition_order`).

Every number that feeds a volume's bytes is computed from IEEE 754 operations and
:mod:`mwr_dask.noise.exactmath` (no numpy or libm transcendental function): :func:`exp_array`
is ``exactmath.exp`` on arrays, bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mwr_dask.noise import exactmath
from mwr_dask.noise.schemes import TiltScheme, TiltSchemeError

#: Models, as ``--dose-weighting`` takes them.
MODELS = ("none", "grant-grigorieff", "bfactor")
#: Factor of the critical exposure by voltage (kV), as RELION's motion correction scales it.
CRITICAL_SCALE = {300.0: 1.0, 200.0: 0.8, 100.0: 0.64}
#: Orders of acquisition ``--acquisition`` names.
ACQUISITIONS = ("dose-symmetric", "bidirectional", "unidirectional")
#: Resolution and range of the doses recorded in the header labels, e/A^2 (12 bits a view).
DOSE_QUANTUM, MAX_DOSE = 0.25, 4095 * 0.25
#: Labels of recorded doses and characters each (``dq1=`` .. ``dq4=``, two characters a view).
PROFILE_LABELS, PROFILE_CHARS = 4, 76
#: Most used views a dose-weighted tilt series may have: their doses fill 4 header labels.
MAX_DOSE_VIEWS = PROFILE_LABELS * PROFILE_CHARS // 2
_DIGITS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
#: Grant & Grigorieff's critical exposure at 300 kV: a k^b + c, k in 1/A.
_GG = (0.245, -1.665, 2.81)


@dataclass(frozen=True)
class DoseWeights:
    """The dose weighting of one geometry: model, voltage (kV), voxel (A), views and doses.

    ``angles``: used views, degrees, ascending; ``doses``: pre-exposure of each, e/A^2.
    """

    model: str
    voltage: float
    voxel: float
    angles: tuple[float, ...]
    doses: tuple[float, ...]

    def exponent(self, k2: np.ndarray) -> np.ndarray:
        """``g`` of the weight ``exp(-N g)`` at squared frequencies ``k2``, cycles^2/pixel^2.

        ``1 / (2 Ne(k))`` (Grant & Grigorieff) or ``k^2`` (B-factor), k in 1/A; 0 at k = 0.
        """
        k2 = np.asarray(k2, dtype=np.float64) / (self.voxel * self.voxel)
        if self.model == "bfactor":
            return k2
        a, b, c = _GG
        scale = CRITICAL_SCALE[self.voltage]

        def g(x: float) -> float:
            if x == 0.0:
                return 0.0
            return 1.0 / (2.0 * scale * (a * exactmath.power(math.sqrt(x), b) + c))

        values, where = np.unique(k2, return_inverse=True)
        return np.array([g(float(x)) for x in values])[where].reshape(k2.shape)

    def amplitudes(self, k2: np.ndarray) -> np.ndarray:
        """Weight of every view at squared frequencies ``k2``: float64, (views, *k2.shape)."""
        g = self.exponent(k2)
        doses = np.asarray(self.doses, dtype=np.float64).reshape((-1,) + (1,) * g.ndim)
        return exp_array(-doses * g)

    def at_nyquist(self, dose: float) -> float:
        """Amplitude weight of a view of pre-exposure ``dose`` at Nyquist (0.5 cycles/pixel)."""
        return float(exp_array(-dose * self.exponent(np.array(0.25)))[()])


def exp_array(x: np.ndarray) -> np.ndarray:
    """:func:`mwr_dask.noise.exactmath.exp` of every element, the same bits (float64).

    The same reduction and Taylor series in correctly rounded float64 ops, so millions of
    Fourier pixels cost milliseconds, not seconds. Below -700 it is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x / exactmath._LN2)  # Python's round(): also half to even
    r = x - k * exactmath._LN2
    total = np.zeros_like(r)
    for c in exactmath._EXP_TAYLOR:
        total = total * r + c
    out = np.ldexp(total, np.clip(k, -1100, 1100).astype(np.int64))
    return np.where(x < -700.0, 0.0, out)


# ----------------------------------------------------------------------- the weights


def projection_weights(dw: DoseWeights, rows: int, length: int) -> np.ndarray:
    """Amplitude weight of each view on its padded projection's FFT grid, (rows, views, t).

    ``rows``, ``length``: padded lengths along y and t (``fftfreq(rows)``, ``rfftfreq(length)``).
    """
    fy, ft = np.fft.fftfreq(rows), np.fft.rfftfreq(length)
    weights = dw.amplitudes(fy[:, None] ** 2 + ft[None, :] ** 2)  # (views, rows, ft)
    return np.ascontiguousarray(weights.transpose(1, 0, 2))


def nearest_views(dw: DoseWeights, kz: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Index of the view whose plane passes nearest to each (kz, kx) pixel (integer coordinates).

    ``|kx sin theta + kz cos theta|`` from exact cosines: the same choice on every CPU; ties
    go to the first in ascending angle.
    """
    cos, sin = np.array([exactmath.cos_sin_degrees(a) for a in dw.angles]).T
    shape = (-1,) + (1,) * np.ndim(kz)
    dist = np.abs(np.asarray(kx) * sin.reshape(shape) + np.asarray(kz) * cos.reshape(shape))
    return np.argmin(dist, axis=0)


def wedge_weights(dw: DoseWeights, n: int) -> np.ndarray:
    """Mode 2's weights on the (kz, ky, kx >= 0) half spectrum of a cube of side ``n``.

    The nearest view's weight at the full 3-D |k|. The ky axis lies on every view's plane: the
    RMS of all views' weights (the back-projection's power there); at kx = n/2 the RMS of the
    two candidate directions' (the array stays Hermitian).
    """
    k = np.round(np.fft.fftfreq(n) * n)
    kz, kx = np.meshgrid(k, np.arange(n // 2 + 1, dtype=np.float64), indexing="ij")
    g = dw.exponent((kz[:, None, :] ** 2 + k[None, :, None] ** 2 + kx[:, None, :] ** 2) / n**2)
    doses = np.asarray(dw.doses, dtype=np.float64)
    out = exp_array(-doses[nearest_views(dw, kz, kx)][:, None, :] * g)
    if n % 2 == 0:  # the mirror direction (-kz, -n/2) of each pixel at kx = n/2
        mirror = exp_array(-doses[nearest_views(dw, -kz[:, -1], kx[:, -1])][:, None] * g[..., -1])
        out[..., -1] = np.sqrt((out[..., -1] ** 2 + mirror**2) / 2.0)
    axis = exp_array(-doses[:, None] * g[0, :, 0][None, :]) ** 2  # (views, ky)
    out[0, :, 0] = np.sqrt([math.fsum(column) / len(doses) for column in axis.T])
    return out


# ----------------------------------------------------------------------- pre-exposures


@functools.lru_cache(maxsize=256)
def file_doses(scheme: TiltScheme) -> tuple[float, ...] | None:
    """Pre-exposure of each used view, in the order of ``scheme.angle_tuple``; None if missing.

    Warp's ``_wrpDose`` / ``<Dose>``: WarpTools (``ts_import``) writes ``i * dose``, Warp 1
    the dose after the view or at its middle (``(i + 0.5) * dose``); subtracting the file's
    smallest dose gives the pre-exposure of all three when the dose per view is constant.
    """
    if not scheme.views or any(v.dose is None for v in scheme.views):
        return None
    shift = min(v.dose for v in scheme.views) if scheme.format.startswith("warp") else 0.0
    pairs = sorted((scheme.sign * v.angle + 0.0, v.dose - shift) for v in scheme.used)
    return tuple(d for _, d in pairs)


def dose_problems(doses: Sequence[float] | None, where: str, why: str = "") -> list[str]:
    """Why ``doses`` cannot weight views (one sentence; empty when they can); ``why``: a note."""
    if doses is None:
        return [
            f"{where} gives no dose for each view{f' ({why})' if why else ''}: give"
            " --dose-per-tilt (e/A^2 per view), with --acquisition where the file gives no order"
            " of acquisition."
        ]
    bad = [d for d in doses if not (math.isfinite(d) and 0.0 <= d <= MAX_DOSE)]
    if bad:
        return [
            f"{where}: pre-exposure {bad[0]:g} e/A^2 is not between 0 and {MAX_DOSE:g} (a view's"
            " dose before its own exposure)."
        ]
    if len(doses) > MAX_DOSE_VIEWS:
        return [
            f"{where} has {len(doses)} views; dose weighting records each view's dose in the"
            f" volumes' header labels, which hold {MAX_DOSE_VIEWS}."
        ]
    return []


def parse_acquisition(spec: str) -> tuple[str, int, float | None]:
    """``NAME[:GROUP][:START]`` of ``--acquisition`` as (name, signed group size, start).

    ``dose-symmetric`` G defaults to -2 (SerialEM's order 0, -3, -6, +3, +6, -9, ...; G < 0
    starts toward negative angles); the orders: docs/dose-weighting.md.
    """
    name, *params = str(spec).split(":")
    wanted = "G and START" if name == "dose-symmetric" else "START"
    if name not in ACQUISITIONS or len(params) > (2 if name == "dose-symmetric" else 1):
        raise ValueError(
            f"--acquisition must be dose-symmetric[:G[:START]], bidirectional[:START] or"
            f" unidirectional[:START], not {spec!r}."
        )
    try:
        values = [float(p) for p in params]
    except ValueError:
        raise ValueError(f"--acquisition {spec!r}: {wanted} must be numbers.") from None
    group = -2
    if name == "dose-symmetric" and values:
        group = values.pop(0)
        if group != int(group) or group == 0:
            raise ValueError(f"--acquisition {spec!r}: G must be a whole number other than 0.")
    start = values[0] if values else None
    if start is not None and not math.isfinite(start):
        raise ValueError(f"--acquisition {spec!r}: START must be a finite angle in degrees.")
    return name, int(group), start


def acquisition_order(angles: Sequence[float], spec: str) -> list[int]:
    """1-based acquisition rank of each view (angles as the file writes them, every view)."""
    name, group, start = parse_acquisition(spec)
    idx = sorted(range(len(angles)), key=lambda i: (angles[i], i))
    a = [angles[i] for i in idx]
    target = (a[0] + a[-1]) / 2.0 if start is None else start
    if name == "unidirectional":
        first = 0 if start is None or abs(a[0] - target) <= abs(a[-1] - target) else len(a) - 1
    else:
        first = min(range(len(a)), key=lambda j: (abs(a[j] - target), j))
    below, above = list(range(first - 1, -1, -1)), list(range(first + 1, len(a)))
    if name == "dose-symmetric":
        sides, seq, turn = ([below, above] if group < 0 else [above, below]), [first], 0
        while sides[0] or sides[1]:
            seq += sides[turn][: abs(group)]
            del sides[turn][: abs(group)]
            turn ^= 1
    elif name == "bidirectional" and a[-1] - a[first] > a[first] - a[0]:
        seq = [first, *above, *below]
    else:
        seq = [first, *below, *above]
    ranks = [0] * len(a)
    for r, j in enumerate(seq):
        ranks[idx[j]] = r + 1
    return ranks


def with_doses(scheme: TiltScheme, dose_per_tilt: float, acquisition: str | None) -> TiltScheme:
    """``scheme`` with each view's pre-exposure ``dose_per_tilt * (rank - 1)``, and a note.

    The rank is the file's order (mdoc DateTime, else PriorRecordDose, else ZValue), else
    ``acquisition``'s; excluded views count too (they were exposed).
    """
    name = f"Tilt file {scheme.source}"
    orders = [v.order for v in scheme.views]
    if all(o is not None for o in orders):
        how = "in the file's order of acquisition"
    elif acquisition is None:
        raise TiltSchemeError(
            f"{name} gives no order of acquisition: name it with --acquisition"
            " dose-symmetric, bidirectional or unidirectional."
        )
    else:
        try:
            orders = acquisition_order([v.angle for v in scheme.views], acquisition)
        except ValueError as err:
            raise TiltSchemeError(str(err)) from None
        how = f"in an assumed {describe_acquisition(acquisition)}, every view of the file exposed"
    views = tuple(
        replace(v, dose=dose_per_tilt * (o - 1)) for v, o in zip(scheme.views, orders, strict=True)
    )
    note = f"no doses in the file: {exactmath.shortest(dose_per_tilt)} e/A^2 per view {how}"
    return replace(scheme, views=views, notes=(*scheme.notes, note))


def range_doses(angles: Sequence[float], dose_per_tilt: float, acquisition: str):
    """Return the pre-exposure of each tilt of a regular range and a note of what is assumed."""
    orders = acquisition_order(list(angles), acquisition)
    note = (
        f"{exactmath.shortest(dose_per_tilt)} e/A^2 per view in an assumed"
        f" {describe_acquisition(acquisition)}"
    )
    return tuple(dose_per_tilt * (o - 1) for o in orders), note


def describe_acquisition(spec: str) -> str:
    """Say the order of ``--acquisition`` in words."""
    name, group, start = parse_acquisition(spec)
    at = "the middle of the range" if start is None else f"{exactmath.shortest(start)} deg"
    if name == "dose-symmetric":
        side = "negative" if group < 0 else "positive"
        return f"dose-symmetric order from {at}, groups of {abs(group)} starting on the {side} side"
    if name == "bidirectional":
        return f"bidirectional order from {at}, first to the farther end"
    return f"unidirectional order from the {'lowest angle' if start is None else at}"


# ----------------------------------------------------------------------- records


def dose_digest(doses: Sequence[float]) -> str:
    """First 12 hex digits of the sha256 of the doses (little-endian float64, in angle order)."""
    return hashlib.sha256(np.asarray(doses, dtype="<f8").tobytes()).hexdigest()[:12]


def quantized(doses: Sequence[float]) -> tuple[float, ...]:
    """Doses as the header labels record them: multiples of :data:`DOSE_QUANTUM`, e/A^2."""
    return tuple(min(round(d / DOSE_QUANTUM), 4095) * DOSE_QUANTUM for d in doses)


def profile_labels(doses: Sequence[float]) -> list[str]:
    """Header labels ``dq1=..`` recording the doses, two characters (12 bits) a view."""
    text = "".join(
        _DIGITS[q >> 6] + _DIGITS[q & 63]
        for q in (round(d / DOSE_QUANTUM) for d in quantized(doses))
    )
    chunks = range(0, len(text), PROFILE_CHARS)
    return [f"dq{i + 1}={text[j : j + PROFILE_CHARS]}" for i, j in enumerate(chunks)]


def profile_doses(kv: dict[str, str]) -> tuple[float, ...] | None:
    """Return the doses :func:`profile_labels` recorded (from ``parse_labels``), or None."""
    text = "".join(kv.get(f"dq{i}", "") for i in range(1, PROFILE_LABELS + 1))
    if not text or len(text) % 2 or any(c not in _DIGITS for c in text):
        return None
    pairs = zip(text[::2], text[1::2], strict=True)
    return tuple((_DIGITS.index(a) * 64 + _DIGITS.index(b)) * DOSE_QUANTUM for a, b in pairs)


def describe(dw: DoseWeights) -> str:
    """One line for ``--dry-run``: the doses and the weight at Nyquist of the highest-dose view."""
    hi = int(np.argmax(dw.doses))
    model = dw.model + (f" at {exactmath.shortest(dw.voltage)} kV" if dw.model != "bfactor" else "")
    return (
        f"  dose: pre-exposure {min(dw.doses):.3g} .. {dw.doses[hi]:.3g} e/A^2 over"
        f" {len(dw.doses)} views; {model}: the highest-dose view ({dw.angles[hi]:g} deg) keeps"
        f" {dw.at_nyquist(dw.doses[hi]):.3g} of its amplitude at Nyquist"
        f" (1/{exactmath.shortest(2 * dw.voxel)} A)"
    )
