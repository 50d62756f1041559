"""The plan warns about cube sides that make mode 2's FFT slow, and only about those."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mwr_dask.generators import SLOW_FFT_FACTOR, cost_note, largest_prime_factor


def _factors(n: int) -> list[int]:
    return [p for p in range(2, n + 1) if n % p == 0 and all(p % q for q in range(2, p))]


@given(st.integers(1, 3000))
def test_largest_prime_factor(n):
    factors = _factors(n)
    assert largest_prime_factor(n) == (max(factors) if factors else 1)


@given(st.integers(8, 1024), st.sampled_from([1, 2]))
def test_a_note_exactly_for_mode_2_and_a_large_prime_factor(n, mode):
    note = cost_note(n, mode)
    slow = mode == 2 and largest_prime_factor(n) >= SLOW_FFT_FACTOR
    assert (note is not None) == slow
    if note:
        assert "\n" not in note and str(n) in note
        below, above = (int(word.rstrip("³")) for word in note.split() if word.endswith("³"))
        assert below < n < above
        assert largest_prime_factor(below) <= 7 and largest_prime_factor(above) <= 7


def test_the_sizes_of_the_issue():
    assert "97 is prime" in cost_note(97, 2)
    assert cost_note(96, 2) is None and cost_note(100, 2) is None and cost_note(97, 1) is None
