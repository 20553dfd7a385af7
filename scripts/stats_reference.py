#!/usr/bin/env python3
"""Reference values for crates/analytics/src/stats, from scipy and statsmodels.

Writes the fixture that the Rust tests compare against (within 1e-9; see
crates/analytics/src/stats/reference.rs for which comparisons are relative).
CI does not run this script: it only reads the committed JSON. Regenerate it
after changing a case here, with the versions it was made with:

    pip install numpy==2.4.6 scipy==1.17.1 statsmodels==0.15.0
    python3 scripts/stats_reference.py > crates/analytics/tests/fixtures/stats_reference.json

(made with Python 3.11.7). Every case carries its inputs and the library's
outputs, and the versions used are recorded in the JSON, so a change of
library behaviour shows up as a diff of the fixture.
"""

import json
import math
import platform
import sys

import numpy as np
import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint


def wilson_cases():
    cases = [
        (0, 10, 0.95),
        (10, 10, 0.95),
        (5, 10, 0.95),
        (0, 1, 0.95),
        (1, 1, 0.95),
        (3, 7, 0.8),
        (37, 120, 0.9),
        (37, 120, 0.95),
        (37, 120, 0.99),
        (1, 1000, 0.95),
        (999, 1000, 0.95),
        (0, 1_000_000, 0.95),
        (500_000, 1_000_000, 0.95),
        (123_456, 1_000_000, 0.99),
    ]
    out = []
    for successes, n, confidence in cases:
        low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
        out.append(
            {
                "successes": successes,
                "n": n,
                "confidence": confidence,
                "estimate": successes / n,
                "low": float(low),
                "high": float(high),
            }
        )
    return out


def mean_interval_cases():
    rng = np.random.default_rng(20240601)
    cases = [
        ([1.0, 2.0, 3.0, 4.0, 5.0], 1, 0.95),
        ([0.1, 0.9], 1, 0.95),
        # df = 1 far in the tail, where statrs's inverse cdf needs polishing.
        ([0.1, 0.9], 1, 0.9999999999),
        ([0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 0.25, 1.0], 1, 0.9),
        ([float(v) for v in np.round(rng.normal(0.6, 0.2, 30), 6)], 1, 0.95),
        ([float(v) for v in np.round(rng.normal(-3.0, 10.0, 30), 6)], 1, 0.99),
        # Large n, on both sides of df = 1e4, where the Rust side changes
        # from statrs's inverse cdf to an expansion in the normal quantile.
        ([0.0, 1.0, 0.5, 1.0, 0.25], 1_000, 0.95),
        ([0.0, 1.0, 0.5, 1.0, 0.25], 40_000, 0.95),
        ([0.0, 1.0, 0.5, 1.0, 0.25], 200_000, 0.99),
        ([0.0, 1.0, 0.5, 1.0, 0.25], 2_000_000, 0.95),
    ]
    out = []
    for pattern, repeat, confidence in cases:
        values = np.tile(np.asarray(pattern, dtype=np.float64), repeat)
        n = len(values)
        mean = float(np.mean(values))
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(values))
        out.append(
            {
                "values": pattern,
                "repeat": repeat,
                "confidence": confidence,
                "estimate": mean,
                "low": float(low),
                "high": float(high),
            }
        )
    return out


def mcnemar_cases():
    cases = [
        (0, 0),
        (0, 1),
        (0, 5),
        (3, 17),
        (17, 3),
        (10, 10),
        (50, 60),
        (100, 100),
        (10, 1000),
        (0, 1000),
        (5000, 5200),
        (5200, 5000),
        (100_000, 100_400),
        (499_000, 501_000),
        (490_000, 510_000),
        (999_000, 1_001_000),
        # Within a standard deviation of the centre, where statrs's cdf
        # alone does not converge.
        (12_345, 12_345),
        (49_990, 50_010),
        (499_900, 500_100),
        (999_700, 1_000_300),
        # Past 2e6 discordant pairs statrs is only good to ~1e-7 relative.
        (4_995_000, 5_005_000),
        (4_999_000, 5_001_000),
    ]
    out = []
    for b, c in cases:
        p = float(mcnemar([[0, b], [c, 0]], exact=True).pvalue)
        case = {"b": b, "c": c, "p": p}
        if b + c > 0:
            # The same p from scipy's exact binomial test, as a cross-check.
            check = float(stats.binomtest(min(b, c), b + c, 0.5).pvalue)
            assert math.isclose(p, check, rel_tol=1e-12, abs_tol=1e-300), (b, c, p, check)
        out.append(case)
    return out


def scipy_wilcoxon_method(diffs):
    """The method scipy 1.17's wilcoxon(method="auto") picks (scipy/stats/_wilcoxon.py)."""
    d = np.asarray(diffs, dtype=np.float64)
    nonzero = np.abs(d[d != 0])
    has_ties = len(np.unique(nonzero)) < len(nonzero)
    has_zeros = bool(np.any(d == 0))
    if len(d) > 50:
        return "asymptotic"
    if not (has_ties or has_zeros):
        return "exact"
    if len(d) <= 13:
        return "permutation"
    return "asymptotic"


def wilcoxon_cases():
    rng = np.random.default_rng(7)
    scores = [-1.0, -0.5, 0.0, 0.5, 1.0]
    cases = [
        ("exact, n = 1", [3.0], "exact"),
        ("exact, small", [1.5, -0.3, 2.2, 0.7, -1.1, 3.4, 0.9, -0.2, 1.8, 2.6], "exact"),
        ("exact, all negative", [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0], "exact"),
        ("exact, n = 20", [float(v) for v in np.round(rng.normal(0.4, 1.0, 20), 6)], "exact"),
        ("exact, n = 50", [float(v) for v in np.round(rng.normal(0.2, 1.0, 50), 6)], "exact"),
        ("exact, n = 50, all positive", [float(v) for v in range(1, 51)], "exact"),
        ("permutation, ties", [1.0, -1.0, 2.0, 2.0, -3.0, 4.0, 4.0, 4.0], "permutation"),
        ("permutation, zeros", [0.0, 0.0, 1.5, -0.5, 2.0, 3.0, -1.0, 2.5, 0.25, 4.0], "permutation"),
        (
            "permutation, ties and zeros, n = 13",
            [0.0, 1.0, 1.0, -1.0, 0.5, 0.5, -0.5, 1.0, 0.0, 1.0, 0.25, 1.0, -0.25],
            "permutation",
        ),
        ("permutation, one non-zero", [0.0, 0.0, 2.0], "permutation"),
        (
            "asymptotic, ties, n = 14",
            [1.0, 1.0, 2.0, -1.0, 3.0, 2.0, 0.5, 1.0, -0.5, 2.0, 4.0, 1.0, 3.0, 0.5],
            "asymptotic",
        ),
        ("asymptotic, scores, n = 40", [float(v) for v in rng.choice(scores, 40, p=[0.1, 0.15, 0.35, 0.2, 0.2])], "asymptotic"),
        ("asymptotic, no ties, n = 51", [float(v) for v in np.round(rng.normal(0.3, 1.0, 51), 6)], "asymptotic"),
        ("asymptotic, n = 200", [float(v) for v in np.round(rng.normal(0.1, 1.0, 200), 6)], "asymptotic"),
        (
            "asymptotic, 20 zeros and 40 distinct non-zero",
            [0.0] * 20 + [float(v) for v in np.round(rng.normal(0.5, 1.0, 40), 6)],
            "asymptotic",
        ),
        ("asymptotic, scores, n = 1000", [float(v) for v in rng.choice(scores, 1000, p=[0.1, 0.2, 0.3, 0.25, 0.15])], "asymptotic"),
        ("no non-zero difference", [0.0, 0.0, 0.0], None),
    ]
    out = []
    for name, diffs, method in cases:
        if method is None:
            p = None
        else:
            assert scipy_wilcoxon_method(diffs) == method, name
            p = float(stats.wilcoxon(diffs).pvalue)
            # The method named is the one scipy's default used.
            forced = stats.PermutationMethod() if method == "permutation" else method
            assert p == float(stats.wilcoxon(diffs, method=forced).pvalue), name
        out.append({"name": name, "diffs": diffs, "method": method, "p": p})
    return out


def holm_cases():
    rng = np.random.default_rng(11)
    cases = [
        [0.01, 0.04, 0.03, 0.005],
        [0.02, 0.02, 0.02, 0.5, 0.01],
        [0.9, 0.95, 0.99, 0.999999, 1.0, 0.4],
        [0.3],
        [1e-300, 1e-10, 5e-11, 0.5],
        [0.0, 0.0, 0.7],
        [float(v) for v in rng.uniform(0.0, 0.2, 20)],
    ]
    return [
        {"p_values": p, "adjusted": [float(v) for v in multipletests(p, method="holm")[1]]}
        for p in cases
    ]


def percentile_cases():
    rng = np.random.default_rng(3)
    arrays = [
        [5.0],
        [1.0, 2.0],
        [0.0, 0.0, 0.0, 1.0, 1.0],
        [-3.5, -1.0, 0.0, 0.0, 2.25, 7.0, 10.5],
        sorted(float(v) for v in np.round(rng.normal(0.0, 1.0, 100), 6)),
    ]
    qs = [0.0, 2.5, 10.0, 25.0, 33.3, 50.0, 66.6, 75.0, 90.0, 97.5, 100.0]
    return [
        {"sorted": a, "q": q, "value": float(np.percentile(a, q))}
        for a in arrays
        for q in qs
    ]


def sample_size_cases():
    cases = [
        (0.20, 0.10, 0.05, 0.80),
        (0.10, 0.20, 0.05, 0.80),
        (0.05, 0.01, 0.01, 0.90),
        (0.30, 0.28, 0.05, 0.80),
        (0.15, 0.05, 0.10, 0.95),
        (0.00, 0.10, 0.05, 0.80),
        (0.02, 0.001, 0.05, 0.50),
        (0.40, 0.40, 0.05, 0.80),
    ]
    out = []
    for p10, p01, alpha, power in cases:
        psi, delta = p10 + p01, p10 - p01
        if delta == 0:
            n_exact, n = None, None
        else:
            z_alpha = stats.norm.ppf(1 - alpha / 2)
            z_power = stats.norm.ppf(power)
            n_exact = (z_alpha * math.sqrt(psi) + z_power * math.sqrt(psi - delta**2)) ** 2 / delta**2
            frac = n_exact - math.floor(n_exact)
            # Far from an integer, so rounding up can't differ between libraries.
            assert 1e-6 < frac < 1 - 1e-6, (p10, p01, n_exact)
            n = math.ceil(n_exact)
        out.append(
            {"p10": p10, "p01": p01, "alpha": alpha, "power": power, "n_unrounded": n_exact, "n": n}
        )
    return out


def main():
    fixture = {
        "generator": "scripts/stats_reference.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
        },
        "wilson": wilson_cases(),
        "mean_interval": mean_interval_cases(),
        "mcnemar_exact": mcnemar_cases(),
        "wilcoxon": wilcoxon_cases(),
        "holm": holm_cases(),
        "percentile": percentile_cases(),
        "mcnemar_sample_size": sample_size_cases(),
    }
    json.dump(fixture, sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
