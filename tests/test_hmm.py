"""Hidden Markov models: hmmlearn on identical initialisations, the generic E-step on the
pyro.markov model, EM identities, decoding, priors, frozen parameters, bad inputs."""

import itertools
import math
import warnings

import numpy as np
import pyro
import pytest
import torch
from hmmlearn import hmm as hl

from pyroem.distributions.merge import reshift
from pyroem.infer import exact_posterior
from pyroem.models import GMMHMM, CategoricalHMM, GaussianHMM

K, D = 3, 2
LENGTHS = [90, 70, 40]


@pytest.fixture(scope="module")
def gauss_data():
    gen = hl.GaussianHMM(K, "diag", init_params="")
    gen.startprob_ = np.ones(K) / K
    gen.transmat_ = np.full((K, K), 0.1) + 0.7 * np.eye(K)
    gen.means_ = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    gen.covars_ = np.ones((K, D))
    return gen.sample(sum(LENGTHS), random_state=1)[0]


def _split(x, lengths):
    return [torch.as_tensor(s) for s in np.split(x, np.cumsum(lengths)[:-1])]


def _gauss_init(cov, seed):
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    means = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]) + rng.normal(size=(K, D))
    covs = {"full": np.stack([np.eye(D) * (1 + k) + 0.3 for k in range(K)]),
            "diag": 1.0 + np.arange(K)[:, None] * np.ones((K, D))}[cov]
    return start, trans, means, covs


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


@pytest.mark.parametrize("cov", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("num_seq", [1, 40])
def test_state_major_emissions_equal_the_distribution(cov, num_seq):
    # GaussianHMM computes emissions and moments state-major, (T, K, B), as batched products
    # (40 sequences) or one flat product (1): both against the per-component distribution
    # and the flat weighted moments shared with GaussianMixture
    from pyroem.models import gaussian_emission as ge

    g = torch.Generator().manual_seed(0)
    m = GaussianHMM(K, D, cov).double()
    m.means = torch.randn(K, D, generator=g, dtype=torch.float64)
    m.covariances = {"full": torch.eye(D, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0],
                     dtype=torch.float64)[:, None, None] + 0.3,
                     "diag": torch.rand(K, D, generator=g, dtype=torch.float64) + 0.5,
                     "spherical": torch.rand(K, generator=g, dtype=torch.float64) + 0.5,
                     "tied": torch.eye(D, dtype=torch.float64) + 0.3}[cov]
    x = 2 * torch.randn(num_seq, 7, D, generator=g, dtype=torch.float64)
    got = m.emission.log_prob(x)
    ref = ge.component_log_prob(m.emission, x)
    assert got.shape == (num_seq, 7, K)
    assert torch.allclose(got, ref, rtol=1e-12, atol=1e-12)
    w = torch.softmax(torch.randn(7, K, num_seq, generator=g, dtype=torch.float64), 1)
    got = m.emission.expected_statistics(w.permute(2, 0, 1), x)
    ref = ge.weighted_moments(w.permute(2, 0, 1).contiguous(), x, cov)
    # small problems take each state's moments about its own mean: the same moments,
    # re-expressed about the reference's origin
    got = reshift(got, ref["shift"].expand(got["sx"].shape))
    for name in ("n", "sx", "sxx"):
        assert torch.allclose(got[name], ref[name], rtol=1e-12, atol=1e-12), name


@pytest.mark.parametrize("cov", ["full", "diag"])
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("implementation", ["scaling", "log"])
def test_gaussian_hmm_matches_hmmlearn(gauss_data, cov, multi, implementation):
    start, trans, means, covs = _gauss_init(cov, seed=len(cov) + multi)
    lengths = LENGTHS if multi else None
    ref = hl.GaussianHMM(K, cov, min_covar=0.0, covars_prior=0.0, covars_weight=1.0,
                         n_iter=6, tol=-np.inf, init_params="", params="stmc",
                         implementation=implementation)
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covs
    ref.fit(gauss_data, lengths)

    m = GaussianHMM(K, D, cov, reg_covar=0.0).double()
    m.start_probs, m.trans_probs = torch.tensor(start), torch.tensor(trans)
    m.means, m.covariances = torch.tensor(means), torch.tensor(covs)
    data = _split(gauss_data, LENGTHS) if multi else torch.as_tensor(gauss_data)
    hist = m.fit(data, max_iter=6, tol=0, init="given")
    assert hist.num_iters == 6
    assert _rel(m.start_probs.detach(), ref.startprob_) < 1e-8
    assert _rel(m.trans_probs.detach(), ref.transmat_) < 1e-8
    assert _rel(m.means.detach(), ref.means_) < 1e-8
    assert _rel(m.covariances, ref._covars_) < 1e-8
    assert np.allclose(hist.log_likelihood, ref.monitor_.history, rtol=1e-10)
    assert np.allclose(m.log_prob(data).sum().item(), ref.score(gauss_data, lengths), rtol=1e-10)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_gmm_hmm_matches_hmmlearn(cov):
    # One Baum-Welch iteration from identical parameters on two sequences. hmmlearn's
    # GMMHMM centres the covariance statistics on the *old* means (a generalised M-step);
    # pyroem's exact M-step centres on the new ones, so hmmlearn's covariance is ours plus
    # the outer product of the mean shift. Everything else agrees to rounding.
    Km, M = 2, 2
    rng = np.random.default_rng(0)
    lengths = [60, 45]
    x = np.concatenate([rng.normal(size=(n, D)) + rng.choice([-3, 3], size=(n, 1))
                        for n in lengths])
    start, trans = rng.dirichlet(np.ones(Km)), rng.dirichlet(np.ones(Km), size=Km)
    w, means = rng.dirichlet(np.ones(M), size=Km), rng.normal(0, 3, size=(Km, M, D))
    covs = np.ones((Km, M, D)) * 1.5 if cov == "diag" else np.tile(np.eye(D) * 1.5 + 0.2,
                                                                    (Km, M, 1, 1))
    ref = hl.GMMHMM(Km, M, covariance_type=cov, init_params="", n_iter=1, tol=0)
    ref.startprob_, ref.transmat_, ref.weights_, ref.means_, ref.covars_ = (
        start, trans, w, means, covs)
    ll_ref = ref.score(x, lengths)
    ref.fit(x, lengths)
    m = GMMHMM(Km, M, D, cov, reg_covar=0.0).double()
    m.start_probs, m.trans_probs = torch.tensor(start), torch.tensor(trans)
    m.weights, m.means, m.covariances = torch.tensor(w), torch.tensor(means), torch.tensor(covs)
    seqs = _split(x, lengths)
    assert float(m.log_prob(seqs).sum()) == pytest.approx(ll_ref, rel=1e-12)
    m.fit(seqs, init="given", max_iter=1, tol=0)
    assert _rel(m.start_probs.detach(), ref.startprob_) < 1e-8
    assert _rel(m.trans_probs.detach(), ref.transmat_) < 1e-8
    assert _rel(m.weights.detach(), ref.weights_) < 1e-8
    assert _rel(m.means.detach(), ref.means_) < 1e-8
    shift = m.means.detach().numpy() - means
    outer = shift**2 if cov == "diag" else shift[..., :, None] * shift[..., None, :]
    assert _rel(m.covariances.detach().numpy() + outer, ref.covars_) < 1e-8


@pytest.mark.parametrize("multi", [False, True])
def test_categorical_hmm_matches_hmmlearn(multi):
    rng = np.random.default_rng(3)
    M = 4
    gen = hl.CategoricalHMM(K, n_features=M, init_params="")
    gen.startprob_ = np.ones(K) / K
    gen.transmat_ = np.full((K, K), 0.1) + 0.7 * np.eye(K)
    gen.emissionprob_ = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    x = gen.sample(sum(LENGTHS), random_state=2)[0]
    start, trans = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    emis = rng.dirichlet(np.ones(M), size=K)
    lengths = LENGTHS if multi else None
    ref = hl.CategoricalHMM(K, n_features=M, n_iter=7, tol=-np.inf, init_params="",
                            params="ste", implementation="scaling")
    ref.startprob_, ref.transmat_, ref.emissionprob_ = start, trans, emis
    ref.fit(x, lengths)

    m = CategoricalHMM(K, M).double()
    m.start_probs, m.trans_probs = torch.tensor(start), torch.tensor(trans)
    m.emission_probs = torch.tensor(emis)
    data = _split(x[:, 0], LENGTHS) if multi else torch.as_tensor(x[:, 0])
    hist = m.fit(data, max_iter=7, tol=0, init="given")
    assert _rel(m.start_probs.detach(), ref.startprob_) < 1e-8
    assert _rel(m.trans_probs.detach(), ref.transmat_) < 1e-8
    assert _rel(m.emission_probs.detach(), ref.emissionprob_) < 1e-8
    assert np.allclose(hist.log_likelihood, ref.monitor_.history, rtol=1e-10)


def _generic_marginals(post, B, T, K, lengths=None):
    """gamma (B, T, K) and summed xi from the generic E-step's per-site marginals, over
    the frames within each sequence's length (a padded latent is still a latent of the
    model, as in Pyro: its marginal is its prior given the last real step)."""
    gamma = torch.zeros(B, T, K, dtype=torch.float64)
    xi = torch.zeros(K, K, dtype=torch.float64)
    for t in range(T):
        keep = 1.0 if lengths is None else (t < lengths).double()
        g = post[f"x_{t}"] * keep
        z = post.trace.nodes[f"z_{t}"]["value"]
        shape = torch.broadcast_shapes(g.shape, z.shape)
        b = torch.arange(B).expand(shape).reshape(-1)
        gamma.index_put_((b, torch.full_like(b, t), z.expand(shape).reshape(-1)),
                         g.expand(shape).reshape(-1), accumulate=True)
        if t > 0:
            p, zp = post[f"z_{t}"] * keep, post.trace.nodes[f"z_{t - 1}"]["value"]
            shape = torch.broadcast_shapes(p.shape, zp.shape, z.shape)
            xi.index_put_((zp.expand(shape).reshape(-1), z.expand(shape).reshape(-1)),
                          p.expand(shape).reshape(-1), accumulate=True)
    return gamma, xi


def _random_model(kind, seed):
    torch.manual_seed(seed)
    if kind == "categorical":
        m = CategoricalHMM(3, 4).double()
        m.emission_probs = torch.rand(3, 4, dtype=torch.float64).softmax(-1)
        data = [torch.randint(0, 4, (n,)) for n in (6, 4, 1)]
    else:
        m = {"gauss": GaussianHMM(3, 2, "full"), "final": GaussianHMM(3, 2, "diag", final_states=[1, 2]),
             "gmm": GMMHMM(3, 2, 2, "diag")}[kind].double()
        m.means = torch.randn(m.means.shape, dtype=torch.float64)
        data = [torch.randn(n, 2, dtype=torch.float64) for n in (6, 4, 1)]
    m.start_probs = torch.rand(3, dtype=torch.float64).softmax(-1)
    m.trans_probs = torch.rand(3, 3, dtype=torch.float64).softmax(-1)
    return m, data


@pytest.mark.parametrize("kind", ["gauss", "categorical", "final", "gmm"])
def test_pyro_markov_model_under_generic_estep_equals_vectorised(kind):
    m, data = _random_model(kind, seed=1)
    x, lengths = m._prepare(data)
    B, T = x.shape[:2]
    with pyro.get_param_store().scope():  # the model's own parameters, not the global store's
        post = exact_posterior(m.model, x, lengths, max_plate_nesting=1)
        hard = exact_posterior(m.model, x, lengths, max_plate_nesting=1, hard=True)
    vec = m.e_step(x, lengths)
    gamma, xi = _generic_marginals(post, B, T, m.num_states, lengths)
    assert torch.allclose(gamma, vec.gamma, atol=1e-12)
    assert torch.allclose(xi, vec.trans, atol=1e-12)
    # a masked (padded) latent is still summed over (Pyro's semantics): it adds nothing
    assert post.log_evidence.item() == pytest.approx(vec.log_evidence.item(), abs=1e-10)
    if kind != "gmm":  # GMMHMM's Viterbi is over states (mixtures summed), as hmmlearn's
        vhard = m.e_step(x, lengths, hard=True)
        assert hard.log_evidence.item() == pytest.approx(vhard.log_evidence.item(), abs=1e-10)
        assert torch.equal(_generic_marginals(hard, B, T, m.num_states)[0], vhard.gamma)


def test_decode_equals_brute_force_with_final_states():
    m, data = _random_model("final", seed=2)
    m.trans_probs = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    m.start_probs = torch.tensor([0.8, 0.2, 0.0], dtype=torch.float64)
    x = data[0]
    logb = m.emission.log_prob(x.unsqueeze(0))[0]
    best, best_z, scores = -math.inf, None, []
    for z in itertools.product(range(3), repeat=x.shape[0]):
        if z[-1] not in (1, 2):
            continue
        s = m.start_probs[z[0]].log() + logb[0, z[0]]
        for t in range(1, len(z)):
            s = s + m.trans_probs[z[t - 1], z[t]].log() + logb[t, z[t]]
        scores.append(s.detach())
        if s > best:
            best, best_z = s.item(), list(z)
    lp, path = m.decode(x)
    assert lp.item() == pytest.approx(best, abs=1e-10) and path.tolist() == best_z
    assert m.log_prob(x).item() == pytest.approx(torch.stack(scores).logsumexp(0).item(), abs=1e-10)
    _lp_map, states = m.decode(x, algorithm="map")
    assert torch.equal(states, m.posterior(x).argmax(-1))


def test_log_likelihood_never_decreases_and_structural_zeros_stay(gauss_data):
    m = GaussianHMM(K, D, "full", reg_covar=0.0).double()
    m.trans_probs = torch.tensor([[0.8, 0.2, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.9]], dtype=torch.float64)
    hist = m.fit(_split(gauss_data, LENGTHS), max_iter=25, tol=0, seed=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert ll[-1] > ll[0]
    zeros = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    assert (m.trans_probs.detach()[zeros] == 0).all()


def test_viterbi_training_is_monotone_in_the_joint(gauss_data):
    m = GaussianHMM(K, D, "diag", reg_covar=1e-6).double()
    hist = m.fit(torch.as_tensor(gauss_data), method="viterbi", max_iter=10, tol=0, seed=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-6)
    best, _ = m.decode(torch.as_tensor(gauss_data))
    assert best.item() == pytest.approx(hist.final_log_likelihood, rel=1e-12)


def test_dirichlet_priors_give_the_map_update(gauss_data):
    x = torch.as_tensor(gauss_data)
    start, trans, means, covs = _gauss_init("diag", seed=5)
    conc = torch.tensor([[3.0, 1.0, 1.5], [1.0, 2.0, 1.0], [1.0, 1.0, 4.0]])
    m = GaussianHMM(K, D, "diag", trans_concentration=conc, start_concentration=2.0).double()
    m.start_probs, m.trans_probs = torch.tensor(start), torch.tensor(trans)
    m.means, m.covariances = torch.tensor(means), torch.tensor(covs)
    post = m.e_step(*m._prepare(x))
    m.fit(x, max_iter=1, tol=0, init="given")
    expect = post.trans + conc.double() - 1
    assert torch.allclose(m.trans_probs.detach(), expect / expect.sum(-1, keepdim=True), rtol=1e-12)
    s = post.start + 1.0
    assert torch.allclose(m.start_probs.detach(), s / s.sum(), rtol=1e-12)


def test_frozen_parameters_stay_as_set(gauss_data):
    x = torch.as_tensor(gauss_data)
    start, trans, means, covs = _gauss_init("diag", seed=6)

    def make(params):
        m = GaussianHMM(K, D, "diag", params=params, reg_covar=0.0).double()
        m.start_probs, m.trans_probs = torch.tensor(start), torch.tensor(trans)
        m.means, m.covariances = torch.tensor(means), torch.tensor(covs)
        return m

    # frozen means, trained covariances: the weighted variance about the frozen means
    m = make("tc")
    gamma = m.e_step(*m._prepare(x)).gamma[0]
    m.fit(x, max_iter=1, tol=0, init="given")
    mu = torch.tensor(means)
    var = torch.einsum("tk,tkd->kd", gamma, (x[:, None, :] - mu) ** 2) / gamma.sum(0)[:, None]
    assert torch.allclose(m.covariances, var, rtol=1e-10)
    assert torch.equal(m.means.detach(), mu)
    assert torch.allclose(m.start_probs.detach(), torch.tensor(start), rtol=1e-14)
    assert m.num_parameters == K * (K - 1) + K * D
    # the default init (k-means) sets trained emission parameters only
    m = make("tc")
    m.fit(x, max_iter=2, tol=0)
    assert torch.equal(m.means.detach(), mu)

    # frozen start: hmmlearn with the same params string
    m = make("tmc")
    m.fit(x, max_iter=3, tol=0, init="given")
    ref = hl.GaussianHMM(K, "diag", covars_prior=0.0, n_iter=3, tol=-np.inf, init_params="",
                         params="tmc", implementation="scaling")
    ref.startprob_, ref.transmat_, ref.means_, ref.covars_ = start, trans, means, covs
    ref.fit(gauss_data)
    assert torch.allclose(m.start_probs.detach(), torch.tensor(start), rtol=1e-14)
    for ours, theirs in [(m.trans_probs.detach(), ref.transmat_), (m.means.detach(), ref.means_),
                         (m.covariances, ref._covars_)]:
        assert _rel(ours, theirs) < 1e-8


def test_data_forms_agree_and_results_come_back_in_form(gauss_data):
    m = GaussianHMM(K, D, "diag").double()
    m.means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    seqs = _split(gauss_data, LENGTHS)
    padded = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lp_list, lp_pad = m.log_prob(seqs), m.log_prob(padded, torch.tensor(LENGTHS))
    assert torch.allclose(lp_list, lp_pad, rtol=1e-13)
    assert torch.allclose(lp_list[1], m.log_prob(seqs[1]), rtol=1e-13)
    post = m.posterior(seqs)
    assert [p.shape for p in post] == [(n, K) for n in LENGTHS]
    assert torch.allclose(post[2], m.posterior(seqs[2]), atol=1e-13)
    _, paths = m.decode(padded, torch.tensor(LENGTHS))
    assert paths.shape == padded.shape[:2] and (paths[2, 40:] == -1).all()
    n = sum(LENGTHS)
    assert m.bic(seqs) == pytest.approx(-2 * lp_list.sum().item() + m.num_parameters * math.log(n))
    assert m.aic(seqs) == pytest.approx(-2 * lp_list.sum().item() + 2 * m.num_parameters)


@pytest.mark.parametrize("model", ["gauss", "categorical", "gmm"])
def test_sample_then_fit_recovers_the_chain(model):
    if model == "gauss":
        true = GaussianHMM(2, 2, "diag").double()
        true.means = torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    elif model == "categorical":
        true = CategoricalHMM(2, 3).double()
        true.emission_probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    else:
        true = GMMHMM(2, 2, 1, "spherical").double()
        true.means = torch.tensor([[[-4.0], [-6.0]], [[4.0], [6.0]]], dtype=torch.float64)
    true.trans_probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    x, z = true.sample(150, num_sequences=8, seed=0)
    assert x.shape[:2] == (8, 150) and z.shape == (8, 150)
    fitted = type(true)(*([2, 3] if model == "categorical" else [2] + ([2, 1, "spherical"] if model == "gmm" else [2, "diag"]))).double()
    fitted.trans_probs = torch.tensor([[0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
    fitted.fit(x, torch.full((8,), 150), max_iter=60, seed=1)
    # label switching: compare up to a permutation of the two states
    tp, tt = fitted.trans_probs.detach(), true.trans_probs.detach()
    assert min((tp - tt).abs().max(), (tp.flip(0, 1) - tt).abs().max()) < 0.08
    assert fitted.log_prob(x, torch.full((8,), 150)).sum() >= true.log_prob(x, torch.full((8,), 150)).sum() - 1e-6


def test_sample_with_final_states_draws_the_conditioned_chain():
    # a 3-state chain that must end in state 2 after 3 frames: the empirical path
    # frequencies match p(z | z_3 in F) summed by brute force over all 27 paths
    m = CategoricalHMM(3, 2).double()
    m.start_probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    m.trans_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]],
                                 dtype=torch.float64)
    m.final_states = torch.tensor([False, False, True])
    pi, A = m.start_probs.detach(), m.trans_probs.detach()
    paths = list(itertools.product(range(3), repeat=3))
    p = torch.stack([pi[a] * A[a, b] * A[b, c] * (c == 2) for a, b, c in paths])
    p = p / p.sum()
    _, z = m.sample(3, num_sequences=40_000, seed=0)
    assert (z[:, -1] == 2).all()
    freq = torch.stack([(z == torch.tensor(path)).all(-1).double().mean() for path in paths])
    assert (freq - p).abs().max() < 0.01
    m.trans_probs = torch.eye(3, dtype=torch.float64)
    m.start_probs = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="final state"):
        m.sample(3, seed=0)


def test_svi_increases_the_likelihood():
    true = GaussianHMM(2, 1, "diag").double()
    true.means = torch.tensor([[-2.0], [2.0]], dtype=torch.float64)
    true.trans_probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    x, _ = true.sample(8, num_sequences=4, seed=0)
    m = GaussianHMM(2, 1, "diag").double()
    m.means = torch.tensor([[-0.5], [0.5]], dtype=torch.float64)
    hist = m.fit(x, torch.full((4,), 8), method="svi", max_iter=10, tol=0, init="given", lr=0.05)
    assert hist.final_log_likelihood > hist.log_likelihood[0]


@pytest.mark.parametrize("make", [
    lambda: GaussianHMM(3, 2, "full", final_states=[0, 2]),
    lambda: CategoricalHMM(3, 4),
    lambda: GMMHMM(2, 2, 2, "diag"),
])
def test_svi_objective_is_the_exact_evidence(make):
    # the vectorised marginal_model that SVI trains gives log p(X) (as the forward-backward
    # E-step), on sequences of different lengths, and gradients for every parameter
    torch.manual_seed(0)
    m = make().double()
    if isinstance(m, CategoricalHMM):
        xs = [torch.randint(0, 4, (n,)) for n in (5, 3, 7)]
    else:
        m.means = torch.randn(m.means.shape, dtype=torch.float64)
        xs = [torch.randn(n, 2, dtype=torch.float64) for n in (5, 3, 7)]
    m.trans_probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]],
                                 dtype=torch.float64)[:m.num_states, :m.num_states].softmax(-1) \
        if m.num_states == 2 else torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.4, 0.6]],
                                               dtype=torch.float64)
    args = m._data(xs)
    # no latent site is left in marginal_model: its guide is empty
    elbo = -pyro.infer.Trace_ELBO().differentiable_loss(m.marginal_model, lambda *a: None, *args)
    assert float(elbo.detach()) == pytest.approx(float(m.log_prob(xs).sum()), rel=1e-10)
    elbo.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("bad", [
    lambda: GaussianHMM(0, 2),
    lambda: GaussianHMM(2, 2, "wrong"),
    lambda: GaussianHMM(2, 2, params="sx"),
    lambda: GaussianHMM(2, 2, final_states=[5]),
    lambda: GaussianHMM(2, 2, trans_concentration=-1.0),
    lambda: GaussianHMM(2, 2).log_prob(torch.randn(5, 3)),
    lambda: GaussianHMM(2, 2).log_prob(torch.tensor([[0.0, float("nan")]] * 4)),
    lambda: GaussianHMM(2, 2).log_prob([]),
    lambda: GaussianHMM(2, 2).log_prob([torch.zeros(0, 2)]),
    lambda: GaussianHMM(2, 2).log_prob(torch.randn(2, 5, 2), torch.tensor([5, 6])),
    lambda: GaussianHMM(2, 2).log_prob(torch.randn(2, 5, 2), torch.tensor([5])),
    lambda: GaussianHMM(2, 2).decode(torch.randn(5, 2), algorithm="posterior"),
    lambda: GaussianHMM(3, 2).fit(torch.randn(2, 2)),
    lambda: CategoricalHMM(2, 3).log_prob(torch.tensor([0, 1, 3])),
    lambda: CategoricalHMM(2, 3).log_prob(torch.tensor([0.5, 1.0])),
    lambda: setattr(GaussianHMM(2, 2), "trans_probs", torch.tensor([[0.5, 0.6], [0.5, 0.5]])),
    lambda: setattr(GaussianHMM(2, 2), "covariances", torch.ones(2, 3)),
    lambda: setattr(CategoricalHMM(2, 3), "emission_probs", torch.ones(2, 2) / 2),
])
def test_bad_inputs_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_failed_fit_leaves_model_untouched():
    m = GaussianHMM(2, 2, "full", reg_covar=0.0).double()
    before = {k: v.clone() for k, v in m.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError):
        m.fit(torch.zeros(10, 2, dtype=torch.float64), init="random")  # degenerate data
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items() if torch.is_tensor(v))


def test_gmmhmm_num_mix_is_a_deprecated_alias_of_num_components():
    with pytest.warns(FutureWarning, match="num_components"):
        old = GMMHMM(3, num_mix=2, dim=2)
    new = GMMHMM(3, num_components=2, dim=2)
    assert old.num_components == new.num_components == 2
    assert {k: v.shape for k, v in old.named_parameters()} == \
        {k: v.shape for k, v in new.named_parameters()}
    with pytest.warns(FutureWarning):
        assert new.num_mix == 2
    with pytest.raises(AttributeError):
        new.num_mix = 3
    with pytest.raises(TypeError):
        GMMHMM(3, 2, num_mix=2)
    # the configuration names num_components: it rebuilds an equal model without warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        twin = type(new)(**{name: getattr(new, name) for name in
                            ("num_states", "num_components", "dim", "covariance_type",
                             "reg_covar", "params", "start_concentration",
                             "trans_concentration", "final_states", "block_length")})
    assert twin.num_components == 2 and twin.means.shape == new.means.shape
