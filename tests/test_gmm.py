import itertools
import math
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from pyroem.datasets import load_old_faithful
from pyroem.models import GaussianMixture

COV_TYPES = ["full", "diag", "spherical", "tied"]


def _precisions(gmm):
    cov = gmm.covariances.numpy()
    if gmm.covariance_type in ("full", "tied"):
        return np.linalg.inv(cov)
    return 1.0 / cov


def _initialised(x, covariance_type, k=3, seed=0):
    gmm = GaussianMixture(k, x.shape[-1], covariance_type)
    gmm.fit(x, max_iter=1, seed=seed)  # k-means++ start plus one step: a generic point
    return gmm


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_matches_sklearn_from_same_init(blobs, covariance_type):
    gmm = _initialised(blobs, covariance_type)
    sk = SkGaussianMixture(3, covariance_type=covariance_type, tol=0, max_iter=7,
                           weights_init=gmm.weights.detach().numpy(),
                           means_init=gmm.means.detach().numpy(),
                           precisions_init=_precisions(gmm))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(blobs.numpy())
    hist = gmm.fit(blobs, init="given", max_iter=7, tol=0)
    assert hist.num_iters == 7 and not hist.converged
    np.testing.assert_allclose(gmm.weights.detach().numpy(), sk.weights_, rtol=1e-8)
    np.testing.assert_allclose(gmm.means.detach().numpy(), sk.means_, rtol=1e-8)
    np.testing.assert_allclose(gmm.covariances.numpy(), sk.covariances_, rtol=1e-8)
    # sklearn's lower_bound_ is the mean log-likelihood computed by its last E-step
    assert hist.log_likelihood[-1] / len(blobs) == pytest.approx(sk.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(gmm.log_prob(blobs).numpy(), sk.score_samples(blobs.numpy()), rtol=1e-9)
    np.testing.assert_allclose(gmm.posterior(blobs).numpy(), sk.predict_proba(blobs.numpy()), atol=1e-9)
    assert gmm.bic(blobs) == pytest.approx(sk.bic(blobs.numpy()), rel=1e-10)
    assert gmm.aic(blobs) == pytest.approx(sk.aic(blobs.numpy()), rel=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_prob_equals_brute_force_sum(covariance_type):
    torch.manual_seed(1)
    x = torch.randn(4, 2, dtype=torch.float64)
    gmm = GaussianMixture(3, 2, covariance_type).double()
    gmm.weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    gmm.means = torch.randn(3, 2, dtype=torch.float64)
    a = torch.randn(3, 2, 2, dtype=torch.float64)
    full = a @ a.mT + 0.5 * torch.eye(2)
    gmm.covariances = {"full": full, "tied": full[0], "diag": full.diagonal(dim1=-2, dim2=-1),
                       "spherical": full.diagonal(dim1=-2, dim2=-1).mean(-1)}[covariance_type]
    cov = gmm.covariances
    cov = {"full": lambda c: c, "tied": lambda c: c.expand(3, 2, 2), "diag": torch.diag_embed,
           "spherical": lambda c: c[:, None, None] * torch.eye(2)}[covariance_type](cov)
    comps = dist.MultivariateNormal(gmm.means.detach(), covariance_matrix=cov)
    total = []
    for z in itertools.product(range(3), repeat=4):  # every assignment of 4 points
        z = torch.tensor(z)
        total.append((gmm.weights.detach()[z].log()
                      + torch.stack([comps.log_prob(x[n])[z[n]] for n in range(4)])).sum())
    brute = torch.stack(total).logsumexp(0)
    assert float(gmm.log_prob(x).sum()) == pytest.approx(float(brute), rel=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_likelihood_never_decreases(blobs, covariance_type):
    gmm = GaussianMixture(4, 2, covariance_type, reg_covar=0.0)
    hist = gmm.fit(blobs, max_iter=40, tol=0, init="random", seed=3)
    ll = np.array(hist.log_likelihood + [hist.final_log_likelihood])
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[:-1]))
    assert ll[-1] > ll[0]


def _hard_em_by_hand(x, weights, means, covs, iters):
    # Plain hard-assignment loop, written independently of pyroem's E-step.
    for _ in range(iters):
        logp = torch.stack([dist.MultivariateNormal(means[k], covs[k]).log_prob(x) + weights[k].log()
                            for k in range(len(weights))], -1)
        z = logp.argmax(-1)
        counts = torch.bincount(z, minlength=len(weights)).to(x.dtype)
        weights = counts / counts.sum()
        means = torch.stack([x[z == k].mean(0) for k in range(len(weights))])
        covs = torch.stack([torch.cov(x[z == k].T, correction=0) + 1e-6 * torch.eye(x.shape[1])
                            for k in range(len(weights))])
    return weights, means, covs


def test_viterbi_matches_hand_written_hard_em(blobs):
    gmm = _initialised(blobs, "full")
    start = (gmm.weights.detach().clone(), gmm.means.detach().clone(), gmm.covariances.clone())
    hist = gmm.fit(blobs, method="viterbi", init="given", max_iter=5, tol=0)
    w, m, c = _hard_em_by_hand(blobs, *start, iters=5)
    torch.testing.assert_close(gmm.weights.detach(), w, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gmm.means.detach(), m, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gmm.covariances, c, rtol=1e-10, atol=1e-12)
    # Viterbi training is monotone in log p(X, Z_hat)
    ll = np.array(hist.log_likelihood + [hist.final_log_likelihood])
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[:-1]))


def test_float32_runs_and_stays_finite():
    x = load_old_faithful(torch.float32)
    gmm = GaussianMixture(2, 2, "full")
    hist = gmm.fit(x, max_iter=100, seed=0)
    assert gmm.means.dtype == torch.float32
    assert all(math.isfinite(v) for v in hist.log_likelihood)
    # the two eruption regimes are found: short (~2 min, ~55 min wait) and long (~4.3, ~80)
    means = gmm.means.detach()[gmm.means.detach()[:, 0].argsort()]
    torch.testing.assert_close(means, torch.tensor([[2.04, 54.5], [4.29, 80.0]]), atol=0.1, rtol=0.01)
    ref = GaussianMixture(2, 2, "full").double()
    ref.fit(x.double(), max_iter=100, seed=0)
    assert hist.final_log_likelihood == pytest.approx(ref.history.final_log_likelihood, rel=1e-5)


def test_univariate_data_and_sampling():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200) - 3, torch.randn(300) * 0.5 + 2]).double()
    gmm = GaussianMixture(2, dim=1)
    gmm.fit(x, seed=0)
    assert gmm.covariances.shape == (2, 1, 1) and gmm.means.shape == (2, 1)
    order = gmm.means.detach()[:, 0].argsort()
    torch.testing.assert_close(gmm.weights.detach()[order], torch.tensor([0.4, 0.6]).double(), atol=0.05, rtol=0)
    xs, zs = gmm.sample(2000, seed=1)
    assert xs.shape == (2000, 1) and zs.shape == (2000,)
    assert float(zs.double().mean()) == pytest.approx(float(gmm.weights.detach()[1]), abs=0.05)
    assert gmm.predict(x).shape == (500,)


def test_restarts_keep_the_best_run(blobs):
    single = [GaussianMixture(3, 2).fit(blobs, init="random", seed=s, max_iter=20).final_log_likelihood
              for s in range(4)]
    gmm = GaussianMixture(3, 2)
    hist = gmm.fit(blobs, init="random", seed=0, num_restarts=4, max_iter=20)
    assert hist.final_log_likelihood == pytest.approx(max(single), rel=1e-12)
    assert float(gmm.log_prob(blobs).sum()) == pytest.approx(max(single), rel=1e-12)


def test_converges_with_tolerance(blobs):
    gmm = GaussianMixture(3, 2)
    hist = gmm.fit(blobs, tol=1e-6, max_iter=500, seed=0)
    assert gmm.converged and hist.num_iters < 500
    assert abs(hist.log_likelihood[-1] - hist.log_likelihood[-2]) < 1e-6 * len(blobs)


def _params(gmm):
    return {k: v.detach().clone() for k, v in gmm.state_dict().items() if torch.is_tensor(v)}


@pytest.mark.parametrize("bad, match", [
    (lambda x: torch.cat([x, torch.tensor([[float("nan"), 0.0]])]), "NaN or inf"),
    (lambda x: torch.cat([x, torch.tensor([[float("inf"), 0.0]])]), "NaN or inf"),
    (lambda x: x[:, :1], "shape"),
    (lambda x: x[:2], "at least num_components"),
    (lambda x: x.reshape(-1), "shape"),
])
def test_bad_data_raises_and_leaves_model_untouched(blobs, bad, match):
    gmm = _initialised(blobs, "full")
    before = _params(gmm)
    data = bad(blobs)
    data_before = data.clone()
    with pytest.raises(ValueError, match=match):
        gmm.fit(data)
    after = _params(gmm)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(data, data_before) or torch.isnan(data).any()


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "gibbs"}, "unknown method"),
    ({"init": "kmeans"}, "unknown init"),
    ({"max_iter": 0}, "max_iter"),
    ({"tol": -1.0}, "tol"),
    ({"num_restarts": 0}, "num_restarts"),
])
def test_bad_options_raise(blobs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(3, 2).fit(blobs, **kwargs)


def test_bad_constructor_and_parameter_values():
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(2, 2, "banded")
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture(0, 2)
    gmm = GaussianMixture(2, 2)
    with pytest.raises(ValueError, match="shape"):
        gmm.covariances = torch.eye(2)
    with pytest.raises(ValueError, match="positive definite"):
        gmm.covariances = -torch.eye(2).expand(2, 2, 2)


def test_empty_component_never_produces_nan(blobs):
    gmm = GaussianMixture(3, 2).double()
    gmm.means = torch.tensor([[0.0, 0.0], [5.0, 1.0], [1e3, 1e3]], dtype=torch.float64)
    for method in ("em", "viterbi"):
        model = GaussianMixture(3, 2).double()
        model.means = gmm.means.detach()
        hist = model.fit(blobs, init="given", method=method, max_iter=10, tol=0)
        assert all(math.isfinite(v) for v in hist.log_likelihood)
        for p in (model.weights, model.means, model.covariances):
            assert torch.isfinite(p).all()
        assert float(model.weights.detach()[2]) < 1e-6
