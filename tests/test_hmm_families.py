"""The HMM emission families for counts, binary features and durations (PoissonHMM,
BernoulliHMM, MultinomialHMM, HMM(emission=...)): hmmlearn on identical starts,
brute-force sums over every state path with scipy's densities, the Pyro model under the
generic E-step, data handling, configuration round trips and bad inputs."""

import itertools
import logging
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from hmmlearn import hmm as hl
from scipy import stats

import pyroem
from pyroem.infer import exact_posterior
from pyroem.models import HMM, BernoulliHMM, MultinomialHMM, PoissonHMM

logging.getLogger("hmmlearn").setLevel(logging.ERROR)  # MultinomialHMM's change notice
K = 3


def _chain(rng, k=K):
    return rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k) * 2, size=k)


def _quiet_fit(m, *data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return m.fit(*data, **kw)


def _split(x, lengths):
    return [torch.as_tensor(s) for s in np.split(x, np.cumsum(lengths)[:-1])]


def test_poisson_hmm_matches_hmmlearn():
    rng = np.random.default_rng(0)
    start, trans = _chain(rng)
    rates = rng.gamma(2.0, 3.0, size=(K, 2))
    x, lengths = rng.poisson(rng.choice([1.0, 5.0, 12.0], size=(200, 1)), size=(200, 2)), [120, 80]
    ref = hl.PoissonHMM(K, n_iter=6, tol=0, init_params="", implementation="scaling")
    ref.startprob_, ref.transmat_, ref.lambdas_ = start, trans, rates
    ref.fit(x, lengths)
    m = PoissonHMM(K, 2).double()
    m.start_probs, m.trans_probs, m.rates = start, trans, rates
    hist = _quiet_fit(m, _split(x, lengths), init="given", max_iter=6, tol=0)
    np.testing.assert_allclose(hist.log_likelihood, ref.monitor_.history, rtol=1e-10)
    for ours, theirs in [(m.rates, ref.lambdas_), (m.trans_probs, ref.transmat_),
                         (m.start_probs, ref.startprob_)]:
        np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=1e-8, atol=1e-12)
    assert float(m.log_prob(_split(x, lengths)).sum()) == pytest.approx(ref.score(x, lengths),
                                                                     rel=1e-10)


@pytest.mark.parametrize("n_trials", [6, None])
def test_multinomial_hmm_matches_hmmlearn(n_trials):
    rng = np.random.default_rng(1)
    start, trans = _chain(rng)
    probs = rng.dirichlet(np.ones(4), size=K)
    totals = 6 if n_trials else rng.integers(1, 9, size=150)
    x = np.stack([rng.multinomial(n, p) for n, p in
                  zip(np.broadcast_to(totals, (150,)), probs[rng.integers(0, K, 150)])])
    ref = hl.MultinomialHMM(K, n_trials=totals, n_iter=6, tol=0, init_params="",
                            implementation="scaling")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, probs
    ref.fit(x)
    m = MultinomialHMM(K, 4, n_trials=n_trials).double()
    m.start_probs, m.trans_probs, m.emission_probs = start, trans, probs
    hist = _quiet_fit(m, torch.as_tensor(x), init="given", max_iter=6, tol=0)
    np.testing.assert_allclose(hist.log_likelihood, ref.monitor_.history, rtol=1e-10)
    np.testing.assert_allclose(m.emission_probs.detach().numpy(), ref.emissionprob_,
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(m.trans_probs.detach().numpy(), ref.transmat_, rtol=1e-8,
                               atol=1e-12)


def _scipy_log_emit(family, x, params):
    """log p(x_t | z = k) from scipy, (T, K)."""
    cols = []
    for k in range(len(params)):
        p = params[k]
        if family == "poisson":
            cols.append(stats.poisson.logpmf(x, p).sum(-1))
        elif family == "bernoulli":
            cols.append(stats.bernoulli.logpmf(x, p).sum(-1))
        elif family == "exponential":
            cols.append(stats.expon.logpdf(x, scale=1 / p).sum(-1))
        else:
            cols.append(stats.multinomial.logpmf(x, x.sum(-1), p))
    return np.stack(cols, -1)


def _brute_force(start, trans, log_emit):
    """log p(x) and gamma (T, K) by summing over all K^T paths."""
    T, k = log_emit.shape
    paths = np.array(list(itertools.product(range(k), repeat=T)))
    lp = np.log(start)[paths[:, 0]] + log_emit[np.arange(T), paths].sum(-1)
    lp += np.log(trans)[paths[:, :-1], paths[:, 1:]].sum(-1)
    total = np.logaddexp.reduce(lp)
    w = np.exp(lp - total)
    gamma = np.stack([np.bincount(paths[:, t], w, minlength=k) for t in range(T)])
    return total, gamma


FAMILIES = {
    "poisson": (lambda: PoissonHMM(K, 2), "rates", lambda r: r.gamma(2.0, 2.0, (K, 2)),
                lambda r: r.poisson(3.0, (6, 2))),
    "bernoulli": (lambda: BernoulliHMM(K, 3), "probs", lambda r: r.uniform(0.1, 0.9, (K, 3)),
                  lambda r: r.integers(0, 2, (6, 3))),
    "multinomial": (lambda: MultinomialHMM(K, 3), "emission_probs",
                    lambda r: r.dirichlet(np.ones(3), K), lambda r: r.multinomial(4, [0.2, 0.3, 0.5], 6)),
    "exponential": (lambda: HMM(K, "exponential", dim=2), "rates",
                    lambda r: r.gamma(2.0, 1.0, (K, 2)), lambda r: r.exponential(1.0, (6, 2))),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_evidence_posteriors_and_m_step_equal_brute_force(family):
    make, name, draw_params, draw_x = FAMILIES[family]
    rng = np.random.default_rng(2)
    start, trans = _chain(rng)
    params, x = draw_params(rng), draw_x(rng).astype(float)
    m = make().double()
    m.start_probs, m.trans_probs = start, trans
    setattr(m, name, params)
    total, gamma = _brute_force(start, trans, _scipy_log_emit(family, x, params))
    xt = torch.as_tensor(x)
    assert float(m.log_prob(xt)) == pytest.approx(total, rel=1e-12)
    np.testing.assert_allclose(m.posterior(xt).numpy(), gamma, atol=1e-12)
    # the Pyro model under the generic E-step (enumeration) gives the same evidence
    assert float(exact_posterior(m.model, *m.prepare(xt), max_plate_nesting=1).log_evidence) \
        == pytest.approx(total, rel=1e-12)
    # one EM step: the weighted MLE of the family under the brute-force gamma
    _quiet_fit(m, xt, init="given", max_iter=1, tol=0, )
    n, sx = gamma.sum(0)[:, None], gamma.T @ x
    expected = {"poisson": sx / n, "bernoulli": sx / n, "exponential": n / sx,
                "multinomial": sx / sx.sum(-1, keepdims=True)}[family]
    np.testing.assert_allclose(getattr(m, name).detach().numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("emission,specific,kw", [
    ("poisson", lambda: PoissonHMM(2, 2), {"dim": 2}),
    (dist.Poisson, lambda: PoissonHMM(2, 2), {"dim": 2}),
    (dist.Bernoulli, lambda: BernoulliHMM(2, 2), {"dim": 2}),
    ("multinomial", lambda: MultinomialHMM(2, 3), {"num_symbols": 3}),
    ("normal", lambda: pyroem.models.GaussianHMM(2, 2, "diag"), {"dim": 2}),
    (dist.MultivariateNormal, lambda: pyroem.models.GaussianHMM(2, 2, "full"), {"dim": 2}),
    (dist.Categorical, lambda: pyroem.models.CategoricalHMM(2, 3), {"num_symbols": 3}),
])
def test_generic_hmm_fits_as_the_specific_family(emission, specific, kw, tmp_path):
    ref = specific().double()
    source = MultinomialHMM(2, 3, n_trials=4) if isinstance(ref, MultinomialHMM) else ref
    x, _ = source.sample(60, num_sequences=2, seed=0)
    m = HMM(2, emission=emission, **kw).double()
    h_ref = _quiet_fit(ref, x, seed=3, max_iter=5, tol=0)
    h = _quiet_fit(m, x, seed=3, max_iter=5, tol=0)
    np.testing.assert_allclose(h.log_likelihood, h_ref.log_likelihood, rtol=1e-12)
    ours, theirs = dict(m.emission.named_parameters()), dict(ref.emission.named_parameters())
    assert ours.keys() == theirs.keys()
    assert all(torch.allclose(ours[k], theirs[k], rtol=1e-12) for k in ours)
    # the family is configuration: a checkpoint brings the same model back
    for path in (tmp_path / "m.npz", tmp_path / "m.pt"):
        m.save(path)
        back = pyroem.load(path)
        assert type(back) is HMM and back.family == m.family
        assert torch.allclose(back.log_prob(x), m.log_prob(x), rtol=1e-14)
    assert isinstance(m.config()["emission"], str)


def test_count_data_may_be_integer_or_float():
    m = PoissonHMM(2, 2).double()
    x, _ = m.sample(30, seed=1)
    assert x.dtype == torch.float64
    a = _quiet_fit(PoissonHMM(2, 2), x.long(), seed=0, max_iter=3, tol=0)
    b = _quiet_fit(PoissonHMM(2, 2), x, seed=0, max_iter=3, tol=0)
    assert a.log_likelihood == b.log_likelihood
    # boolean frames are 0/1 values, computed in the model's dtype
    assert BernoulliHMM(2, 2).posterior(torch.tensor([[True, False]] * 4)).dtype == torch.float32


def test_padding_lengths_final_states_and_decode():
    rng = np.random.default_rng(4)
    start, trans = _chain(rng)
    m = PoissonHMM(K, 1, final_states=[0]).double()
    m.start_probs, m.trans_probs, m.rates = start, trans, [[1.0], [4.0], [9.0]]
    seqs = [torch.as_tensor(rng.poisson(4.0, n), dtype=torch.float64) for n in (5, 3, 6)]
    padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([5, 3, 6])
    np.testing.assert_allclose(m.log_prob(seqs).numpy(), m.log_prob(padded, lengths).numpy(),
                               rtol=1e-14)
    # Viterbi ending in state 0 equals the best path found by brute force
    x = seqs[2].numpy()[:, None]
    log_emit = _scipy_log_emit("poisson", x, np.array([[1.0], [4.0], [9.0]]))
    best, arg = -np.inf, None
    for path in itertools.product(range(K), repeat=len(x)):
        if path[-1] != 0:
            continue
        lp = np.log(start[path[0]]) + sum(log_emit[t, s] for t, s in enumerate(path)) + sum(
            np.log(trans[a, b]) for a, b in zip(path, path[1:]))
        if lp > best:
            best, arg = lp, path
    score, states = m.decode(seqs[2])
    assert float(score) == pytest.approx(best, rel=1e-12) and states.tolist() == list(arg)
    x, z = m.sample(7, num_sequences=4, seed=0)
    assert x.shape == (4, 7, 1) and bool((z[:, -1] == 0).all())


@pytest.mark.parametrize("bad", [
    lambda: PoissonHMM(2).log_prob(torch.tensor([1.0, -1.0, 2.0])),
    lambda: PoissonHMM(2).log_prob(torch.tensor([1.0, 0.5, 2.0])),
    lambda: PoissonHMM(2).log_prob(torch.tensor([1.0, float("nan")])),
    lambda: BernoulliHMM(2, 1).log_prob(torch.tensor([0.0, 2.0])),
    lambda: MultinomialHMM(2, 3, n_trials=4).log_prob(torch.tensor([[1, 1, 1]])),
    lambda: MultinomialHMM(2, 3).sample(3),
    lambda: setattr(PoissonHMM(2), "rates", torch.tensor([[1.0], [0.0]])),
    lambda: setattr(BernoulliHMM(2), "probs", torch.tensor([[0.5], [1.5]])),
    lambda: HMM(2, emission="gamma"),
    lambda: HMM(2, emission=dist.Gamma),
    lambda: HMM(2, emission="categorical"),
])
def test_bad_inputs_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_refused_data_leave_the_model_untouched():
    m = PoissonHMM(2, 1).double()
    before = m.snapshot()
    with pytest.raises(ValueError, match="non-negative integer"):
        m.fit(torch.tensor([1.0, 2.0, -3.0, 4.0]))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if torch.is_tensor(v))


def test_seatbelts_counts_are_the_known_series():
    # R's UKDriverDeaths: January 1969 starts 1687, 1508, 1507, 1385; the law from
    # February 1983 (month 170 of 192) to the end
    from pyroem.datasets import load_seatbelts

    counts, law = load_seatbelts()
    assert counts.shape == law.shape == (192,) and counts.dtype == torch.long
    assert counts[:4].tolist() == [1687, 1508, 1507, 1385]
    assert int(law.sum()) == 23 and bool(law[169:].all()) and not bool(law[:169].any())


@pytest.mark.parametrize("make", [lambda: PoissonHMM(2, 3, final_states=[1]),
                                  lambda: BernoulliHMM(2, 3, params="se"),
                                  lambda: MultinomialHMM(2, 3, n_trials=5)])
def test_checkpoints_round_trip(make, tmp_path):
    m = make().double()
    x, _ = m.sample(20, num_sequences=2, seed=0)
    _quiet_fit(m, x, seed=0, max_iter=3, tol=0)
    path = tmp_path / "m.npz"
    m.save(path)
    back = pyroem.load(path)
    assert type(back) is type(m) and back.params == m.params
    assert getattr(back, "n_trials", None) == getattr(m, "n_trials", None)
    assert (back.final_states is None) == (m.final_states is None)
    if m.final_states is not None:
        assert torch.equal(back.final_states, m.final_states)
    assert torch.equal(back.log_prob(x), m.log_prob(x))


def test_load_state_dict_keeps_the_emission_module():
    """Loading a state of the same configuration restores the parameters in place, so a
    reference to ``m.emission`` stays the model's; another configuration rebuilds it."""
    x = torch.tensor([[0.0], [3.0], [1.0], [7.0], [6.0], [0.0]], dtype=torch.float64)
    fitted = HMM(2, emission="poisson").double()
    fitted.fit(x, max_iter=3, tol=0.0, seed=0)
    model = HMM(2, emission="poisson").double()
    emission = model.emission
    model.load_state_dict(fitted.state_dict())
    assert model.emission is emission
    torch.testing.assert_close(emission.rates, fitted.rates, rtol=0, atol=0)
    torch.testing.assert_close(model.log_prob(x), fitted.log_prob(x), rtol=0, atol=0)
    other = HMM(2, emission="exponential").double()
    other.load_state_dict(fitted.state_dict())
    assert other.family == "poisson" and other.emission is not emission
    torch.testing.assert_close(other.log_prob(x), fitted.log_prob(x), rtol=0, atol=0)
