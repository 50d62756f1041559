"""The CPU-independent numerics are accurate; slow FFT lengths are named, and only those."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
from hypothesis import given
from hypothesis import strategies as st

from mwr_dask.noise.exactmath import cos_sin_degrees
from mwr_dask.noise.generators import cost_note
from mwr_dask.noise.normals import standard_normal, volume_rng


@given(st.floats(-720.0, 720.0))
def test_cos_sin_degrees_agree_with_libm(angle):
    cos, sin = cos_sin_degrees(angle)
    radians = math.radians(angle)
    # libm's own argument is rounded: allow for that rounding times the derivative
    slack = 4e-16 + abs(radians) * 2.3e-16
    assert abs(cos - math.cos(radians)) <= slack and abs(sin - math.sin(radians)) <= slack


def test_cos_sin_degrees_are_exact_at_quarter_turns():
    for quarter, expected in enumerate([(1, 0), (0, 1), (-1, 0), (0, -1)] * 2):
        assert cos_sin_degrees(90.0 * quarter) == expected
        assert cos_sin_degrees(-90.0 * quarter) == (expected[0], -expected[1])


def test_normals_are_the_exact_transform_of_their_bits_to_float32_accuracy():
    """Against the same Box-Muller transform of the same words in float64."""
    n = 200_000
    out = standard_normal(volume_rng(5, 1), np.empty(n, dtype=np.float32)).astype(np.float64)
    words = volume_rng(5, 1).bit_generator.random_raw(n // 2).view(np.uint32)
    a, b = words[: n // 2].astype(np.int64), words[n // 2 :].astype(np.int64)
    r = np.sqrt(-2 * np.log((a | 1) * 2.0**-32)) * np.where(a & 1, -1, 1)
    phi = np.pi / 4 + np.pi / 2 * ((b >> 9) * 2.0**-23 - 0.5)
    exact = np.concatenate([r * np.cos(phi) * np.where(b & 1, -1, 1), r * np.sin(phi)])
    error = np.abs(out - exact)
    radius = np.abs(np.concatenate([r, r]))
    assert error[radius > 0.05].max() < 7e-7
    assert error.max() < 1e-5  # u close to 1 is rounded to float32 first


@given(st.integers(8, 1024), st.sampled_from([1, 2]))
def test_a_note_exactly_for_mode_2_and_a_slow_fft_length(n, mode):
    note = cost_note(n, mode)
    slow = mode == 2 and scipy.fft.next_fast_len(n) != n
    assert (note is not None) == slow
    if note:
        assert "\n" not in note and str(n) in note
        below, above = (int(w.split("^")[0]) for w in note.split() if w.endswith("^3"))
        assert below < n < above
        assert scipy.fft.next_fast_len(below) == below and scipy.fft.next_fast_len(above) == above


def test_the_sizes_of_the_issue():
    assert "97 is not a fast length" in cost_note(97, 2) and "96^3 or 98^3" in cost_note(97, 2)
    assert cost_note(96, 2) is None and cost_note(100, 2) is None and cost_note(97, 1) is None
