"""The generic engine on user models with partial observation: missing values through
Pyro's ``obs_mask`` and latents observed for some points (``obs=z_known,
obs_mask=known``) get the exact E-step and the automatic closed-form M-step, checked
against brute-force sums over all K^N assignments."""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex
from torch.distributions import constraints

from pyroem.infer import EM

N, K, D = 5, 2, 3


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    x[:2] += 3.0
    mask = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 1, 1]],
                        dtype=torch.bool)
    return x, mask


def _params():
    pyro.param("weights", torch.tensor([0.4, 0.6], dtype=torch.float64),
               constraint=constraints.simplex)
    pyro.param("locs", torch.tensor([[2.0, 1.0, 0.5], [-1.0, 0.0, 1.0]], dtype=torch.float64))
    pyro.param("scales", torch.tensor([[1.0, 2.0, 0.7], [1.5, 0.8, 1.2]], dtype=torch.float64),
               constraint=constraints.positive)


def missing_model(x, mask):
    """A diagonal Gaussian mixture whose values are observed where ``mask`` says
    (Pyro's obs_mask on a plate over dimensions)."""
    weights, locs, scales = pyro.param("weights"), pyro.param("locs"), pyro.param("scales")
    dims = torch.arange(D)
    with pyro.plate("data", N, dim=-2):
        z = pyro.sample("z", dist.Categorical(weights))
        with pyro.plate("dims", D, dim=-1):
            pyro.sample("x", dist.Normal(Vindex(locs)[z, dims], Vindex(scales)[z, dims]),
                        obs=x, obs_mask=mask)


def labelled_model(x, z_known, known):
    """A diagonal Gaussian mixture whose component is observed for the ``known`` points."""
    weights, locs, scales = pyro.param("weights"), pyro.param("locs"), pyro.param("scales")
    with pyro.plate("data", N):
        z = pyro.sample("z", dist.Categorical(weights), obs=z_known, obs_mask=known)
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


def _current():
    return {n: pyro.param(n).detach().clone() for n in ("weights", "locs", "scales")}


def _brute(x, mask, fixed=None):
    """Responsibilities ``(N, K)`` and log p(X[, z_known]) over every assignment."""
    p = _current()
    normal = torch.distributions.Normal(p["locs"][:, None], p["scales"][:, None])  # (K,1,D)
    per = (normal.log_prob(x) * mask).sum(-1).T + p["weights"].log()  # (N, K)
    joints, resp = [], torch.zeros(N, K, dtype=torch.float64)
    configs = [c for c in itertools.product(range(K), repeat=N)
               if fixed is None or all(f < 0 or f == v for f, v in zip(fixed, c))]
    for c in configs:
        joints.append(per[torch.arange(N), torch.tensor(c)].sum())
    joints = torch.stack(joints)
    post = (joints - joints.logsumexp(0)).exp()
    for pr, c in zip(post, configs):
        resp[torch.arange(N), torch.tensor(c)] += pr
    return resp, joints.logsumexp(0)


def _expected_m_step(x, mask, resp):
    """argmax Q: weighted means and variances over the observed entries."""
    w = resp.T.unsqueeze(-1) * mask  # (K, N, D)
    locs = (w * x).sum(1) / w.sum(1)
    var = (w * (x - locs[:, None]) ** 2).sum(1) / w.sum(1)
    return resp.sum(0) / N, locs, var.sqrt()


def test_user_model_with_missing_values_gets_the_exact_e_and_m_step():
    x, mask = _data()
    _params()
    resp, log_evidence = _brute(x, mask)
    em = EM(missing_model, max_plate_nesting=2)
    loss = em.step(x.masked_fill(~mask, 0.0), mask)
    assert -loss == pytest.approx(float(log_evidence), abs=1e-10)
    weights, locs, scales = _expected_m_step(x, mask, resp)
    torch.testing.assert_close(pyro.param("weights").detach(), weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(pyro.param("locs").detach(), locs, rtol=0, atol=1e-10)
    torch.testing.assert_close(pyro.param("scales").detach(), scales, rtol=0, atol=1e-10)
    assert set(em.plan.params.values()) <= {"closed-form:Categorical", "closed-form:Normal"}


def test_user_model_with_observed_latents_gets_the_exact_e_and_m_step():
    x, _ = _data()
    full = torch.ones(N, D, dtype=torch.bool)
    known = torch.tensor([True, False, False, True, False])
    z_known = torch.tensor([0, 0, 0, 1, 0])
    _params()
    fixed = torch.where(known, z_known, -1).tolist()
    resp, log_joint = _brute(x, full, fixed)
    em = EM(labelled_model, max_plate_nesting=1)
    posterior = em.e_step(x, z_known, known)
    # Pyro's obs_mask leaves a masked z_unobserved at the known points; the E-step sums
    # it over its own distribution (as TraceEnum_ELBO does), which adds nothing: the
    # evidence is the brute-force one exactly
    assert float(posterior.log_evidence) == pytest.approx(float(log_joint), abs=1e-10)
    w_old = pyro.param("weights").detach().clone()
    em.run_m_step(posterior, x, z_known, known)
    weights, locs, scales = _expected_m_step(x, full, resp)
    # Pyro's model has that masked z_unobserved ~ Categorical(weights) at each known point
    # too (its posterior is its prior, as nothing depends on it): EM of that model adds
    # its expected counts to the weights' update; same fixed points, same log p(X)
    n_known = int(known.sum())
    weights = (weights * N + n_known * w_old) / (N + n_known)
    torch.testing.assert_close(pyro.param("weights").detach(), weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(pyro.param("locs").detach(), locs, rtol=0, atol=1e-10)
    torch.testing.assert_close(pyro.param("scales").detach(), scales, rtol=0, atol=1e-10)
