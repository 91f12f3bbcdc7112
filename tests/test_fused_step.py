"""The fused EM iteration of small Gaussian HMMs (pyroem.models.hmm.fused, issue 13) against
the separate steps (the reference), hmmlearn and brute force; the compiled Gaussian frame
kernels (pyroem.ops.compiled_gaussian) against the torch formulas and NumPy."""

import itertools

import numpy as np
import pytest
import torch
from hmmlearn import hmm as hl

from pyroem.distributions.statistics import own_mean_moments
from pyroem.infer import EM
from pyroem.models import GaussianHMM
from pyroem.models.hmm import fused
from pyroem.ops import compiled
from pyroem.ops import compiled_gaussian as cg

pytestmark = pytest.mark.skipif(compiled.library() is None,
                                reason="the compiled kernels could not be built here")


# ----------------------------------------------------------------------------- frame kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_diag_log_prob_is_the_normal_density(dtype):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(40, 3, generator=g, dtype=torch.float64)).to(dtype)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64).to(dtype)
    s = (torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.2).to(dtype)
    ref = torch.distributions.Normal(mu.double(), s.double()).log_prob(
        x.double().unsqueeze(1)).sum(-1)
    got = cg.diag_log_prob(x, mu, s)
    assert got.dtype == dtype and got.shape == (40, 4)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["diag", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_own_mean_moments_compiled_and_torch_agree_with_numpy(kind, dtype):
    g = torch.Generator().manual_seed(1)
    w = torch.rand(60, 3, generator=g, dtype=torch.float64)
    w[:, 2] = 0  # a component without weight: shift zero, moments zero
    x = torch.randn(60, 4, generator=g, dtype=torch.float64) * 2 + 5
    ref = own_mean_moments(w, x, kind)
    # an independent reference: each component's weighted mean and scatter in NumPy
    for c in range(2):
        wc, xn = w[:, c].numpy(), x.numpy()
        mean = (wc[:, None] * xn).sum(0) / wc.sum()
        dev = xn - mean
        scatter = np.einsum("r,rd,re->de", wc, dev, dev)
        np.testing.assert_allclose(ref["shift"][c].numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(ref["sxx"][c].numpy(), scatter.reshape(-1) if kind == "full"
                                   else np.diag(scatter), rtol=1e-10)
        np.testing.assert_allclose(ref["sx"][c].numpy(), 0, atol=1e-10)
    got = cg.own_mean_moments(w.to(dtype), x.to(dtype), kind)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    for name in ("n", "sx", "sxx", "shift"):
        assert got[name].dtype == dtype
        torch.testing.assert_close(got[name].double(), ref[name], rtol=tol, atol=tol)
    assert (got["shift"][2] == 0).all() and (got["sxx"][2] == 0).all()


def test_own_mean_moments_resolve_a_tight_far_cluster_in_float32():
    # a cluster 1e4 from the origin with spread 1e-2: moments about the data mean lose it
    # in float32; about the cluster's own mean the variance comes out right
    g = torch.Generator().manual_seed(2)
    x = (1e4 + 1e-2 * torch.randn(500, 1, generator=g, dtype=torch.float64))
    w = torch.ones(500, 1, dtype=torch.float64)
    var = x.var(unbiased=False).item()
    for fn in (own_mean_moments, cg.own_mean_moments):
        m = fn(w.float(), x.float(), "diag")
        got = (m["sxx"] / m["n"] - (m["sx"] / m["n"]) ** 2).item()
        assert got == pytest.approx(var, rel=1e-2)


# ----------------------------------------------------------------------------- fused route
def _data(lengths, D=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, D, generator=g, dtype=torch.float64)
            + 3 * (torch.arange(n) % 7 < 3).double().unsqueeze(-1) for n in lengths]


def _model(cov, K=3, D=2, dtype=torch.float64, **kwargs):
    m = GaussianHMM(K, D, cov, **kwargs).to(dtype)
    g = torch.Generator().manual_seed(5)  # drawn in float64: the same start in each dtype
    m.means = (3 * torch.randn(K, D, generator=g, dtype=torch.float64)).to(dtype)
    m.covariances = {"diag": torch.rand(K, D, generator=g, dtype=torch.float64) + 0.5,
                     "spherical": torch.rand(K, generator=g, dtype=torch.float64) + 0.5
                     }[cov].to(dtype)
    trans = torch.rand(K, K, generator=g, dtype=torch.float64) + 0.1
    trans[0, K - 1] = 0  # a structural zero
    m.trans_probs = (trans / trans.sum(-1, keepdim=True)).to(dtype)
    return m


def _run(m, data, steps, fused_on, monkeypatch):
    """Losses and parameters after ``steps`` EM steps, with the fused route on or off."""
    with monkeypatch.context() as mp:
        calls = []
        real = fused.fused_step
        mp.setattr(fused, "fused_step", (lambda *a, **k: calls.append(1) or real(*a, **k))
                   if fused_on else (lambda *a, **k: None))
        args = m.prepare(data)
        em = EM(m.model, m.guide)
        losses = [em.step(*args) for _ in range(steps)]
    params = [m.start_probs, m.trans_probs, m.means, m.covariances]
    return losses, [p.detach().clone() for p in params], len(calls)


@pytest.mark.parametrize("cov", ["diag", "spherical"])
@pytest.mark.parametrize("params", ["stmc", "mc", "st", "sm", "tc"])
def test_fused_step_equals_the_separate_steps(cov, params, monkeypatch):
    data = _data([60, 41, 17])
    kw = {"params": params, "start_concentration": 2.0, "trans_concentration": 1.5,
              "final_states": [0, 1]} if params == "stmc" else {"params": params}
    ref = _run(_model(cov, **kw), data, 8, False, monkeypatch)
    got = _run(_model(cov, **kw), data, 8, True, monkeypatch)
    assert got[2] == 8  # the fused route ran every step
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-10)
    for a, b in zip(got[1], ref[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert got[1][1][0, 2] == 0  # the structural zero stays zero


def test_fused_step_float32_close_to_float64(monkeypatch):
    data = _data([120, 80])
    ref = _run(_model("diag"), data, 5, True, monkeypatch)
    got = _run(_model("diag", dtype=torch.float32), [d.float() for d in data], 5, True,
               monkeypatch)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for a, b in zip(got[1], ref[1]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-3, atol=1e-4)


def test_fused_route_matches_brute_force(monkeypatch):
    K, D = 2, 1
    x = _data([6], D=D, seed=3)[0]
    m = _model("diag", K=K, D=D)
    # log p(x) as the sum over all 2^6 state paths
    dens = torch.distributions.Normal(m.means[:, 0], m.covariances[:, 0].sqrt())
    le = dens.log_prob(x)
    total = torch.logsumexp(torch.stack([
        m.start_probs.log()[z[0]] + le[0, z[0]]
        + sum(m.trans_probs.log()[z[t - 1], z[t]] + le[t, z[t]] for t in range(1, 6))
        for z in itertools.product(range(K), repeat=6)]), 0)
    losses, _, calls = _run(m, x, 1, True, monkeypatch)
    assert calls == 1 and losses[0] == pytest.approx(-total.item(), rel=1e-12)


def test_fused_route_matches_hmmlearn(monkeypatch):
    K, D = 2, 1
    x = _data([300], D=D, seed=3)[0]
    m = _model("diag", K=K, D=D, reg_covar=0.0)
    m.trans_probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=torch.float64)
    start, trans = m.start_probs.numpy(), m.trans_probs.numpy()
    means, covs = m.means.numpy(), m.covariances.numpy()
    losses, params, calls = _run(m, x, 4, True, monkeypatch)
    assert calls == 4
    ref = hl.GaussianHMM(K, "diag", min_covar=0.0, covars_prior=0.0, n_iter=4, tol=-np.inf,
                         init_params="", params="stmc", implementation="scaling")
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covs
    ref.fit(x.numpy())
    np.testing.assert_allclose(-np.asarray(losses), ref.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(params[1].numpy(), ref.transmat_, rtol=1e-8)
    np.testing.assert_allclose(params[2].numpy(), ref.means_, rtol=1e-8)


def test_guide_q_after_a_fused_step_is_the_posterior_chain(monkeypatch):
    data = _data([30, 12])
    qs = []
    for on in (False, True):
        m = _model("diag")
        _run(m, data, 1, on, monkeypatch)
        qs.append((m.q_start_logits.detach().clone(), m.q_trans_logits.detach().clone()))
    for a, b in zip(*qs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_fused_route_applies_only_where_it_can(monkeypatch):
    data = _data([20])
    m = _model("diag")
    args = m.prepare(data)
    assert m.fused_step(*args, hard=True) is None
    mask = torch.ones(1, 20, 2, dtype=torch.bool)
    assert m.fused_step(args[0], args[1], mask) is None
    full = GaussianHMM(3, 2, "full").double()
    assert full.fused_step(*full.prepare(data)) is None
    big = GaussianHMM(3, 2, "diag").double()
    assert big.fused_step(*big.prepare(_data([6000]))) is None  # past the direct size
    monkeypatch.setenv("PYROEM_COMPILED", "0")
    assert m.fused_step(*args) is None
    before = [p.detach().clone() for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    assert "fused_step of GaussianHMM" in repr(EM(m.model, m.guide).plan)


def test_a_failing_fused_step_changes_nothing_and_the_separate_steps_report(monkeypatch):
    # a state on a single repeated point with reg_covar=0: a zero variance, which the
    # kernel does not write; the separate steps then raise, and restore
    x = torch.cat([torch.full((10, 1), 2.0), torch.randn(10, 1) + 8]).double()
    m = GaussianHMM(2, 1, "diag", reg_covar=0.0).double()
    m.means = torch.tensor([[2.0], [8.0]], dtype=torch.float64)
    m.covariances = torch.tensor([[1e-3], [1.0]], dtype=torch.float64)
    m.trans_probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    m.start_probs = torch.tensor([0.5, 0.5], dtype=torch.float64)
    args = m.prepare(x[:10])
    before = [p.detach().clone() for p in m.parameters()]
    assert m.fused_step(*args) is None
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    with pytest.raises(ValueError, match="non-positive variance"):
        EM(m.model, m.guide).step(*args)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_bad_data_is_refused_before_anything_changes():
    m = _model("diag")
    x, lengths = m.prepare(_data([10]))
    bad = x.clone()
    bad[0, 3, 1] = float("nan")
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match="finite"):
        m.fused_step(bad, lengths)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.parametrize("cov", ["diag", "spherical"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_problem_routes_compiled_and_torch_agree(cov, dtype, monkeypatch):
    # the direct log-densities and own-mean moments of a small problem: compiled kernels
    # where they load, the torch formulas with PYROEM_COMPILED=0 (the fallback)
    from pyroem.models import gaussian_direct as gd

    m = _model(cov, dtype=dtype)
    x, _ = m.prepare([d.to(dtype) for d in _data([50, 50])])
    g = torch.softmax(torch.randn(x.shape[:2] + (3,), dtype=torch.float64), -1).to(dtype)
    with torch.no_grad():
        got = gd.direct_log_prob(m.emission, x), gd.direct_moments(m.emission, g, x)
        monkeypatch.setenv("PYROEM_COMPILED", "0")
        assert not cg.applies(x)  # the torch formulas now
        ref = gd.direct_log_prob(m.emission, x), gd.direct_moments(m.emission, g, x)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got[0], ref[0], rtol=tol, atol=tol)
    for name in ("n", "sx", "sxx", "shift"):
        torch.testing.assert_close(got[1][name], ref[1][name], rtol=tol, atol=tol)
