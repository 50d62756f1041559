import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwr_dask.noise.geometry import fold_direction, measured_2d, tilt_angles


def test_tilt_angles_include_maxangle_on_grid():
    a = tilt_angles(-60, 60, 2)
    assert a.size == 61 and a[0] == -60 and a[-1] == 60


def test_tilt_angles_stop_below_maxangle_off_grid():
    a = tilt_angles(-40, 56, 7)
    assert a[-1] == 51 and np.allclose(np.diff(a), 7)


@given(
    lo=st.floats(-89, 80),
    width=st.floats(1, 170),
    step=st.floats(0.1, 30),
)
def test_tilt_angles_properties(lo, width, step):
    hi = min(lo + width, 89.5)
    if hi <= lo:
        return
    a = tilt_angles(lo, hi, step)
    assert a[0] == lo
    assert a[-1] <= hi + 1e-6
    assert a[-1] + step > hi - 1e-6


def test_fold_direction_range():
    kz, kx = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41), indexing="ij")
    phi = fold_direction(kz, kx)
    assert np.all(phi > -90) and np.all(phi <= 90)
    # a direction and its opposite fold to the same angle
    np.testing.assert_allclose(phi, fold_direction(-kz, -kx), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(4, 40),
    lo=st.floats(-85, 80),
    width=st.floats(5, 160),
)
def test_mask_is_hermitian_and_keeps_ky_axis(n, lo, width):
    hi = min(lo + width, 89.0)
    if hi - lo < 1:
        return
    m = measured_2d(n, lo, hi)
    neg = (-np.arange(n)) % n
    assert np.array_equal(m, m[np.ix_(neg, neg)])
    assert m[0, 0]  # DC, and in 3-D the whole ky axis


@pytest.mark.parametrize(("lo", "hi"), [(-60, 60), (-40, 56), (10, 70)])
def test_mask_matches_tilt_directions(lo, hi):
    """A tilt theta measures (kx, kz) along (cos theta, -sin theta); the beam axis kz is missing."""
    n = 64
    m = measured_2d(n, lo, hi)
    f = np.fft.fftfreq(n)
    for theta in np.radians(np.linspace(lo, hi, 9)):
        for r in (5, 12, 20):
            kx, kz = r * np.cos(theta), -r * np.sin(theta)
            iz, ix = round(kz) % n, round(kx) % n
            phi = np.degrees(np.arctan2(f[iz], f[ix]))
            phi = phi - 180 if phi > 90 else phi + 180 if phi <= -90 else phi
            if -hi + 0.5 < phi < -lo - 0.5:  # clearly inside after rounding to the grid
                assert m[iz, ix]
    # the beam direction kz (x = 0) is missing for every range inside (-90, 90)
    assert not m[5, 0] and not m[-5, 0]
