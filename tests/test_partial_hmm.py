"""Partial observation on the hidden Markov models (missing values, labelled frames,
per-sequence weights), against brute-force sums over all K^T state paths on T = 6."""

import itertools
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

from pyroem.infer import exact_posterior
from pyroem.models import CategoricalHMM, GaussianHMM

K, T, D = 3, 6, 2


def _gaussian_hmm(covariance_type="full", seed=0):
    g = torch.Generator().manual_seed(seed)
    hmm = GaussianHMM(K, D, covariance_type, reg_covar=0.0).double()
    hmm.start_probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    hmm.trans_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]],
                                   dtype=torch.float64)
    hmm.means = torch.randn(K, D, generator=g, dtype=torch.float64) * 2
    a = torch.randn(K, D, D, generator=g, dtype=torch.float64)
    cov = a @ a.mT + torch.eye(D, dtype=torch.float64)
    hmm.covariances = {"full": cov, "diag": cov.diagonal(dim1=-2, dim2=-1)}[covariance_type]
    return hmm


def _categorical_hmm():
    hmm = _gaussian_hmm()
    cat = CategoricalHMM(K, 4).double()
    cat.start_probs, cat.trans_probs = hmm.start_probs, hmm.trans_probs
    cat.emission_probs = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1],
                                       [0.1, 0.1, 0.2, 0.6]], dtype=torch.float64)
    return cat


def _full_cov(hmm):
    c = hmm.covariances
    return c if hmm.covariance_type == "full" else torch.diag_embed(c)


@torch.no_grad()
def _frame_log_emit(hmm, x, mask):
    """(T, K): log-density of each frame's observed part (torch's MVN), 0 if none."""
    out = torch.zeros(x.shape[0], K, dtype=torch.float64)
    for t in range(x.shape[0]):
        o = mask[t].nonzero().squeeze(-1) if mask.dim() == 2 else None
        for k in range(K):
            if mask.dim() == 1:  # symbols
                out[t, k] = hmm.emission_probs[k, x[t]].log() if mask[t] else 0.0
            elif o.numel():
                out[t, k] = TorchMVN(hmm.means[k, o], _full_cov(hmm)[k][o][:, o]).log_prob(x[t, o])
    return out


@torch.no_grad()
def _brute(hmm, log_emit, labels=None):
    """log p(X[, z_L = l]) and gamma (T, K) by summing over all K^T paths."""
    start, trans = hmm.start_probs.log(), hmm.trans_probs.log()
    n = log_emit.shape[0]
    paths, scores = [], []
    for path in itertools.product(range(K), repeat=n):
        if labels is not None and any(l >= 0 and l != z for l, z in zip(labels.tolist(), path)):
            continue
        s = start[path[0]] + sum(trans[a, b] for a, b in zip(path, path[1:]))
        scores.append(s + sum(log_emit[t, z] for t, z in enumerate(path)))
        paths.append(path)
    scores = torch.stack(scores)
    post = (scores - scores.logsumexp(0)).exp()
    gamma = torch.zeros(n, K, dtype=torch.float64)
    for p, path in zip(post, paths):
        gamma[torch.arange(n), torch.tensor(path)] += p
    return scores.logsumexp(0), gamma


def _gaussian_data(seed=1):
    hmm = _gaussian_hmm()
    x, _ = hmm.sample(T, seed=seed)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0], [0, 1], [1, 1], [0, 0]], dtype=torch.bool)
    return hmm, x, mask


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gaussian_hmm_missing_values_match_brute_force(covariance_type):
    hmm, x, mask = _gaussian_data()
    hmm = _gaussian_hmm(covariance_type)
    nan_x = x.masked_fill(~mask, float("nan"))
    ll, gamma = _brute(hmm, _frame_log_emit(hmm, x, mask))
    assert float(hmm.log_prob(nan_x, obs_mask=mask)) == pytest.approx(float(ll), abs=1e-10)
    torch.testing.assert_close(hmm.posterior(nan_x, obs_mask=mask), gamma, rtol=0, atol=1e-10)


def test_categorical_hmm_missing_symbols_match_brute_force():
    cat = _categorical_hmm()
    x = torch.tensor([0, 3, 1, 1, 2, 3])
    mask = torch.tensor([True, False, True, False, False, True])
    ll, gamma = _brute(cat, _frame_log_emit(cat, x, mask))
    x_missing = x.masked_fill(~mask, -1)  # the missing entries may hold anything
    assert float(cat.log_prob(x_missing, obs_mask=mask)) == pytest.approx(float(ll), abs=1e-12)
    torch.testing.assert_close(cat.posterior(x_missing, obs_mask=mask), gamma, rtol=0, atol=1e-12)


def test_labelled_frames_match_brute_force_over_consistent_paths():
    hmm, x, mask = _gaussian_data()
    labels = torch.tensor([-1, 2, -1, -1, 0, -1])
    ll, gamma = _brute(hmm, _frame_log_emit(hmm, x, mask), labels)
    nan_x = x.masked_fill(~mask, float("nan"))
    assert float(hmm.log_prob(nan_x, obs_mask=mask, labels=labels)) == pytest.approx(
        float(ll), abs=1e-10)
    torch.testing.assert_close(hmm.posterior(nan_x, obs_mask=mask, labels=labels), gamma,
                               rtol=0, atol=1e-10)
    states = hmm.predict(nan_x, obs_mask=mask, labels=labels)
    assert int(states[1]) == 2 and int(states[4]) == 0


def test_the_pyro_model_gives_the_same_exact_posterior():
    """The chain's Pyro model (what SVI and the decomposition trace) with obs_mask and
    labels, under Pyro's exact enumeration, equals the vectorised E-step."""
    hmm, x, mask = _gaussian_data()
    labels = torch.tensor([-1, 2, -1, -1, 0, -1])
    args = hmm.prepare(x.masked_fill(~mask, float("nan")), obs_mask=mask, labels=labels)
    own = hmm.e_step(*args)
    generic = exact_posterior(hmm.model, *args, max_plate_nesting=1)
    assert float(generic.log_evidence) == pytest.approx(float(own.log_evidence), abs=1e-10)
    ll, _ = _brute(hmm, _frame_log_emit(hmm, x, mask), labels)
    assert float(own.log_evidence) == pytest.approx(float(ll), abs=1e-10)


@torch.no_grad()
def _brute_gaussian_m_step(hmm, x, mask):
    """Means and covariances of one exact EM step (Ghahramani and Jordan per frame),
    from brute-force gamma; frames with nothing observed count nothing."""
    _, gamma = _brute(hmm, _frame_log_emit(hmm, x, mask))
    cov, mu = _full_cov(hmm), hmm.means
    n = torch.zeros(K, dtype=torch.float64)
    s1, s2 = torch.zeros(K, D, dtype=torch.float64), torch.zeros(K, D, D, dtype=torch.float64)
    for t in range(x.shape[0]):
        o, m = mask[t].nonzero().squeeze(-1), (~mask[t]).nonzero().squeeze(-1)
        if not o.numel():
            continue
        for k in range(K):
            e, v = mu[k].clone(), torch.zeros(D, D, dtype=torch.float64)
            e[o] = x[t, o]
            if m.numel():
                gain = cov[k][m][:, o] @ torch.linalg.inv(cov[k][o][:, o])
                e[m] = mu[k, m] + gain @ (x[t, o] - mu[k, o])
                v[m.unsqueeze(-1), m] = cov[k][m][:, m] - gain @ cov[k][o][:, m]
            n[k] += gamma[t, k]
            s1[k] += gamma[t, k] * e
            s2[k] += gamma[t, k] * (torch.outer(e, e) + v)
    means = s1 / n[:, None]
    return means, s2 / n[:, None, None] - means[:, :, None] * means[:, None, :]


def test_one_baum_welch_step_with_missing_values_is_exact():
    hmm, x, mask = _gaussian_data()
    means, covs = _brute_gaussian_m_step(hmm, x, mask)
    hmm.fit(x.masked_fill(~mask, float("nan")), obs_mask=mask, init="given", max_iter=1,
            tol=0)
    torch.testing.assert_close(hmm.means, means, rtol=0, atol=1e-10)
    torch.testing.assert_close(hmm.covariances, covs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_baum_welch_with_missing_values_is_monotone(kind):
    if kind == "gaussian":
        model = _gaussian_hmm()
        x, _ = model.sample(60, num_sequences=4, seed=3)
        mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) > 0.3
        model = GaussianHMM(K, D, reg_covar=0.0).double()
    else:
        model = _categorical_hmm()
        x, _ = model.sample(60, num_sequences=4, seed=3)
        mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) > 0.3
        model = CategoricalHMM(K, 4).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = model.fit(x, torch.full((4,), 60), obs_mask=mask, max_iter=25, tol=0, seed=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert ll[-1] > ll[0]


def test_fully_labelled_sequences_give_the_supervised_mle_in_one_iteration():
    truth = _gaussian_hmm()
    x, z = truth.sample(40, num_sequences=3, seed=5)
    hmm = _gaussian_hmm(seed=9)
    hmm.fit(list(x), labels=list(z), init="given", max_iter=1, tol=0)
    first = torch.bincount(z[:, 0], minlength=K).double()
    torch.testing.assert_close(hmm.start_probs, first / 3, rtol=0, atol=1e-12)
    counts = torch.zeros(K, K, dtype=torch.float64)
    for b in range(3):
        for a, c in zip(z[b, :-1].tolist(), z[b, 1:].tolist()):
            counts[a, c] += 1
    torch.testing.assert_close(hmm.trans_probs, counts / counts.sum(-1, keepdim=True),
                               rtol=0, atol=1e-12)
    frames, states = x.reshape(-1, D), z.reshape(-1)
    for k in range(K):
        torch.testing.assert_close(hmm.means[k], frames[states == k].mean(0), rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_integer_sequence_weights_equal_repeated_sequences(kind):
    model = _gaussian_hmm() if kind == "gaussian" else _categorical_hmm()
    seqs = [model.sample(n, seed=s)[0] for n, s in ((9, 1), (7, 2), (12, 3), (5, 4))]
    weight = [2, 0, 1, 3]
    repeated = [s for s, w in zip(seqs, weight) for _ in range(w)]
    a = _gaussian_hmm() if kind == "gaussian" else _categorical_hmm()
    b = _gaussian_hmm() if kind == "gaussian" else _categorical_hmm()
    h1 = a.fit(repeated, init="given", max_iter=5, tol=0)
    h2 = b.fit(seqs, sample_weight=weight, init="given", max_iter=5, tol=0)
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-9)
    for name in ("start_probs", "trans_probs") + (
            ("means", "covariances") if kind == "gaussian" else ("emission_probs",)):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=1e-10)


def test_labels_seed_the_states():
    """Labelled frames decide which state is which: each state starts nearest the true
    mean of the state it is labelled with, whatever k-means' numbering."""
    truth = _gaussian_hmm()
    truth.means = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64)
    x, z = truth.sample(300, seed=6)
    labels = torch.full((300,), -1)
    for k in range(K):
        first = int((z == k).nonzero()[0])
        labels[first] = k
    for seed in range(4):
        hmm = GaussianHMM(K, D).double().initialize(x, labels=labels, seed=seed)
        dist = torch.cdist(hmm.means, truth.means)
        assert torch.equal(dist.argmin(-1), torch.arange(K))


def test_bad_partial_input_is_a_clear_error_that_changes_nothing():
    hmm, x, mask = _gaussian_data()
    before = {k: v.clone() for k, v in hmm.state_dict().items() if torch.is_tensor(v)}
    cases = [
        ({"obs_mask": mask[:-1]}, "obs_mask must have the data's shape"),
        ({"obs_mask": [mask]}, "obs_mask must have the data's form"),
        ({"labels": torch.full((T,), K)}, r"labels must lie in \[-1, 3\)"),
        ({"labels": torch.zeros(T + 1, dtype=torch.long)}, "labels must have the data's"),
        ({"sample_weight": [-1.0]}, "finite and >= 0"),
        ({"sample_weight": [0.0]}, "zero everywhere"),
        ({"sample_weight": [1.0, 1.0]}, "one weight per sequence"),
        ({"obs_mask": torch.zeros_like(mask)}, "no observed value"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            hmm.fit(x, init="given", **kwargs)
    with pytest.raises(ValueError, match="obs_mask"):
        hmm.fit(x.masked_fill(~mask, float("nan")), init="given")
    with pytest.raises(ValueError, match="record_decomposition"):
        hmm.fit(x, init="given", sample_weight=[1.0], record_decomposition=True)
    for k, v in hmm.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k])


def test_an_emission_without_masked_densities_takes_whole_frames_only():
    """GMMHMM (no masked_log_prob): a frame missing entirely has no emission (checked
    against the brute-force sum); a frame missing some dimensions is a clear error."""
    from pyroem.models import GMMHMM

    model = GMMHMM(K, 2, D).double()
    model.start_probs, model.trans_probs = _gaussian_hmm().start_probs, _gaussian_hmm().trans_probs
    x = torch.randn(T, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    frames = torch.tensor([True, False, True, True, False, True])
    mask = frames.unsqueeze(-1).expand(T, D)
    log_emit = torch.zeros(T, K, dtype=torch.float64)
    log_emit[frames] = model.emission.log_prob(x[frames].unsqueeze(0)).squeeze(0).detach()
    ll, _ = _brute(model, log_emit)
    assert float(model.log_prob(x.masked_fill(~mask, float("nan")), obs_mask=mask)) == \
        pytest.approx(float(ll), abs=1e-10)
    partial = mask.clone()
    partial[0, 1] = False
    with pytest.raises(ValueError, match="whole frames missing only"):
        model.log_prob(x, obs_mask=partial)


def test_the_e_step_closes_the_gap_with_missing_values_and_labels():
    """KL = 0 after each E-step (the decomposition of the chain's Pyro model), with
    partial and whole frames missing and labelled frames."""
    hmm = _gaussian_hmm()
    x, z = hmm.sample(40, seed=3)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.3
    mask[5:8] = False
    labels = torch.where(torch.arange(40) % 7 == 0, z, -1)
    hist = hmm.fit(x, obs_mask=mask, labels=labels, init="given", max_iter=3, tol=0,
                   record_decomposition=True)
    for record, ll in zip(hist.records["e_step"], hist.log_likelihood):
        assert abs(float(record.kl)) < 1e-9
        assert float(record.log_evidence) == pytest.approx(ll, abs=1e-9)
