"""LinearGaussianSSM: Kalman filter and RTS smoother against pykalman and a brute-force
joint Gaussian, EM parity with pykalman, many sequences, float32 on long sequences,
the state, and clear errors on bad input."""

import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

from pyroem.infer import EM
from pyroem.infer.decompose import posterior_elbo_samples
from pyroem.models import LinearGaussianSSM
from pyroem.models.ssm.kalman import kalman_filter, rts_smoother
from pyroem.models.ssm.mstep import expected_statistics
from pyroem.models.ssm.scan import linear_recurrence

F64 = torch.float64
TRUE = {"transition_matrix": [[0.9, 0.2], [-0.3, 0.8]],
        "observation_matrix": [[1.0, 0.5], [0.3, -1.0], [0.7, 0.2]],
        "transition_cov": [[0.3, 0.05], [0.05, 0.2]],
        "observation_cov": np.diag([0.5, 0.4, 0.6]),
        "initial_mean": [1.0, -0.5], "initial_cov": [[1.0, 0.2], [0.2, 0.5]]}
START = {"transition_matrix": np.eye(2) * 0.5, "observation_matrix": np.ones((3, 2)) * 0.5,
         "transition_cov": np.eye(2), "observation_cov": np.eye(3),
         "initial_mean": np.zeros(2), "initial_cov": np.eye(2)}
PYKALMAN = {"transition_matrix": "transition_matrices",
            "observation_matrix": "observation_matrices",
            "transition_cov": "transition_covariance",
            "observation_cov": "observation_covariance",
            "initial_mean": "initial_state_mean", "initial_cov": "initial_state_covariance"}
LETTER = dict(zip("acqrmp", PYKALMAN))


def _model(values=TRUE, dtype=F64, **kwargs):
    m = LinearGaussianSSM(2, 3, **kwargs).to(dtype)
    m.set_parameters(**values)
    return m


def _values(m):
    return {name: getattr(m, name).detach().numpy() for name in PYKALMAN}


def _pykalman(values):
    pykalman = pytest.importorskip("pykalman")
    return pykalman.KalmanFilter(**{PYKALMAN[k]: np.asarray(v, dtype=float)
                                    for k, v in values.items()})


# ---------------------------------------------------------------------- the recursions
def test_filter_smoother_and_log_likelihood_match_pykalman():
    m = _model()
    x, _ = m.sample(80, seed=0)
    kf = _pykalman(TRUE)
    X = x.numpy()
    assert math.isclose(float(m.log_prob(x)), kf.loglikelihood(X), rel_tol=1e-12)
    for ours, theirs in ((m.filter(x), kf.filter(X)), (m.smooth(x), kf.smooth(X))):
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-12)


def _brute_force(m, x):
    """The joint Gaussian of (z_1..z_T, x_1..x_T), conditioned on x densely."""
    A, C = m.transition_matrix.detach(), m.observation_matrix.detach()
    Q, R, P0 = m.transition_cov, m.observation_cov, m.initial_cov
    T, S = x.shape[0], A.shape[0]
    means, variances = [m.initial_mean.detach()], [P0]
    for _ in range(1, T):
        means.append(A @ means[-1])
        variances.append(A @ variances[-1] @ A.T + Q)
    zz = torch.zeros(T * S, T * S, dtype=F64)
    for t in range(T):
        for s in range(t + 1):
            block = torch.linalg.matrix_power(A, t - s) @ variances[s]  # Cov(z_t, z_s)
            zz[t * S:(t + 1) * S, s * S:(s + 1) * S] = block
            zz[s * S:(s + 1) * S, t * S:(t + 1) * S] = block.T
    big_c = torch.block_diag(*[C] * T)
    mu_z = torch.cat(means)
    xx = big_c @ zz @ big_c.T + torch.block_diag(*[R] * T)
    zx = zz @ big_c.T
    mu_x = big_c @ mu_z
    gain = torch.linalg.solve(xx, zx.T).T
    post_mean = (mu_z + gain @ (x.reshape(-1) - mu_x)).reshape(T, S)
    post_cov = zz - gain @ zx.T
    return post_mean, post_cov, TorchMVN(mu_x, xx).log_prob(x.reshape(-1))


def test_smoother_equals_the_brute_force_joint_gaussian_on_five_steps():
    m = _model()
    x, _ = m.sample(5, seed=3)
    mean, cov, log_px = _brute_force(m, x)
    post = m.posterior(x)
    S = 2
    assert torch.allclose(post.loc[0], mean, atol=1e-12, rtol=0)
    for t in range(5):
        block = cov[t * S:(t + 1) * S, t * S:(t + 1) * S]
        assert torch.allclose(post.covariance[0, t], block, atol=1e-12, rtol=0)
    for t in range(4):  # Cov(z_{t+1}, z_t | x)
        block = cov[(t + 1) * S:(t + 2) * S, t * S:(t + 1) * S]
        assert torch.allclose(post.cross_covariance[0, t], block, atol=1e-12, rtol=0)
    assert math.isclose(float(post.log_evidence), float(log_px), rel_tol=1e-12)


def test_steady_state_and_blocks_equal_the_plain_recursion():
    m = _model()
    x, _ = m.sample(700, num_sequences=3, seed=1)
    lengths = torch.tensor([700, 450, 3])
    p = m.linear_gaussian()
    fast = kalman_filter(p, x, lengths)
    slow = kalman_filter(p, x, lengths, steady_tol=None, block_length=700)
    assert fast.cov.steady < 700 and slow.cov.steady == 700
    assert torch.allclose(fast.log_prob, slow.log_prob, rtol=1e-13, atol=0)
    assert torch.allclose(fast.mean, slow.mean, rtol=0, atol=1e-12)
    a, b = rts_smoother(p, fast, lengths), rts_smoother(p, slow, lengths, block_length=700)
    for u, v in zip(a[:3], b[:3]):
        assert torch.allclose(u, v, rtol=0, atol=1e-12)


@pytest.mark.parametrize("congruence", [False, True])
def test_blocked_linear_recurrence_equals_the_loop(congruence):
    g = torch.Generator().manual_seed(0)
    T, B, S = 203, 4, 3
    F = 0.5 * torch.randn(T, S, S, generator=g, dtype=F64)
    shape = (T, B, S, S) if congruence else (T, B, S)
    u = torch.randn(shape, generator=g, dtype=F64)
    ref = linear_recurrence(F, u, congruence, block_length=T)
    for L in (1, 7, 15, None):
        assert torch.allclose(linear_recurrence(F, u, congruence, block_length=L), ref,
                              rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- EM
@pytest.mark.parametrize("params", ["acqrmp", "qr", "cr", "amp"])
def test_em_matches_pykalman_from_the_same_start(params):
    data = _model().sample(120, seed=2)[0]
    kf = _pykalman(START)
    em_vars = [PYKALMAN[LETTER[c]] for c in params]
    expected_ll = []
    for _ in range(6):
        expected_ll.append(kf.loglikelihood(data.numpy()))
        kf.em(data.numpy(), n_iter=1, em_vars=em_vars)
    m = _model(START, params=params, reg_covar=0)
    hist = m.fit(data, init="given", max_iter=6, tol=0)
    np.testing.assert_allclose(hist.log_likelihood, expected_ll, rtol=1e-12)
    for name, value in _values(m).items():
        np.testing.assert_allclose(value, getattr(kf, PYKALMAN[name]), rtol=0, atol=1e-8,
                                   err_msg=name)
    for name in PYKALMAN:
        if name not in {LETTER[c] for c in params}:  # frozen: exactly as set
            np.testing.assert_array_equal(_values(m)[name], np.asarray(START[name]))


def test_em_is_monotone_from_the_data_driven_start():
    x, _ = _model().sample(150, num_sequences=2, seed=4)
    m = LinearGaussianSSM(2, 3, reg_covar=0).to(F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = m.fit(x, max_iter=40, tol=0, seed=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert hist.final_log_likelihood >= ll[-1]


def test_many_sequences_equal_the_sequences_taken_separately():
    m = _model()
    lengths = [30, 17, 5, 30, 2]
    xs = [m.sample(n, seed=i)[0] for i, n in enumerate(lengths)]
    together = m.log_prob(xs)
    alone = torch.stack([m.log_prob(x) for x in xs])
    assert torch.allclose(together, alone, rtol=1e-13, atol=0)
    padded = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    assert torch.allclose(m.log_prob(padded, lengths), together, rtol=0, atol=0)
    means, covs = m.smooth(xs)
    for x, mean, cov in zip(xs, means, covs):
        one_mean, one_cov = m.smooth(x)
        assert torch.allclose(mean, one_mean, atol=1e-12) and torch.allclose(cov, one_cov, atol=1e-12)
    # the statistics are additive, so the M-step of the batch is that of the summed parts
    stats = expected_statistics(m.posterior(xs), *m.prepare(xs))
    parts = [expected_statistics(m.posterior(x), *m.prepare(x)) for x in xs]
    for key, value in stats.items():
        assert torch.allclose(value, sum(p[key] for p in parts), rtol=1e-12, atol=1e-10), key
    hist = m.fit(xs, init="given", max_iter=1, tol=0)
    assert math.isclose(hist.log_likelihood[0], float(alone.sum()), rel_tol=1e-13)


def test_float32_on_a_long_sequence_is_finite_and_close_to_float64():
    m = LinearGaussianSSM(2, 2).to(F64)
    m.set_parameters(transition_matrix=[[0.95, 0.1], [-0.1, 0.9]],
                     observation_matrix=np.eye(2), transition_cov=np.eye(2) * 0.1,
                     observation_cov=np.eye(2) * 0.5)
    x, _ = m.sample(100_000, seed=0)
    ll64 = float(m.log_prob(x))
    m32 = LinearGaussianSSM.from_state_dict(m.state_dict()).float()
    ll32 = float(m32.log_prob(x.float()))
    assert abs(ll32 - ll64) <= 1e-5 * abs(ll64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = m32.fit(x.float(), init="given", max_iter=2, tol=0)
    assert m32.dtype == torch.float32 and all(map(math.isfinite, hist.log_likelihood))
    mean, cov = m32.smooth(x.float())
    assert torch.isfinite(mean).all() and torch.isfinite(cov).all()
    for name in PYKALMAN:
        assert torch.isfinite(getattr(m32, name)).all(), name


def test_the_e_step_writes_the_exact_posterior_into_the_guide():
    m = _model()
    xs = [m.sample(n, seed=n)[0] for n in (9, 4)]
    result = posterior_elbo_samples(m.model, m.guide, *m.prepare(xs), num_samples=4)
    assert torch.allclose(result.samples, torch.tensor(result.log_evidence, dtype=F64),
                          rtol=1e-12, atol=0)  # KL = 0: every ELBO sample is log p(X)
    assert m.q_loc.shape == (2, 9, 2) and m.q_scale_tril.shape == (2, 9, 2, 2)


def test_em_plan_and_svi_on_the_same_model_and_guide():
    m = _model()
    xs = [m.sample(n, seed=n)[0] for n in (12, 8)]
    plan = EM(m.model, m.guide).plan
    assert plan.e_step == "e_step of LinearGaussianSSM"
    assert plan.write == "write_posterior of LinearGaussianSSM"
    start = m.transition_matrix.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = m.fit(xs, method="svi", init="given", max_iter=4, lr=0.05, seed=0)
    assert all(map(math.isfinite, hist.log_likelihood))
    assert not torch.equal(m.transition_matrix.detach(), start)


def test_sample_is_reproducible_and_shaped():
    m = _model()
    x, z = m.sample(6, seed=5)
    assert x.shape == (6, 3) and z.shape == (6, 2)
    assert torch.equal(m.sample(6, seed=5)[0], x)
    xb, zb = m.sample(6, num_sequences=4, seed=5)
    assert xb.shape == (4, 6, 3) and zb.shape == (4, 6, 2)


def test_data_driven_start_with_more_states_than_observed_dimensions():
    x, _ = _model().sample(60, seed=6)
    m = LinearGaussianSSM(4, 3).to(F64)
    m.initialize(x, seed=0)
    assert torch.isfinite(m.observation_matrix).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = m.fit(x, max_iter=5, seed=0)
    assert all(map(math.isfinite, hist.log_likelihood))
    assert m.num_parameters == 16 + 12 + 10 + 6 + 4 + 10


# ---------------------------------------------------------------------- the state
def test_state_round_trips_through_a_file():
    m = _model(reg_covar=1e-5, params="acqr")
    xs = [m.sample(n, seed=n)[0] for n in (10, 7)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(xs, init="given", max_iter=3, tol=0)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = LinearGaussianSSM.from_state_dict(torch.load(buffer, weights_only=False))
    assert fresh.config() == {"state_dim": 2, "obs_dim": 3, "params": "acqr",
                              "reg_covar": 1e-5}
    for (k, a), b in zip(m.state_dict().items(), fresh.state_dict().values()):
        if torch.is_tensor(a):
            assert a.dtype == b.dtype and torch.equal(a, b), k
    assert fresh.q_gain.shape == (2, 10, 2, 2)
    assert torch.equal(fresh.log_prob(xs), m.log_prob(xs))


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [
    lambda m, x: m.fit(x[:1]),  # one frame
    lambda m, x: m.fit([x, x[:1]]),
    lambda m, x: m.fit(torch.where(torch.arange(20)[:, None] == 3, math.nan, x)),
    lambda m, x: m.fit(x[:, :2]),  # wrong observed dimension
    lambda m, x: m.log_prob(x.reshape(1, 1, 20, 3)),
    lambda m, x: m.fit(x, method="viterbi"),
    lambda m, x: m.fit(x, init="kmeans"),
    lambda m, x: m.e_step(*m.prepare(x), hard=True),
    lambda m, x: setattr(m, "transition_cov", [[1.0, 0.0], [0.0, 0.0]]),  # singular
    lambda m, x: setattr(m, "observation_cov", -np.eye(3)),
    lambda m, x: setattr(m, "initial_cov", [[1.0, 0.5], [0.0, 1.0]]),  # not symmetric
    lambda m, x: setattr(m, "transition_matrix", np.eye(3)),
    lambda m, x: setattr(m, "observation_matrix", np.full((3, 2), math.inf)),
    lambda m, x: setattr(m, "initial_mean", [0.0]),
    lambda m, x: m.set_parameters(transition_matrix=np.eye(2), transition_cov=np.zeros((2, 2))),
    lambda m, x: LinearGaussianSSM(2, 3, params="xyz"),
    lambda m, x: LinearGaussianSSM(0, 3),
    lambda m, x: LinearGaussianSSM(2, 3, reg_covar=-1),
])
def test_bad_input_raises_a_clear_error_and_changes_nothing(bad):
    m = _model()
    x, _ = m.sample(20, seed=0)
    before = {k: v.clone() for k, v in m.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(ValueError):
        bad(m, x)
    after = {k: v for k, v in m.state_dict().items() if torch.is_tensor(v)}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_singular_m_step_is_a_clear_error_and_the_model_is_restored():
    m = _model(START, reg_covar=0)
    x = torch.zeros(10, 3, dtype=F64)  # no noise at all: R collapses to zero
    before = m.observation_cov.clone()
    with pytest.raises(ValueError, match="reg_covar"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(x, init="given", max_iter=50, tol=0)
    assert torch.equal(m.observation_cov, before)


def test_checkpoint_file_round_trips_the_model_parameters(tmp_path):
    m = _model(reg_covar=1e-5)
    path = tmp_path / "ssm.npz"
    m.save(path)
    fresh = LinearGaussianSSM.load(path)
    x, _ = m.sample(15, seed=0)
    assert fresh.config() == m.config()
    assert torch.equal(fresh.log_prob(x), m.log_prob(x))
