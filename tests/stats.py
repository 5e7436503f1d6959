"""Exact two-sided tests for the statistical test suite, in pure Python (no SciPy).

Both distributions are summed term by term from log-probabilities
(``math.lgamma``), so the acceptance regions are those of the exact
distributions, not of a normal approximation; ``tests/test_statistics.py``
checks them against exact rational arithmetic on small cases.

Terms far from the mean are left out: both distributions are unimodal, so with
the window's edge terms below ``exp(-100)`` times the largest one, the mass left
out is below ``n * exp(-100)`` (under 1e-36 for any n used here), far below any
false-alarm rate stated.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Acceptance:
    """Accept an observed count k when ``lo <= k <= hi``.

    ``false_alarm`` is the exact probability, under the null distribution, of
    a count outside ``[lo, hi]``: the test's false-alarm rate, at most the
    ``alpha`` it was built for.
    """

    lo: int
    hi: int
    false_alarm: float

    def __contains__(self, k: int) -> bool:
        return self.lo <= k <= self.hi


def _equal_tails(support_lo: int, logpmf: list[float], alpha: float) -> Acceptance:
    """The two-sided equal-tails region: reject k when P(X <= k) or P(X >= k) is at most alpha / 2."""
    top = max(logpmf)
    # Scaled by exp(-top) so no term underflows before the tails are summed.
    pmf = [math.exp(v - top) for v in logpmf]
    total = math.fsum(pmf)
    half = alpha / 2 * total
    lower = 0.0
    i = 0
    while lower + pmf[i] <= half:
        lower += pmf[i]
        i += 1
    upper = 0.0
    j = len(pmf) - 1
    while upper + pmf[j] <= half:
        upper += pmf[j]
        j -= 1
    return Acceptance(support_lo + i, support_lo + j, (lower + upper) / total)


_NEGLIGIBLE = -100.0  # log of the largest left-out term relative to the mode


def _windowed(
    support: tuple[int, int], mean: float, sd: float, logpmf: Callable[[int], float], alpha: float
) -> Acceptance:
    support_lo, support_hi = support
    width = 40.0 * sd + 50.0
    lo = max(support_lo, math.floor(mean - width))
    hi = min(support_hi, math.ceil(mean + width))
    values = [logpmf(k) for k in range(lo, hi + 1)]
    top = max(values)
    assert lo == support_lo or values[0] - top < _NEGLIGIBLE, "window too narrow on the left"
    assert hi == support_hi or values[-1] - top < _NEGLIGIBLE, "window too narrow on the right"
    return _equal_tails(lo, values, alpha)


@functools.cache
def binomial_acceptance(n: int, q: float, alpha: float) -> Acceptance:
    """Two-sided acceptance region for X ~ Binomial(n, q) at false-alarm rate at most ``alpha``."""
    if q in (0.0, 1.0):
        k = round(n * q)
        return Acceptance(k, k, 0.0)
    log_q, log_r = math.log(q), math.log1p(-q)
    base = math.lgamma(n + 1)

    def logpmf(k: int) -> float:
        return base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_r

    return _windowed((0, n), n * q, math.sqrt(n * q * (1 - q)), logpmf, alpha)


@functools.cache
def hypergeometric_acceptance(total: int, marked: int, drawn: int, alpha: float) -> Acceptance:
    """Two-sided region for the marked count among ``drawn`` of ``total`` items, ``marked`` of them marked.

    For two 0/1 masks of ``total`` samples with ``marked`` and ``drawn`` ones,
    the number of samples that are one in both follows this distribution when
    the masks are independent, whatever their probabilities (Fisher's exact
    test of a 2x2 table, conditional on its margins).
    """
    lo, hi = max(0, marked + drawn - total), min(marked, drawn)

    def log_comb(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    def logpmf(a: int) -> float:
        return log_comb(marked, a) + log_comb(total - marked, drawn - a)

    if total <= 1:
        return _equal_tails(lo, [logpmf(a) for a in range(lo, hi + 1)], alpha)
    mean = drawn * marked / total
    var = mean * (total - marked) / total * (total - drawn) / (total - 1)
    return _windowed((lo, hi), mean, math.sqrt(var), logpmf, alpha)


def hoeffding_slack(count: int, spread: float, alpha: float) -> float:
    """t with P(|sum of ``count`` zero-mean terms in [-spread, spread]| >= t) <= alpha (Hoeffding)."""
    if count == 0 or spread == 0.0:
        return 0.0
    return spread * math.sqrt(2.0 * count * math.log(2.0 / alpha))
