"""Fixed-horizon experiment statistics over summary statistics or numpy arrays.

Every function here is pure (no I/O, no global state) and returns a small frozen dataclass that
carries the estimate, its confidence interval, the p-value and the sizes of the inputs, so an
analysis can be logged or rendered without re-deriving anything.

Conventions, chosen so callers never have to guess:

* "a" is the control and "b" the treatment; every difference is ``b - a`` and every relative
  lift is ``(b - a) / a``.
* Tests are two-sided unless the name says otherwise (``guardrail`` is one-sided on purpose).
* Bad input (zero sample sizes, negative counts, weights that do not sum to 1, probabilities
  outside [0, 1]) raises :class:`StatisticsInputError`, which is both a ``ValueError`` (the
  natural Python contract for a bad argument) and an :class:`~ab_router.errors.ExperimentError`
  (so the HTTP layer maps it to 422 like any other invalid design).

These tests are only valid when the sample size is fixed in advance.  Looking repeatedly and
stopping at the first significant result inflates the false-positive rate (to ~25% with 20
looks at alpha = 0.05); use :mod:`ab_router.sequential` for dashboards that people watch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from ab_router.errors import ExperimentError

__all__ = [
    "CupedResult",
    "GuardrailResult",
    "MultipleTestingResult",
    "ProportionTestResult",
    "SrmResult",
    "StatisticsInputError",
    "WelchResult",
    "benjamini_hochberg",
    "cuped",
    "guardrail",
    "holm",
    "srm_check",
    "two_proportion_z",
    "welch_t",
    "welch_t_from_arrays",
]

#: Tolerance on ``sum(expected_weights) == 1``: loose enough for weights written as decimals
#: (0.1 + 0.2 + 0.7), tight enough to catch a design that forgot an arm.
WEIGHT_SUM_TOLERANCE = 1e-6


class StatisticsInputError(ExperimentError, ValueError):
    """An input to a statistical routine is invalid (the message says which and why)."""

    status = 422


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha: float) -> None:
    if not (0.0 < alpha < 1.0) or math.isnan(alpha):
        raise StatisticsInputError(f"alpha must be in (0, 1), got {alpha!r}")


def _check_count(name: str, value: int, *, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise StatisticsInputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        what = "negative" if value < 0 else "too small"
        raise StatisticsInputError(f"{name} must be >= {minimum}, got {value} ({what})")


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise StatisticsInputError(f"{name} must be finite, got {value!r}")


def _as_1d(name: str, values: ArrayLike, *, min_size: int) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise StatisticsInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size < min_size:
        raise StatisticsInputError(f"{name} needs at least {min_size} observations, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise StatisticsInputError(f"{name} contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------- proportions


@dataclass(frozen=True)
class ProportionTestResult:
    """Two-proportion z-test: ``abs_lift = p_b - p_a`` with a CI, ``rel_lift = abs_lift / p_a``."""

    p_a: float
    p_b: float
    abs_lift: float
    rel_lift: float  # NaN when p_a == 0 (a relative change from zero is undefined)
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    n_a: int
    n_b: int


def two_proportion_z(
    successes_a: int, n_a: int, successes_b: int, n_b: int, alpha: float = 0.05
) -> ProportionTestResult:
    """Two-sided z-test for ``p_b - p_a`` with a Wald CI for the difference.

    The test uses the *pooled* standard error ``sqrt(p(1-p)(1/n_a + 1/n_b))`` because under
    H0 both arms share one rate, which gives the test its nominal size.  The CI uses the
    *unpooled* standard error ``sqrt(p_a(1-p_a)/n_a + p_b(1-p_b)/n_b)`` because away from H0
    the arms have different variances and the interval must cover the true difference there.
    """
    _check_alpha(alpha)
    _check_count("n_a", n_a, minimum=1)
    _check_count("n_b", n_b, minimum=1)
    _check_count("successes_a", successes_a)
    _check_count("successes_b", successes_b)
    if successes_a > n_a:
        raise StatisticsInputError(f"successes_a ({successes_a}) exceeds n_a ({n_a})")
    if successes_b > n_b:
        raise StatisticsInputError(f"successes_b ({successes_b}) exceeds n_b ({n_b})")

    p_a = successes_a / n_a
    p_b = successes_b / n_b
    diff = p_b - p_a
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se_pooled = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    se_unpooled = math.sqrt(p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b)
    if se_pooled > 0.0:
        z = diff / se_pooled
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    else:  # both arms all-success or all-failure: no evidence of any difference
        z, p_value = 0.0, 1.0
    z_crit = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return ProportionTestResult(
        p_a=p_a,
        p_b=p_b,
        abs_lift=diff,
        rel_lift=diff / p_a if p_a > 0.0 else math.nan,
        z=z,
        p_value=min(1.0, p_value),
        ci_low=diff - z_crit * se_unpooled,
        ci_high=diff + z_crit * se_unpooled,
        alpha=alpha,
        n_a=int(n_a),
        n_b=int(n_b),
    )


# --------------------------------------------------------------------------- means


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test for ``mean_b - mean_a``."""

    mean_a: float
    mean_b: float
    diff: float
    rel_lift: float  # NaN when mean_a == 0
    se: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    alpha: float
    n_a: int
    n_b: int


def welch_t(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    alpha: float = 0.05,
) -> WelchResult:
    """Welch's t-test from summary statistics (``var_*`` are unbiased sample variances).

    Welch rather than Student because traffic splits are often unequal and a treatment often
    changes the spread as well as the mean; with unequal variances and sizes Student's pooled
    test has the wrong size.  Degrees of freedom are Welch–Satterthwaite.
    """
    _check_alpha(alpha)
    _check_count("n_a", n_a, minimum=2)
    _check_count("n_b", n_b, minimum=2)
    for name, value in (("mean_a", mean_a), ("var_a", var_a), ("mean_b", mean_b), ("var_b", var_b)):
        _check_finite(name, value)
    if var_a < 0.0 or var_b < 0.0:
        raise StatisticsInputError(f"variances must be >= 0, got var_a={var_a}, var_b={var_b}")

    va, vb = var_a / n_a, var_b / n_b
    diff = mean_b - mean_a
    se = math.sqrt(va + vb)
    rel = diff / mean_a if mean_a != 0.0 else math.nan
    if se == 0.0:  # both arms constant: the difference is known exactly
        p_value = 1.0 if diff == 0.0 else 0.0
        t = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return WelchResult(
            mean_a, mean_b, diff, rel, 0.0, t, math.inf, p_value, diff, diff, alpha, n_a, n_b
        )
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    t = diff / se
    p_value = float(2.0 * stats.t.sf(abs(t), df))
    t_crit = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    return WelchResult(
        mean_a=float(mean_a),
        mean_b=float(mean_b),
        diff=diff,
        rel_lift=rel,
        se=se,
        t=t,
        df=df,
        p_value=min(1.0, p_value),
        ci_low=diff - t_crit * se,
        ci_high=diff + t_crit * se,
        alpha=alpha,
        n_a=int(n_a),
        n_b=int(n_b),
    )


def welch_t_from_arrays(a: ArrayLike, b: ArrayLike, alpha: float = 0.05) -> WelchResult:
    """:func:`welch_t` on raw per-unit observations (control ``a``, treatment ``b``)."""
    xa = _as_1d("a", a, min_size=2)
    xb = _as_1d("b", b, min_size=2)
    return welch_t(
        float(xa.mean()),
        float(xa.var(ddof=1)),
        int(xa.size),
        float(xb.mean()),
        float(xb.var(ddof=1)),
        int(xb.size),
        alpha=alpha,
    )


# --------------------------------------------------------------------------- CUPED


@dataclass(frozen=True)
class CupedResult:
    """CUPED-adjusted comparison.

    ``adjusted`` is ``y - theta * (x_pre - mean(x_pre))`` in input order; ``variance_reduction``
    is ``1 - var(adjusted) / var(y)`` on pooled data (≈ corr(y, x_pre)²).
    """

    theta: float
    variance_reduction: float
    test: WelchResult
    n_a: int
    n_b: int
    adjusted: NDArray[np.float64] = field(repr=False, compare=False)


def cuped(y: ArrayLike, x_pre: ArrayLike, group: ArrayLike, alpha: float = 0.05) -> CupedResult:
    """CUPED (Deng et al. 2013): regress out a pre-experiment covariate, then run Welch.

    ``theta = cov(y, x_pre) / var(x_pre)`` is estimated on *pooled* data (both arms) so it does
    not depend on the treatment assignment; since ``x_pre`` is measured before exposure, its mean
    is the same in both arms in expectation and subtracting ``theta * (x_pre - mean(x_pre))``
    leaves the treatment effect unbiased while removing the variance ``x_pre`` explains.

    ``group`` is truthy for treatment ("b") and falsy for control ("a").  A constant covariate
    carries no information: theta is 0 and the result equals the unadjusted Welch test.
    """
    yy = _as_1d("y", y, min_size=4)
    xx = _as_1d("x_pre", x_pre, min_size=4)
    g = np.asarray(group)
    if g.ndim != 1:
        raise StatisticsInputError(f"group must be one-dimensional, got shape {g.shape}")
    if not (yy.size == xx.size == g.size):
        raise StatisticsInputError(
            f"y, x_pre and group must have equal lengths, got {yy.size}, {xx.size}, {g.size}"
        )
    treated = g.astype(bool)
    var_x = float(xx.var(ddof=1))
    theta = float(np.cov(yy, xx, ddof=1)[0, 1] / var_x) if var_x > 0.0 else 0.0
    adjusted = yy - theta * (xx - xx.mean())
    var_y = float(yy.var(ddof=1))
    reduction = 1.0 - float(adjusted.var(ddof=1)) / var_y if var_y > 0.0 else 0.0
    test = welch_t_from_arrays(adjusted[~treated], adjusted[treated], alpha=alpha)
    return CupedResult(
        theta=theta,
        variance_reduction=reduction,
        test=test,
        n_a=test.n_a,
        n_b=test.n_b,
        adjusted=adjusted,
    )


# --------------------------------------------------------------------------- SRM


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check; ``mismatch`` means the experiment's results are untrusted."""

    chi2: float
    df: int
    p_value: float
    mismatch: bool
    alpha: float
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    n: int


def srm_check(
    observed_counts: Sequence[int], expected_weights: Sequence[float], alpha: float = 0.001
) -> SrmResult:
    """Pearson chi-square goodness-of-fit of observed arm sizes against the design's weights.

    A mismatch means assignment or logging is broken (bots filtered in one arm, a redirect that
    drops users, a crash on one variant), so any lift computed on these units is biased: a
    mismatch *blocks* conclusions.  The default alpha is strict (0.001) because this check runs
    on every experiment at every look, and a false alarm halts a healthy experiment.
    """
    _check_alpha(alpha)
    if len(observed_counts) != len(expected_weights):
        raise StatisticsInputError(
            f"observed_counts has {len(observed_counts)} arms but expected_weights has "
            f"{len(expected_weights)}"
        )
    if len(observed_counts) < 2:
        raise StatisticsInputError("srm_check needs at least 2 arms")
    for i, c in enumerate(observed_counts):
        _check_count(f"observed_counts[{i}]", c)
    weights = np.asarray(expected_weights, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0.0):
        raise StatisticsInputError(
            f"expected_weights must all be finite and > 0, got {list(expected_weights)}"
        )
    total_w = float(weights.sum())
    if abs(total_w - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise StatisticsInputError(f"expected_weights must sum to 1, got sum {total_w:.9g}")
    obs = np.asarray(observed_counts, dtype=np.float64)
    n = int(obs.sum())
    if n == 0:
        raise StatisticsInputError("srm_check needs at least one observed unit, got 0")
    expected = n * weights
    chi2 = float(np.sum((obs - expected) ** 2 / expected))
    df = len(obs) - 1
    p_value = float(stats.chi2.sf(chi2, df))
    return SrmResult(
        chi2=chi2,
        df=df,
        p_value=p_value,
        mismatch=p_value < alpha,
        alpha=alpha,
        observed=tuple(int(c) for c in observed_counts),
        expected=tuple(float(e) for e in expected),
        n=n,
    )


# --------------------------------------------------------------------------- multiplicity


@dataclass(frozen=True)
class MultipleTestingResult:
    """Adjusted p-values and reject flags, both in the caller's input order."""

    method: Literal["holm", "benjamini_hochberg"]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float
    m: int


def _check_p_values(p_values: Sequence[float]) -> NDArray[np.float64]:
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if np.any(~np.isfinite(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise StatisticsInputError(f"p-values must lie in [0, 1], got {list(p_values)}")
    return p


def _adjusted_result(
    method: Literal["holm", "benjamini_hochberg"],
    order: NDArray[np.intp],
    adjusted_sorted: NDArray[np.float64],
    alpha: float,
) -> MultipleTestingResult:
    """Put adjusted p-values computed in sorted order back in input order; reject at alpha."""
    adjusted = np.empty(order.size)
    adjusted[order] = adjusted_sorted
    return MultipleTestingResult(
        method=method,
        adjusted=tuple(float(v) for v in adjusted),
        reject=tuple(bool(v <= alpha) for v in adjusted),
        alpha=alpha,
        m=order.size,
    )


def holm(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Holm's step-down adjustment: controls the family-wise error rate (any false positive).

    Use it for guardrails and primary metrics where a single false alarm is costly.  Sorted
    ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`` (1-indexed); reject where
    ``adj <= alpha``.  Uniformly more powerful than Bonferroni, with no dependence assumptions.
    """
    _check_alpha(alpha)
    p = _check_p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(scaled) if m else scaled
    return _adjusted_result("holm", order, adj_sorted, alpha)


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Benjamini–Hochberg step-up adjustment: controls the false discovery rate.

    Use it for exploratory secondary metrics, where some false positives among many discoveries
    are acceptable.  Sorted ascending, ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)``
    (1-indexed); reject where ``adj <= alpha``.  Valid under independence or positive dependence.
    """
    _check_alpha(alpha)
    p = _check_p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * m / np.arange(1, m + 1))
    adj_sorted = np.minimum.accumulate(scaled[::-1])[::-1] if m else scaled
    return _adjusted_result("benjamini_hochberg", order, adj_sorted, alpha)


# --------------------------------------------------------------------------- guardrails


@dataclass(frozen=True)
class GuardrailResult:
    """One-sided non-inferiority check of a guardrail metric.

    ``margin_adjusted_diff`` is ``mean_t - (1 ± margin) mean_c`` (sign chosen by ``direction``,
    so that it is 0 exactly at the tolerated limit); ``p_value`` is for H0 "the treatment is
    worse than the margin allows"; ``violated`` is ``p_value >= alpha``, i.e. non-inferiority
    could *not* be shown.
    """

    direction: Literal["increase_is_bad", "decrease_is_bad"]
    margin_relative: float
    mean_control: float
    mean_treatment: float
    relative_change: float  # NaN when mean_control == 0
    margin_adjusted_diff: float
    t: float
    df: float
    p_value: float
    violated: bool
    alpha: float
    n_control: int
    n_treatment: int


def guardrail(
    control: ArrayLike,
    treatment: ArrayLike,
    *,
    direction: Literal["increase_is_bad", "decrease_is_bad"],
    margin_relative: float,
    alpha: float = 0.05,
) -> GuardrailResult:
    """Non-inferiority test: is the treatment no worse than ``margin_relative`` of control?

    A guardrail (latency, error rate, revenue) must not get *worse* by more than a tolerated
    relative margin.  "No significant degradation" is the wrong question: an underpowered
    experiment would always pass.  So the burden of proof is on the treatment:

    * ``increase_is_bad``: H0 ``mu_t >= (1 + m) mu_c``  vs  H1 ``mu_t < (1 + m) mu_c``;
    * ``decrease_is_bad``: H0 ``mu_t <= (1 - m) mu_c``  vs  H1 ``mu_t > (1 - m) mu_c``.

    The statistic is on ``D = mu_t - (1 ± m) mu_c``, a linear contrast, so the margin is not
    treated as a known constant: ``var(D) = s_t²/n_t + (1 ± m)² s_c²/n_c`` with Welch df.
    ``violated`` is True unless H0 is rejected at ``alpha``; an experiment too small to show
    safety is therefore reported as violated, which is the conservative answer.  The relative
    margin assumes a metric whose control mean is positive (latency, rates, revenue).
    """
    _check_alpha(alpha)
    _check_finite("margin_relative", margin_relative)
    if direction not in ("increase_is_bad", "decrease_is_bad"):
        raise StatisticsInputError(
            f"direction must be 'increase_is_bad' or 'decrease_is_bad', got {direction!r}"
        )
    if margin_relative < 0.0 or (direction == "decrease_is_bad" and margin_relative >= 1.0):
        raise StatisticsInputError(
            f"margin_relative must be >= 0 (and < 1 for decrease_is_bad), got {margin_relative}"
        )
    c = _as_1d("control", control, min_size=2)
    t = _as_1d("treatment", treatment, min_size=2)
    k = 1.0 + margin_relative if direction == "increase_is_bad" else 1.0 - margin_relative
    mean_c, mean_t = float(c.mean()), float(t.mean())
    vc = k * k * float(c.var(ddof=1)) / c.size
    vt = float(t.var(ddof=1)) / t.size
    d = mean_t - k * mean_c
    # Orient so that a large positive statistic is evidence of safety.
    safe_stat_num = -d if direction == "increase_is_bad" else d
    se = math.sqrt(vc + vt)
    if se > 0.0:
        df = (vc + vt) ** 2 / (vc**2 / (c.size - 1) + vt**2 / (t.size - 1))
        stat = safe_stat_num / se
        p_value = float(stats.t.sf(stat, df))
    else:
        df = math.inf
        stat = math.copysign(math.inf, safe_stat_num) if safe_stat_num != 0.0 else 0.0
        p_value = 0.0 if safe_stat_num > 0.0 else 1.0
    return GuardrailResult(
        direction=direction,
        margin_relative=margin_relative,
        mean_control=mean_c,
        mean_treatment=mean_t,
        relative_change=(mean_t - mean_c) / mean_c if mean_c != 0.0 else math.nan,
        margin_adjusted_diff=d,
        t=stat,
        df=df,
        p_value=p_value,
        violated=not (p_value < alpha),
        alpha=alpha,
        n_control=int(c.size),
        n_treatment=int(t.size),
    )
