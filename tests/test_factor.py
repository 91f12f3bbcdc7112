import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

import pyroem
from pyroem.infer import EM, posterior_elbo_samples
from pyroem.models import PPCA, FactorAnalysis, GaussianMixture, MixtureOfFactorAnalyzers

f64 = torch.float64


def _fa_data(n=400, seed=0, shift=True):
    """Points from a 2-factor model in 6 dimensions with unequal noise."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.5, 1.0, 0.8, 1.2, 0.6, 1.0], dtype=f64)
    w = torch.randn(2, 6, generator=g, dtype=f64) * scale
    psi = torch.tensor([0.3, 0.5, 0.2, 0.8, 0.4, 0.6], dtype=f64)
    z = torch.randn(n, 2, generator=g, dtype=f64)
    x = z @ w + torch.randn(n, 6, generator=g, dtype=f64) * psi.sqrt()
    return x + torch.arange(6, dtype=f64) if shift else x


def _fa(noise="diagonal", seed=1, dim=4, latent_dim=2):
    g = torch.Generator().manual_seed(seed)
    fa = FactorAnalysis(dim, latent_dim, noise=noise).to(f64)
    fa.components = torch.randn(latent_dim, dim, generator=g, dtype=f64)
    fa.mean = torch.randn(dim, generator=g, dtype=f64)
    fa.noise_variance = (torch.rand(dim, generator=g, dtype=f64) + 0.2
                         if noise == "diagonal" else 0.3)
    return fa


def _mfa(seed=0):
    """Two well-separated components, D=2, L=1."""
    mfa = MixtureOfFactorAnalyzers(2, 2, 1).to(f64)
    mfa.weights = torch.tensor([0.3, 0.7], dtype=f64)
    mfa.components = torch.tensor([[[1.0, 0.5]], [[-0.3, 1.2]]], dtype=f64)
    mfa.means = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=f64)
    mfa.noise_variance = torch.tensor([0.2, 0.4], dtype=f64)
    return mfa


def _monotone(ll, rel=1e-9):
    ll = np.asarray(ll)
    return np.all(np.diff(ll) >= -rel * abs(ll[-1]))


# ---------------------------------------------------------------- factor analysis: exact maths
@pytest.mark.parametrize("noise", ["diagonal", "isotropic"])
def test_log_prob_is_the_marginal_gaussian(noise):
    fa = _fa(noise)
    x, _ = fa.sample(20, seed=0)
    expected = TorchMVN(fa.mean, fa.covariance).log_prob(x)
    assert torch.allclose(fa.log_prob(x), expected, atol=1e-10, rtol=0)
    assert fa.noise_variance.shape == (4,)
    if noise == "isotropic":
        assert torch.all(fa.noise_variance == 0.3)


def test_posterior_equals_joint_gaussian_conditioning():
    fa = _fa(seed=2)
    x, _ = fa.sample(5, seed=1)
    w, mu, psi = fa.components, fa.mean, torch.diag(fa.noise_variance)
    # brute force: condition the joint Gaussian of (z, x) on x
    cov_zx, cov_xx = w, w.T @ w + psi
    loc = (cov_zx @ torch.linalg.solve(cov_xx, (x - mu).T)).T
    cov = torch.eye(2, dtype=f64) - cov_zx @ torch.linalg.solve(cov_xx, cov_zx.T)
    post = fa.posterior(x)
    assert torch.allclose(post.loc, loc, atol=1e-12)
    assert torch.allclose(post.covariance[0], cov, atol=1e-12)
    assert torch.allclose(post.latent_covariance(), cov.expand(5, 2, 2), atol=1e-12)
    # the closed form of the class docstring
    m = torch.eye(2, dtype=f64) + w @ torch.linalg.solve(psi, w.T)
    closed = torch.linalg.solve(m, w @ torch.linalg.solve(psi, (x - mu).T)).T
    assert torch.allclose(post.loc, closed, atol=1e-12)
    assert torch.allclose(fa.transform(x), loc, atol=1e-12)
    tril = post.scale_tril[0]
    assert torch.allclose(tril @ tril.T, cov, atol=1e-12)
    assert math.isclose(float(post.log_evidence), float(fa.log_prob(x).sum()), rel_tol=1e-13)


@pytest.mark.parametrize("make", [_fa, _mfa])
def test_e_step_makes_every_elbo_sample_equal_log_evidence(make):
    model = make()
    x = model.sample(30, seed=3)[0]
    result = posterior_elbo_samples(model.model, model.guide, x, num_samples=8)
    # KL(q || p(z|x)) = 0: every single-sample ELBO is log p(X) (zero variance)
    assert np.allclose(result.samples.numpy(), result.log_evidence, atol=1e-9, rtol=0)
    assert math.isclose(result.log_evidence, float(model.log_prob(x).sum()), rel_tol=1e-12)
    fresh = make()  # its guide starts at the prior: not the posterior
    fresh.guide(x)
    elbo = fresh._svi_elbo()  # the ELBO that SVI optimises (enumerating k for the mixture)
    assert -elbo.loss(fresh.model, fresh.guide, x) < result.log_evidence - 1


# ---------------------------------------------------------------- factor analysis: fitting
def test_fit_reaches_scikit_learn_optimum():
    from sklearn.decomposition import FactorAnalysis as SkFA

    x = _fa_data()
    sk = SkFA(n_components=2, tol=1e-14, max_iter=10000, svd_method="lapack").fit(x.numpy())
    sk_ll = sk.score(x.numpy()) * x.shape[0]
    fa = FactorAnalysis(6, 2, reg_covar=0.0)
    hist = fa.fit(x, max_iter=2000, tol=1e-12)
    assert hist.converged and _monotone(hist.log_likelihood)
    ll = float(fa.log_prob(x).sum())
    assert abs(ll - sk_ll) / abs(sk_ll) < 1e-6  # measured: ~2e-12
    assert ll >= sk_ll - 1e-6
    assert np.allclose(fa.covariance.numpy(), sk.get_covariance(), atol=1e-4)
    assert np.allclose(fa.noise_variance.numpy(), sk.noise_variance_, atol=1e-4)
    assert np.allclose(fa.mean.numpy(), sk.mean_, atol=1e-12)


def test_ppca_reaches_tipping_bishop_closed_form_from_a_random_start():
    x = _fa_data(n=300, seed=4)
    # Tipping and Bishop: W^T = U_L (Lambda_L - sigma^2 I)^(1/2), sigma^2 the mean of the
    # discarded eigenvalues of the sample covariance (divided by N)
    values, vectors = np.linalg.eigh(np.cov(x.numpy().T, bias=True))
    sigma2 = values[:4].mean()
    w = torch.as_tensor(vectors[:, 4:] * np.sqrt(values[4:] - sigma2)).T
    cov = w.T @ w + sigma2 * torch.eye(6, dtype=f64)
    closed_ll = float(TorchMVN(x.mean(0), cov).log_prob(x).sum())
    ppca = PPCA(6, 2, reg_covar=0.0)
    hist = ppca.fit(x, init="random", seed=0, max_iter=400, tol=0)
    assert _monotone(hist.log_likelihood)
    ll = float(ppca.log_prob(x).sum())
    assert abs(ll - closed_ll) / abs(closed_ll) < 1e-6  # measured: ~1e-15
    wwt = ppca.components.T @ ppca.components
    assert torch.allclose(wwt, w.T @ w, atol=1e-6, rtol=0)  # measured: ~7e-10
    assert math.isclose(float(ppca.noise_variance[0]), float(sigma2), rel_tol=1e-6)
    # init="pca" is that closed form already: EM does not move
    start = PPCA(6, 2, reg_covar=0.0).initialize(x)
    assert math.isclose(float(start.log_prob(x).sum()), closed_ll, rel_tol=1e-12)
    assert ppca.config() == {"dim": 6, "latent_dim": 2, "reg_covar": 0.0}


def test_em_is_monotone_and_a_fixed_point_is_stationary():
    x = _fa_data(seed=5)
    fa = FactorAnalysis(6, 3, reg_covar=0.0)
    hist = fa.fit(x, init="random", seed=1, max_iter=60, tol=0)
    assert _monotone(hist.log_likelihood, rel=1e-12)
    assert hist.log_likelihood[-1] > hist.log_likelihood[0]
    assert EM(fa.model, fa.guide).plan.m_step == "closed form of FactorAnalysis"


def test_float32_runs_and_agrees_with_float64():
    x = _fa_data(seed=6)
    f32 = FactorAnalysis(6, 2)
    f32.fit(x.float(), max_iter=50, tol=0)
    f64_ = FactorAnalysis(6, 2)
    f64_.fit(x, max_iter=50, tol=0)
    assert f32.dtype == torch.float32 and f32.log_prob(x.float()).dtype == torch.float32
    assert math.isclose(f32.history.log_likelihood[-1], f64_.history.log_likelihood[-1],
                        rel_tol=1e-5)
    assert torch.allclose(f32.covariance.double(), f64_.covariance, atol=1e-4)
    mfa = MixtureOfFactorAnalyzers(2, 6, 2)
    mfa.fit(x.float(), max_iter=10, tol=0, seed=0)
    assert mfa.dtype == torch.float32 and all(map(math.isfinite, mfa.history.log_likelihood))


def test_state_dict_and_checkpoint_round_trip(tmp_path):
    x = _fa_data(n=50, seed=7)
    for model in (FactorAnalysis(6, 2), PPCA(6, 2, reg_covar=1e-4),
                  MixtureOfFactorAnalyzers(2, 6, 2)):
        model.fit(x, max_iter=3, tol=0, seed=0)
        state = model.state_dict()
        other = type(model).from_state_dict(state)
        assert other.config() == model.config()
        assert torch.equal(other.log_prob(x), model.log_prob(x))
        assert torch.equal(other.q_loc, model.q_loc)  # the guide's data-sized q too
        fresh = type(model)(**model.config())
        fresh.load_state_dict(state)
        assert torch.equal(fresh.components, model.components)
        for suffix in (".pt", ".npz"):  # checkpoints: configuration and model parameters
            path = tmp_path / f"{type(model).__name__}{suffix}"
            model.save(path)
            assert torch.equal(pyroem.load(path).log_prob(x), model.log_prob(x))
    with pytest.raises(ValueError):
        FactorAnalysis(6, 2).load_state_dict(PPCA(6, 2).state_dict())


def test_svi_trains_the_same_model_and_guide():
    x = _fa_data(n=60, seed=8)
    for model, start in ((FactorAnalysis(6, 2), FactorAnalysis(6, 2)),
                         (MixtureOfFactorAnalyzers(2, 6, 2), MixtureOfFactorAnalyzers(2, 6, 2))):
        start.initialize(x, seed=0)
        hist = model.fit(x, method="svi", max_iter=5, tol=0, lr=0.05, seed=0)
        assert all(map(math.isfinite, hist.log_likelihood))
        assert not torch.allclose(model.components, start.components)  # SVI moved them
        # SVI started from the exact posterior: the first objective is EM's start
        assert math.isclose(hist.log_likelihood[0], float(start.log_prob(x).sum()), rel_tol=1e-12)
    assert model.q_loc.shape == (60, 2, 2) and model.q_probs.shape == (60, 2)


def test_sample_uses_a_generator_and_leaves_the_global_rng_alone():
    fa = _fa()
    torch.manual_seed(0)
    a = fa.sample(4000, seed=1)
    after = torch.rand(1)
    torch.manual_seed(0)
    b = fa.sample(4000, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(torch.rand(1), after)
    emp = torch.cov(a[0].T, correction=0)
    assert torch.allclose(emp, fa.covariance, atol=0.15)
    assert a[1].shape == (4000, 2)


def test_bic_and_aic():
    x = _fa_data(n=100, seed=9)
    fa = FactorAnalysis(6, 2)
    fa.fit(x, max_iter=5, tol=0)
    ll = float(fa.log_prob(x).sum())
    assert fa.num_parameters == 6 * 2 - 1 + 6 + 6 and PPCA(6, 2).num_parameters == 6 * 2 - 1 + 6 + 1
    assert math.isclose(fa.bic(x), -2 * ll + fa.num_parameters * math.log(100))
    assert math.isclose(fa.aic(x), -2 * ll + 2 * fa.num_parameters)
    assert MixtureOfFactorAnalyzers(3, 6, 2).num_parameters == 3 * (11 + 6) + 6 + 2


def test_bad_inputs_raise_value_error_and_leave_the_model_untouched():
    fa = _fa()
    x, _ = fa.sample(10, seed=0)
    before = fa.state_dict()
    bad = x.clone()
    bad[2, 1] = float("nan")
    for data in (bad, x[:, :3], x[:1], x.reshape(-1)):
        with pytest.raises(ValueError):
            fa.fit(data, init="given")
    with pytest.raises(ValueError, match="viterbi"):
        fa.fit(x, method="viterbi")
    with pytest.raises(ValueError, match="init"):
        fa.fit(x, init="kmeans++")
    with pytest.raises(ValueError, match="continuous"):
        EM(fa.model, fa.guide, hard=True).step(x)
    for name, value in (("components", torch.ones(3, 4)), ("mean", torch.ones(3)),
                        ("noise_variance", -torch.ones(4)),
                        ("components", torch.full((2, 4), float("inf")))):
        with pytest.raises(ValueError):
            setattr(fa, name, value)
    with pytest.raises(ValueError, match="isotropic"):
        _fa("isotropic").noise_variance = torch.tensor([1.0, 2.0, 1.0, 1.0])
    # data on a subspace with no noise floor: the noise would be singular
    flat = torch.cat([x[:, :2], x[:, :2] @ torch.ones(2, 2, dtype=f64)], -1)
    with pytest.raises(ValueError, match="reg_covar"):
        FactorAnalysis(4, 2, reg_covar=0.0).fit(flat)
    for state_value, (k, v) in zip(before.values(), fa.state_dict().items()):
        assert k == "_extra_state" or torch.equal(state_value, v)
    for args in ((4, 4), (4, 5), (4, 0), (0, 1)):
        with pytest.raises(ValueError, match="latent_dim|dim"):
            FactorAnalysis(*args)
    with pytest.raises(ValueError):
        FactorAnalysis(4, 2, noise="full")
    with pytest.raises(ValueError):
        FactorAnalysis(4, 2, reg_covar=-1.0)
    with pytest.raises(ValueError):
        MixtureOfFactorAnalyzers(2, 3, 3)
    with pytest.raises(ValueError, match="num_components"):
        MixtureOfFactorAnalyzers(5, 4, 2).fit(x[:4])
    with pytest.raises(ValueError, match="weights"):
        MixtureOfFactorAnalyzers(2, 4, 2).weights = torch.tensor([0.5, 0.6])


# ---------------------------------------------------------------- mixture of factor analysers
def _brute_force(mfa, x, grid):
    """p(x_n, k) and E[z | x_n, k] p(x_n, k) by integrating the scalar latent on a grid."""
    joint, first = [], []
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(grid)
    for k in range(mfa.num_components):
        loc = grid[:, None, None] * mfa.components[k, 0] + mfa.means[k]  # (G, 1, D)
        lik = torch.distributions.Normal(loc, mfa.noise_variance.sqrt()).log_prob(x).sum(-1)
        dens = (lik + prior[:, None]).exp() * mfa.weights[k]  # (G, N)
        joint.append(torch.trapezoid(dens, grid, dim=0))
        first.append(torch.trapezoid(dens * grid[:, None], grid, dim=0))
    return torch.stack(joint, -1), torch.stack(first, -1)


def test_mixture_log_prob_and_posterior_against_numerical_integration():
    mfa = _mfa()
    x, _, _ = mfa.sample(9, seed=0)
    joint, first = _brute_force(mfa, x, torch.linspace(-12, 12, 48001, dtype=f64))
    assert torch.allclose(mfa.log_prob(x), joint.sum(-1).log(), atol=1e-10, rtol=0)
    post = mfa.posterior(x)
    assert torch.allclose(post.responsibilities, joint / joint.sum(-1, keepdim=True), atol=1e-10)
    assert torch.allclose(post.loc[..., 0], first / joint, atol=1e-8)
    # and each component's covariance is the factor-analysis closed form
    for k in range(2):
        w = mfa.components[k]
        c = torch.linalg.inv(torch.eye(1, dtype=f64) + w @ (w.T / mfa.noise_variance[:, None]))
        assert torch.allclose(post.conditional(k).covariance[0], c, atol=1e-12)
    assert torch.equal(mfa.predict(x), post.responsibilities.argmax(-1))
    expected = (post.responsibilities.unsqueeze(-1) * post.loc).sum(1)  # E[z_n | x_n]
    assert torch.allclose(mfa.transform(x), expected, atol=1e-12)


def test_mixture_with_latent_dim_dim_minus_one_matches_a_full_covariance_gmm():
    # data from a mixture of factor analysers with L = D - 1 and small noise: its
    # covariances have D - 1 free directions plus a little noise, and the fitted mixture
    # reaches the optimum of the full-covariance Gaussian mixture (a superset family)
    truth = MixtureOfFactorAnalyzers(2, 3, 2).to(f64)
    g = torch.Generator().manual_seed(0)
    truth.components = torch.randn(2, 2, 3, generator=g, dtype=f64)
    truth.means = torch.tensor([[0.0, 0, 0], [6, -4, 3]], dtype=f64)
    truth.noise_variance = torch.full((3,), 0.01, dtype=f64)
    x, _, _ = truth.sample(500, seed=3)
    gmm = GaussianMixture(2, 3, "full", reg_covar=0.0)
    gmm.fit(x, max_iter=200, tol=1e-12, seed=0)
    mfa = MixtureOfFactorAnalyzers(2, 3, 2, reg_covar=0.0)
    hist = mfa.fit(x, max_iter=1000, tol=1e-12, seed=0)
    assert _monotone(hist.log_likelihood)
    gmm_ll, mfa_ll = float(gmm.log_prob(x).sum()), float(mfa.log_prob(x).sum())
    assert mfa_ll <= gmm_ll + 1e-8
    assert (gmm_ll - mfa_ll) / abs(gmm_ll) < 1e-8  # measured: ~7e-11
    order = torch.cdist(mfa.means, gmm.means).argmin(-1)
    assert torch.allclose(mfa.covariances, gmm.covariances[order], atol=1e-2)
    assert torch.allclose(mfa.weights, gmm.weights[order], atol=1e-6)


def test_mixture_em_is_monotone_from_both_inits():
    truth = MixtureOfFactorAnalyzers(3, 4, 2).to(f64)
    g = torch.Generator().manual_seed(1)
    truth.components = torch.randn(3, 2, 4, generator=g, dtype=f64)
    truth.means = torch.randn(3, 4, generator=g, dtype=f64) * 4
    truth.noise_variance = torch.rand(4, generator=g, dtype=f64) * 0.3 + 0.1
    x, _, _ = truth.sample(400, seed=2)
    for init in ("kmeans++", "random"):
        mfa = MixtureOfFactorAnalyzers(3, 4, 2, reg_covar=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hist = mfa.fit(x, init=init, seed=0, max_iter=80, tol=0)
        assert _monotone(hist.log_likelihood, rel=1e-12)
        assert hist.log_likelihood[-1] > hist.log_likelihood[0]
    assert mfa.covariances.shape == (3, 4, 4) and mfa.weights.shape == (3,)
