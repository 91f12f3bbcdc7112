"""The ELBO/KL decomposition, the zero-variance ELBO, SVI on the built-in guides and the
EM/Viterbi/SVI comparison, checked against brute-force sums over every latent assignment."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from torch.distributions import MultivariateNormal as TorchMVN
from torch.distributions import constraints

from pyroem.infer import EM, compare, decompose, posterior_elbo_samples
from pyroem.models import GaussianMixture

# These tests use small tensors, for which torch's intra-op thread pool only adds
# contention on a shared machine (20x slower under load); one thread is plenty.


def two_blobs(n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=dtype)
    x[: n // 2] += torch.tensor([2.5, 0.0], dtype=dtype)
    x[n // 2:] -= torch.tensor([2.5, 0.0], dtype=dtype)
    return x


def tiny_gmm(dtype=torch.float64):
    gmm = GaussianMixture(2, dim=2, reg_covar=0.0).to(dtype)
    gmm.weights = torch.tensor([0.3, 0.7], dtype=dtype)
    gmm.means = torch.tensor([[0.0, 0.5], [1.0, -0.5]], dtype=dtype)
    gmm.covariances = torch.tensor([[[1.0, 0.3], [0.3, 0.8]], [[0.5, -0.1], [-0.1, 1.5]]],
                                   dtype=dtype)
    x = torch.tensor([[0.1, 0.2], [1.2, -0.3], [0.6, 0.9]], dtype=dtype)
    return gmm, x


def started_gmm(reg_covar=0.0):
    """A 2-component GMM set to a poor but asymmetric start (EM then moves a lot)."""
    gmm = GaussianMixture(2, dim=2, reg_covar=reg_covar).to(torch.float64)
    gmm.means = torch.tensor([[0.5, 1.0], [-0.2, -1.0]], dtype=torch.float64)
    return gmm


def brute_force(gmm, x, q):
    """log p(X), Q, H and KL(q || p(Z|X)) by summing over all K^N assignments, with
    torch.distributions' MultivariateNormal (independent of pyroem's)."""
    K, N = gmm.num_components, x.shape[0]
    comps = [TorchMVN(gmm.means[k].detach(), gmm.covariances[k]) for k in range(K)]
    log_w = gmm.weights.detach().log()
    log_joint, log_q = [], []
    for z in itertools.product(range(K), repeat=N):
        log_joint.append(sum(log_w[k] + comps[k].log_prob(x[n]) for n, k in enumerate(z)))
        log_q.append(sum(q[n, k].log() for n, k in enumerate(z)))
    log_joint, log_q = torch.stack(log_joint), torch.stack(log_q)
    log_evidence = log_joint.logsumexp(0)
    qz = log_q.exp()
    Q = (qz * log_joint).sum()
    H = -(qz * log_q).sum()
    kl = (qz * (log_q - (log_joint - log_evidence))).sum()
    return float(log_evidence), float(Q), float(H), float(kl)


def test_e_step_makes_kl_zero_and_matches_brute_force():
    gmm, x = tiny_gmm()
    EM(gmm.model, gmm.guide).e_step(x)
    d = decompose(gmm.model, gmm.guide, x)
    log_evidence, Q, H, kl = brute_force(gmm, x, gmm.q_probs.detach())
    assert abs(d.kl) < 1e-9 and abs(kl) < 1e-9
    assert d.elbo == pytest.approx(d.log_evidence, abs=1e-9)
    assert d.log_evidence == pytest.approx(log_evidence, abs=1e-10)
    assert d.expected_log_joint == pytest.approx(Q, abs=1e-10)
    assert d.entropy == pytest.approx(H, abs=1e-10)


def test_perturbed_q_has_positive_kl_equal_to_brute_force():
    gmm, x = tiny_gmm()
    EM(gmm.model, gmm.guide).e_step(x)
    q = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=torch.float64)
    gmm.q_probs = q
    d = decompose(gmm.model, gmm.guide, x)
    _log_evidence, Q, H, kl = brute_force(gmm, x, q)
    assert d.kl > 1e-3
    assert d.kl == pytest.approx(d.log_evidence - d.elbo, abs=1e-12)
    assert d.kl == pytest.approx(kl, abs=1e-10)
    assert d.elbo == pytest.approx(Q + H, abs=1e-10)
    assert d.expected_log_joint == pytest.approx(Q, abs=1e-10)
    assert d.entropy == pytest.approx(H, abs=1e-10)


def test_generic_model_and_guide_match_brute_force():
    """A hand-written model with pyro.params and a guide with per-point q (not a built-in)."""
    x = torch.tensor([-1.0, 0.3, 2.0], dtype=torch.float64)
    locs = torch.tensor([-1.0, 1.5], dtype=torch.float64)
    probs = torch.tensor([0.4, 0.6], dtype=torch.float64)
    q0 = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.05, 0.95]], dtype=torch.float64)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Categorical(probs))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    def guide(x):
        q = pyro.param("q", q0, constraint=constraints.simplex)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Categorical(q))

    d = decompose(model, guide, x)
    log_joint, log_q = [], []
    for z in itertools.product(range(2), repeat=3):
        z = torch.tensor(z)
        log_joint.append((probs[z].log() + dist.Normal(locs[z], 1.0).log_prob(x)).sum())
        log_q.append(q0[torch.arange(3), z].log().sum())
    log_joint, log_q = torch.stack(log_joint), torch.stack(log_q)
    qz = log_q.exp()
    assert d.log_evidence == pytest.approx(float(log_joint.logsumexp(0)), abs=1e-12)
    assert d.expected_log_joint == pytest.approx(float((qz * log_joint).sum()), abs=1e-12)
    assert d.entropy == pytest.approx(float(-(qz * log_q).sum()), abs=1e-12)
    assert d.kl > 0.1


def test_decompose_rejects_continuous_guide():
    gmm, x = tiny_gmm()

    def guide(x):
        pyro.sample("u", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="cannot be enumerated"):
        decompose(gmm.model, guide, x)


def test_em_history_records_decomposition_every_step():
    x = two_blobs()
    gmm = started_gmm()
    hist = gmm.fit(x, max_iter=8, tol=0, init="given", record_decomposition=True)
    e, m = hist.records["e_step"], hist.records["m_step"]
    assert len(e) == len(m) == hist.num_iters == 8
    for it, (de, dm) in enumerate(zip(e, m)):
        # E-step: q = p(Z|X, eta_old), so KL = 0 and ELBO = log p(X|eta_old).
        assert abs(de.kl) < 1e-9
        assert de.elbo == pytest.approx(de.log_evidence, abs=1e-9)
        assert de.log_evidence == pytest.approx(hist.log_likelihood[it], abs=1e-9)
        # M-step: q held fixed (same entropy), Q does not fall, KL >= 0 again.
        assert dm.entropy == pytest.approx(de.entropy, abs=1e-9)
        assert dm.expected_log_joint >= de.expected_log_joint - 1e-9
        assert dm.kl >= -1e-9
        assert dm.kl == pytest.approx(dm.log_evidence - dm.elbo, abs=1e-9)
        # log p(X|eta_new) >= ELBO(q, eta_new) >= ELBO(q, eta_old) = log p(X|eta_old)
        assert dm.log_evidence >= dm.elbo - 1e-9 >= de.elbo - 2e-9
    lls = [d.log_evidence for d in e]
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:]))
    assert lls[-1] > lls[0] + 1.0  # the run did move
    # Off by default.
    assert "e_step" not in gmm.fit(x, max_iter=2, seed=3).records


def test_viterbi_records_true_evidence_and_point_mass_q():
    x = two_blobs()
    gmm = started_gmm()
    hist = gmm.fit(x, method="viterbi", max_iter=5, tol=0, init="given",
                   record_decomposition=True)
    for it, d in enumerate(hist.records["e_step"]):
        assert d.entropy == pytest.approx(0.0, abs=1e-9)  # q is a point mass at Z_hat
        assert d.elbo == pytest.approx(hist.log_likelihood[it], abs=1e-8)  # log p(X, Z_hat)
        assert d.log_evidence > d.elbo  # the true evidence, above the Viterbi objective
        assert d.kl == pytest.approx(d.log_evidence - d.elbo, abs=1e-9)
        assert hist.records["log_evidence"][it] == d.log_evidence
    ref = GaussianMixture(2, dim=2).to(torch.float64)
    ref.weights, ref.means, ref.covariances = gmm.weights, gmm.means, gmm.covariances
    assert hist.records["m_step"][-1].log_evidence == pytest.approx(float(ref.log_prob(x).sum()),
                                                                    abs=1e-8)


def test_decompose_float32():
    gmm, x = tiny_gmm(torch.float32)
    EM(gmm.model, gmm.guide).e_step(x)
    d = decompose(gmm.model, gmm.guide, x)
    assert abs(d.kl) < 1e-4
    assert d.log_evidence == pytest.approx(brute_force(gmm, x, gmm.q_probs.detach())[0], abs=1e-4)


def test_zero_variance_trace_elbo_at_the_exact_posterior():
    gmm = GaussianMixture(3, dim=2)
    x = two_blobs(30, seed=5)
    gmm.fit(x, max_iter=2, seed=0)
    pyro.set_rng_seed(0)
    result = posterior_elbo_samples(gmm.model, gmm.guide, x, num_samples=20)
    ref = float(gmm.log_prob(x).sum())
    assert result.log_evidence == pytest.approx(ref, abs=1e-9)
    assert torch.allclose(result.samples, torch.full_like(result.samples, ref), rtol=0, atol=1e-9)
    # Control: any other q makes the same estimator noisy (and biased low).
    q = torch.full_like(gmm.q_probs.detach(), 1.0 / 3)
    gmm.q_probs = q
    sampling_guide = pyro.poutine.infer_config(gmm.guide, lambda site: {"enumerate": None})
    noisy = torch.tensor([-pyro.infer.Trace_ELBO().loss(gmm.model, sampling_guide, x)
                          for _ in range(20)])
    assert noisy.std() > 1.0 and noisy.max() < ref


def test_fit_svi_raises_log_evidence():
    x = two_blobs()
    gmm = started_gmm(reg_covar=1e-6)
    hist = gmm.fit(x, method="svi", max_iter=60, tol=0, init="given", lr=0.05)
    assert hist.final_log_likelihood > hist.log_likelihood[0] + 10.0
    # The fitted parameters are the ones reported.
    assert float(gmm.log_prob(x).sum()) == pytest.approx(hist.final_log_likelihood, abs=1e-8)
    assert len(hist.records["loss"]) == 60  # SVI's own -ELBO per step
    # q starts at the exact posterior of the start, so SVI's first ELBO is log p(X) there.
    assert -hist.records["loss"][0] == pytest.approx(hist.log_likelihood[0], abs=1e-8)


def test_plain_pyro_svi_trains_builtin_model_and_ignores_global_param_store():
    x = two_blobs()
    gmm = GaussianMixture(2, dim=2).to(torch.float64)
    gmm.means = torch.tensor([[0.5, 0.0], [-0.5, 0.0]], dtype=torch.float64)
    pyro.clear_param_store()
    pyro.param("means", torch.zeros(5))  # a stale same-named global param must not leak in
    before = float(gmm.log_prob(x).sum())
    svi = SVI(gmm.model, gmm.guide, pyro.optim.Adam({"lr": 0.05}),
              TraceEnum_ELBO(max_plate_nesting=1))
    for _ in range(50):
        svi.step(x)
    assert float(gmm.log_prob(x).sum()) > before + 10.0
    assert pyro.param("means").shape == (5,)  # the global store was left alone


def test_compare_starts_all_methods_from_the_same_parameters():
    x = two_blobs()
    gmm = started_gmm()
    means = gmm.means.clone()
    hists = compare(gmm, x, max_iter=6, init="given")
    assert list(hists) == ["em", "viterbi", "svi"]
    starts = [h.records["log_evidence"][0] for h in hists.values()]
    assert max(starts) - min(starts) < 1e-9
    for h in hists.values():
        assert len(h.records["log_evidence"]) == len(h.seconds) == 6
        assert all(b > a for a, b in zip(h.seconds, h.seconds[1:]))
    for d, ll in zip(hists["svi"].records["step"], hists["svi"].records["log_evidence"][1:]):
        assert d.kl > -1e-9 and d.kl == pytest.approx(d.log_evidence - d.elbo, abs=1e-9)
        assert d.log_evidence == pytest.approx(ll, abs=1e-9)  # after step t = before step t+1
    em = hists["em"].records["log_evidence"]
    assert all(b >= a - 1e-9 for a, b in zip(em, em[1:]))
    assert torch.equal(gmm.means, means)  # the model passed in is untouched
    assert hists["em"].records["log_evidence"][-1] > starts[0] + 1.0
    with pytest.raises(ValueError, match="unknown methods"):
        compare(gmm, x, methods=("em", "gibbs"))


def test_compare_records_the_viterbi_evidence_without_the_decomposition():
    # record_decomposition=False: Viterbi still gets the exact log p(X) of each iteration's
    # start (one soft E-step), equal to the full recording and above log p(X, Z_hat)
    x = two_blobs()
    light = compare(started_gmm(), x, methods=("viterbi",), max_iter=4, init="given",
                    record_decomposition=False)["viterbi"]
    full = compare(started_gmm(), x, methods=("viterbi",), max_iter=4, init="given")["viterbi"]
    assert "e_step" not in light.records and "e_step" in full.records
    assert light.records["log_evidence"] == pytest.approx(full.records["log_evidence"], abs=1e-9)
    assert all(e > j for e, j in zip(light.records["log_evidence"], light.log_likelihood))
    with pytest.raises(ValueError, match="record_decomposition"):
        started_gmm().fit(x, record_decomposition="yes")


def test_q_probs_readable_after_fit():
    x = two_blobs()
    gmm = GaussianMixture(2, dim=2)
    gmm.fit(x, max_iter=3, seed=0)
    assert gmm.q_probs is not None and gmm.q_probs.shape == (40, 2)
    assert torch.allclose(gmm.q_probs.sum(-1), torch.ones(40, dtype=gmm.dtype))
    assert math.isfinite(decompose(gmm.model, gmm.guide, x).kl)
