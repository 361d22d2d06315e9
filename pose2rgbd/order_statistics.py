"""Distribution-free upper confidence bounds of a quantile from independent draws: the order statistic.

The ``k``-th smallest of ``n`` draws is at least the distribution's ``q`` quantile unless ``k`` or more draws fall
below it, which has probability ``P(Binomial(n, q) >= k)``; so the smallest ``k`` with ``P(Binomial(n, q) <= k - 1)
>= level`` bounds the quantile from above at confidence ``level``, for any continuous distribution. The localizer's
covariance scale takes it for the median of its held-out errors (``pose2rgbd.inference.calibration``), a render's
depth uncertainty for the 68.3 % quantile of a kind of pixel with few validation pixels
(``pose2rgbd.models.depth_uncertainty``). Hand-written: scipy has no order-statistic interval of a quantile; the
exact binomial rank rather than a bootstrap, whose upper quantile on a few dozen draws takes the same few order
statistics with less certain coverage.
"""

from __future__ import annotations

import numpy as np


def quantile_bound_rank(n: int, q: float, level: float) -> tuple[int, float]:
    """The rank ``k`` (1-based) of the order statistic of ``n`` draws that bounds their distribution's ``q``
    quantile from above at confidence ``level`` (see the module docstring), and its exact coverage. A ``n`` too small
    for the level gives the largest draw and its coverage (< level). ``ValueError`` for a ``q`` or ``level`` outside
    (0, 1)."""
    from scipy.stats import binom

    if not (0.0 < q < 1.0 and 0.0 < level < 1.0):
        raise ValueError(f"quantile {q} and confidence level {level} must lie in (0, 1)")
    k = min(int(binom.ppf(level, n, q)) + 1, n)
    return k, float(binom.cdf(k - 1, n, q))


def quantile_upper_bound(values: np.ndarray, q: float, level: float) -> float:
    """The upper one-sided confidence bound at ``level`` of the ``q`` quantile of the distribution ``values`` are
    independent draws from: their :func:`quantile_bound_rank`-th smallest."""
    v = np.sort(np.asarray(values, np.float64).reshape(-1))
    k, _ = quantile_bound_rank(len(v), q, level)
    return float(v[k - 1])
