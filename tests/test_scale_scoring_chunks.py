"""chunk_size on the HMMs' and PLDA's log_prob and posterior: the same numbers as the
whole data set in one piece, bad values refused."""

import pytest
import torch

from pyroem.datasets import load_old_faithful
from pyroem.models import PLDA, CategoricalHMM, GaussianHMM, PoissonHMM

F64 = torch.float64


def _windows():
    x = load_old_faithful()
    return [x[i:i + n] for i, n in zip(range(0, 250, 25), (25, 9, 17, 25, 3, 25, 21, 25, 11, 6))]


def _fitted(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "gaussian":
        seqs = _windows()
        m = GaussianHMM(3, 2)
    elif kind == "categorical":
        seqs = [torch.randint(0, 4, (n,), generator=g) for n in (12, 5, 30, 8, 19, 2)]
        m = CategoricalHMM(2, 4)
    else:
        seqs = [torch.poisson(3.0 * torch.ones(n, 2, dtype=F64), generator=g)
                for n in (12, 5, 30, 8, 19)]
        m = PoissonHMM(2, 2)
    m.fit(seqs, seed=0, max_iter=5, tol=0)
    return m, seqs


@pytest.mark.parametrize("kind", ["gaussian", "categorical", "poisson"])
@pytest.mark.parametrize("chunk_size", [1, 2, 4])
def test_hmm_scores_in_chunks_equal_the_whole(kind, chunk_size):
    m, seqs = _fitted(kind)
    whole_lp, whole_post = m.log_prob(seqs), m.posterior(seqs)
    lp = m.log_prob(seqs, chunk_size=chunk_size)
    post = m.posterior(seqs, chunk_size=chunk_size)
    assert torch.allclose(lp, whole_lp, rtol=0, atol=1e-10)
    assert len(post) == len(whole_post)
    for p, q, s in zip(post, whole_post, seqs):
        assert p.shape == (len(s), m.num_states)
        assert torch.allclose(p, q, rtol=0, atol=1e-10)
    # the whole is itself the sum over the sequences one by one (an independent route)
    one_by_one = torch.stack([m.log_prob(s) for s in seqs])
    assert torch.allclose(lp, one_by_one, rtol=0, atol=1e-10)


def test_hmm_padded_scores_in_chunks_with_a_mask():
    m, seqs = _fitted("gaussian")
    padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([len(s) for s in seqs])
    mask = torch.ones(padded.shape, dtype=torch.bool)
    mask[0, 3:6, 1] = False
    whole = m.log_prob(padded, lengths, obs_mask=mask)
    assert torch.allclose(m.log_prob(padded, lengths, obs_mask=mask, chunk_size=3), whole,
                          rtol=0, atol=1e-10)
    post = m.posterior(padded, lengths, obs_mask=mask, chunk_size=3)
    assert torch.allclose(post, m.posterior(padded, lengths, obs_mask=mask), rtol=0, atol=1e-10)


def _plda_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    speakers = torch.arange(12).repeat_interleave(torch.randint(1, 6, (12,), generator=g))
    means = 2.0 * torch.randn(12, 3, generator=g, dtype=F64)
    x = means[speakers] + torch.randn(len(speakers), 3, generator=g, dtype=F64)
    perm = torch.randperm(len(speakers), generator=g)  # a speaker across several chunks
    return x[perm], speakers[perm] * 7 + 3  # labels that are not codes


@pytest.mark.parametrize("chunk_size", [1, 5, 13])
def test_plda_scores_in_chunks_equal_the_whole(chunk_size):
    x, labels = _plda_data()
    m = PLDA(3)
    m.fit(x, labels, max_iter=5, tol=0)
    lp = m.log_prob(x, labels, chunk_size=chunk_size)
    assert torch.allclose(lp, m.log_prob(x, labels), rtol=0, atol=1e-10)
    post, whole = m.posterior(x, labels, chunk_size=chunk_size), m.posterior(x, labels)
    assert torch.allclose(post.loc, whole.loc, rtol=0, atol=1e-10)
    assert torch.allclose(post.covariance, whole.covariance, rtol=0, atol=1e-10)
    assert abs(float(post.log_evidence) - float(whole.log_evidence)) < 1e-10
    assert abs(float(lp.sum()) - float(whole.log_evidence)) < 1e-9


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8"])
def test_a_bad_chunk_size_is_refused(bad):
    m, seqs = _fitted("categorical")
    with pytest.raises(ValueError, match="chunk_size"):
        m.log_prob(seqs, chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        m.posterior(seqs, chunk_size=bad)
    x, labels = _plda_data()
    p = PLDA(3)
    p.fit(x, labels, max_iter=2, tol=0)
    with pytest.raises(ValueError, match="chunk_size"):
        p.log_prob(x, labels, chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        p.posterior(x, labels, chunk_size=bad)
