"""Additive statistics and exact EM over batches and chunks: every batched route must
reproduce the in-memory fit (float64, 1e-10), and bad batches must leave the model as it
was."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyroem.datasets import load_old_faithful
from pyroem.distributions.merge import add_statistics, reshift, sum_statistics
from pyroem.infer.posteriors import DiscretePosterior
from pyroem.models import GMMHMM, PLDA, CategoricalHMM, GaussianHMM, GaussianMixture

COVS = ("full", "diag", "spherical", "tied")


def _params(m):
    return {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("q_")}


def _assert_same(a, b, tol=1e-10):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        assert torch.allclose(pa[name], pb[name], rtol=0, atol=tol), name


def _gmm_stats(gmm, x):
    resp = gmm.posterior(x)
    return gmm.expected_statistics(DiscretePosterior.given(x=resp.T), x)


@pytest.mark.parametrize("cov", COVS)
def test_halves_of_old_faithful_merge_to_the_whole(cov):
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2, covariance_type=cov).initialize(x, seed=0)
    halves = add_statistics(_gmm_stats(gmm, x[:136]), _gmm_stats(gmm, x[136:]))
    whole = _gmm_stats(gmm, x)
    a, b = GaussianMixture(2, 2, covariance_type=cov), GaussianMixture(2, 2, covariance_type=cov)
    a.to(torch.float64), b.to(torch.float64)
    a.maximize(halves)
    b.maximize(whole)
    _assert_same(a, b)
    # each half's moments are about its own mean: summing them as they are is wrong
    # (the bug this guards against), so the test can fail
    naive = {k: v if k == "shift" else v + _gmm_stats(gmm, x[136:])[k]
             for k, v in _gmm_stats(gmm, x[:136]).items()}
    c = GaussianMixture(2, 2, covariance_type=cov).to(torch.float64)
    c.maximize(naive)
    assert (c.means - b.means).abs().max() > 1e-2


def test_reshift_is_exact_against_raw_moments():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) + 10
    w = torch.rand(50, 2, generator=g, dtype=torch.float64)
    shift = x.mean(0)
    xc = x - shift
    stats = {"n": w.sum(0), "sx": w.T @ xc,
             "sxx": torch.einsum("nk,ni,nj->kij", w, xc, xc).reshape(2, 9), "shift": shift}
    about_zero = reshift(stats, torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(about_zero["sx"], w.T @ x, atol=1e-10)
    raw = torch.einsum("nk,ni,nj->kij", w, x, x).reshape(2, 9)
    assert torch.allclose(about_zero["sxx"], raw, rtol=1e-12, atol=1e-9)


def test_sum_statistics_of_many_chunks_equals_one():
    x = load_old_faithful()
    gmm = GaussianMixture(3, 2).initialize(x, seed=1)
    parts = sum_statistics(_gmm_stats(gmm, c) for c in x.split(17))
    a, b = GaussianMixture(3, 2).to(torch.float64), GaussianMixture(3, 2).to(torch.float64)
    a.maximize(parts)
    b.maximize(_gmm_stats(gmm, x))
    _assert_same(a, b)


def _start(cls, data, **kw):
    return cls(**kw).initialize(data, seed=0).state_dict()


def _fit_from(cls, state, data, **kw):
    m = cls(**{k: v for k, v in kw.items()})
    m.load_state_dict(state)
    hist = m.fit(data, init="given", max_iter=12, tol=0)
    return m, hist


@pytest.mark.parametrize("cov", COVS)
def test_gmm_batches_chunks_and_loader_equal_the_in_memory_fit(cov):
    x = load_old_faithful()
    kw = {"num_components": 3, "dim": 2, "covariance_type": cov}
    state = _start(GaussianMixture, x, **kw)
    ref, ref_hist = _fit_from(GaussianMixture, state, x, **kw)
    routes = {
        "list": [x[:100], x[100:101], x[101:]],
        "loader": DataLoader(TensorDataset(x), batch_size=64, shuffle=False),
        "numpy": [x[:150].numpy(), x[150:].numpy()],
    }
    for name, data in routes.items():
        m, hist = _fit_from(GaussianMixture, state, data, **kw)
        _assert_same(m, ref)
        assert np.allclose(hist.log_likelihood, ref_hist.log_likelihood, rtol=0, atol=1e-9), name
        assert abs(hist.final_log_likelihood - ref_hist.final_log_likelihood) < 1e-9
    m = GaussianMixture(**kw)
    m.load_state_dict(state)
    m.fit(x, init="given", max_iter=12, tol=0, chunk_size=50)
    _assert_same(m, ref)
    # chunks start from all the data, as the whole fit does
    a, b = GaussianMixture(**kw), GaussianMixture(**kw)
    a.fit(x, seed=5, max_iter=3, tol=0)
    b.fit(x, seed=5, max_iter=3, tol=0, chunk_size=50)
    _assert_same(a, b)
    # scoring in chunks gives the same numbers
    assert torch.allclose(ref.log_prob(x, chunk_size=7), ref.log_prob(x), atol=1e-12)
    assert torch.equal(ref.predict(x, chunk_size=7), ref.predict(x))


def test_gmm_batches_viterbi_equals_in_memory():
    x = load_old_faithful()
    state = _start(GaussianMixture, x, num_components=2, dim=2)
    a = GaussianMixture(2, 2)
    a.load_state_dict(state)
    ha = a.fit(x, method="viterbi", init="given", max_iter=5, tol=0)
    b = GaussianMixture(2, 2)
    b.load_state_dict(state)
    hb = b.fit(list(x.split(50)), method="viterbi", init="given", max_iter=5, tol=0)
    _assert_same(a, b)
    assert np.allclose(ha.log_likelihood, hb.log_likelihood, atol=1e-9)


def test_batches_initialise_from_the_first_batch():
    x = load_old_faithful()
    a = GaussianMixture(2, 2).initialize(x[:100], seed=3)
    b = GaussianMixture(2, 2)
    b.fit([x[:100], x[100:]], seed=3, max_iter=1, tol=0)
    c = GaussianMixture(2, 2)
    c.load_state_dict(a.state_dict())
    c.fit(x, init="given", max_iter=1, tol=0)
    _assert_same(b, c)


def _sequences(symbols=False, num=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        T = int(torch.randint(20, 50, (1,), generator=g))
        if symbols:
            out.append(torch.randint(0, 4, (T,), generator=g))
        else:
            z = (torch.arange(T) // 7) % 2
            out.append(torch.randn(T, 2, generator=g, dtype=torch.float64) + 3.0 * z[:, None])
    return out


HMMS = [
    (GaussianHMM, {"num_states": 2, "dim": 2}, False),
    (GaussianHMM, {"num_states": 3, "dim": 2, "covariance_type": "diag"}, False),
    (GMMHMM, {"num_states": 2, "num_components": 2, "dim": 2}, False),
    (CategoricalHMM, {"num_states": 3, "num_symbols": 4}, True),
]


@pytest.mark.parametrize("cls,kw,symbols", HMMS)
def test_hmm_batches_equal_the_in_memory_fit(cls, kw, symbols):
    seqs = _sequences(symbols)
    model = cls(**kw).to(torch.float64).initialize(seqs, seed=0)
    state = model.state_dict()
    ref, ref_hist = _fit_from(cls, state, seqs, **kw)
    from pyroem.models.hmm.sequences import pack_sequences
    padded, lengths, _ = pack_sequences(seqs[3:], num_symbols=4 if symbols else None,
                                        dim=None if symbols else 2)
    for data in ([seqs[:3], seqs[3:5], seqs[5:]], [seqs[:3], (padded, lengths)]):
        m, hist = _fit_from(cls, state, data, **kw)
        _assert_same(m, ref)
        assert np.allclose(hist.log_likelihood, ref_hist.log_likelihood, rtol=0, atol=1e-9)
    if not symbols:  # in memory, in chunks of 2 sequences
        m = cls(**kw)
        m.load_state_dict(state)
        hist = m.fit(seqs, init="given", max_iter=12, tol=0, chunk_size=2)
        _assert_same(m, ref)


BAD = {
    "empty": lambda x: [x[:100], x[:0], x[100:]],
    "dimension": lambda x: [x[:100], x[100:, :1]],
    "dtype": lambda x: [x[:100], x[100:].float()],
    "nan": lambda x: [x[:100], torch.full((3, 2), float("nan"), dtype=x.dtype)],
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_a_bad_batch_mid_pass_names_the_batch_and_changes_nothing(what):
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2).initialize(x, seed=0)
    before = gmm.state_dict()
    with pytest.raises(ValueError, match="batch 1"):
        gmm.fit(BAD[what](x), init="given", max_iter=3)
    after = gmm.state_dict()
    for k in before:
        if torch.is_tensor(before[k]):
            assert torch.equal(before[k], after[k]), k


class _Empty:
    def __iter__(self):
        return iter(())


def test_a_loader_that_yields_nothing_and_a_one_shot_iterator_are_refused():
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2).initialize(x, seed=0)
    before = _params(gmm)
    with pytest.raises(ValueError, match="yielded nothing"):
        gmm.fit(_Empty())
    with pytest.raises(ValueError, match="one-shot"):
        gmm.fit(iter([x[:100], x[100:]]))
    with pytest.raises(ValueError, match="chunk_size"):
        gmm.fit(x, chunk_size=0)
    with pytest.raises(ValueError, match="method=svi"):
        gmm.fit([x[:100], x[100:]], method="svi")
    after = _params(gmm)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hmm_bad_batch_names_it():
    seqs = _sequences()
    hmm = GaussianHMM(2, 2).initialize(seqs, seed=0)
    with pytest.raises(ValueError, match="batch 1"):
        hmm.fit([seqs[:3], [s[:, :1] for s in seqs[3:]]], init="given")


def _speakers(S=30, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(S, 3, generator=g, dtype=torch.float64) * 2 + 5
    lab = torch.arange(S).repeat_interleave(n)
    x = z[lab] + torch.randn(S * n, 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(S * n, generator=g)  # each speaker spread over the batches
    return x[perm], [f"spk{int(v)}" for v in lab[perm]]


def test_plda_batches_with_speakers_spread_equal_the_in_memory_fit():
    x, names = _speakers()
    state = PLDA(3).initialize(x, names).state_dict()
    ref = PLDA(3)
    ref.load_state_dict(state)
    ref_hist = ref.fit(x, names, init="given", max_iter=10, tol=0)
    batches = [(x[:50], names[:50]), (x[50:51], names[50:51]), (x[51:], names[51:])]
    m = PLDA(3)
    m.load_state_dict(state)
    hist = m.fit(batches, init="given", max_iter=10, tol=0)
    _assert_same(m, ref)
    assert np.allclose(hist.log_likelihood, ref_hist.log_likelihood, rtol=0, atol=1e-9)
    # the default start ("scatter") from the pass's summary is the in-memory one too
    a, b = PLDA(3), PLDA(3)
    a.fit(x, names, max_iter=3, tol=0)
    b.fit(batches, max_iter=3, tol=0)
    _assert_same(a, b)


def test_plda_bad_batch_is_named_and_changes_nothing():
    x, names = _speakers()
    m = PLDA(3).initialize(x, names)
    before = _params(m)
    with pytest.raises(ValueError, match="batch 1: labels must have one entry"):
        m.fit([(x[:50], names[:50]), (x[50:], names[:3])])
    with pytest.raises(ValueError, match="batch 1: embeddings must have shape"):
        m.fit([(x[:50], names[:50]), (x[50:, :2], names[50:])])
    with pytest.raises(ValueError, match="batch 0: a PLDA batch is a pair"):
        m.fit([(x[:50], names[:50], 0)])
    after = _params(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
