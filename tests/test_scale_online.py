"""Online EM (partial_fit, Cappe and Moulines 2009): a few shuffled passes come within
1e-3 nats per point of batch EM from the same start; its first step is an EM step."""

import pytest
import torch

from pyroem.datasets import load_old_faithful
from pyroem.infer.online import OnlineStatistics
from pyroem.models import GaussianHMM, GaussianMixture


def _shuffled_passes(model, items, batch_size, passes, kappa, join):
    g = torch.Generator().manual_seed(0)
    for _ in range(passes):
        perm = torch.randperm(len(items), generator=g).tolist()
        for i in range(0, len(items), batch_size):
            model.partial_fit(join([items[j] for j in perm[i:i + batch_size]]),
                              init="given", kappa=kappa)


def test_online_gmm_reaches_batch_em_on_old_faithful():
    x = load_old_faithful()
    state = GaussianMixture(2, 2).initialize(x, seed=1).state_dict()
    batch = GaussianMixture(2, 2)
    batch.load_state_dict(state)
    batch.fit(x, init="given", max_iter=500, tol=1e-10)
    online = GaussianMixture(2, 2)
    online.load_state_dict(state)
    _shuffled_passes(online, x, 34, 5, 0.6, torch.stack)
    gap = batch.log_prob(x).mean() - online.log_prob(x).mean()
    assert 0 <= gap < 1e-3
    assert len(online.online_log_likelihood) == 5 * 8


def test_online_gaussian_hmm_reaches_batch_em_on_old_faithful_windows():
    # Old Faithful in time order: 17 windows of 16 eruptions, shuffled between passes
    windows = list(load_old_faithful().split(16))
    state = GaussianHMM(2, 2).initialize(windows, seed=0).state_dict()
    batch = GaussianHMM(2, 2)
    batch.load_state_dict(state)
    batch.fit(windows, init="given", max_iter=500, tol=1e-10)
    online = GaussianHMM(2, 2)
    online.load_state_dict(state)
    _shuffled_passes(online, windows, 2, 5, 0.9, list)
    n = sum(len(w) for w in windows)
    gap = (batch.log_prob(windows).sum() - online.log_prob(windows).sum()) / n
    assert 0 <= gap < 1e-3


def test_first_partial_fit_initialises_like_fit_and_is_one_em_step():
    x = load_old_faithful()
    a = GaussianMixture(2, 2)
    a.partial_fit(x, seed=4)  # rho_1 = 1: the running average is this batch's
    b = GaussianMixture(2, 2)
    b.fit(x, seed=4, max_iter=1, tol=0)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        if not n.startswith("q_"):
            assert torch.allclose(p, q, atol=1e-10), n
    # later calls ignore init and seed: a second identical call is an online step
    before = a.means.detach().clone()
    a.partial_fit(x, init="random", seed=99)
    assert (a.means - before).abs().max() < 1.0


def test_running_average_follows_the_schedule():
    online = OnlineStatistics(kappa=0.75, t0=2.0)
    stats = [{"c": torch.tensor([float(i)])} for i in (4.0, 8.0)]
    s1 = online.proposal(stats[0], 2)
    online.commit(s1)
    assert float(s1["c"]) == 2.0
    rho = (2 + 2.0) ** -0.75
    s2 = online.proposal(stats[1], 4)
    assert abs(float(s2["c"]) - ((1 - rho) * 2.0 + rho * 2.0)) < 1e-15
    assert online.step_size(3) == pytest.approx(5.0 ** -0.75)


@pytest.mark.parametrize("kappa,t0", [(0.5, 0.0), (1.5, 0.0), (0.7, -1.0), (True, 0.0)])
def test_bad_schedule_is_refused_before_anything_changes(kappa, t0):
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2).initialize(x, seed=0)
    before = gmm.means.detach().clone()
    with pytest.raises(ValueError, match="kappa|t0"):
        gmm.partial_fit(x, kappa=kappa, t0=t0)
    assert torch.equal(gmm.means, before)


def test_partial_fit_refuses_a_batch_of_another_dtype_or_dimension():
    x = load_old_faithful()
    gmm = GaussianMixture(2, 2)
    gmm.partial_fit(x[:100], seed=0)
    before = gmm.means.detach().clone()
    with pytest.raises(ValueError, match="dtype"):
        gmm.partial_fit(x[100:].float())
    with pytest.raises(ValueError, match="shape"):
        gmm.partial_fit(x[100:, :1])
    assert torch.equal(gmm.means, before)


def test_partial_fit_is_refused_where_online_em_does_not_apply():
    from pyroem.models import PLDA
    with pytest.raises(ValueError, match="PLDA has no partial_fit"):
        PLDA(2).partial_fit((load_old_faithful(), list(range(272))))
