import math

import numpy as np
import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

from pyroem.infer import EM
from pyroem.models import PLDA
from pyroem.models.plda import encode_labels


def _random_spd(d, generator, floor):
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + floor * torch.eye(d, dtype=torch.float64)


def _model(dim=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    plda = PLDA(dim).to(torch.float64)
    plda.mean = torch.randn(dim, generator=g, dtype=torch.float64)
    plda.between_cov = _random_spd(dim, g, 0.5)
    plda.within_cov = _random_spd(dim, g, 0.2)
    return plda.to(dtype)


def _joint_log_density(plda, x):
    """log N(vec X; 1 (x) mu, I (x) W + 1 1^T (x) B): the stacked embeddings of one speaker
    as one dense Gaussian of dimension n D."""
    n = x.shape[0]
    cov = (torch.kron(torch.eye(n, dtype=x.dtype), plda.within_cov)
           + torch.kron(torch.ones(n, n, dtype=x.dtype), plda.between_cov))
    return TorchMVN(plda.mean.detach().repeat(n), cov).log_prob(x.reshape(-1))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_llr_equals_ratio_of_joint_gaussian_densities(n):
    plda = _model(dim=3, seed=n)
    g = torch.Generator().manual_seed(10 + n)
    enroll = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2
    tests = torch.randn(4, 3, generator=g, dtype=torch.float64) * 2
    expected = torch.stack([
        _joint_log_density(plda, torch.cat([enroll, t[None]]))  # same speaker
        - _joint_log_density(plda, enroll) - _joint_log_density(plda, t[None])  # different
        for t in tests])
    assert torch.allclose(plda.llr(enroll, tests), expected, atol=1e-10, rtol=0)
    assert torch.allclose(plda.llr(enroll, tests[2]), expected[2], atol=1e-10, rtol=0)
    assert plda.llr(enroll, tests[2]).shape == ()


def test_llr_with_one_enrolment_embedding_is_symmetric():
    plda = _model(dim=4, seed=11)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 4, generator=g, dtype=torch.float64)
    assert math.isclose(float(plda.llr(a, b)), float(plda.llr(b, a)), abs_tol=1e-12)
    assert math.isclose(float(plda.llr(a[None], b)), float(plda.llr(a, b)), abs_tol=1e-12)


def test_score_matrix_matches_llr():
    plda = _model(dim=4, seed=3)
    g = torch.Generator().manual_seed(0)
    sets = [torch.randn(k, 4, generator=g, dtype=torch.float64) for k in (1, 3, 2)]
    tests = torch.randn(5, 4, generator=g, dtype=torch.float64)
    scores = plda.score_matrix(sets, tests)
    assert scores.shape == (3, 5)
    for k, e in enumerate(sets):
        assert torch.allclose(scores[k], plda.llr(e, tests), atol=1e-12)


def test_log_prob_equals_joint_gaussian_density_per_speaker():
    plda = _model(dim=3, seed=1)
    counts = torch.tensor([1, 2, 5, 3, 1])
    x, labels, _ = plda.sample(5, counts, seed=0)
    expected = torch.stack([_joint_log_density(plda, x[labels == s]) for s in range(5)])
    assert torch.allclose(plda.log_prob(x, labels), expected, atol=1e-10, rtol=0)
    posterior = EM(plda.model, plda.guide).e_step(x, labels)
    assert math.isclose(float(posterior.log_evidence), float(expected.sum()), abs_tol=1e-9)


def test_posterior_is_the_conjugate_gaussian():
    plda = _model(dim=3, seed=2)
    x, labels, _ = plda.sample(4, torch.tensor([1, 4, 2, 4]), seed=1)
    post = plda.posterior(x, labels)
    b_inv = torch.linalg.inv(plda.between_cov)
    w_inv = torch.linalg.inv(plda.within_cov)
    covs = post.speaker_covariance()
    for s in range(4):
        xs = x[labels == s]
        cov = torch.linalg.inv(b_inv + xs.shape[0] * w_inv)
        loc = cov @ (b_inv @ plda.mean.detach() + w_inv @ xs.sum(0))
        assert torch.allclose(post.loc[s], loc, atol=1e-12)
        assert torch.allclose(covs[s], cov, atol=1e-12)
        tril = post.scale_tril[post.group[s]]
        assert torch.allclose(tril @ tril.T, cov, atol=1e-12)
        assert (tril.diagonal() > 0).all() and torch.equal(tril, tril.tril())
    assert post.counts.tolist() == [1, 2, 4]  # one covariance per distinct count


def test_elbo_equals_log_evidence_after_e_step():
    plda = _model(dim=3, seed=4)
    x, labels, _ = plda.sample(6, torch.tensor([1, 3, 2, 5, 1, 2]), seed=2)
    args = plda._prepare(x, labels)
    em = EM(plda.model, plda.guide)
    em.step(*args)  # move the parameters, then take a fresh E-step under them
    log_evidence = float(em.e_step(*args).log_evidence)
    pyro.set_rng_seed(0)
    elbos = [-pyro.infer.Trace_ELBO().loss(plda.model, plda.guide, *args) for _ in range(5)]
    # zero variance: every single-sample estimate is log p(X)
    assert np.allclose(elbos, log_evidence, atol=1e-9, rtol=0)
    # and the guide before the E-step (the prior) is not optimal
    fresh = _model(dim=3, seed=4)
    fresh.guide(*args)
    assert -pyro.infer.Trace_ELBO().loss(fresh.model, fresh.guide, *args) < log_evidence - 1


def _std_of_covariance_estimate(cov, n):
    d = cov.diagonal()
    return ((torch.outer(d, d) + cov.square()) / n).sqrt()


def test_em_recovers_covariances_and_is_monotone():
    truth = _model(dim=3, seed=5)
    g = torch.Generator().manual_seed(0)
    num_speakers = 3000
    counts = torch.randint(1, 9, (num_speakers,), generator=g)
    x, labels, _ = truth.sample(num_speakers, counts, seed=3)
    plda = PLDA(3, reg_covar=0.0)
    hist = plda.fit(x, labels, max_iter=200, tol=1e-9)
    assert hist.converged
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-8 * abs(ll[-1]))
    assert ll[-1] > ll[0]
    # within sampling error: 5 standard deviations of a covariance estimated from S speaker
    # means (inflated by the within-speaker noise) or N - S within-speaker deviations
    n = x.shape[0]
    b_tol = 5 * _std_of_covariance_estimate(truth.between_cov + truth.within_cov, num_speakers)
    w_tol = 5 * _std_of_covariance_estimate(truth.within_cov, n - num_speakers)
    assert ((plda.between_cov - truth.between_cov).abs() < b_tol).all()
    assert ((plda.within_cov - truth.within_cov).abs() < w_tol).all()
    mean_tol = 5 * ((truth.between_cov + truth.within_cov).diagonal() / num_speakers).sqrt()
    assert ((plda.mean.detach() - truth.mean.detach()).abs() < mean_tol).all()
    # a fixed point of EM is a stationary point of log p(X): one more step changes nothing
    before = plda.log_prob(x, labels).sum()
    plda.fit(x, labels, init="given", max_iter=1)
    assert torch.allclose(plda.log_prob(x, labels).sum(), before, rtol=1e-9)


def test_string_and_noncontiguous_labels_and_singletons():
    plda = _model(dim=2, seed=6)
    x, codes, _ = plda.sample(4, torch.tensor([3, 1, 2, 1]), seed=4)
    ints = [10, 40, 25, 7]  # non-contiguous, unsorted integers
    strs = ["carol", "alice", "dave", "bob"]
    a = plda.log_prob(x, codes)
    # sorted order of the labels defines the output order
    order_int = np.argsort(ints)
    b = plda.log_prob(x, torch.tensor([ints[c] for c in codes]))
    c = plda.log_prob(x, [strs[c] for c in codes])
    assert torch.allclose(b, a[order_int], atol=1e-12)
    assert torch.allclose(c, a[np.argsort(strs)], atol=1e-12)
    fitted = PLDA(2).fit(x, [strs[c] for c in codes], max_iter=3)
    assert len(fitted) == 3
    codes2, speakers = encode_labels(np.array(["b", "a", "b"]))
    assert codes2.tolist() == [1, 0, 1] and speakers == ["a", "b"]
    codes3, speakers3 = encode_labels([("x", 1), 2, ("x", 1)])  # unorderable: first seen
    assert codes3.tolist() == [0, 1, 0] and speakers3 == [("x", 1), 2]


def test_float32_matches_float64():
    plda = _model(dim=3, seed=7)
    x, labels, _ = plda.sample(50, 4, seed=5)
    p64 = PLDA(3)
    p64.fit(x, labels, max_iter=5, tol=0)
    p32 = PLDA(3)
    p32.fit(x.float(), labels, max_iter=5, tol=0)
    assert p32.dtype == torch.float32
    assert torch.allclose(p32.between_cov.double(), p64.between_cov, rtol=1e-4, atol=1e-5)
    assert math.isclose(p32.history.log_likelihood[-1], p64.history.log_likelihood[-1],
                        rel_tol=1e-5)


def test_svi_trains_the_same_model_and_guide():
    plda = _model(dim=2, seed=8)
    x, labels, _ = plda.sample(20, 3, seed=6)
    svi = PLDA(2)
    hist = svi.fit(x, labels, method="svi", max_iter=10, lr=0.05, seed=0)
    start = PLDA(2)
    start._initialize(start._prepare(x, labels), "scatter", None)
    assert not torch.allclose(svi.mean.detach(), start.mean.detach())  # SVI moved the parameters
    assert svi.q_loc.shape == (20, 2) and all(map(math.isfinite, hist.log_likelihood))


def test_svi_with_a_seed_is_reproducible_and_leaves_the_global_rng_alone():
    # SVI samples the speaker latents (Trace_ELBO): the seed fixes those draws too
    x, labels, _ = _model(dim=2, seed=8).sample(20, 3, seed=6)
    fits = []
    for global_seed in (123, 456):  # whatever the caller's global RNG state
        torch.manual_seed(global_seed)
        m = PLDA(2)
        m.fit(x, labels, method="svi", max_iter=5, seed=1)
        fits.append((m.history.log_likelihood, m.between_cov.detach(), torch.rand(1)))
    assert fits[0][0] == fits[1][0] and torch.equal(fits[0][1], fits[1][1])
    torch.manual_seed(123)
    assert torch.equal(fits[0][2], torch.rand(1))  # the caller's stream is where it was
    other = PLDA(2)
    other.fit(x, labels, method="svi", max_iter=5, seed=2)
    assert not torch.equal(other.between_cov.detach(), fits[0][1])


def test_bad_inputs_raise_value_error_and_leave_model_untouched():
    plda = _model(dim=2, seed=9)
    x, labels, _ = plda.sample(5, 2, seed=7)
    before = plda.between_cov.clone()
    bad = x.clone()
    bad[3, 1] = float("nan")
    cases = [
        dict(embeddings=bad, labels=labels),  # NaN
        dict(embeddings=x[:, :1], labels=labels),  # wrong dim
        dict(embeddings=x, labels=labels[:-1]),  # length mismatch
        dict(embeddings=x, labels=labels.reshape(5, 2)),  # 2-d labels
        dict(embeddings=x, labels=[[1]] * 10),  # unhashable labels
        dict(embeddings=x, labels=[float("nan")] * 10),
        dict(embeddings=x[:2], labels=[0, 0]),  # one speaker
        dict(embeddings=x[:3], labels=[0, 1, 2]),  # singletons only
    ]
    for case in cases:
        with pytest.raises(ValueError):
            plda.fit(case["embeddings"], case["labels"], init="given")
        assert torch.equal(plda.between_cov, before)
    with pytest.raises(ValueError, match="viterbi"):
        plda.fit(x, labels, method="viterbi")
    with pytest.raises(ValueError, match="init"):
        plda.fit(x, labels, init="kmeans++")
    with pytest.raises(ValueError):
        plda.between_cov = -torch.eye(2)
    with pytest.raises(ValueError):
        plda.within_cov = torch.eye(3)
    with pytest.raises(ValueError):
        plda.llr(torch.zeros(0, 2), x[0])
    with pytest.raises(ValueError):
        plda.llr(x[:2], torch.zeros(3))
    with pytest.raises(ValueError):
        plda.score_means(x[:2], [1, 0], x)
    with pytest.raises(ValueError):
        EM(plda.model, plda.guide, hard=True).step(x, labels)
    with pytest.raises(ValueError):
        PLDA(0)
    assert torch.equal(plda.between_cov, before)
