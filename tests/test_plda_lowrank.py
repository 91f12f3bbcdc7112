"""Simplified (low-rank) PLDA, ``PLDA(dim, rank=r)``: against brute-force joint Gaussians,
the two-covariance model at rank = dim, and its own EM guarantees."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

import pyroem
from pyroem.infer import EM, posterior_elbo_samples
from pyroem.models import PLDA
from pyroem.models.plda import LowRankPLDA, LowRankSpeakerPosterior

F64 = torch.float64


def _model(dim=4, rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    plda = PLDA(dim, rank=rank).to(F64)
    plda.mean = torch.randn(dim, generator=g, dtype=F64)
    plda.speaker_loadings = 1.5 * torch.randn(dim, rank, generator=g, dtype=F64)
    a = torch.randn(dim, dim, generator=g, dtype=F64)
    plda.within_cov = a @ a.T / dim + 0.3 * torch.eye(dim, dtype=F64)
    return plda


def _joint(plda, n):
    """The joint Gaussian of (y, vec X) for one speaker with n embeddings: y ~ N(0, I_r),
    x_i = mu + V y + e_i; returns (mean, covariance) over r + n D variables."""
    V, W, mu = plda.speaker_loadings, plda.within_cov, plda.mean.detach()
    r = V.shape[1]
    A = torch.cat([torch.eye(r, dtype=F64), V.repeat(n, 1)])  # (r + nD, r)
    cov = A @ A.T
    cov[r:, r:] += torch.kron(torch.eye(n, dtype=F64), W)
    mean = torch.cat([torch.zeros(r, dtype=F64), mu.repeat(n)])
    return mean, cov


def test_construction_and_bad_ranks():
    plda = PLDA(5, rank=3)
    assert isinstance(plda, LowRankPLDA) and isinstance(plda, PLDA)
    assert plda.config() == {"dim": 5, "rank": 3, "reg_covar": 1e-6}
    assert type(PLDA(5)) is PLDA and PLDA(5).rank is None
    assert PLDA(5, rank=3).speaker_loadings.shape == (5, 3)
    for bad in (0, 6, -1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="rank"):
            PLDA(5, rank=bad)
    with pytest.raises(ValueError, match="speaker_loadings must have shape"):
        plda.speaker_loadings = torch.zeros(5, 2)
    before = plda.speaker_loadings.clone()
    with pytest.raises(ValueError, match="rank <= 3"):
        plda.between_cov = torch.eye(5)  # rank 5 > 3: refused, nothing changes
    assert torch.equal(plda.speaker_loadings, before)


def test_between_cov_setter_factors_a_low_rank_matrix():
    plda = _model(dim=4, rank=2, seed=1)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(4, 2, generator=g, dtype=F64)
    plda.between_cov = v @ v.T
    assert torch.allclose(plda.between_cov, v @ v.T, atol=1e-12)


def test_posterior_and_evidence_against_brute_force_joint_gaussian():
    plda = _model(dim=3, rank=2, seed=3)
    counts = torch.tensor([1, 3, 2, 3, 1])
    x, labels, _ = plda.sample(5, counts, seed=0)
    post = EM(plda.model, plda.guide).e_step(x, labels)
    assert isinstance(post, LowRankSpeakerPosterior)
    r = 2
    total = 0.0
    for s in range(5):
        xs = x[labels == s].reshape(-1)
        mean, cov = _joint(plda, counts[s].item())
        # Gaussian conditioning of y on vec X_s
        gain = torch.linalg.solve(cov[r:, r:], cov[r:, :r]).T
        loc = mean[:r] + gain @ (xs - mean[r:])
        post_cov = cov[:r, :r] - gain @ cov[r:, :r]
        assert torch.allclose(post.loc[s], loc, atol=1e-11)
        assert torch.allclose(post.latent_covariance()[s], post_cov, atol=1e-11)
        total += float(TorchMVN(mean[r:], cov[r:, r:]).log_prob(xs).detach())
    assert math.isclose(float(post.log_evidence), total, rel_tol=1e-12)
    per_speaker = plda.log_prob(x, labels)  # the scoring route (simultaneous diagonalisation)
    assert math.isclose(float(per_speaker.sum()), total, rel_tol=1e-12)
    # the guide holds the exact posterior: every single-sample ELBO is log p(X)
    samples = posterior_elbo_samples(plda.model, plda.guide, x, labels, num_samples=5)
    assert np.allclose(samples.samples.numpy(), total, atol=1e-9, rtol=0)


@pytest.mark.parametrize("n", [1, 3])
def test_llr_is_the_ratio_of_the_two_hypotheses_marginal_likelihoods(n):
    plda = _model(dim=4, rank=2, seed=4)
    g = torch.Generator().manual_seed(n)
    enroll = torch.randn(n, 4, generator=g, dtype=F64) * 2
    tests = torch.randn(3, 4, generator=g, dtype=F64) * 2

    def log_marginal(e):  # p(E) of embeddings of one speaker, the latent integrated out
        mean, cov = _joint(plda, e.shape[0])
        return TorchMVN(mean[2:], cov[2:, 2:]).log_prob(e.reshape(-1))

    expected = torch.stack([log_marginal(torch.cat([enroll, t[None]]))
                            - log_marginal(enroll) - log_marginal(t[None]) for t in tests])
    assert torch.allclose(plda.llr(enroll, tests), expected, atol=1e-10, rtol=0)


def _data(seed=0, dim=3, num_speakers=40):
    g = torch.Generator().manual_seed(seed)
    truth = _model(dim=dim, rank=dim, seed=seed + 100)
    counts = torch.randint(2, 7, (num_speakers,), generator=g)
    x, labels, _ = truth.sample(num_speakers, counts, seed=seed)
    return x, labels


def test_em_is_monotone_and_the_between_covariance_keeps_its_rank():
    x, labels = _data(seed=1, dim=4)
    plda = PLDA(4, rank=2, reg_covar=0)
    hist = plda.fit(x, labels, max_iter=60, tol=0)
    ll = np.array(hist.log_likelihood)
    assert (np.diff(ll) >= -1e-9 * abs(ll[-1])).all() and ll[-1] > ll[0]
    values = torch.linalg.eigvalsh(plda.between_cov)
    assert values[:2].abs().max() < 1e-10 * values[-1]


def test_rank_dim_reaches_the_two_covariance_models_maximum():
    x, labels = _data(seed=2, dim=3)
    two = PLDA(3, reg_covar=0)
    low = PLDA(3, rank=3, reg_covar=0)
    # EM is slow near this maximum (the low-rank iterates the more): a fixed count
    h_two = two.fit(x, labels, max_iter=2000, tol=0)
    h_low = low.fit(x, labels, max_iter=2000, tol=0)
    # the same start (the scatter initialisation gives the same Sigma_b, Sigma_w) ...
    assert math.isclose(h_two.log_likelihood[0], h_low.log_likelihood[0], rel_tol=1e-12)
    # ... other iterates (two parametrisations of one likelihood) ...
    assert not math.isclose(h_two.log_likelihood[1], h_low.log_likelihood[1], rel_tol=1e-9)
    # ... and one maximum
    assert math.isclose(h_two.log_likelihood[-1], h_low.log_likelihood[-1], rel_tol=1e-13)
    for name in ("mean", "between_cov", "within_cov"):
        assert torch.allclose(getattr(two, name), getattr(low, name), atol=1e-9), name
    # a fixed point: one more step moves nothing
    before = float(low.log_prob(x, labels).sum())
    EM(low.model, low.guide).step(*low.prepare(x, labels))
    assert math.isclose(float(low.log_prob(x, labels).sum()), before, rel_tol=1e-12)


def test_save_load_round_trip_with_rank(tmp_path):
    x, labels = _data(seed=3, dim=4)
    plda = PLDA(4, rank=2)
    plda.fit(x, labels, max_iter=5, tol=0)
    for suffix in (".pt", ".npz"):
        path = tmp_path / f"splda{suffix}"
        plda.save(path)
        other = pyroem.load(path)
        assert type(other) is LowRankPLDA and other.rank == 2
        assert torch.equal(other.speaker_loadings, plda.speaker_loadings)
        assert torch.equal(other.llr(x[:3], x[3:9]), plda.llr(x[:3], x[3:9]))
    other = LowRankPLDA.from_state_dict(plda.state_dict())
    assert torch.equal(other.log_prob(x, labels), plda.log_prob(x, labels))
    with pytest.raises(ValueError, match="LowRankPLDA"):
        PLDA(4).load_state_dict(plda.state_dict())


def test_float32_svi_and_viterbi():
    x, labels = _data(seed=4, dim=4)
    plda = PLDA(4, rank=2)
    hist = plda.fit(x.float(), labels, max_iter=10, tol=0)
    assert plda.dtype == torch.float32 and all(map(math.isfinite, hist.log_likelihood))
    hist = PLDA(4, rank=2).fit(x, labels, method="svi", max_iter=5, tol=0, lr=0.05, seed=0)
    assert all(map(math.isfinite, hist.log_likelihood))
    with pytest.raises(ValueError, match="viterbi"):
        PLDA(4, rank=2).fit(x, labels, method="viterbi")
    sampled, _, means = PLDA(4, rank=2).sample(3, 2, seed=0)
    assert sampled.shape == (6, 4) and means.shape == (3, 4)


def test_bad_inputs_change_nothing():
    plda = _model(dim=4, rank=2, seed=5)
    state = plda.snapshot()
    for value in (torch.full((4, 2), float("nan")), [[1.0, 2.0]] * 3, "V"):
        with pytest.raises(ValueError, match="speaker_loadings"):
            plda.speaker_loadings = value
    with pytest.raises(ValueError, match="between_cov"):
        plda.between_cov = -torch.eye(4)  # not positive semi-definite
    x, labels = _data(seed=5, dim=4)
    with pytest.raises(ValueError, match="at least 2 speakers"):
        plda.fit(x[labels == 0], labels[labels == 0])
    with pytest.raises(ValueError, match="no hard"):
        plda.e_step(*plda.prepare(x, labels), hard=True)
    after = plda.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in state.items() if torch.is_tensor(v))
