"""Score normalisation, linear calibration, actual DCF and Cllr against their definitions."""

import math

import numpy as np
import pytest
import torch

from pyroem.calibration import LinearCalibration, snorm, weighted_cross_entropy
from pyroem.metrics import actual_dcf, cllr, min_dcf


def test_snorm_matches_its_formula_written_with_numpy():
    rng = np.random.default_rng(0)
    s, ce, ct = rng.normal(size=(3, 4)), rng.normal(size=(3, 20)), rng.normal(size=(4, 15))
    want = 0.5 * ((s - ce.mean(1)[:, None]) / ce.std(1, ddof=1)[:, None]
                  + (s - ct.mean(1)[None, :]) / ct.std(1, ddof=1)[None, :])
    assert np.allclose(snorm(s, ce, ct).numpy(), want, rtol=0, atol=1e-12)


def test_adaptive_snorm_uses_the_top_k_cohort_scores_of_each_side():
    rng = np.random.default_rng(1)
    s, ce, ct = rng.normal(size=(2, 3)), rng.normal(size=(2, 30)), rng.normal(size=(3, 30))
    top_e, top_t = np.sort(ce, 1)[:, -5:], np.sort(ct, 1)[:, -5:]
    want = 0.5 * ((s - top_e.mean(1)[:, None]) / top_e.std(1, ddof=1)[:, None]
                  + (s - top_t.mean(1)[None, :]) / top_t.std(1, ddof=1)[None, :])
    assert np.allclose(snorm(s, ce, ct, top_k=5).numpy(), want, rtol=0, atol=1e-12)
    # with the whole cohort as top_k it is plain s-norm
    assert torch.allclose(snorm(s, ce, ct, top_k=30), snorm(s, ce, ct))


@pytest.mark.parametrize("args, words", [
    (((2, 3), (3, 10), (3, 10)), "enroll_cohort has 3 rows for 2"),
    (((2, 3), (2, 10), (2, 10)), "test_cohort has 2 rows for 3"),
    (((2, 3), (2, 10), (3, 10), 11), "top_k=11 is larger than the cohort"),
    (((2, 3), (2, 10), (3, 10), 1), "top_k must be an int >= 2"),
])
def test_snorm_bad_input(args, words):
    arrays = [np.ones(shape) + np.arange(shape[1]) for shape in args[:3]]
    with pytest.raises(ValueError, match=words):
        snorm(*arrays, *args[3:])


def test_linear_calibration_recovers_the_true_llr_of_gaussian_scores():
    # targets ~ N(2, 1), non-targets ~ N(-1, 1): the true LLR is 3 s - 1.5, linear in s
    g = torch.Generator().manual_seed(0)
    tar = 2 + torch.randn(200_000, generator=g, dtype=torch.float64)
    non = -1 + torch.randn(200_000, generator=g, dtype=torch.float64)
    cal = LinearCalibration().fit(tar, non)
    assert cal.scale == pytest.approx(3.0, abs=0.05) and cal.offset == pytest.approx(-1.5, abs=0.05)
    # and the fit is the minimum of its objective: nudging a or b raises it
    best = weighted_cross_entropy(cal.transform(tar), cal.transform(non))
    for da, db in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        nudged = weighted_cross_entropy((cal.scale + da) * tar + cal.offset + db,
                                        (cal.scale + da) * non + cal.offset + db)
        assert nudged > best


def test_calibration_with_a_prior_shifts_only_by_the_prior_log_odds():
    # the minimiser at prior pi differs from pi = 1/2 when the model is misspecified; for
    # scores that are exactly linear LLRs both recover the same line (up to sampling)
    g = torch.Generator().manual_seed(1)
    tar = 1 + torch.randn(100_000, generator=g, dtype=torch.float64)
    non = -1 + torch.randn(100_000, generator=g, dtype=torch.float64)
    a = LinearCalibration(0.5).fit(tar, non)
    b = LinearCalibration(0.1).fit(tar, non)
    assert a.scale == pytest.approx(b.scale, abs=0.05)
    assert a.offset == pytest.approx(b.offset, abs=0.05)
    with pytest.raises(ValueError, match="not fitted"):
        LinearCalibration().transform([0.0])
    with pytest.raises(ValueError, match="p_target"):
        LinearCalibration(1.0)


def test_cllr_and_actual_dcf_against_their_definitions():
    rng = np.random.default_rng(2)
    tar, non = rng.normal(2, 1.5, 300), rng.normal(-2, 1.5, 700)
    want = (np.mean(np.log1p(np.exp(-tar))) + np.mean(np.log1p(np.exp(non)))) / (2 * math.log(2))
    assert cllr(tar, non) == pytest.approx(want, rel=1e-12)
    assert cllr(np.zeros(3), np.zeros(4)) == pytest.approx(1.0)
    p = 0.05
    theta = math.log((1 - p) / p)
    want = (p * np.mean(tar < theta) + (1 - p) * np.mean(non >= theta)) / p
    assert actual_dcf(tar, non, p_target=p) == pytest.approx(want, rel=1e-12)
    # the actual cost is never below the minimum over thresholds
    assert actual_dcf(tar, non, p_target=p) >= min_dcf(tar, non, p_target=p) - 1e-12
    # Cllr of the calibrated scores is lower than of badly scaled ones
    cal = LinearCalibration().fit(10 * tar, 10 * non)
    assert cllr(cal.transform(10 * tar).numpy(), cal.transform(10 * non).numpy()) < cllr(10 * tar, 10 * non)
