"""The lean per-iteration path of the built-in models (issue 13): the inline simplex
transform, direct Gaussian log-densities, parameters read and written raw, data checked
once per unchanged tensor. Each against an independent reference."""

import math

import pyro
import pytest
import torch
from torch.distributions import constraints, transform_to

from pyroem.models import GaussianHMM, GaussianMixture, raw
from pyroem.models import gaussian_direct as gd
from pyroem.models import gaussian_emission as ge
from pyroem.models.simplex import simplex


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_simplex_transform_is_softmax_with_log_inverse(dtype):
    u = torch.tensor([[0.3, -1.2, 2.0], [-math.inf, 0.0, 1.0], [800.0, 799.0, -5.0]],
                     dtype=dtype)
    p = transform_to(simplex)(u)
    torch.testing.assert_close(p, torch.softmax(u, -1))
    assert torch.isfinite(p).all() and p[1, 0] == 0  # a structural zero stays zero
    torch.testing.assert_close(transform_to(simplex).inv(p[0]), p[0].log())
    assert simplex.check(p).all() and simplex.event_dim == constraints.simplex.event_dim
    # registered for pyroem's constraint only: torch's simplex keeps its own transform
    assert type(transform_to(constraints.simplex)).__name__ == "SoftmaxTransform"


def test_simplex_parameters_train_under_svi():
    # the gradient flows through the inline transform: SVI moves the weights from uniform
    # towards the data's proportions (3:1)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(300, 1, generator=g) - 4,
                   torch.randn(100, 1, generator=g) + 4]).double()
    gmm = GaussianMixture(2, 1).double()
    gmm.means = torch.tensor([[-4.0], [4.0]], dtype=torch.float64)
    optim = pyro.optim.Adam({"lr": 0.05})
    svi = pyro.infer.SVI(gmm.model, gmm.guide, optim, pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    args = gmm.prepare(x)
    for _ in range(150):
        svi.step(*args)
    assert 0.7 < float(gmm.weights.detach()[0]) < 0.8


def _reference_log_prob(hmm, x):
    means, cov = hmm.means, hmm.covariances
    K, D = means.shape
    full = ge.full_covariances(cov, hmm.covariance_type, (K,), D)
    mvn = torch.distributions.MultivariateNormal(means, covariance_matrix=full)
    return mvn.log_prob(x.unsqueeze(-2))


@pytest.mark.parametrize("cov", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [1, 3])
def test_direct_log_prob_matches_torch(cov, dtype, D):
    g = torch.Generator().manual_seed(1)
    K = 3
    hmm = GaussianHMM(K, D, cov).to(dtype)
    hmm.means = torch.randn(K, D, generator=g, dtype=dtype) * 3
    a = torch.randn(K, D, D, generator=g, dtype=dtype)
    full = a @ a.mT + 0.5 * torch.eye(D, dtype=dtype)
    hmm.covariances = {"full": full, "diag": full.diagonal(dim1=-2, dim2=-1),
                       "spherical": full.diagonal(dim1=-2, dim2=-1).mean(-1),
                       "tied": full[0]}[cov]
    x = torch.randn(2, 50, D, generator=g, dtype=dtype) * 4
    assert gd.direct_applies(hmm.emission, x)
    got = gd.direct_log_prob(hmm.emission, x)
    assert got.shape == (2, 50, K) and got.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, _reference_log_prob(hmm, x), **tol)
    # the emission's log_prob takes it on a small problem, and agrees with the product route
    torch.testing.assert_close(hmm.emission.log_prob(x),
                               ge.state_major_log_prob(hmm.emission, x).permute(2, 0, 1),
                               **(tol or {"rtol": 1e-9, "atol": 1e-9}))


def test_direct_log_prob_is_differentiable_inside_the_model():
    # SVI's objective for an HMM, the marginal model: its one factor is built on the direct
    # log-densities (a small problem) and its gradient reaches every emission parameter
    hmm = GaussianHMM(2, 2, "full").double()
    args = hmm.prepare(torch.randn(20, 2, dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(0)))
    assert gd.direct_applies(hmm.emission, args[0])
    trace = pyro.poutine.trace(hmm.marginal_model).get_trace(*args)
    trace.log_prob_sum().backward()
    grads = [p.grad for p in hmm.emission.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_raw_value_and_assign_round_trip_the_attribute():
    hmm = GaussianHMM(3, 2, "full").double()
    trans = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]], dtype=torch.float64)
    tensor = hmm.trans_probs_unconstrained
    raw.assign(hmm, "trans_probs", trans)
    assert hmm.trans_probs_unconstrained is tensor  # the registered parameter keeps its identity
    torch.testing.assert_close(hmm.trans_probs.detach(), trans)
    torch.testing.assert_close(raw.value(hmm, "trans_probs"), trans)
    assert not raw.value(hmm, "trans_probs").requires_grad
    cov = torch.tensor([[[2.0, 0.5], [0.5, 1.0]]] * 3, dtype=torch.float64)
    raw.assign(hmm.emission, "scale_tril", torch.linalg.cholesky(cov))
    torch.testing.assert_close(hmm.covariances, cov)


def test_m_step_skips_user_checks_but_user_setters_still_check():
    hmm = GaussianHMM(2, 1, "diag").double()
    with pytest.raises(ValueError, match="sum to 1"):
        hmm.trans_probs = torch.tensor([[0.5, 0.6], [0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(hmm.trans_probs.detach(), torch.full((2, 2), 0.5, dtype=torch.float64))


def test_data_checked_again_after_an_in_place_change():
    hmm = GaussianHMM(2, 1, "diag").double()
    x = torch.randn(100, 1, dtype=torch.float64)
    args = hmm.prepare(x)
    hmm.e_step(*args)  # passes, and is remembered
    hmm.e_step(*args)
    args[0][0, 3, 0] = math.nan  # an in-place change bumps the version: checked again
    with pytest.raises(ValueError, match="NaN"):
        hmm.e_step(*args)
    lengths = args[1].clone()
    lengths[0] = 500
    with pytest.raises(ValueError, match="lengths must lie"):
        hmm.e_step(torch.zeros_like(args[0]), lengths)


def test_public_parameter_reads_are_detached_values():
    from pyroem.models import LinearGaussianSSM

    gmm, hmm, ssm = GaussianMixture(2, 2), GaussianHMM(2, 2, "diag"), LinearGaussianSSM(2, 1)
    reads = [gmm.weights, gmm.means, gmm.covariances, hmm.start_probs, hmm.trans_probs,
             hmm.means, hmm.covariances, ssm.transition_matrix, ssm.observation_matrix,
             ssm.initial_mean, ssm.transition_cov]
    for value in reads:
        assert not value.requires_grad and value.grad_fn is None
        assert not isinstance(value, torch.nn.Parameter)
        value.numpy()  # what failed before
    assert "Parameter containing" not in repr(gmm.means)
    # the module's own parameters are still the trainable Parameters
    assert isinstance(gmm.means_unconstrained, torch.nn.Parameter)
    assert gmm.means_unconstrained.requires_grad


def test_reads_inside_the_model_stay_differentiable():
    # under a Pyro trace of the model the parameters are param sites that require grad
    gmm = GaussianMixture(2, 1).double()
    x = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    trace = pyro.poutine.trace(gmm.model).get_trace(*gmm.prepare(x))
    params = {n: s["value"] for n, s in trace.nodes.items() if s["type"] == "param"}
    assert params and all(v.requires_grad for v in params.values())


def test_progress_bar_shows_the_last_objective_per_item():
    # the postfix is formatted at most every Progress.interval seconds, and at the end
    import types

    from pyroem.infer.loop import Progress

    progress = Progress(3, "em", enabled=True)
    progress.interval = 3600.0  # only the first iteration would update it on the way
    run = types.SimpleNamespace(num_items=2)
    for objective in (-8.0, -6.0, -3.0):
        progress.after_iteration(run, objective)
    assert "ll_per_item=-4" in progress.bar.postfix
    progress.finish(run)
    assert "ll_per_item=-1.5" in progress.bar.postfix
