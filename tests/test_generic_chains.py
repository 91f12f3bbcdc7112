"""A user model observing through ``pyro.distributions.DiscreteHMM``: the vectorised
E-step against brute-force sums over every path (z_0 one step before the first
observation) and against ``DiscreteHMM.log_prob``; the closed-form M-step against the
same model written out as a ``pyro.markov`` chain (the generic contraction) and against
Baum-Welch from brute-force marginals."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force, marginal, one_hot
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior

K, B, T = 2, 2, 3
D64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _declare(family, dtype=D64, logits=False):
    """The parameters, returned as ``(init, trans, emission(z))``; ``z=None`` gives the
    observation distribution with batch shape ``(K,)``."""
    g = _gen(3)
    if logits:
        init = pyro.param("init", torch.tensor([0.3, -0.2], dtype=dtype)).softmax(-1)
        trans = pyro.param("trans", torch.tensor([[0.8, -0.4], [0.1, 0.6]],
                                                 dtype=dtype)).softmax(-1)
    else:
        init = pyro.param("init", torch.tensor([0.35, 0.65], dtype=dtype),
                          constraint=constraints.simplex)
        trans = pyro.param("trans", torch.tensor([[0.7, 0.3], [0.25, 0.75]], dtype=dtype),
                           constraint=constraints.simplex)

    def sel(t, z):
        return t if z is None else t[z]

    if family == "normal":
        locs = pyro.param("locs", torch.tensor([-1.0, 1.2], dtype=dtype))
        scales = pyro.param("scales", torch.tensor([0.8, 1.1], dtype=dtype),
                            constraint=constraints.positive)
        return init, trans, lambda z: dist.Normal(sel(locs, z), sel(scales, z))
    if family == "diag_normal":  # through the cached design of the data (chains.py)
        locs = pyro.param("locs", torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=dtype))
        scales = pyro.param("scales", torch.tensor([[0.8, 1.3], [1.1, 0.6]], dtype=dtype),
                            constraint=constraints.positive)
        return init, trans, lambda z: dist.Normal(sel(locs, z), sel(scales, z)).to_event(1)
    if family == "poisson":
        rates = pyro.param("rates", torch.tensor([1.0, 4.0], dtype=dtype),
                           constraint=constraints.positive)
        return init, trans, lambda z: dist.Poisson(sel(rates, z))
    if family == "categorical":
        probs = pyro.param("probs", torch.rand(K, 3, generator=g, dtype=dtype) + 0.3,
                           constraint=constraints.simplex)
        return init, trans, lambda z: dist.Categorical(sel(probs, z))
    if family == "bernoulli":
        probs = pyro.param("probs", torch.rand(K, 2, generator=g, dtype=dtype) * 0.6 + 0.2,
                           constraint=constraints.unit_interval)
        return init, trans, lambda z: dist.Bernoulli(sel(probs, z)).to_event(1)
    locs = pyro.param("locs", torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=dtype))
    tril = pyro.param("tril", torch.eye(2, dtype=dtype).expand(K, 2, 2) * 0.9,
                      constraint=constraints.lower_cholesky)
    return init, trans, lambda z: dist.MultivariateNormal(sel(locs, z), scale_tril=sel(tril, z))


def make_models(family, dtype=D64, logits=False):
    def hmm(x):
        init, trans, emission = _declare(family, dtype, logits)
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("x", dist.DiscreteHMM(init.log(), trans.log(), emission(None)), obs=x)

    def hmm_logits(x):  # the parameters are logits: given to DiscreteHMM as they are
        _declare(family, dtype, logits)
        init, trans = pyro.param("init"), pyro.param("trans")
        emission = _declare(family, dtype, logits)[2]
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("x", dist.DiscreteHMM(init, trans, emission(None)), obs=x)

    def chain(x):  # the same model written out: z_0 before the first observation
        init, trans, emission = _declare(family, dtype, logits)
        with pyro.plate("sequences", x.shape[0]):
            z = pyro.sample("z_0", dist.Categorical(init))
            for t in pyro.markov(range(x.shape[1])):
                z = pyro.sample(f"z_{t + 1}", dist.Categorical(trans[z]))
                pyro.sample(f"x_{t + 1}", emission(z), obs=x[:, t])

    return (hmm_logits if logits else hmm), chain


def data(family, dtype=D64, batch=B, steps=T):
    g = _gen(7)
    if family == "normal":
        return torch.randn(batch, steps, generator=g, dtype=dtype) * 1.5
    if family == "poisson":
        return torch.poisson(torch.full((batch, steps), 2.5, dtype=dtype), generator=g)
    if family == "categorical":
        return torch.randint(0, 3, (batch, steps), generator=g)
    if family == "bernoulli":
        return (torch.rand(batch, steps, 2, generator=g) > 0.5).to(dtype)
    return torch.randn(batch, steps, 2, generator=g, dtype=dtype)


FAMILIES = ["normal", "diag_normal", "poisson", "categorical", "bernoulli", "mvn"]
PARAMS = {"normal": ["locs", "scales"], "diag_normal": ["locs", "scales"],
          "poisson": ["rates"], "categorical": ["probs"], "bernoulli": ["probs"],
          "mvn": ["locs", "tril"]}


def _params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_estep_matches_brute_force_and_discrete_hmm_log_prob(family):
    pyro.clear_param_store()
    hmm, chain = make_models(family)
    x = data(family)
    post = exact_posterior(hmm, x)
    latents = {f"z_{t}": ((B,), K) for t in range(T + 1)}
    log_ev, configs, log_post = brute_force(chain, (x,), latents)
    init, trans, emission = _declare(family)
    own = dist.DiscreteHMM(init.log(), trans.log(), emission(None)).log_prob(x).sum()
    assert float(post.log_evidence) == pytest.approx(float(log_ev), abs=1e-10)
    assert float(post.log_evidence) == pytest.approx(float(own.detach()), abs=1e-10)
    stats = post.chains["x"]
    for t in range(1, T + 1):
        ref = marginal(configs, log_post, lambda c, t=t: one_hot(c[f"z_{t}"], K))
        assert torch.allclose(stats.gamma[:, t - 1], ref, atol=1e-10)
    assert torch.allclose(stats.init, marginal(
        configs, log_post, lambda c: one_hot(c["z_0"], K).sum(0)), atol=1e-10)
    pairs = marginal(configs, log_post, lambda c: sum(
        torch.einsum("bi,bj->ij", one_hot(c[f"z_{t}"], K), one_hot(c[f"z_{t + 1}"], K))
        for t in range(T)))
    assert torch.allclose(stats.trans, pairs, atol=1e-10)


# hard MVN: with these few points one state gets a single point (a singular covariance,
# refused by the M-step on both routes alike)
CASES = [(f, False) for f in FAMILIES] + [(f, True) for f in FAMILIES if f != "mvn"]


@pytest.mark.parametrize("family,hard", CASES)
def test_mstep_is_the_written_out_chains(family, hard):
    """One EM step through DiscreteHMM equals one through the same chain written with
    pyro.markov (the generic contraction and the Categorical/emission rules)."""
    hmm, chain = make_models(family)
    x = data(family, steps=8)  # enough points per state for a hard step
    results = []
    for model in (hmm, chain):
        pyro.clear_param_store()
        em = EM(model, hard=hard)
        losses = [em.step(x), em.step(x)]
        results.append((losses, _params(), dict(em.plan.params)))
    (l1, p1, routes), (l2, p2, _) = results
    assert l1 == pytest.approx(l2, abs=1e-10)
    for name in p2:
        assert torch.allclose(p1[name], p2[name], atol=1e-9), name
    assert routes["init"] == routes["trans"] == "closed-form:DiscreteHMM"
    assert all(routes[p].startswith("closed-form") for p in PARAMS[family])


def test_mstep_is_baum_welch_from_brute_force():
    """Normal emissions: pi from q(z_0), A from every transition (z_0 -> z_1 too), the
    locations and scales weighted by q(z_t) for t >= 1."""
    pyro.clear_param_store()
    hmm, chain = make_models("normal")
    x = data("normal")
    _, configs, log_post = brute_force(chain, (x,), {f"z_{t}": ((B,), K)
                                                      for t in range(T + 1)})
    g0 = marginal(configs, log_post, lambda c: one_hot(c["z_0"], K).sum(0))
    pairs = marginal(configs, log_post, lambda c: sum(
        torch.einsum("bi,bj->ij", one_hot(c[f"z_{t}"], K), one_hot(c[f"z_{t + 1}"], K))
        for t in range(T)))
    gamma = torch.stack([marginal(configs, log_post, lambda c, t=t: one_hot(c[f"z_{t}"], K))
                         for t in range(1, T + 1)], 1)  # (B, T, K)
    n = gamma.sum((0, 1))
    locs = torch.einsum("btk,bt->k", gamma, x) / n
    var = torch.einsum("btk,btk->k", gamma, (x.unsqueeze(-1) - locs) ** 2) / n
    EM(hmm).step(x)
    assert torch.allclose(pyro.param("init"), g0 / g0.sum(), atol=1e-10)
    assert torch.allclose(pyro.param("trans"), pairs / pairs.sum(-1, keepdim=True), atol=1e-10)
    assert torch.allclose(pyro.param("locs"), locs, atol=1e-10)
    assert torch.allclose(pyro.param("scales"), var.sqrt(), atol=1e-10)


def test_logits_parameters():
    hmm, chain = make_models("poisson", logits=True)
    x = data("poisson")
    out = []
    for model in (hmm, chain):
        pyro.clear_param_store()
        em = EM(model)
        out.append((em.step(x), _params()))
    assert out[0][0] == pytest.approx(out[1][0], abs=1e-10)
    # logits are defined up to a constant per row: compare the probabilities
    for name in ("init", "trans"):
        assert torch.allclose(out[0][1][name].softmax(-1), out[1][1][name].softmax(-1),
                              atol=1e-10)
    assert torch.allclose(out[0][1]["rates"], out[1][1]["rates"], atol=1e-10)


def test_float32_follows_float64():
    x64 = data("normal", batch=3, steps=50)
    params = []
    for dtype in (D64, torch.float32):
        pyro.clear_param_store()
        hmm, _ = make_models("normal", dtype)
        em = EM(hmm)
        losses = [em.step(x64.to(dtype)) for _ in range(5)]
        params.append(_params())
        assert all(b <= a + 1e-4 for a, b in zip(losses, losses[1:]))
    for name, value in params[0].items():
        assert torch.allclose(params[1][name].double(), value, atol=1e-4), name


def test_per_sequence_chains_take_the_generic_route_and_say_so():
    """Transition matrices that differ per sequence: not one shared chain, so
    DiscreteHMM.log_prob and the numerical M-step, with a warning naming the site."""
    x = data("normal")

    def model(x):
        init = torch.tensor([0.5, 0.5], dtype=D64).log()
        # (B, 1, K, K): one homogeneous chain per sequence
        trans = pyro.param("trans_b", torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=D64)
                           .expand(B, 1, K, K).clone(), constraint=constraints.simplex)
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0], dtype=D64))
        with pyro.plate("sequences", B):
            pyro.sample("x", dist.DiscreteHMM(init, trans.log(), dist.Normal(locs, 1.0)), obs=x)

    pyro.clear_param_store()
    em = EM(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = em.step(x), em.step(x)
    said = {str(w.message) for w in caught}
    assert any("DiscreteHMM site 'x'" in m and "differ between chains" in m for m in said)
    assert em.plan.params == {"locs": "numerical", "trans_b": "numerical"}
    assert second < first
