"""The generic E-step on what Pyro's enumeration handles -- nested plates, poutine.scale,
poutine.mask, obs_mask -- against brute force, and its errors for what it cannot do."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from generic_brute import brute_force, init_params, marginal, one_hot, param
from torch.distributions import constraints

import pyroem.infer.estep as estep
from pyroem.infer import EM, exact_posterior

F64 = dict(dtype=torch.float64)


def nested_model(x):
    """Groups (outer plate) with a group-level latent g and item-level latents z."""
    wg = pyro.param("wg", torch.tensor([0.4, 0.6], **F64), constraint=constraints.simplex)
    wz = pyro.param("wz", torch.tensor([[0.7, 0.3], [0.2, 0.8]], **F64),
                    constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.5], **F64))
    with pyro.plate("groups", x.shape[1], dim=-1):
        g = pyro.sample("g", dist.Categorical(wg))
        with pyro.plate("items", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Categorical(wz[g]))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_nested_plates_match_brute_force_and_hand_step():
    x = torch.tensor([[0.3, -1.2], [1.9, 0.1]], **F64)  # (items, groups)
    init_params(nested_model, x)
    post = exact_posterior(nested_model, x, max_plate_nesting=2)
    log_ev, configs, log_post = brute_force(nested_model, (x,),
                                            {"g": ((2,), 2), "z": ((2, 2), 2)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    q_z = marginal(configs, log_post, lambda c: one_hot(c["z"], 2))  # (items, groups, K)
    got = post["x"].reshape(2, 2, 2).permute(1, 2, 0)
    assert torch.allclose(got, q_z, atol=1e-10)
    pair = marginal(configs, log_post,  # q(g_j, z_ij): (items, groups, Kg, Kz)
                    lambda c: one_hot(c["g"], 2)[None, :, :, None] * one_hot(c["z"], 2)[:, :, None])
    em = EM(nested_model, max_plate_nesting=2)
    em.step(x)
    q_g = marginal(configs, log_post, lambda c: one_hot(c["g"], 2))
    counts = pair.sum((0, 1))
    assert torch.allclose(param("wg"), q_g.mean(0), atol=1e-12)
    assert torch.allclose(param("wz"), counts / counts.sum(-1, keepdim=True), atol=1e-12)
    nk = q_z.sum((0, 1))
    assert torch.allclose(param("locs"), (q_z * x[..., None]).sum((0, 1)) / nk, atol=1e-12)


def mixture(x, mask=None, scale=1.0):
    weights = pyro.param("weights", torch.tensor([0.3, 0.7], **F64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 2.0], **F64))
    with poutine.scale(scale=scale), pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        with poutine.mask(mask=mask if mask is not None else True):
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


X = torch.tensor([-2.0, 0.5, 3.0, 1.0], **F64)


def test_scale_applied_outside_the_contraction():
    init_params(mixture, X)
    plain = exact_posterior(mixture, X)
    scaled = exact_posterior(mixture, X, None, 2.5)
    assert torch.allclose(scaled.log_evidence, 2.5 * plain.log_evidence, atol=1e-12)
    assert torch.allclose(scaled["x"], plain["x"], atol=1e-12)  # marginals unscaled


def test_mask_matches_brute_force():
    mask = torch.tensor([True, False, True, True])
    init_params(mixture, X)
    post = exact_posterior(mixture, X, mask)
    log_ev, configs, log_post = brute_force(mixture, (X, mask), {"z": ((4,), 2)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    resp = marginal(configs, log_post, lambda c: one_hot(c["z"], 2))
    assert torch.allclose(post["z"].T, resp, atol=1e-10)
    assert (post["x"][:, 1] == 0).all()  # a masked factor has no posterior mass
    # the masked point's z keeps its prior and counts for the weights, not for the means
    em = EM(mixture)
    em.step(X, mask)
    assert torch.allclose(param("weights"), resp.mean(0), atol=1e-12)
    r = resp * mask[:, None]
    assert torch.allclose(param("locs"), (r * X[:, None]).sum(0) / r.sum(0), atol=1e-12)


def obs_mask_model(x, obs_mask):
    weights = pyro.param("weights", torch.tensor([0.3, 0.7], **F64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 2.0], **F64))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x, obs_mask=obs_mask)


def test_obs_mask_integrates_missing_values_out():
    obs_mask = torch.tensor([True, False, True, True])
    init_params(mixture, X)
    post = exact_posterior(obs_mask_model, X, obs_mask)
    reference = exact_posterior(mixture, X, obs_mask)  # same as masking the factor
    assert torch.allclose(post.log_evidence, reference.log_evidence, atol=1e-12)
    assert torch.allclose(post["z"], reference["z"], atol=1e-12)
    em = EM(obs_mask_model)
    em.step(X, obs_mask)
    assert set(em.m_step.strategies.values()) == {"closed-form:Categorical",
                                                  "closed-form:Normal"}


def test_continuous_latent_is_a_clear_error():
    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
    with pytest.raises(ValueError, match="cannot be enumerated.*discrete latents only"):
        exact_posterior(model, torch.tensor(0.5))


def test_too_many_enumerated_dims_is_a_clear_error(monkeypatch):
    def model(x):
        zs = [pyro.sample(f"z{i}", dist.Categorical(torch.ones(3) / 3)) for i in range(4)]
        pyro.sample("x", dist.Normal(zs[0] + zs[1] + zs[2] + zs[3], 1.0), obs=x)
    monkeypatch.setattr(estep, "MAX_FACTOR_SIZE", 50)  # 3**4 = 81 entries > 50
    with pytest.raises(ValueError, match="depends jointly on 4 enumerated variables"):
        exact_posterior(model, torch.tensor(0.5), max_plate_nesting=0)


def test_more_enumerated_dims_than_torch_supports_is_a_clear_error():
    def model():
        for i in range(70):  # 70 latents outside any plate: 70 enumeration dims
            z = pyro.sample(f"z{i}", dist.Bernoulli(0.5))
            pyro.sample(f"x{i}", dist.Normal(z, 1.0), obs=torch.tensor(1.0))
    with pytest.raises(ValueError, match="more than the 64 tensor dims.*pyro.plate"):
        exact_posterior(model, max_plate_nesting=0)
