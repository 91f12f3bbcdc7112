"""The scikit-learn estimators of the other built-ins: hmmlearn's CategoricalHMM and GMMHMM
from the same start, scikit-learn's estimator checks where the estimator type allows them."""

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from pyroem.datasets import load_old_faithful
from pyroem.sklearn import (
    GMMHMM,
    PLDA,
    BernoulliHMM,
    CategoricalHMM,
    FactorAnalysis,
    LinearGaussianSSM,
    MultinomialHMM,
    PoissonHMM,
)

# As for GaussianHMM (tests/test_sklearn.py): rows are frames of a sequence, so the
# checks that shuffle or subset rows do not apply.
SEQUENCE_CHECKS = {
    "check_methods_sample_order_invariance":
        "rows are frames of a sequence: shuffling them changes the sequence",
    "check_methods_subset_invariance":
        "rows are frames of a sequence; score_samples returns hmmlearn's (total "
        "log-likelihood, posteriors), not one value per row",
}
# sample_weight of the HMM estimators is one weight per sequence (DESIGN.md section 3)
SEQUENCE_CHECKS.update({name: "sample_weight is one weight per sequence, not per row" for name in (
    "check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
    "check_sample_weights_list", "check_sample_weights_shape",
    "check_sample_weights_not_overwritten", "check_sample_weight_equivalence_on_dense_data")})
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


# The HMMs of counts take integers >= 0 (0/1 for BernoulliHMM): the same checks fit on
# random float matrices (negative data, though, is refused in scikit-learn's words).
COUNT_CHECKS = {name: reason.replace("one column of integer symbols", "counts")
                for name, reason in CATEGORICAL_CHECKS.items()
                if name != "check_positive_only_tag_during_fit"}
# The state-space model's transform (smoothed means) depends on the whole sequence.
SSM_CHECKS = {name: "rows are frames of a sequence: the smoothed state of a frame depends "
                    "on its neighbours" for name in SEQUENCE_CHECKS}


def expected_failures(est):
    """The checks that do not apply to ``est``, with why (FactorAnalysis and PLDA pass all)."""
    return {CategoricalHMM: CATEGORICAL_CHECKS, GMMHMM: SEQUENCE_CHECKS,
            LinearGaussianSSM: SSM_CHECKS, PoissonHMM: COUNT_CHECKS,
            MultinomialHMM: COUNT_CHECKS, BernoulliHMM: COUNT_CHECKS}.get(type(est), {})


@parametrize_with_checks([GMMHMM(2, 2, n_iter=5, random_state=0),
                          CategoricalHMM(2, n_iter=5, random_state=0),
                          FactorAnalysis(1, max_iter=50), PLDA(max_iter=20),
                          LinearGaussianSSM(1, max_iter=10),
                          PoissonHMM(2, n_iter=5, random_state=0),
                          MultinomialHMM(2, n_iter=5, random_state=0),
                          BernoulliHMM(2, n_iter=5, random_state=0)],
                         expected_failed_checks=expected_failures)
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


def test_factor_analysis_against_scikit_learn():
    from sklearn import decomposition
    from sklearn.datasets import load_wine

    X = load_wine().data
    X = (X - X.mean(0)) / X.std(0)
    ours = FactorAnalysis(2, tol=1e-10, max_iter=5000).fit(X)
    ref = decomposition.FactorAnalysis(2, tol=1e-10, max_iter=5000).fit(X)
    # the same optimum (up to rotation of the factors): the same mean log-likelihood
    assert ours.score(X) == pytest.approx(ref.score(X), rel=1e-6)
    # with our parameters, scikit-learn's own formulas give our scores and posterior means
    ref.components_, ref.noise_variance_, ref.mean_ = (ours.components_, ours.noise_variance_,
                                                       ours.mean_)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), rtol=1e-9)
    assert not hasattr(ours, "predict")
    with pytest.raises(ValueError, match="n_features = 13"):
        FactorAnalysis(13).fit(X)
    ppca = FactorAnalysis(2, noise="isotropic").fit(X)
    assert np.ptp(ppca.noise_variance_) == 0


def test_plda_transform_score_and_grid_search():
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from pyroem.models import PLDA as ModelPLDA

    truth = ModelPLDA(4).to(torch.float64)
    x, labels, _ = truth.sample(30, 6, seed=0)
    X, y = x.numpy(), [f"speaker{int(s)}" for s in labels]
    est = PLDA(n_components=2).fit(X, y)
    # the transform diagonalises both covariances: T W T' = I, T B T' = diag(psi)
    T = est._transform
    np.testing.assert_allclose(T @ est.within_covariance_ @ T.T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(T @ est.between_covariance_ @ T.T, np.diag(est.psi_), atol=1e-10)
    assert est.transform(X).shape == (len(X), 2) and (np.diff(est.psi_) <= 0).all()
    assert est.score(X, y) == pytest.approx(float(est.model_.log_prob(x, y).sum()) / len(X))
    assert est.llr(X[:3], X[3]) == pytest.approx(float(est.model_.llr(x[:3], x[3])))
    assert list(est.classes_) == sorted(set(y))
    groups = [int(s) for s in labels]  # whole speakers per fold
    search = GridSearchCV(make_pipeline(StandardScaler(), PLDA()),
                          {"plda__reg_covar": [1e-6, 10.0]}, cv=GroupKFold(3))
    search.fit(X, y, groups=groups)
    assert search.best_params_["plda__reg_covar"] == 1e-6  # a huge floor fits worse
    with pytest.raises(ValueError, match="requires y"):
        PLDA().fit(X, None)
    low = PLDA(rank=2).fit(X, y)  # simplified PLDA: a rank-2 between-speaker covariance
    assert np.linalg.matrix_rank(low.between_covariance_, tol=1e-8) == 2
    assert (low.psi_[2:] < 1e-8).all() and low.score(X, y) <= est.score(X, y) + 1e-9


def test_state_space_model_against_pykalman():
    from pykalman import KalmanFilter

    from pyroem.models import LinearGaussianSSM as ModelSSM

    truth = ModelSSM(2, 3).double()
    truth.set_parameters(transition_matrix=[[0.9, 0.2], [-0.3, 0.8]],
                         observation_matrix=[[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]],
                         transition_cov=0.1 * torch.eye(2, dtype=torch.float64),
                         observation_cov=0.5 * torch.eye(3, dtype=torch.float64))
    x, _ = truth.sample(300, seed=0)
    X = x.numpy()
    est = LinearGaussianSSM(2, max_iter=20, tol=0).fit(X, lengths=[120, 180])
    kf = KalmanFilter(transition_matrices=est.transition_matrices_,
                      observation_matrices=est.observation_matrices_,
                      transition_covariance=est.transition_covariance_,
                      observation_covariance=est.observation_covariance_,
                      initial_state_mean=est.initial_state_mean_,
                      initial_state_covariance=est.initial_state_covariance_)
    want = kf.loglikelihood(X[:120]) + kf.loglikelihood(X[120:])
    assert est.score(X, lengths=[120, 180]) == pytest.approx(want, rel=1e-9)
    smoothed = np.concatenate([kf.smooth(X[:120])[0], kf.smooth(X[120:])[0]])
    np.testing.assert_allclose(est.transform(X, lengths=[120, 180]), smoothed, atol=1e-8)
    assert est.transform(X).shape == (300, 2)


def test_import_without_scikit_learn_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import pyroem.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pyroem[sklearn]" in out


def _same_start(est, X, lengths, init):
    """The pyroem model ``est`` fitted from, at its initial parameters (float64)."""
    model0 = est._make_model(X.shape[1])
    seqs = est._model_args(torch.as_tensor(X, dtype=torch.float64), lengths)
    model0._initialize(model0._prepare(*seqs), init, torch.Generator().manual_seed(est._seed()))
    return model0


def test_poisson_and_multinomial_match_hmmlearn_from_same_start():
    from pyroem.datasets import load_seatbelts

    counts = load_seatbelts()[0].numpy()[:, None].astype(np.float64)
    lengths = [100, 92]
    ours = PoissonHMM(2, n_iter=30, tol=1e-4, random_state=0).fit(counts, lengths=lengths)
    start = _same_start(PoissonHMM(2, random_state=0), counts, lengths, "kmeans++")
    ref = hl.PoissonHMM(2, n_iter=30, tol=1e-4, init_params="", params="stl")
    ref.startprob_, ref.transmat_ = start.start_probs.detach().numpy(), start.trans_probs.detach().numpy()
    ref.lambdas_ = start.rates.detach().numpy()
    ref.fit(counts, lengths)
    np.testing.assert_allclose(ours.model_.history.log_likelihood, list(ref.monitor_.history),
                               rtol=1e-10)
    np.testing.assert_allclose(ours.lambdas_, ref.lambdas_, rtol=1e-8)
    assert ours.score(counts, lengths=lengths) == pytest.approx(ref.score(counts, lengths), abs=1e-7)

    g = np.random.default_rng(0)
    X = np.concatenate([g.multinomial(6, [0.6, 0.3, 0.1], 80), g.multinomial(6, [0.1, 0.2, 0.7], 80)])
    ours = MultinomialHMM(2, n_trials=6, n_iter=20, tol=1e-4, random_state=0).fit(X)
    start = _same_start(MultinomialHMM(2, n_trials=6, random_state=0), X, None, "random")
    ref = hl.MultinomialHMM(2, n_trials=6, n_iter=20, tol=1e-4, init_params="", params="ste")
    ref.startprob_, ref.transmat_ = start.start_probs.detach().numpy(), start.trans_probs.detach().numpy()
    ref.emissionprob_ = start.emission_probs.detach().numpy()
    ref.fit(X)
    np.testing.assert_allclose(ours.model_.history.log_likelihood, list(ref.monitor_.history),
                               rtol=1e-10)
    np.testing.assert_allclose(ours.emissionprob_, ref.emissionprob_, atol=1e-8)


def test_bernoulli_is_the_model_fitted_directly():
    from pyroem.models import BernoulliHMM as ModelBernoulliHMM

    g = np.random.default_rng(1)
    X = np.concatenate([g.random((60, 3)) < [0.9, 0.1, 0.5], g.random((60, 3)) < [0.1, 0.8, 0.5]])
    est = BernoulliHMM(2, n_iter=15, tol=0, random_state=0).fit(X.astype(np.float64))
    model = ModelBernoulliHMM(2, 3).double()
    model.fit(torch.as_tensor(X, dtype=torch.float64), max_iter=15, tol=0, seed=est._seed())
    np.testing.assert_allclose(est.emissionprob_, model.probs.detach().numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="0/1 values"):
        BernoulliHMM(2).fit(X * 2.0)


def test_factor_analysis_and_state_space_model_in_grid_searches():
    from sklearn.datasets import load_wine
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = load_wine().data
    search = GridSearchCV(make_pipeline(StandardScaler(), FactorAnalysis(max_iter=300)),
                          {"factoranalysis__n_components": [1, 3]}, cv=3).fit(X)
    # three factors explain the wine data far better than one (held-out log-likelihood)
    assert search.best_params_["factoranalysis__n_components"] == 3
    assert search.transform(X).shape == (len(X), 3)

    from pyroem.models import LinearGaussianSSM as ModelSSM

    truth = ModelSSM(2, 3).double()  # a slow rotation seen through three sensors
    truth.set_parameters(transition_matrix=[[0.95, 0.25], [-0.25, 0.95]],
                         observation_matrix=[[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]],
                         transition_cov=0.05 * torch.eye(2, dtype=torch.float64),
                         observation_cov=0.1 * torch.eye(3, dtype=torch.float64))
    x, _ = truth.sample(400, seed=0)
    search = GridSearchCV(LinearGaussianSSM(max_iter=30, tol=0), {"n_components": [1, 2]},
                          cv=KFold(2)).fit(x.numpy())
    # one state cannot hold a rotation: the held-out likelihood picks two
    assert search.best_params_["n_components"] == 2
    assert search.best_estimator_.transform(x.numpy()).shape == (400, 2)
