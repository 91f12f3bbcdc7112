"""The generic E-step and the EM loop on the built-in mixture, against hand computations."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroem.infer import EM, exact_posterior
from pyroem.models import GaussianMixture


def _gmm(blobs, covariance_type="full"):
    gmm = GaussianMixture(3, 2, covariance_type)
    gmm.fit(blobs, max_iter=2, seed=0)
    return gmm


def _hand_responsibilities(gmm, x):
    comps = dist.MultivariateNormal(gmm.means.detach(), covariance_matrix=gmm.covariances)
    logp = comps.log_prob(x.unsqueeze(-2)) + gmm.weights.detach().log()
    return logp.logsumexp(-1).sum(), logp.softmax(-1)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_generic_estep_gives_responsibilities(blobs, covariance_type):
    gmm = _gmm(blobs, covariance_type)
    post = exact_posterior(gmm.model, blobs, max_plate_nesting=1)
    log_px, resp = _hand_responsibilities(gmm, blobs)
    assert float(post.log_evidence) == pytest.approx(float(log_px), rel=1e-12)
    torch.testing.assert_close(post["x"].T, resp, rtol=1e-10, atol=1e-12)
    # the prior site of z carries the same marginal
    torch.testing.assert_close(post["z"].T, resp, rtol=1e-10, atol=1e-12)


def test_hard_estep_gives_argmax_and_max_joint(blobs):
    gmm = _gmm(blobs)
    post = exact_posterior(gmm.model, blobs, max_plate_nesting=1, hard=True)
    comps = dist.MultivariateNormal(gmm.means.detach(), covariance_matrix=gmm.covariances)
    logp = comps.log_prob(blobs.unsqueeze(-2)) + gmm.weights.detach().log()
    assert float(post.log_evidence) == pytest.approx(float(logp.max(-1).values.sum()), rel=1e-12)
    assert torch.equal(post["x"].T.argmax(-1), logp.argmax(-1))
    assert torch.equal(post["x"].sum(0), torch.ones(len(blobs), dtype=blobs.dtype))


def test_em_step_loss_lines_up_with_traceenum_elbo(blobs):
    gmm = _gmm(blobs)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    expected = elbo.loss(gmm.model, lambda x: None, blobs)  # -log p(X), z enumerated in the model
    em = EM(gmm.model, gmm.guide)
    assert em.step(blobs) == pytest.approx(expected, rel=1e-10)


def test_estep_writes_exact_posterior_into_guide(blobs):
    gmm = _gmm(blobs)
    em = EM(gmm.model, gmm.guide)
    post = em.e_step(blobs)
    # with q = p(z|x) in the guide, the (exactly enumerated) ELBO equals log p(X): KL = 0
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(gmm.model, gmm.guide, blobs)
    assert -elbo == pytest.approx(float(post.log_evidence), rel=1e-10)


def test_em_step_never_lowers_log_likelihood(blobs):
    gmm = GaussianMixture(3, 2, reg_covar=0.0)
    gmm.fit(blobs, init="random", max_iter=1, seed=5)
    em = EM(gmm.model, gmm.guide)
    losses = [em.step(blobs) for _ in range(15)]
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(losses, losses[1:]))


def test_continuous_latent_is_a_clear_error():
    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    with pytest.raises(ValueError, match="cannot be enumerated"):
        exact_posterior(model, torch.randn(5))


def test_em_without_m_step_says_what_to_do():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    em = EM(model, m_step=None)
    if em.m_step is None:
        with pytest.raises(NotImplementedError, match="M-step"):
            em.step(torch.randn(5))
    # the E-step itself works on any enumerable model
    post = em.e_step(torch.randn(5))
    assert torch.allclose(post["x"].sum(0), torch.ones(5))
