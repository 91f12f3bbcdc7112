"""A mixture of Poissons written by the user: exact E-step against brute force, automatic
closed-form M-step against a hand-written EM step, MAP with a Gamma prior."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force, init_params, marginal, one_hot, param
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior, fit_em

X = torch.tensor([0.0, 3.0, 1.0, 7.0, 9.0], dtype=torch.float64)
K = 2


def model(x, prior=None):
    weights = pyro.param("weights", torch.tensor([0.4, 0.6], dtype=torch.float64),
                         constraint=constraints.simplex)
    rates = pyro.param("rates", torch.tensor([1.0, 5.0], dtype=torch.float64),
                       constraint=constraints.positive)
    if prior is not None:
        a, b = prior
        pyro.sample("rate_prior", dist.Gamma(a, b).to_event(1), obs=rates)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


def hand_estep(x, weights, rates):
    log_joint = weights.log() + dist.Poisson(rates).log_prob(x[:, None])  # (N, K)
    return log_joint.logsumexp(-1).sum(), log_joint.softmax(-1)


def test_estep_matches_brute_force():
    post = exact_posterior(model, X)
    log_ev, configs, log_post = brute_force(model, (X,), {"z": ((5,), K)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    resp = marginal(configs, log_post, lambda c: one_hot(c["z"], K))  # (N, K)
    assert torch.allclose(post["x"].T, resp, atol=1e-10)
    assert torch.allclose(post["z"].T, resp, atol=1e-10)


def test_mstep_matches_hand_written_em():
    init_params(model, X)
    weights, rates = param("weights"), param("rates")
    em = EM(model)
    for _ in range(3):
        ll, resp = hand_estep(X, weights, rates)
        loss = em.step(X)
        assert loss == pytest.approx(-ll.item(), abs=1e-10)
        nk = resp.sum(0)
        weights, rates = nk / nk.sum(), (resp * X[:, None]).sum(0) / nk
        assert torch.allclose(param("weights"), weights, atol=1e-12)
        assert torch.allclose(param("rates"), rates, atol=1e-12)
    assert em.m_step.strategies == {"rates": "closed-form:Poisson",
                                    "weights": "closed-form:Categorical"}


def test_gamma_prior_gives_map():
    a = torch.tensor([2.0, 3.0], dtype=torch.float64)
    b = torch.tensor([1.0, 0.5], dtype=torch.float64)
    init_params(model, X, (a, b))
    weights, rates = param("weights"), param("rates")
    em = EM(model)
    ll, resp = hand_estep(X, weights, rates)
    prior = dist.Gamma(a, b).log_prob(rates).sum()
    assert em.step(X, (a, b)) == pytest.approx(-(ll + prior).item(), abs=1e-10)
    nk = resp.sum(0)
    expected = ((resp * X[:, None]).sum(0) + a - 1) / (nk + b)
    assert torch.allclose(param("rates"), expected, atol=1e-12)
    assert em.m_step.strategies["rates"] == "closed-form:Poisson+Gamma(MAP)"


def test_fit_em_monotone_and_records_strategies():
    hist = fit_em(model, X, max_iter=30, tol=0)
    ll = torch.tensor(hist.log_likelihood)
    assert (ll[1:] - ll[:-1] >= -1e-10).all()
    assert hist.records["strategies"][-1]["rates"] == "closed-form:Poisson"
    assert hist.final_log_likelihood >= ll[-1] - 1e-10
