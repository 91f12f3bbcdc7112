"""The exact decomposition log p(X) = ELBO + KL for Gaussian guides of linear-Gaussian
models (factor analysis, PLDA, the state-space model), against closed forms."""

import math

import torch

from pyroem.infer import EM, decompose
from pyroem.models import PLDA, FactorAnalysis, LinearGaussianSSM

F64 = torch.float64


def _fa_and_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    fa = FactorAnalysis(5, 2).to(F64)
    fa.components = torch.randn(2, 5, generator=g, dtype=F64)
    fa.mean = torch.randn(5, generator=g, dtype=F64)
    fa.noise_variance = 0.3 + torch.rand(5, generator=g, dtype=F64)
    x = fa.sample(20, seed=seed)[0]
    return fa, x


def _fa_bound(fa, x):
    """Q + H of factor analysis for the guide's q(z_n) = N(m_n, C), in closed form."""
    W, mu, psi = fa.components, fa.mean, fa.noise_variance
    m = fa.q_loc.detach()
    C = fa.q_scale_tril.detach() @ fa.q_scale_tril.detach().T
    N, L = m.shape
    resid = x - mu - m @ W
    fit = (resid.square() / psi).sum() + N * torch.trace(W @ torch.diag(1 / psi) @ W.T @ C)
    q = -0.5 * (fit + N * (psi.log().sum() + 5 * math.log(2 * math.pi)))
    q = q - 0.5 * (m.square().sum() + N * torch.trace(C) + N * L * math.log(2 * math.pi))
    h = N * (0.5 * L * (1 + math.log(2 * math.pi)) + 0.5 * torch.logdet(C))
    return float(q), float(h)


def test_factor_analysis_decomposition_is_the_closed_form():
    fa, x = _fa_and_data()
    em = EM(fa.model, fa.guide)
    posterior = em.e_step(x)
    d = decompose(fa.model, fa.guide, x)
    assert abs(d.kl) < 1e-9 * abs(d.log_evidence)  # q is the exact posterior
    assert math.isclose(d.log_evidence, float(posterior.log_evidence), rel_tol=1e-12)
    q, h = _fa_bound(fa, x)
    assert math.isclose(d.expected_log_joint, q, rel_tol=1e-11)
    assert math.isclose(d.entropy, h, rel_tol=1e-11)
    em.run_m_step(posterior, x)  # new parameters, q still the old posterior
    d = decompose(fa.model, fa.guide, x)
    q, h = _fa_bound(fa, x)
    assert math.isclose(d.elbo, q + h, rel_tol=1e-11)
    assert d.kl > 0 and math.isclose(d.log_evidence, float(fa.log_prob(x).sum()), rel_tol=1e-12)


def test_fit_records_the_decomposition_of_continuous_latent_models():
    _, x = _fa_and_data(seed=1)
    hist = FactorAnalysis(5, 2).fit(x, max_iter=3, tol=0, init="random", seed=0,
                                    record_decomposition=True)
    for e, m in zip(hist.records["e_step"], hist.records["m_step"]):
        assert abs(e.kl) < 1e-9 * abs(e.log_evidence) and m.kl >= -1e-9 * abs(e.log_evidence)
    x, labels, _ = PLDA(3).to(F64).sample(8, 3, seed=0)
    for plda in (PLDA(3), PLDA(3, rank=2)):  # both PLDA guides are Gaussian
        hist = plda.fit(x, labels, max_iter=3, tol=0, record_decomposition=True)
        assert all(abs(e.kl) < 1e-9 * abs(e.log_evidence) for e in hist.records["e_step"])
        assert all(m.kl > 0 for m in hist.records["m_step"])
        assert [e.log_evidence for e in hist.records["e_step"]] == hist.log_likelihood


def test_state_space_chain_guide_decomposition():
    ssm = LinearGaussianSSM(2, 1).to(F64)
    ssm.transition_matrix = torch.tensor([[0.8, -0.3], [0.4, 0.7]], dtype=F64)
    x = torch.randn(7, 1, generator=torch.Generator().manual_seed(3), dtype=F64)
    args = ssm.prepare(x)
    em = EM(ssm.model, ssm.guide)
    posterior = em.e_step(*args)
    d = decompose(ssm.model, ssm.guide, *args)
    assert abs(d.kl) < 1e-10 and math.isclose(d.elbo, float(posterior.log_evidence),
                                              rel_tol=1e-12)
    em.run_m_step(posterior, *args)
    assert decompose(ssm.model, ssm.guide, *args).kl > 0
