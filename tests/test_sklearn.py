"""The scikit-learn estimators: scikit-learn's own estimator checks, agreement with
sklearn.mixture.GaussianMixture and hmmlearn.hmm.GaussianHMM from the same
initialisation, Pipeline and GridSearchCV."""

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl
from sklearn import mixture
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import GaussianHMM, GaussianMixture

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
    x2, _y2 = est.sample(500)
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


# ---------------------------------------------------------------------------- GaussianHMM
# Checks of scikit-learn's suite that do not apply to an HMM, with why: the rows are the
# frames of a time series, not i.i.d. samples, so results depend on the order and on the
# neighbours of each row.
HMM_EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance":
        "rows are frames of a sequence: shuffling them changes the sequence and so the "
        "decoded states and posteriors",
    "check_methods_subset_invariance":
        "rows are frames of a sequence: a subset is a different (shorter) sequence, and "
        "score_samples returns hmmlearn's (total log-likelihood, posteriors), not one "
        "value per row",
}
# sample_weight of the HMM estimators is one weight per sequence (DESIGN.md section 3), not
# per row: scikit-learn's checks pass one weight per row of a single sequence
_PER_SEQUENCE = ("sample_weight is one weight per sequence, not per row (a frame cannot be "
                 "repeated without changing its sequence)")
HMM_EXPECTED_FAILED_CHECKS.update({name: _PER_SEQUENCE for name in (
    "check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
    "check_sample_weights_list", "check_sample_weights_shape",
    "check_sample_weights_not_overwritten", "check_sample_weight_equivalence_on_dense_data")})


@parametrize_with_checks([GaussianHMM(2, n_iter=5, random_state=0)],
                         expected_failed_checks=lambda est: HMM_EXPECTED_FAILED_CHECKS)
def test_hmm_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def durations():
    """Old Faithful eruption durations in time order (short and long alternate)."""
    return load_old_faithful().numpy()[:, :1]


FAITHFUL_LENGTHS = [100, 90, 82]


@pytest.mark.parametrize("covariance_type", ["diag", "full", "spherical", "tied"])
@pytest.mark.parametrize("lengths", [None, FAITHFUL_LENGTHS])
def test_hmm_matches_hmmlearn_from_same_start(faithful, covariance_type, lengths):
    # hmmlearn started from our initial parameters must reach our fitted parameters, stop
    # at the same iteration (tol on the total log-likelihood in both) and score the same
    ours = GaussianHMM(3, covariance_type, reg_covar=0.0, n_iter=100, tol=1e-3,
                       random_state=0).fit(faithful, lengths=lengths)
    model0 = ours.model_.__class__(3, 2, covariance_type, reg_covar=0.0).double()
    seqs = ours._model_args(torch.as_tensor(faithful), lengths)
    model0._initialize(model0._prepare(*seqs), "kmeans++",
                       torch.Generator().manual_seed(ours._seed()))
    ref = hl.GaussianHMM(3, covariance_type, min_covar=0.0, covars_prior=0.0,
                         covars_weight=1.0, n_iter=100, tol=1e-3, init_params="",
                         params="stmc")
    ref.startprob_ = model0.start_probs.detach().numpy()
    ref.transmat_ = model0.trans_probs.detach().numpy()
    ref.means_ = model0.means.detach().numpy()
    ref.covars_ = model0.covariances.numpy()
    ref.fit(faithful, lengths)
    assert ours.converged_ and ref.monitor_.converged
    assert ours.n_iter_ == ref.monitor_.iter
    np.testing.assert_allclose(ours.model_.history.log_likelihood,
                               list(ref.monitor_.history), rtol=1e-10)
    np.testing.assert_allclose(ours.startprob_, ref.startprob_, atol=1e-8)
    np.testing.assert_allclose(ours.transmat_, ref.transmat_, atol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-7)
    # hmmlearn 0.3.3 stores "spherical" variances repeated over the D columns, and its
    # covars_ property then returns (K*D, D, D) matrices: compare the stored values
    stored = ref._covars_[:, 0] if covariance_type == "spherical" else ref._covars_
    np.testing.assert_allclose(ours.model_.covariances.numpy(), stored, rtol=1e-7)
    assert ours.covars_.shape == (3, 2, 2)
    if covariance_type != "spherical":
        np.testing.assert_allclose(ours.covars_, ref.covars_, rtol=1e-7)
    assert ours.score(faithful, lengths=lengths) == pytest.approx(ref.score(faithful, lengths),
                                                                  abs=1e-8)
    ll, post = ours.score_samples(faithful, lengths)
    ref_ll, ref_post = ref.score_samples(faithful, lengths)
    assert ll == pytest.approx(ref_ll, abs=1e-8)
    np.testing.assert_allclose(post, ref_post, atol=1e-8)
    np.testing.assert_array_equal(ours.predict(faithful, lengths), ref.predict(faithful, lengths))
    for algorithm in ("viterbi", "map"):
        lp, states = ours.decode(faithful, lengths, algorithm=algorithm)
        ref_lp, ref_states = ref.decode(faithful, lengths, algorithm=algorithm)
        # hmmlearn's "map" log_prob is the sum of the per-frame max posteriors; ours is
        # log p(X), which its decoding does not change
        want = ref_lp if algorithm == "viterbi" else ref.score(faithful, lengths)
        assert lp == pytest.approx(want, abs=1e-8)
        np.testing.assert_array_equal(states, ref_states)
    assert ours.bic(faithful, lengths) == pytest.approx(ref.bic(faithful, lengths), abs=1e-6)
    assert ours.aic(faithful, lengths) == pytest.approx(ref.aic(faithful, lengths), abs=1e-6)


def test_hmm_lengths_and_sequence_ids_agree(durations):
    ids = np.repeat([7, 3, 7], FAITHFUL_LENGTHS)  # runs of equal ids, an id may recur
    a = GaussianHMM(2, random_state=0).fit(durations, lengths=FAITHFUL_LENGTHS)
    b = GaussianHMM(2, random_state=0).fit(durations, sequence_ids=ids)
    np.testing.assert_array_equal(a.transmat_, b.transmat_)
    assert a.score(durations, lengths=FAITHFUL_LENGTHS) == b.score(durations, sequence_ids=ids)
    # one sequence differs from three: the boundaries cut two transitions
    assert a.score(durations) != a.score(durations, lengths=FAITHFUL_LENGTHS)
    with pytest.raises(ValueError, match="sum to the number of rows"):
        a.fit(durations, lengths=[100, 100])
    with pytest.raises(ValueError, match="one entry per row"):
        a.fit(durations, sequence_ids=ids[:-1])
    with pytest.raises(ValueError, match="not both"):
        a.fit(durations, lengths=FAITHFUL_LENGTHS, sequence_ids=ids)
    with pytest.raises(ValueError, match="init_params"):
        GaussianHMM(init_params="stmc").fit(durations)
    with pytest.raises(ValueError, match="params"):
        GaussianHMM(params="xyz").fit(durations)
    with pytest.raises(ValueError, match="tol"):
        GaussianHMM(tol=-1).fit(durations)


def test_hmm_clone_set_params_frozen_and_viterbi(durations):
    est = GaussianHMM(2, "diag", method="viterbi", random_state=1)
    est.set_params(n_components=3, params="tmc", n_iter=20, transmat_prior=2.0)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert copy.get_params()["transmat_prior"] == 2.0
    est.fit(durations)
    # "s" not trained: the start probabilities stay uniform
    np.testing.assert_array_equal(est.startprob_, np.full(3, 1 / 3))
    np.testing.assert_allclose(est.transmat_.sum(1), 1.0)
    assert est.means_.shape == (3, 1) and est.covars_.shape == (3, 1, 1)
    np.testing.assert_array_equal(est.fit_predict(durations), est.predict(durations))
    # Viterbi training maximises max_Z log p(X, Z), which decode("viterbi") reports
    lp, _ = est.decode(durations, algorithm="viterbi")
    assert lp == pytest.approx(est.lower_bound_, rel=1e-10)


def test_hmm_grid_search_in_pipeline_with_sequence_ids(durations):
    # folds hold whole sequences (GroupKFold on the ids); the per-row ids are split with X
    ids = np.repeat(np.arange(4), [68, 68, 68, 68])
    pipe = make_pipeline(StandardScaler(), GaussianHMM(random_state=0, n_iter=20))
    search = GridSearchCV(pipe, {"gaussianhmm__n_components": [1, 2]}, cv=GroupKFold(2))
    search.fit(durations, groups=ids, gaussianhmm__sequence_ids=ids)
    # two eruption regimes: two states generalise better than one
    assert search.best_params_ == {"gaussianhmm__n_components": 2}
    scaled = StandardScaler().fit_transform(durations)
    by_hand = GaussianHMM(2, random_state=0, n_iter=20).fit(scaled, sequence_ids=ids)
    np.testing.assert_allclose(search.best_estimator_[-1].transmat_, by_hand.transmat_,
                               atol=1e-10)


def test_hmm_grid_search_routes_sequence_ids_to_score(durations):
    # with metadata routing the test folds are scored sequence by sequence too
    import sklearn

    ids = np.repeat(np.arange(4), [68, 68, 68, 68])
    with sklearn.config_context(enable_metadata_routing=True):
        est = GaussianHMM(random_state=0, n_iter=20).set_fit_request(sequence_ids=True) \
            .set_score_request(sequence_ids=True)
        search = GridSearchCV(est, {"n_components": [1, 2]}, cv=GroupKFold(2))
        search.fit(durations, groups=ids, sequence_ids=ids)
    train, test = next(GroupKFold(2).split(durations, groups=ids))
    by_hand = GaussianHMM(2, random_state=0, n_iter=20).fit(durations[train],
                                                             sequence_ids=ids[train])
    assert search.cv_results_["split0_test_score"][1] == pytest.approx(
        by_hand.score(durations[test], sequence_ids=ids[test]), rel=1e-12)
    assert search.best_params_ == {"n_components": 2}


def test_hmm_sample_seeded_and_leaves_global_rng_alone(durations):
    est = GaussianHMM(2, random_state=3).fit(durations)
    state = torch.get_rng_state()
    x1, z1 = est.sample(400)
    assert torch.equal(state, torch.get_rng_state())
    x2, _z2 = est.sample(400)
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == (400, 1) and z1.shape == (400,)
    x3, _ = est.sample(400, random_state=4)
    assert not np.array_equal(x1, x3)
    # transition frequencies follow transmat_ (399 transitions: within 5 standard errors)
    counts = np.zeros((2, 2))
    np.add.at(counts, (z1[:-1], z1[1:]), 1)
    freq = counts / counts.sum(1, keepdims=True)
    assert np.all(np.abs(freq - est.transmat_) < 5 * np.sqrt(0.25 / counts.sum(1, keepdims=True)))


def test_hmm_float32_kept(durations):
    est = GaussianHMM(2, random_state=0).fit(durations.astype(np.float32))
    assert est.means_.dtype == np.float32
    ref = GaussianHMM(2, random_state=0).fit(durations)
    np.testing.assert_allclose(est.means_, ref.means_, atol=1e-3)
