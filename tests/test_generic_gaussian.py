"""The generic Gaussian E-step: a user's linear-Gaussian Pyro model (continuous latents)
gets its exact posterior and a monotone EM automatically; checked against closed forms
(a random-intercept model, a factor model written by hand)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN
from torch.distributions import constraints

from pyroem.infer import EM, GaussianPosterior, fit_em
from pyroem.infer.gaussian import (
    JointGaussianPosterior,
    NotLinearGaussianError,
    expected_log_joint_gaussian,
    gaussian_posterior,
)
from pyroem.models import FactorAnalysis

F64 = torch.float64


# ---------------------------------------------------------------- a random-intercept model
def random_intercept(y, group):
    """y_i ~ N(mu + u[group_i], sigma^2), u_j ~ N(0, tau^2)."""
    mu = pyro.param("mu", torch.tensor(0.0, dtype=y.dtype))
    tau = pyro.param("tau", torch.tensor(1.0, dtype=y.dtype), constraint=constraints.positive)
    sigma = pyro.param("sigma", torch.tensor(1.0, dtype=y.dtype),
                       constraint=constraints.positive)
    with pyro.plate("groups", int(group.max()) + 1):
        u = pyro.sample("u", dist.Normal(0.0, tau))
    with pyro.plate("obs", y.shape[0]):
        pyro.sample("y", dist.Normal(mu + u[group], sigma), obs=y)


def _grouped(counts, tau=0.6, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    group = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    u = tau * torch.randn(len(counts), generator=g, dtype=F64)
    y = 1.0 + u[group] + torch.randn(group.shape[0], generator=g, dtype=F64)
    return y.to(dtype), group


def test_random_intercept_posterior_and_evidence_are_the_closed_forms():
    y, group = _grouped([1, 3, 4, 2, 5])
    pyro.clear_param_store()
    random_intercept(y, group)  # creates the params; then set them
    mu, tau, sigma = 0.3, 1.4, 0.8
    store = pyro.get_param_store()
    store["mu"], store["tau"], store["sigma"] = (torch.tensor(v, dtype=F64)
                                                for v in (mu, tau, sigma))
    post = EM(random_intercept).e_step(y, group)
    assert isinstance(post, JointGaussianPosterior)
    n = torch.bincount(group).to(F64)
    sums = torch.zeros(5, dtype=F64).index_add_(0, group, y - mu)
    precision = n / sigma**2 + 1 / tau**2  # per group, independent
    assert torch.allclose(post["u"], sums / sigma**2 / precision, atol=1e-12)
    assert torch.allclose(post.variance("u"), 1 / precision, atol=1e-12)
    assert torch.allclose(post.covariance[0], torch.diag(1 / precision), atol=1e-12)
    onehot = torch.nn.functional.one_hot(group).to(F64)
    cov = sigma**2 * torch.eye(len(y), dtype=F64) + tau**2 * onehot @ onehot.T
    expected = TorchMVN(torch.full_like(y, mu), cov).log_prob(y)
    assert math.isclose(float(post.log_evidence), float(expected), rel_tol=1e-12)
    # KL = 0 after the E-step: Q + H = log p(X)
    q = expected_log_joint_gaussian(random_intercept, post, y, group)
    assert math.isclose(float(q.detach() + post.entropy()), float(expected), rel_tol=1e-12)


def _anova_mle(y, group):
    """The closed-form maximum-likelihood estimate of a balanced one-way random-effects
    model: mu the grand mean, sigma^2 = SSW / (J (n - 1)), tau^2 = (SSB / J - sigma^2) / n."""
    J = int(group.max()) + 1
    table = y.reshape(J, -1)
    n = table.shape[1]
    means = table.mean(1)
    ssw = (table - means[:, None]).square().sum()
    ssb = n * (means - y.mean()).square().sum()
    sigma2 = ssw / (J * (n - 1))
    return float(y.mean()), float((ssb / J - sigma2) / n) ** 0.5, float(sigma2) ** 0.5


def test_em_reaches_the_closed_form_mle_of_a_balanced_random_intercept_model():
    y, group = _grouped([4] * 30, seed=1)
    hist = fit_em(random_intercept, y, group, max_iter=60, tol=0)
    ll = np.array(hist.log_likelihood)
    assert (np.diff(ll) >= -1e-10 * abs(ll[-1])).all() and ll[-1] > ll[0] + 1
    store = pyro.get_param_store()
    fitted = [float(store[name].detach()) for name in ("mu", "tau", "sigma")]
    mle = _anova_mle(y, group)
    assert np.allclose(fitted, mle, atol=1e-5, rtol=0)  # 60 iterations: ~2e-6 away
    # the closed-form MLE is a fixed point: one more EM step does not move it
    store["mu"], store["tau"], store["sigma"] = (torch.tensor(v, dtype=F64) for v in mle)
    EM(random_intercept).step(y, group)
    stepped = [float(store[name].detach()) for name in ("mu", "tau", "sigma")]
    assert np.allclose(stepped, mle, atol=1e-9, rtol=0)
    em = EM(random_intercept)
    em.resolve(y, group)
    assert em.plan.e_step.startswith("linear-Gaussian")
    assert em.plan.params == {"mu": "numerical", "sigma": "numerical", "tau": "numerical"}


# ---------------------------------------------------------------- a factor model by hand
def hand_factor_model(x):
    """z_n ~ N(0, I_L), x_n ~ MVN(z_n W + mu, diag(psi)) with the noise as a scale_tril."""
    N, D, L = x.shape[0], x.shape[1], 2
    W = pyro.param("W", 0.5 * torch.ones(L, D, dtype=x.dtype) + 0.1 * torch.eye(L, D,
                                                                              dtype=x.dtype))
    mu = pyro.param("loc", torch.zeros(D, dtype=x.dtype))
    psi = pyro.param("psi", torch.ones(D, dtype=x.dtype), constraint=constraints.positive)
    with pyro.plate("data", N):
        z = pyro.sample("z", dist.Normal(torch.zeros(L, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("x", dist.MultivariateNormal(z @ W + mu, scale_tril=torch.diag(psi.sqrt())),
                    obs=x)


def _fa_data(n=25, seed=2):
    truth = FactorAnalysis(5, 2).to(F64)
    g = torch.Generator().manual_seed(seed)
    truth.components = torch.randn(2, 5, generator=g, dtype=F64)
    truth.mean = torch.randn(5, generator=g, dtype=F64)
    truth.noise_variance = 0.2 + torch.rand(5, generator=g, dtype=F64)
    return truth.sample(n, seed=seed)[0]


def test_hand_written_factor_model_matches_factor_analysis_closed_form():
    x = _fa_data()
    em = EM(hand_factor_model)
    post = em.e_step(x)
    store = pyro.get_param_store()
    fa = FactorAnalysis(5, 2).to(F64)
    fa.components, fa.mean = store["W"].detach(), store["loc"].detach()
    fa.noise_variance = store["psi"].detach()
    exact = fa.posterior(x)
    assert math.isclose(float(post.log_evidence), float(exact.log_evidence), rel_tol=1e-12)
    assert torch.allclose(post["z"], exact.loc, atol=1e-10)
    block = post.covariance[0][:2, :2]  # z_0's covariance; z_0 and z_1 independent
    assert torch.allclose(block, exact.covariance[0], atol=1e-12)
    assert post.covariance[0][:2, 2:4].abs().max() < 1e-12
    losses = [em.step(x) for _ in range(8)]
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0] - 1


def test_float32_runs():
    y, group = _grouped([3] * 10, seed=3, dtype=torch.float32)
    hist = fit_em(random_intercept, y, group, max_iter=5, tol=0)
    assert all(map(math.isfinite, hist.log_likelihood))
    assert pyro.get_param_store()["mu"].dtype == torch.float32


# ---------------------------------------------------------------- a model that brings its own
class RandomIntercept:
    """The random-intercept model with its own exact E-step (a GaussianPosterior) and
    closed-form M-step: the ~20 lines of tutorial 05's last section."""

    def __init__(self):
        self.mu, self.tau2, self.sigma2 = 0.0, 1.0, 1.0

    def model(self, y, group):
        with pyro.plate("groups", int(group.max()) + 1):
            u = pyro.sample("u", dist.Normal(0.0, self.tau2**0.5))
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(self.mu + u[group], self.sigma2**0.5), obs=y)

    def e_step(self, y, group, hard=False):
        n = torch.bincount(group).to(y.dtype)
        s = torch.zeros_like(n).index_add_(0, group, y - self.mu)   # sum_i (y_ji - mu)
        ss = ((y - self.mu) ** 2).sum()
        precision = n / self.sigma2 + 1 / self.tau2                  # of u_j | y_j
        # log N(y_j; mu 1, sigma2 I + tau2 1 1^T), by the determinant lemma and Woodbury
        log_det = n.sum() * math.log(self.sigma2) + torch.log1p(n * self.tau2 / self.sigma2).sum()
        quad = (ss - (self.tau2 * s**2 / (self.sigma2 + n * self.tau2)).sum()) / self.sigma2
        log_evidence = -0.5 * (quad + log_det + n.sum() * math.log(2 * math.pi))
        return GaussianPosterior(log_evidence, (s / self.sigma2 / precision)[:, None],
                                 (1 / precision)[:, None, None])

    def expected_statistics(self, post, y, group):
        m, v = post.loc[:, 0], post.covariance[:, 0, 0]
        r = y - m[group]                                             # y - E[u]
        return {"n": len(y), "u2": (m**2 + v).sum(), "r": r.sum(), "r2": (r**2).sum(),
                "v": (torch.bincount(group) * v).sum(), "groups": len(m)}

    def maximize(self, s):
        self.tau2 = float(s["u2"] / s["groups"])
        self.mu = float(s["r"] / s["n"])
        self.sigma2 = float((s["r2"] - s["n"] * self.mu**2 + s["v"]) / s["n"])


def test_a_model_that_supplies_its_own_gaussian_posterior():
    y, group = _grouped([4] * 30, seed=1)
    ri = RandomIntercept()
    ri.mu, ri.tau2, ri.sigma2 = 0.3, 1.9, 0.7
    pyro.clear_param_store()
    random_intercept(y, group)
    store = pyro.get_param_store()
    store["mu"], store["tau"], store["sigma"] = (torch.tensor(v, dtype=F64)
                                                for v in (0.3, 1.9**0.5, 0.7**0.5))
    generic = gaussian_posterior(random_intercept, y, group)
    own = EM(ri.model).e_step(y, group)
    assert math.isclose(float(own.log_evidence), float(generic.log_evidence), rel_tol=1e-12)
    assert torch.allclose(own.loc[:, 0], generic["u"], atol=1e-12)
    hist = fit_em(ri.model, y, group, max_iter=200, tol=0)
    ll = np.array(hist.log_likelihood)
    assert (np.diff(ll) >= -1e-10 * abs(ll[-1])).all()
    fitted = (ri.mu, ri.tau2**0.5, ri.sigma2**0.5)
    assert np.allclose(fitted, _anova_mle(y, group), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- what it refuses
def _latent_gamma(y):
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(rate, 1.0), obs=y)


def _poisson_child(y):
    u = pyro.sample("u", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Poisson(u.exp()), obs=y)


def _nonlinear(y):
    u = pyro.sample("u", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(u.exp(), 1.0), obs=y)


def _latent_scale(y):
    u = pyro.sample("u", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(0.0, torch.nn.functional.softplus(u)), obs=y)


@pytest.mark.parametrize("model, site, what", [
    (_latent_gamma, "rate", "latent Gamma"),
    (_poisson_child, "y", "observed Poisson"),
    (_nonlinear, "y", "not affine"),
    (_latent_scale, "y", "scale that depends on the latents"),
])
def test_a_model_that_is_not_linear_gaussian_is_named(model, site, what):
    y = torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    with pytest.raises(NotLinearGaussianError, match=f"sample site '{site}'.*{what}") as e:
        EM(model).step(y)
    assert e.value.site == site and "e_step" in str(e.value)


def test_bad_calls_change_nothing():
    y, group = _grouped([2, 3], seed=4)
    random_intercept(y, group)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    with pytest.raises(ValueError, match="no hard"):
        EM(random_intercept, hard=True).step(y, group)
    bad = y.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        EM(random_intercept).step(bad, group)
    after = dict(pyro.get_param_store().items())
    assert all(torch.equal(before[k], after[k].detach()) for k in before)


def test_a_hand_written_state_space_model_gets_the_kalman_smoothers_posterior():
    from pyroem.models import LinearGaussianSSM

    ssm = LinearGaussianSSM(2, 1).to(F64)
    ssm.transition_matrix = torch.tensor([[0.8, -0.4], [0.5, 0.7]], dtype=F64)
    ssm.observation_matrix = torch.tensor([[1.0, 0.3]], dtype=F64)
    ssm.transition_cov = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
    ssm.observation_cov = torch.tensor([[0.5]], dtype=F64)
    ssm.initial_mean = torch.tensor([1.0, -1.0], dtype=F64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 1, generator=g, dtype=F64).cumsum(0)
    A, C, Q, R, m0, P0 = (getattr(ssm, k).detach() for k in (
        "transition_matrix", "observation_matrix", "transition_cov", "observation_cov",
        "initial_mean", "initial_cov"))

    def lds(x):  # the same model, written as a plain Pyro program
        z = pyro.sample("z_0", dist.MultivariateNormal(m0, P0))
        for t in range(x.shape[0]):
            if t:
                z = pyro.sample(f"z_{t}", dist.MultivariateNormal(A @ z, Q))
            pyro.sample(f"x_{t}", dist.Normal(C @ z, R[0].sqrt()).to_event(1), obs=x[t])

    generic = gaussian_posterior(lds, x)
    kalman = ssm.posterior(x)
    assert math.isclose(float(generic.log_evidence), float(kalman.log_evidence), rel_tol=1e-12)
    path = torch.stack([generic[f"z_{t}"] for t in range(20)])
    assert torch.allclose(path, kalman.loc[0], atol=1e-11)
    marginal = generic.covariance[0][:2, :2]  # Cov(z_0 | x)
    assert torch.allclose(marginal, kalman.covariance[0, 0], atol=1e-11)


def test_missing_values_of_obs_mask_are_integrated_out():
    x = _fa_data(n=12, seed=6)
    g = torch.Generator().manual_seed(7)
    observed = torch.rand(x.shape, generator=g, dtype=F64) > 0.3
    observed[0] = False  # a point with every value missing contributes nothing
    data = torch.where(observed, x, torch.tensor(float("nan"), dtype=F64))
    W = torch.randn(2, 5, generator=g, dtype=F64)
    mu, psi = torch.randn(5, generator=g, dtype=F64), 0.3 + torch.rand(5, generator=g, dtype=F64)

    def masked_factor_model(x, mask):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
        with pyro.plate("points", x.shape[0], dim=-2), pyro.plate("dims", 5, dim=-1):
            pyro.sample("x", dist.Normal(z @ W + mu, psi.sqrt()), obs=x, obs_mask=mask)

    post = gaussian_posterior(masked_factor_model, data, observed)
    cov = W.T @ W + torch.diag(psi)
    expected = sum(float(TorchMVN(mu[o], cov[o][:, o]).log_prob(xn[o]))
                   for xn, o in zip(x, observed) if o.any())
    assert math.isclose(float(post.log_evidence), expected, rel_tol=1e-12)
    # the missing values are latents: their posterior mean is E[x_nd | observed x_n]
    n = 3
    o, m = observed[n], ~observed[n]
    imputed = mu[m] + cov[m][:, o] @ torch.linalg.solve(cov[o][:, o], x[n, o] - mu[o])
    assert torch.allclose(post["x_unobserved"][n, m], imputed, atol=1e-10)


def test_a_discrete_latent_is_named_by_the_gaussian_e_step():
    def mixed(y):
        k = pyro.sample("k", dist.Categorical(torch.ones(2) / 2))
        u = pyro.sample("u", dist.Normal(0.0, 1.0))
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(u + torch.tensor([0.0, 1.0])[k], 1.0), obs=y)

    y = torch.tensor([0.3, 1.2])
    with pytest.raises(NotLinearGaussianError, match="sample site 'k' is a latent Categorical"):
        gaussian_posterior(mixed, y)
    with pytest.raises(ValueError, match="cannot be enumerated"):  # EM: enumeration's error
        EM(mixed).step(y)
