"""Tilt geometry and the missing-wedge mask (pure numpy).

Arrays are (z, y, x) as MRC stores them. The tilt axis is y and the beam is z at tilt 0.
The projection at tilt ``theta`` integrates along the direction (x, z) = (sin theta, cos theta);
its detector coordinate is ``t = x cos theta - z sin theta``. It therefore measures the Fourier
plane that holds ky and the direction (kx, kz) = (cos theta, -sin theta). For tilts in [a, b]
the measured (kx, kz) directions, folded into (-90, 90] degrees, are [-b, -a]; the rest of the
kx-kz plane, for every ky, is the missing wedge.
"""

from __future__ import annotations

import numpy as np

_EPS_DEG = 1e-6


def tilt_angles(minangle: float, maxangle: float, anglestep: float) -> np.ndarray:
    """Tilt angles in degrees: ``minangle, minangle + step, ...`` up to ``maxangle``.

    ``maxangle`` is included when it falls on the grid (within 1e-6 degrees).

    Parameters
    ----------
    minangle, maxangle : float
        First and largest allowed tilt, degrees, ``minangle < maxangle``.
    anglestep : float
        Increment in degrees, ``> 0``.

    Returns
    -------
    numpy.ndarray
        1-D float64 array of tilt angles, degrees, ascending.
    """
    if anglestep <= 0:
        raise ValueError("anglestep must be positive")
    count = int(np.floor((maxangle - minangle) / anglestep + _EPS_DEG)) + 1
    return minangle + anglestep * np.arange(count, dtype=np.float64)


def fold_direction(kz: np.ndarray, kx: np.ndarray) -> np.ndarray:
    """Direction of (kx, kz) in degrees, folded into (-90, 90].

    A direction and its opposite are the same line through the origin, so the angle
    ``atan2(kz, kx)`` is folded by 180 degrees into (-90, 90].
    """
    phi = np.degrees(np.arctan2(kz, kx))
    phi = np.where(phi > 90.0 + _EPS_DEG, phi - 180.0, phi)
    return np.where(phi <= -90.0 + _EPS_DEG, phi + 180.0, phi)


def measured_2d(n: int, minangle: float, maxangle: float) -> np.ndarray:
    """Measured region of the (kz, kx) Fourier plane on the full FFT grid.

    Parameters
    ----------
    n : int
        Cube side, voxels.
    minangle, maxangle : float
        Tilt range in degrees, ``-90 < minangle < maxangle < 90``.

    Returns
    -------
    numpy.ndarray
        Boolean array of shape (n, n), axes (kz, kx) in ``numpy.fft.fftfreq`` order; True
        where the direction folded into (-90, 90] lies in [-maxangle, -minangle], and at the
        origin (DC; in 3-D, the whole ky axis). The array is symmetric under k -> -k.
    """
    f = np.fft.fftfreq(n)
    kz, kx = np.meshgrid(f, f, indexing="ij")
    phi = fold_direction(kz, kx)
    inside = (phi >= -maxangle - _EPS_DEG) & (phi <= -minangle + _EPS_DEG)
    inside |= (kz == 0) & (kx == 0)
    # Hermitian symmetry: at Nyquist the sign of the frequency is ambiguous (fftfreq calls it
    # negative), so keep a point only where it and its mirror point -k are both measured.
    neg = (-np.arange(n)) % n
    return inside & inside[np.ix_(neg, neg)]
