"""The Markov-chain guide of the HMMs: the E-step writes the exact posterior chain
(KL = 0), the decomposition of a perturbed q equals brute-force sums over all K^T paths
and Pyro's own enumeration of the guide, SVI trains the same guide on its exact ELBO, and
every built-in's prepare() gives the arguments of its model and guide."""

import itertools
import math
import warnings

import numpy as np
import pyro
import pytest
import torch

from pyroem.infer import EM, compare, decompose, posterior_elbo_samples
from pyroem.models import (
    GMMHMM,
    HMM,
    PLDA,
    BernoulliHMM,
    CategoricalHMM,
    FactorAnalysis,
    GaussianHMM,
    GaussianMixture,
    LinearGaussianSSM,
    MixtureOfFactorAnalyzers,
    MultinomialHMM,
    PoissonHMM,
)
from pyroem.models.hmm.guide import MarkovChainELBO

K, T = 3, 6


def _random_chain(m, g):
    m.start_probs = torch.rand(m.num_states, generator=g, dtype=torch.float64).softmax(-1)
    m.trans_probs = (2 * torch.rand(m.num_states, m.num_states, generator=g,
                                    dtype=torch.float64)).softmax(-1)


def tiny_categorical(final_states=None):
    g = torch.Generator().manual_seed(0)
    m = CategoricalHMM(K, 4, final_states=final_states).double()
    _random_chain(m, g)
    m.emission_probs = (2 * torch.rand(K, 4, generator=g, dtype=torch.float64)).softmax(-1)
    return m, torch.randint(0, 4, (T,), generator=g), g


def brute_force_kl(m, x, g_logits_start, g_logits_trans):
    """KL(q || p(z | x)), H(q) and log p(x) by enumerating all K^T paths (one sequence),
    with the model's parameters read directly (no pyroem code)."""
    lq1, lqt = g_logits_start.log_softmax(-1), g_logits_trans.log_softmax(-1)
    ls, lt = m.start_probs.detach().log(), m.trans_probs.detach().log()
    le = m.emission_probs.detach().log().T[x]
    final = None if m.final_states is None else m.final_states
    lp, lq = [], []
    for path in itertools.product(range(m.num_states), repeat=len(x)):
        if final is not None and not final[path[-1]]:
            lp.append(-math.inf)
        else:
            lp.append(float(ls[path[0]] + le[0, path[0]] + sum(
                lt[path[t - 1], path[t]] + le[t, path[t]] for t in range(1, len(x)))))
        lq.append(float(lq1[path[0]] + sum(lqt[t - 1, path[t - 1], path[t]]
                                           for t in range(1, len(x)))))
    lp, lq = np.array(lp), np.array(lq)
    log_z = np.logaddexp.reduce(lp)
    q = np.exp(lq)
    keep = q > 0
    return (float((q[keep] * (lq[keep] - lp[keep] + log_z)).sum()),
            float(-(q[keep] * lq[keep]).sum()), log_z)


@pytest.mark.parametrize("final_states", [None, [0, 2]])
def test_e_step_makes_kl_zero_and_a_perturbed_q_has_the_brute_force_kl(final_states):
    m, x, g = tiny_categorical(final_states)
    args = m.prepare(x)
    EM(m.model, m.guide).e_step(*args)
    d = decompose(m.model, m.guide, *args)
    kl, entropy, log_z = brute_force_kl(m, x, m.q_start_logits[0].detach(),
                                        m.q_trans_logits[0].detach())
    assert abs(d.kl) < 1e-9 and abs(kl) < 1e-9
    assert d.entropy > 0.5 and d.entropy == pytest.approx(entropy, rel=1e-10)
    assert d.log_evidence == pytest.approx(log_z, rel=1e-12)
    with torch.no_grad():
        m.q_start_logits.add_(torch.randn(m.q_start_logits.shape, generator=g))
        m.q_trans_logits.add_(torch.randn(m.q_trans_logits.shape, generator=g))
    d = decompose(m.model, m.guide, *args)
    kl, entropy, _ = brute_force_kl(m, x, m.q_start_logits[0].detach(),
                                    m.q_trans_logits[0].detach())
    assert d.kl > 0.05
    assert d.kl == pytest.approx(kl, rel=1e-9) and d.entropy == pytest.approx(entropy, rel=1e-10)
    assert d.elbo == pytest.approx(d.expected_log_joint + d.entropy, rel=1e-12)


def test_forward_pass_over_q_equals_pyro_enumerating_the_guide():
    # decompose()'s generic route (TraceEnum_ELBO with every guide site enumerated, a
    # guide that is not the model owner's) on the same guide, padded sequences
    m, _, g = tiny_categorical()
    xs = [torch.randint(0, 4, (n,), generator=g) for n in (4, 2, 3)]
    args = m.prepare(xs)
    EM(m.model, m.guide).e_step(*args)
    with torch.no_grad():
        m.q_trans_logits.add_(torch.randn(m.q_trans_logits.shape, generator=g))
    ours = decompose(m.model, m.guide, *args)
    theirs = decompose(m.model, lambda *a: m.guide(*a), *args, max_plate_nesting=1)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-10, abs=1e-12)


MODELS = {
    "gaussian": lambda: GaussianHMM(2, 2, "diag", final_states=[1]),
    "gmmhmm": lambda: GMMHMM(2, 2, 2, "diag"),
    "poisson": lambda: PoissonHMM(2, 2),
    "bernoulli": lambda: BernoulliHMM(2, 3),
    "multinomial": lambda: MultinomialHMM(2, 3, n_trials=4),
    "exponential": lambda: HMM(2, "exponential", dim=1),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_hmm_guide_is_the_exact_posterior_after_the_e_step(name, dtype):
    m = MODELS[name]().to(dtype)
    x, _ = m.sample(9, num_sequences=3, seed=1)
    lengths = torch.tensor([9, 4, 7])
    _quiet(m.fit, x, lengths, seed=0, max_iter=2, tol=0)  # parameters away from the start
    args = m.prepare(x, lengths)
    EM(m.model, m.guide).e_step(*args)
    d = decompose(m.model, m.guide, *args)
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    assert d.entropy > 0 and abs(d.kl) < tol * max(1.0, abs(d.log_evidence))
    assert d.log_evidence == pytest.approx(float(m.log_prob(x, lengths).sum()), rel=1e-6)


def test_single_sample_elbo_has_zero_variance_at_the_written_posterior():
    m, _, g = tiny_categorical()
    xs = [torch.randint(0, 4, (n,), generator=g) for n in (6, 3)]
    res = posterior_elbo_samples(m.model, m.guide, *m.prepare(xs), num_samples=20,
                                 max_plate_nesting=1)
    assert torch.allclose(res.samples, torch.tensor(res.log_evidence, dtype=torch.float64),
                          rtol=1e-12)


def test_viterbi_e_step_writes_the_point_mass_on_the_best_path():
    m, x, _ = tiny_categorical()
    args = m.prepare(x)
    EM(m.model, m.guide, hard=True).e_step(*args)
    d = decompose(m.model, m.guide, *args)
    score, _ = m.decode(x)
    assert d.entropy == 0.0 and d.elbo == pytest.approx(float(score), rel=1e-12)
    assert d.kl > 0


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)


def test_chain_elbo_is_the_decomposition_elbo_and_svi_by_hand_trains_q_and_parameters():
    m, _, g = tiny_categorical()
    xs = [torch.randint(0, 4, (n,), generator=g) for n in (6, 3, 5)]
    args = m.prepare(xs)
    m.guide(*args)  # a uniform q
    elbo = MarkovChainELBO()
    assert -elbo.loss(m.model, m.guide, *args) == pytest.approx(
        decompose(m.model, m.guide, *args).elbo, rel=1e-12)
    svi = pyro.infer.SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    before = (m.q_trans_logits.detach().clone(), m.emission_probs.detach().clone())
    losses = [svi.step(*args) for _ in range(60)]
    assert losses[-1] < losses[0] - 1.0
    assert not torch.equal(before[0], m.q_trans_logits.detach())
    assert not torch.equal(before[1], m.emission_probs.detach())
    with pytest.raises(ValueError, match="one built-in HMM"):
        elbo.loss(lambda *a: None, m.guide, *args)


def test_fit_svi_and_compare_use_the_chain_guide():
    true = PoissonHMM(2, 1).double()
    true.rates = [[1.0], [6.0]]
    true.trans_probs = [[0.9, 0.1], [0.2, 0.8]]
    x, _ = true.sample(40, num_sequences=3, seed=0)
    m = PoissonHMM(2, 1).double()
    hist = _quiet(m.fit, x, torch.full((3,), 40), method="svi", max_iter=30, tol=0, seed=0,
                  lr=0.05, record_decomposition=True)
    steps = hist.records["step"]
    assert all(s.kl > -1e-9 and s.entropy >= 0 for s in steps)
    assert steps[-1].elbo > steps[0].elbo
    runs = compare(PoissonHMM(2, 1).double(), x, torch.full((3,), 40), methods=("em", "svi"),
                   max_iter=4, seed=0)
    assert max(abs(d.kl) for d in runs["em"].records["e_step"]) < 1e-9
    assert runs["svi"].records["log_evidence"][0] == pytest.approx(
        runs["em"].records["log_evidence"][0], rel=1e-12)


def test_q_is_never_stale_and_a_loaded_state_is_the_guides():
    m, x, _ = tiny_categorical()
    args = m.prepare(x)
    m.guide(*args)
    assert "q_trans_logits_unconstrained" in m.state_dict()
    _quiet(m.fit, x, init="given", max_iter=2, tol=0)
    # the E-step's posterior replaced the old q; it is computed when next read
    assert "q_trans_logits_unconstrained" not in m.state_dict()
    saved = m.snapshot()
    EM(m.model, m.guide).e_step(*args)
    m.load_state_dict(saved)
    m.guide(*args)  # the pending posterior was dropped with the load: a uniform q
    assert torch.equal(m.q_trans_logits, torch.zeros_like(m.q_trans_logits))


def _data(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    if name == "plda":
        return x, torch.arange(30) % 5
    if name == "ssm":
        return (x,)
    return (x,)


BUILT_INS = {
    "gmm": lambda: GaussianMixture(2, 3),
    "hmm": lambda: GaussianHMM(2, 3),
    "plda": lambda: PLDA(3),
    "fa": lambda: FactorAnalysis(3, 1),
    "mfa": lambda: MixtureOfFactorAnalyzers(2, 3, 1),
    "ssm": lambda: LinearGaussianSSM(2, 3),
}


@pytest.mark.parametrize("name", list(BUILT_INS))
def test_prepare_gives_the_arguments_of_model_guide_em_and_svi(name):
    m = BUILT_INS[name]().double()
    data = _data(name)
    _quiet(m.fit, *data, max_iter=1, seed=0)
    args = m.prepare(*data)
    assert isinstance(args, tuple)
    m.model(*args)
    m.guide(*args)
    before = -float(m.log_prob(*data).sum())
    assert EM(m.model, m.guide).step(*args) == pytest.approx(before, rel=1e-9)
    svi = pyro.infer.SVI(m.model, m.guide, pyro.optim.Adam({"lr": 0.01}), m._svi_elbo())
    assert math.isfinite(svi.step(*args))
    if name in ("gmm", "hmm"):  # discrete guides: the exact decomposition by hand
        EM(m.model, m.guide).e_step(*args)
        assert abs(decompose(m.model, m.guide, *args).kl) < 1e-9


def test_chain_elbo_and_its_gradients_equal_traceenum_elbo_enumerating_the_guide():
    # Pyro's own exact route: the guide's sites enumerated in parallel under TraceEnum_ELBO
    from pyro.infer.enum import config_enumerate

    m, _, g = tiny_categorical()
    xs = [torch.randint(0, 4, (n,), generator=g) for n in (5, 3, 4)]
    args = m.prepare(xs)
    m.guide(*args)
    with torch.no_grad():
        m.q_start_logits.normal_(generator=g)
        m.q_trans_logits.normal_(generator=g)

    def grads(loss):
        for p in m.parameters():
            p.grad = None
        loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    ours = MarkovChainELBO().differentiable_loss(m.model, m.guide, *args)
    ours_g = grads(ours)
    theirs = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        m.model, config_enumerate(lambda *a: m.guide(*a), "parallel"), *args)
    theirs_g = grads(theirs)
    assert math.isfinite(float(ours.detach()))
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-12)
    assert ours_g.keys() == theirs_g.keys() and len(ours_g) == 5
    for name in ours_g:
        assert torch.allclose(ours_g[name], theirs_g[name], rtol=1e-9, atol=1e-12), name
