"""The scikit-learn estimators: scikit-learn's own estimator checks, agreement with
sklearn.mixture.GaussianMixture from the same initialisation, Pipeline and GridSearchCV."""

import numpy as np
import pytest
import torch
from sklearn import mixture
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import GaussianMixture

# Checks that do not apply, with why (none of scikit-learn's checks fail; the list is
# empty, and check_array_api_input is skipped by scikit-learn itself unless
# SCIPY_ARRAY_API=1 because the estimators compute in torch, not through the array API).
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks([GaussianMixture(max_iter=20)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def faithful():
    x = load_old_faithful().numpy()
    return (x - x.mean(0)) / x.std(0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_matches_sklearn_from_same_start(faithful, covariance_type):
    # scikit-learn started from our initial parameters must reach our fitted parameters
    ours = GaussianMixture(3, covariance_type=covariance_type, tol=0, max_iter=8,
                           random_state=0).fit(faithful)
    ref = mixture.GaussianMixture(3, covariance_type=covariance_type, tol=0, max_iter=8,
                                  reg_covar=1e-6)
    gmm0 = ours.model_.__class__(3, 2, covariance_type).to(torch.float64)
    # the same start as the wrapper's fit: k-means seeded by the wrapper's seed
    gmm0._initialize((torch.as_tensor(faithful),), "kmeans++",
                     torch.Generator().manual_seed(ours._seed()))
    cov0 = gmm0.covariances.numpy()
    ref.set_params(weights_init=gmm0.weights.detach().numpy(),
                   means_init=gmm0.means.detach().numpy(),
                   precisions_init=np.linalg.inv(cov0) if covariance_type in ("full", "tied")
                   else 1 / cov0)
    ref.fit(faithful)
    np.testing.assert_allclose(ours.weights_, ref.weights_, atol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-8)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, atol=1e-8)
    np.testing.assert_allclose(ours.score_samples(faithful), ref.score_samples(faithful),
                               atol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(faithful), ref.predict_proba(faithful),
                               atol=1e-8)
    np.testing.assert_array_equal(ours.predict(faithful), ref.predict(faithful))
    assert ours.score(faithful) == pytest.approx(ref.score(faithful), abs=1e-10)
    assert ours.bic(faithful) == pytest.approx(ref.bic(faithful), abs=1e-7)
    assert ours.aic(faithful) == pytest.approx(ref.aic(faithful), abs=1e-7)
    assert ours.n_iter_ == 8 and not ours.converged_
    assert ours.lower_bound_ == pytest.approx(ours.score(faithful), abs=1e-12)


def test_pipeline_and_grid_search_pick_two_components(faithful):
    # Old Faithful has two eruption regimes: cross-validated likelihood prefers K=2 over K=1
    x = load_old_faithful().numpy()
    pipe = make_pipeline(StandardScaler(), GaussianMixture(random_state=0))
    search = GridSearchCV(pipe, {"gaussianmixture__n_components": [1, 2]}, cv=3)
    search.fit(x)
    assert search.best_params_ == {"gaussianmixture__n_components": 2}
    # the refitted pipeline scores standardised data: same as fitting by hand
    by_hand = GaussianMixture(2, random_state=0).fit(faithful)
    np.testing.assert_allclose(search.best_estimator_.score_samples(x),
                               by_hand.score_samples(faithful), atol=1e-8)


def test_params_clone_and_methods(faithful):
    est = GaussianMixture(2, covariance_type="diag", method="viterbi", random_state=1)
    assert est.get_params()["method"] == "viterbi"
    est.set_params(n_components=3, init_params="random", n_init=2)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    est.fit(faithful)
    assert est.weights_.shape == (3,) and est.means_.shape == (3, 2)
    assert est.covariances_.shape == (3, 2)
    np.testing.assert_allclose(est.weights_.sum(), 1.0)
    # Viterbi training: predict is the hard assignment the weights were counted from
    counts = np.bincount(est.predict(faithful), minlength=3) / len(faithful)
    np.testing.assert_allclose(np.sort(counts), np.sort(est.weights_), atol=1e-12)
    np.testing.assert_array_equal(est.fit_predict(faithful), est.predict(faithful))


def test_sample_is_seeded_and_leaves_global_rng_alone(faithful):
    est = GaussianMixture(2, random_state=3).fit(faithful)
    state = torch.get_rng_state()
    x1, y1 = est.sample(500)
    assert torch.equal(state, torch.get_rng_state())
    x2, y2 = est.sample(500)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (500, 2) and y1.shape == (500,)
    # sample proportions follow the weights (500 draws: within 5 standard errors)
    freq = np.bincount(y1, minlength=2) / 500
    assert np.all(np.abs(freq - est.weights_) < 5 * np.sqrt(0.25 / 500))


def test_float32_kept(faithful):
    est = GaussianMixture(2, random_state=0).fit(faithful.astype(np.float32))
    assert est.means_.dtype == np.float32
    ref = GaussianMixture(2, random_state=0).fit(faithful)
    np.testing.assert_allclose(est.means_, ref.means_, atol=1e-4)


def test_bad_options_raise_value_error(faithful):
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(init_params="nope").fit(faithful)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(covariance_type="nope").fit(faithful)
    with pytest.raises(ValueError, match="method"):
        GaussianMixture(method="nope").fit(faithful)
