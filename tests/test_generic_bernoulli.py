"""A mixture of Bernoulli vectors (binarised digits from scikit-learn's bundled data)
written by the user: brute force on tiny data, hand-written EM steps, Dirichlet/Beta MAP."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force, init_params, marginal, one_hot, param
from sklearn.datasets import load_digits
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior


def digits(n=40):
    x = torch.as_tensor(load_digits().data[:n], dtype=torch.float64)
    return (x > 7).to(torch.float64)  # (n, 64) binary images


def make_model(k, d, alpha=None, beta=None):
    gen = torch.Generator().manual_seed(0)
    init_probs = 0.25 + 0.5 * torch.rand(k, d, generator=gen, dtype=torch.float64)

    def model(x):
        weights = pyro.param("weights", torch.full((k,), 1.0 / k, dtype=torch.float64),
                             constraint=constraints.simplex)
        probs = pyro.param("probs", init_probs, constraint=constraints.unit_interval)
        if alpha is not None:  # conjugate priors written as factors on the parameters
            pyro.sample("weights_prior", dist.Dirichlet(alpha), obs=weights)
        if beta is not None:
            pyro.sample("probs_prior", dist.Beta(*beta).expand([k, d]).to_event(2), obs=probs)
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("x", dist.Bernoulli(probs[z]).to_event(1), obs=x)
    return model


def hand_em_step(x, weights, probs, alpha=None, beta=None):
    """One closed-form EM step written out by hand (independent of pyroem)."""
    log_px = (x[:, None, :] * probs.log() + (1 - x[:, None, :]) * (1 - probs).log()).sum(-1)
    log_joint = weights.log() + log_px
    resp = log_joint.softmax(-1)
    nk = resp.sum(0)
    counts = resp.T @ x
    if alpha is None:
        new_w = nk / nk.sum()
    else:
        new_w = (nk + alpha - 1) / (nk + alpha - 1).sum()
    if beta is None:
        new_p = counts / nk[:, None]
    else:
        a, b = beta
        new_p = (counts + a - 1) / (nk[:, None] + a + b - 2)
    return log_joint.logsumexp(-1).sum(), new_w, new_p


def test_estep_matches_brute_force_tiny():
    x = digits(3)[:, 26:30]  # 3 images, 4 pixels
    model = make_model(2, 4)
    post = exact_posterior(model, x)
    log_ev, configs, log_post = brute_force(model, (x,), {"z": ((3,), 2)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    resp = marginal(configs, log_post, lambda c: one_hot(c["z"], 2))
    assert torch.allclose(post["x"].T, resp, atol=1e-10)


def test_em_matches_hand_written_on_digits():
    x = digits(40)
    model = make_model(3, 64)
    init_params(model, x)
    weights, probs = param("weights"), param("probs")
    em = EM(model)
    for _ in range(3):
        ll, weights, probs = hand_em_step(x, weights, probs)
        assert em.step(x) == pytest.approx(-ll.item(), rel=1e-12)
        # pixels that are never on in a cluster: the M-step keeps probs in [eps, 1 - eps]
        eps = torch.finfo(torch.float64).eps
        probs = probs.clamp(eps, 1 - eps)
        assert torch.allclose(param("weights"), weights, atol=1e-12)
        assert torch.allclose(param("probs"), probs, atol=1e-12)
    assert em.m_step.strategies == {"probs": "closed-form:Bernoulli",
                                    "weights": "closed-form:Categorical"}


def test_dirichlet_and_beta_priors_give_map():
    x = digits(20)
    alpha = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)
    beta = (torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    model = make_model(3, 64, alpha, beta)
    init_params(model, x)
    weights, probs = param("weights"), param("probs")
    em = EM(model)
    ll, new_w, new_p = hand_em_step(x, weights, probs, alpha, beta)
    log_prior = dist.Dirichlet(alpha).log_prob(weights) + dist.Beta(*beta).log_prob(probs).sum()
    assert em.step(x) == pytest.approx(-(ll + log_prior).item(), rel=1e-12)
    assert torch.allclose(param("weights"), new_w, atol=1e-12)
    assert torch.allclose(param("probs"), new_p, atol=1e-12)
    assert em.m_step.strategies == {"probs": "closed-form:Bernoulli+Beta(MAP)",
                                    "weights": "closed-form:Categorical+Dirichlet(MAP)"}
