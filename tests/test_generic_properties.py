"""Property tests over random user-written models and data: posterior marginals sum to
one, KL(q || p(Z|X)) = 0 after the E-step (brute force), log p(X) monotone under EM."""

import math

import pyro
import pyro.distributions as dist
import torch
from generic_brute import brute_force, init_params
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)


def random_mixture(family, k, seed):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(k, generator=gen, dtype=torch.float64).add(0.2).softmax(-1)
    raw = torch.rand(k, generator=gen, dtype=torch.float64)

    def model(x):
        w = pyro.param("weights", weights.clone(), constraint=constraints.simplex)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(w))
            if family == "Poisson":
                rates = pyro.param("rates", 1 + 4 * raw, constraint=constraints.positive)
                pyro.sample("x", dist.Poisson(rates[z]), obs=x)
            elif family == "Bernoulli":
                probs = pyro.param("probs", 0.1 + 0.8 * raw, constraint=constraints.unit_interval)
                pyro.sample("x", dist.Bernoulli(probs[z]), obs=x)
            else:
                locs = pyro.param("locs", 4 * raw - 2)
                # one scale shared by the components: per-component scales make the
                # likelihood unbounded on a few points (a component collapsing on one)
                scale = pyro.param("scale", 0.5 + raw[0], constraint=constraints.positive)
                pyro.sample("x", dist.Normal(locs[z], scale), obs=x)
    return model


def random_data(family, n, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    if family == "Poisson":
        return torch.poisson(3 * torch.rand(n, generator=gen, dtype=torch.float64))
    if family == "Bernoulli":
        return (torch.rand(n, generator=gen, dtype=torch.float64) > 0.5).to(torch.float64)
    return 3 * torch.randn(n, generator=gen, dtype=torch.float64)


mixtures = st.tuples(st.sampled_from(["Poisson", "Bernoulli", "Normal"]),
                     st.integers(2, 3), st.integers(2, 4), st.integers(0, 10_000))


@SETTINGS
@given(mixtures)
def test_mixture_estep_is_exact(case):
    family, k, n, seed = case
    pyro.clear_param_store()
    model, x = random_mixture(family, k, seed), random_data(family, n, seed)
    init_params(model, x)
    post = exact_posterior(model, x)
    q = post["x"]  # (K, N)
    assert torch.allclose(q.sum(0), torch.ones(n, dtype=torch.float64), atol=1e-12)
    log_ev, configs, log_post = brute_force(model, (x,), {"z": ((n,), k)})
    assert math.isclose(post.log_evidence.item(), log_ev.item(), abs_tol=1e-10)
    # q(Z) = prod_n q(z_n) (the exact posterior of a mixture factorises over points)
    log_q = torch.stack([q[c["z"], torch.arange(n)].log().sum() for c in configs])
    kl = (log_q.exp() * (log_q - log_post)).sum()
    assert abs(kl.item()) < 1e-10


@SETTINGS
@given(mixtures)
def test_mixture_em_is_monotone(case):
    family, k, n, seed = case
    pyro.clear_param_store()
    model, x = random_mixture(family, k, seed), random_data(family, 3 * n, seed)
    em = EM(model)
    losses = [em.step(x) for _ in range(4)]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))


def random_hmm(k, m, seed):
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(k, generator=gen, dtype=torch.float64).softmax(-1)
    trans = torch.randn(k, k, generator=gen, dtype=torch.float64).softmax(-1)
    emit = torch.randn(k, m, generator=gen, dtype=torch.float64).softmax(-1)

    def model(x):
        s = pyro.param("start", start.clone(), constraint=constraints.simplex)
        a = pyro.param("trans", trans.clone(), constraint=constraints.simplex)
        e = pyro.param("emit", emit.clone(), constraint=constraints.simplex)
        z = pyro.sample("z_0", dist.Categorical(s))
        pyro.sample("x_0", dist.Categorical(e[z]), obs=x[0])
        for t in pyro.markov(range(1, len(x))):
            z = pyro.sample(f"z_{t}", dist.Categorical(a[z]))
            pyro.sample(f"x_{t}", dist.Categorical(e[z]), obs=x[t])
    return model


@settings(max_examples=5, deadline=None, derandomize=True)
@given(st.integers(2, 3), st.integers(2, 3), st.integers(0, 10_000))
def test_hmm_estep_is_exact_and_em_monotone(k, t_len, seed):
    pyro.clear_param_store()
    model = random_hmm(k, 3, seed)
    x = torch.randint(3, (t_len,), generator=torch.Generator().manual_seed(seed))
    init_params(model, x)
    post = exact_posterior(model, x, max_plate_nesting=0)
    log_ev, configs, log_post = brute_force(model, (x,), {f"z_{t}": ((), k)
                                                          for t in range(t_len)})
    assert math.isclose(post.log_evidence.item(), log_ev.item(), abs_tol=1e-10)

    def pairwise(t):  # q(z_{t-1}, z_t) as (K, K), rows z_{t-1}
        m = post[f"z_{t}"]
        d_prev = post.trace.nodes[f"z_{t - 1}"]["infer"]["_enumerate_dim"]
        d_cur = post.trace.nodes[f"z_{t}"]["infer"]["_enumerate_dim"]
        return m.squeeze().permute(*(0, 1) if d_prev < d_cur else (1, 0))

    unary = [post[f"x_{t}"].reshape(k) for t in range(t_len)]
    for t in range(t_len):
        assert math.isclose(unary[t].sum().item(), 1.0, abs_tol=1e-12)
    # chain factorisation q(Z) = q(z_0) prod_t q(z_{t-1}, z_t) / q(z_{t-1})
    log_q = []
    for c in configs:
        z = [int(c[f"z_{t}"]) for t in range(t_len)]
        lq = unary[0][z[0]].log()
        for t in range(1, t_len):
            lq = lq + pairwise(t)[z[t - 1], z[t]].log() - unary[t - 1][z[t - 1]].log()
        log_q.append(lq)
    log_q = torch.stack(log_q)
    kl = (log_q.exp() * (log_q - log_post)).sum()
    assert abs(kl.item()) < 1e-10
    em = EM(model, max_plate_nesting=0)
    losses = [em.step(x) for _ in range(3)]
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
