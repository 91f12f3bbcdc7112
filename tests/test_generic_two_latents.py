"""A model with two independent discrete latents per point, the mean indexed by both
(``locs[z1, z2]``) and a Poisson count depending on one: brute force and a hand-written
EM step."""

import pyro
import pyro.distributions as dist
import torch
from generic_brute import brute_force, init_params, marginal, one_hot, param
from torch.distributions import constraints

from pyroem.infer import EM, exact_posterior

K1, K2 = 2, 3
X = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
Y = torch.tensor([0.0, 4.0, 2.0], dtype=torch.float64)


def model(x, y):
    w1 = pyro.param("w1", torch.tensor([0.3, 0.7], dtype=torch.float64),
                    constraint=constraints.simplex)
    w2 = pyro.param("w2", torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64),
                    constraint=constraints.simplex)
    locs = pyro.param("locs", torch.arange(6.0, dtype=torch.float64).reshape(K1, K2) - 2)
    scales = pyro.param("scales", torch.tensor([1.0, 2.0], dtype=torch.float64),
                        constraint=constraints.positive)
    rates = pyro.param("rates", torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                       constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Categorical(w1))
        z2 = pyro.sample("z2", dist.Categorical(w2))
        pyro.sample("x", dist.Normal(locs[z1, z2], scales[z1]), obs=x)
        pyro.sample("y", dist.Poisson(rates[z2]), obs=y)


def test_estep_matches_brute_force():
    init_params(model, X, Y)
    post = exact_posterior(model, X, Y)
    log_ev, configs, log_post = brute_force(model, (X, Y), {"z1": ((3,), K1), "z2": ((3,), K2)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    joint = marginal(configs, log_post,
                     lambda c: one_hot(c["z1"], K1)[:, :, None] * one_hot(c["z2"], K2)[:, None])
    dims = [post.trace.nodes[n]["infer"]["_enumerate_dim"] for n in ("z1", "z2")]
    m = post["x"]  # enumerated dims of z1 and z2, then the data dim
    got = m.permute([m.dim() + dims[0], m.dim() + dims[1], m.dim() - 1]).reshape(K1, K2, 3)
    assert torch.allclose(got.permute(2, 0, 1), joint, atol=1e-10)


def test_mstep_matches_hand_written():
    init_params(model, X, Y)
    _, configs, log_post = brute_force(model, (X, Y), {"z1": ((3,), K1), "z2": ((3,), K2)})
    r = marginal(configs, log_post,
                 lambda c: one_hot(c["z1"], K1)[:, :, None] * one_hot(c["z2"], K2)[:, None])
    r1, r2 = r.sum(2), r.sum(1)  # (N, K1), (N, K2)
    scales_old = param("scales")
    em = EM(model)
    em.step(X, Y)
    n12 = r.sum(0)
    locs = (r * X[:, None, None]).sum(0) / n12
    # each scale is shared by the K2 means of its row: sigma^2 = weighted mean square error
    var = (r * (X[:, None, None] - locs) ** 2).sum((0, 2)) / r1.sum(0)
    assert torch.allclose(param("w1"), r1.mean(0), atol=1e-12)
    assert torch.allclose(param("w2"), r2.mean(0), atol=1e-12)
    assert torch.allclose(param("locs"), locs, atol=1e-12)  # scale constant in each locs entry
    assert torch.allclose(param("scales"), var.sqrt(), atol=1e-12)
    assert torch.allclose(param("rates"), (r2 * Y[:, None]).sum(0) / r2.sum(0), atol=1e-12)
    assert not torch.allclose(scales_old, param("scales"))
    assert em.m_step.strategies == {"locs": "closed-form:Normal", "rates": "closed-form:Poisson",
                                    "scales": "closed-form:Normal", "w1": "closed-form:Categorical",
                                    "w2": "closed-form:Categorical"}
