"""An HMM written by the user with pyro.markov on short sequences: unary and pairwise
posterior marginals against brute force, the automatic M-step against Baum-Welch written
by hand."""

import functools

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force, marginal, one_hot, param
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior, fit_em

K, M = 2, 3
X = torch.tensor([[0, 2, 1], [1, 1, 2]])  # 2 sequences of length 3, symbols in 0..2
B, T = X.shape


def hmm(x):
    gen = torch.Generator().manual_seed(1)
    start = pyro.param("start", torch.tensor([0.6, 0.4], dtype=torch.float64),
                       constraint=constraints.simplex)
    trans = pyro.param("trans", torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float64),
                       constraint=constraints.simplex)
    emit = pyro.param("emit", torch.rand(K, M, generator=gen, dtype=torch.float64).softmax(-1),
                      constraint=constraints.simplex)
    with pyro.plate("sequences", x.shape[0]):
        z = pyro.sample("z_0", dist.Categorical(start))
        pyro.sample("x_0", dist.Categorical(emit[z]), obs=x[:, 0])
        for t in pyro.markov(range(1, x.shape[1])):
            z = pyro.sample(f"z_{t}", dist.Categorical(trans[z]))
            pyro.sample(f"x_{t}", dist.Categorical(emit[z]), obs=x[:, t])


def arrange(post, site, latents):
    """The marginal of ``site`` with the enumeration dims of ``latents`` first, in order,
    then the batch (sequence) dim."""
    m = post[site]
    dims = [post.trace.nodes[n]["infer"]["_enumerate_dim"] for n in latents]
    order = [m.dim() + d for d in dims]
    rest = [i for i in range(m.dim()) if i not in order]
    m = m.permute(order + rest)
    return m.reshape(m.shape[:len(order)] + (-1,))


@functools.lru_cache(maxsize=1)
def brute():
    """Brute force under the initial parameters (the same in every test)."""
    pyro.clear_param_store()
    latents = {f"z_{t}": ((B,), K) for t in range(T)}
    return brute_force(hmm, (X,), latents)


def test_unary_and_pairwise_marginals_match_brute_force():
    log_ev, configs, log_post = brute()
    post = exact_posterior(hmm, X)
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    for t in range(T):
        gamma = marginal(configs, log_post, lambda c: one_hot(c[f"z_{t}"], K).T)  # (K, B)
        assert torch.allclose(arrange(post, f"x_{t}", [f"z_{t}"]), gamma, atol=1e-10)
    for t in range(1, T):
        xi = marginal(configs, log_post, lambda c: (
            one_hot(c[f"z_{t - 1}"], K).T[:, None] * one_hot(c[f"z_{t}"], K).T[None]))
        got = arrange(post, f"z_{t}", [f"z_{t - 1}", f"z_{t}"])  # (K, K, B)
        assert torch.allclose(got, xi, atol=1e-10)


def test_mstep_is_baum_welch():
    log_ev, configs, log_post = brute()
    gammas = [marginal(configs, log_post, lambda c: one_hot(c[f"z_{t}"], K)) for t in range(T)]
    xis = [marginal(configs, log_post, lambda c: (
        one_hot(c[f"z_{t - 1}"], K)[:, :, None] * one_hot(c[f"z_{t}"], K)[:, None]))
        for t in range(1, T)]
    start = gammas[0].sum(0) / B
    trans = sum(xi.sum(0) for xi in xis)
    trans = trans / trans.sum(-1, keepdim=True)
    emit = sum(g.T @ one_hot(X[:, t], M) for t, g in enumerate(gammas))
    emit = emit / emit.sum(-1, keepdim=True)
    em = EM(hmm)
    assert em.step(X) == pytest.approx(-log_ev.item(), abs=1e-10)
    assert torch.allclose(param("start"), start, atol=1e-12)
    assert torch.allclose(param("trans"), trans, atol=1e-12)
    assert torch.allclose(param("emit"), emit, atol=1e-12)
    assert set(em.m_step.strategies.values()) == {"closed-form:Categorical"}


def test_baum_welch_monotone():
    hist = fit_em(hmm, X, max_iter=8, tol=0)
    ll = torch.tensor(hist.log_likelihood)
    assert (ll[1:] - ll[:-1] >= -1e-10).all()
