"""The numerical M-step fallback (generalised EM) and the other closed forms
(Exponential and Gamma rates, precision-parametrised MVN, Normal prior on means)."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import init_params, param
from torch.distributions import constraints

from pyroem.infer import EM, NumericalMStep, exact_posterior, expected_log_joint, fit_em

X = torch.tensor([0.0, 3.0, 1.0, 7.0, 9.0, 2.0], dtype=torch.float64)
POS = torch.tensor([0.2, 1.5, 0.4, 3.0, 5.0, 0.9], dtype=torch.float64)


def log_rate_model(x):
    """Poisson mixture parametrised by log-rates: exp() is not a selection, so no
    closed form is recognised for ``log_rates``."""
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    log_rates = pyro.param("log_rates", torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(log_rates.exp()[z]), obs=x)


def test_numerical_fallback_reaches_the_closed_form_optimum():
    init_params(log_rate_model, X)
    em = EM(log_rate_model)
    post = exact_posterior(log_rate_model, X)
    resp = post["x"].T
    em.m_step(post, X)
    assert em.m_step.strategies == {"log_rates": "numerical", "weights": "closed-form:Categorical"}
    expected = ((resp * X[:, None]).sum(0) / resp.sum(0)).log()
    assert torch.allclose(param("log_rates"), expected, atol=1e-6)
    hist = fit_em(log_rate_model, X, max_iter=4, tol=0)
    ll = torch.tensor(hist.log_likelihood)
    assert (ll[1:] - ll[:-1] >= -1e-10).all()
    assert hist.records["strategies"][0]["log_rates"] == "numerical"


def test_numerical_step_is_rejected_when_q_would_fall():
    init_params(log_rate_model, X)
    post = exact_posterior(log_rate_model, X)
    step = NumericalMStep(log_rate_model, max_plate_nesting=1, max_iter=20)
    step(post, ["log_rates"], X)  # to the optimum of Q
    best = param("log_rates")
    q_best = expected_log_joint(log_rate_model, post, (X,), {}, 1)
    # A second step from the optimum cannot improve Q: accepted only with no decrease.
    step(post, ["log_rates"], X)
    q_after = expected_log_joint(log_rate_model, post, (X,), {}, 1)
    assert q_after >= q_best - 1e-12
    assert torch.allclose(param("log_rates"), best, atol=1e-6)


def rate_model(x, family, prior=None):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([0.5, 2.0], dtype=torch.float64),
                       constraint=constraints.positive)
    if prior is not None:
        pyro.sample("prior", dist.Gamma(*prior).expand([2]).to_event(1), obs=rates)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        if family == "Exponential":
            pyro.sample("x", dist.Exponential(rates[z]), obs=x)
        else:
            pyro.sample("x", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), rates[z]), obs=x)


@pytest.mark.parametrize("family, shape", [("Exponential", 1.0), ("Gamma", 2.0)])
@pytest.mark.parametrize("prior", [None, (3.0, 2.0)])
def test_rate_closed_forms(family, shape, prior):
    init_params(rate_model, POS, family, prior)
    post = exact_posterior(rate_model, POS, family, prior)
    resp = post["x"].T
    em = EM(rate_model)
    em.m_step(post, POS, family, prior)
    num, den = shape * resp.sum(0), (resp * POS[:, None]).sum(0)
    if prior is not None:
        num, den = num + prior[0] - 1, den + prior[1]
    assert torch.allclose(param("rates"), num / den, atol=1e-12)
    assert em.m_step.strategies["rates"].startswith(f"closed-form:{family}")


def mvn_precision_model(x, prior_scale=None):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([[-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    prec = pyro.param("prec", torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone(),
                      constraint=constraints.positive_definite)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.MultivariateNormal(locs[z], precision_matrix=prec[z]), obs=x)


def test_mvn_precision_parametrisation():
    x = torch.tensor([[-1.0, 0.5], [-2.0, -0.3], [1.2, 1.0], [0.8, 2.0], [1.5, 0.2],
                      [-0.5, -1.0]], dtype=torch.float64)
    init_params(mvn_precision_model, x)
    post = exact_posterior(mvn_precision_model, x)
    resp = post["x"].T
    em = EM(mvn_precision_model)
    em.m_step(post, x)
    nk = resp.sum(0)
    locs = resp.T @ x / nk[:, None]
    diff = x[:, None] - locs  # (N, K, D)
    cov = torch.einsum("nk,nki,nkj->kij", resp, diff, diff) / nk[:, None, None]
    assert torch.allclose(param("locs"), locs, atol=1e-12)
    assert torch.allclose(param("prec"), torch.linalg.inv(cov), atol=1e-10)


def normal_prior_model(x):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    pyro.sample("locs_prior", dist.Normal(0.0, 2.0).expand([2]).to_event(1), obs=locs)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 0.5), obs=x)


def test_normal_prior_on_means_gives_map():
    init_params(normal_prior_model, X)
    post = exact_posterior(normal_prior_model, X)
    resp = post["x"].T
    em = EM(normal_prior_model)
    em.m_step(post, X)
    expected = ((resp * X[:, None]).sum(0) / 0.25) / (resp.sum(0) / 0.25 + 1 / 4.0)
    assert torch.allclose(param("locs"), expected, atol=1e-12)
    assert em.m_step.strategies["locs"] == "closed-form:Normal+Normal(MAP)"


def constrained_locs_model(x):
    """Means constrained positive: the unconstrained MLE (a negative mean) violates the
    constraint, so the parameter falls back to the numerical M-step."""
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([0.5, 3.0], dtype=torch.float64),
                      constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_constraint_violating_closed_form_falls_back_to_numerical():
    x = torch.tensor([-3.0, -2.5, 4.0, 5.0], dtype=torch.float64)
    hist = fit_em(constrained_locs_model, x, max_iter=3, tol=0)
    assert hist.records["strategies"][0]["locs"] == "numerical"
    assert (param("locs") > 0).all()
    ll = torch.tensor(hist.log_likelihood)
    assert (ll[1:] - ll[:-1] >= -1e-10).all()
