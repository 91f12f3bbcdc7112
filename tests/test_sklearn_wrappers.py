"""The scikit-learn estimators of the other built-ins: hmmlearn's CategoricalHMM and GMMHMM
from the same start, scikit-learn's estimator checks where the estimator type allows them."""

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import GMMHMM, CategoricalHMM

# As for GaussianHMM (tests/test_sklearn.py): rows are frames of a sequence, so the
# checks that shuffle or subset rows do not apply.
SEQUENCE_CHECKS = {
    "check_methods_sample_order_invariance":
        "rows are frames of a sequence: shuffling them changes the sequence",
    "check_methods_subset_invariance":
        "rows are frames of a sequence; score_samples returns hmmlearn's (total "
        "log-likelihood, posteriors), not one value per row",
}
# CategoricalHMM's X is one column of integer symbols (hmmlearn's layout): every check
# that fits on a random float matrix of several columns is refused with a clear error.
_FLOAT_MATRIX = ("the check fits a random float matrix; X is one column of integer symbols")
CATEGORICAL_CHECKS = dict(SEQUENCE_CHECKS, **{name: _FLOAT_MATRIX for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency",
    "check_estimators_nan_inf", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d", "check_positive_only_tag_during_fit")})


@parametrize_with_checks([GMMHMM(2, 2, n_iter=5, random_state=0),
                          CategoricalHMM(2, n_iter=5, random_state=0)],
                         expected_failed_checks=lambda est: CATEGORICAL_CHECKS
                         if isinstance(est, CategoricalHMM) else SEQUENCE_CHECKS)
def test_estimator_checks(estimator, check):
    check(estimator)


def symbols(seed=0, n=400):
    """A two-state chain over four symbols (sticky states with distinct emissions)."""
    g = np.random.default_rng(seed)
    trans = np.array([[0.9, 0.1], [0.2, 0.8]])
    emit = np.array([[0.6, 0.3, 0.05, 0.05], [0.05, 0.05, 0.4, 0.5]])
    z, x = 0, []
    for _ in range(n):
        x.append(g.choice(4, p=emit[z]))
        z = g.choice(2, p=trans[z])
    return np.array(x)[:, None]


@pytest.mark.parametrize("lengths", [None, [150, 250]])
def test_categorical_matches_hmmlearn_from_same_start(lengths):
    X = symbols()
    ours = CategoricalHMM(2, n_iter=200, tol=1e-6, random_state=0).fit(X, lengths=lengths)
    start = CategoricalHMM(2, n_iter=1, tol=0, random_state=0)
    model0 = ours.model_.__class__(2, 4).double()
    seqs = ours._model_args(torch.as_tensor(X[:, 0]), lengths)
    model0._initialize(model0._prepare(*seqs), "random",
                       torch.Generator().manual_seed(start._seed()))
    ref = hl.CategoricalHMM(2, n_iter=200, tol=1e-6, init_params="", params="ste")
    ref.startprob_ = model0.start_probs.detach().numpy()
    ref.transmat_ = model0.trans_probs.detach().numpy()
    ref.emissionprob_ = model0.emission_probs.detach().numpy()
    ref.fit(X, lengths)
    assert ours.n_iter_ == ref.monitor_.iter
    np.testing.assert_allclose(ours.model_.history.log_likelihood, list(ref.monitor_.history),
                               rtol=1e-10)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, atol=1e-8)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, atol=1e-8)
    assert ours.score(X, lengths=lengths) == pytest.approx(ref.score(X, lengths), abs=1e-8)
    # the best paths' log-probabilities agree (the paths may differ where two are as good)
    assert ours.decode(X, lengths)[0] == pytest.approx(ref.decode(X, lengths)[0], abs=1e-7)
    assert ours.n_features_ == 4 and ours.emissionprob_.shape == (2, 4)


def test_categorical_bad_symbols_and_alphabet():
    X = symbols()
    with pytest.raises(ValueError, match="integer symbols"):
        CategoricalHMM(2).fit(X + 0.5)
    with pytest.raises(ValueError, match="beyond n_features=3"):
        CategoricalHMM(2, n_features=3).fit(X)
    est = CategoricalHMM(2, n_features=6, n_iter=3, tol=0).fit(X)
    assert est.emissionprob_.shape == (2, 6) and np.allclose(est.emissionprob_[:, 4:], 0)
    with pytest.raises(ValueError, match="beyond n_features=6"):
        est.score(np.array([[7]]))


def test_gmmhmm_is_the_model_fitted_directly_with_hmmlearn_shapes():
    x = load_old_faithful().numpy()
    x = (x - x.mean(0)) / x.std(0)
    for covariance_type, shape in (("diag", (2, 2, 2)), ("full", (2, 2, 2, 2)),
                                   ("spherical", (2, 2)), ("tied", (2, 2, 2))):
        est = GMMHMM(2, 2, covariance_type=covariance_type, n_iter=20, random_state=0).fit(x)
        ref = hl.GMMHMM(2, 2, covariance_type=covariance_type, n_iter=1, init_params="stmcw")
        ref.fit(x)  # hmmlearn's own shapes of the same parameters
        assert est.weights_.shape == ref.weights_.shape == (2, 2)
        assert est.means_.shape == ref.means_.shape
        assert est.covars_.shape == ref.covars_.shape == shape
        # the estimator's scores are its model's
        assert est.score(x) == pytest.approx(float(est.model_.log_prob(torch.as_tensor(x)).sum()))
    clone(est).set_params(n_mix=3)
