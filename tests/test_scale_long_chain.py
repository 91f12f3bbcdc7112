"""One long HMM sequence with chunk_size: the checkpointed E-step (blocks of frames)
gives the fit and the scores of the unchunked E-step."""

import pytest
import torch

from pyroem.datasets import load_old_faithful
from pyroem.models import CategoricalHMM, GaussianHMM, PoissonHMM

F64 = torch.float64


def _pair(make, x, **kw):
    ref = make().initialize(x, seed=0)
    state = ref.state_dict()
    whole = ref.fit(x, init="given", max_iter=6, tol=0, **kw)
    return ref, state, whole


def _same(m, ref, h, whole, tol=1e-10):
    for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        if not name.startswith("q_"):
            assert torch.allclose(p, q, rtol=0, atol=tol), name
    assert torch.allclose(torch.tensor(h.log_likelihood), torch.tensor(whole.log_likelihood),
                          rtol=1e-12, atol=0)


@pytest.mark.parametrize("frames", [1, 17, 271])
@pytest.mark.parametrize("cov", ["full", "diag"])
def test_gaussian_hmm_one_sequence_in_blocks_equals_the_whole(frames, cov):
    x = load_old_faithful()  # one sequence of 272 frames
    make = lambda: GaussianHMM(3, 2, covariance_type=cov)
    ref, state, whole = _pair(make, x)
    m = make()
    m.load_state_dict(state)
    h = m.fit(x, init="given", max_iter=6, tol=0, chunk_size=frames)
    _same(m, ref, h, whole)
    assert torch.allclose(m.log_prob(x, chunk_size=frames), m.log_prob(x), rtol=1e-13, atol=0)
    assert torch.allclose(m.posterior(x, chunk_size=frames), m.posterior(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("make, data", [
    (lambda: CategoricalHMM(3, 5).double(),  # symbols: float64 asked for
     lambda g: torch.randint(0, 5, (3000,), generator=g)),
    (lambda: PoissonHMM(2, 2),
     lambda g: torch.poisson(torch.rand(3000, 2, generator=g, dtype=F64) * 6, generator=g)),
])
def test_count_hmms_one_long_sequence_in_blocks(make, data):
    x = data(torch.Generator().manual_seed(0))
    ref, state, whole = _pair(make, x)
    m = make()
    m.load_state_dict(state)
    h = m.fit(x, init="given", max_iter=6, tol=0, chunk_size=128)
    _same(m, ref, h, whole)
    assert all(b >= a - 1e-9 for a, b in zip(h.log_likelihood, h.log_likelihood[1:]))


def test_float32_one_sequence_in_blocks():
    x = load_old_faithful().float()
    ref, state, whole = _pair(lambda: GaussianHMM(2, 2), x)
    m = GaussianHMM(2, 2)
    m.load_state_dict(state)
    h = m.fit(x, init="given", max_iter=6, tol=0, chunk_size=50)
    assert m.means.dtype == torch.float32
    assert torch.allclose(m.means, ref.means, rtol=1e-4, atol=1e-4)
    assert abs(h.log_likelihood[-1] - whole.log_likelihood[-1]) < 1e-3 * 272


def test_what_the_blocks_cannot_take_is_refused_before_anything_changes():
    x = load_old_faithful()
    m = GaussianHMM(2, 2).initialize(x, seed=0)
    before = {k: v.clone() for k, v in m.named_parameters()}
    with pytest.raises(ValueError, match="sum-product"):
        m.fit(x, method="viterbi", init="given", chunk_size=50)
    f = GaussianHMM(2, 2, final_states=torch.tensor([True, False])).initialize(x, seed=0)
    with pytest.raises(ValueError, match="final_states"):
        f.fit(x, init="given", chunk_size=50)
    for k, v in m.named_parameters():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="chunk_size"):
        m.fit(x, init="given", chunk_size=0)


def test_scores_that_cannot_take_blocks_say_so():
    x = load_old_faithful()
    m = GaussianHMM(2, 2).initialize(x, seed=0)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[5, 1] = False
    with pytest.warns(UserWarning, match="in one piece"):
        lp = m.log_prob(x, obs_mask=mask, chunk_size=20)
    assert torch.allclose(lp, m.log_prob(x, obs_mask=mask), rtol=1e-14, atol=0)
