"""A Gaussian mixture written from scratch with pyro.params: the automatic closed form
equals the built-in GaussianMixture (strategy 1), brute force on tiny data."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from generic_brute import brute_force, init_params, marginal, one_hot, param
from torch.distributions import constraints

from pyroem.distributions import DiagNormal, MultivariateNormal
from pyroem.infer import EM, exact_posterior
from pyroem.models import GaussianMixture


def data(n=60, d=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(3, d, generator=gen, dtype=torch.float64)
    labels = torch.randint(3, (n,), generator=gen)
    return centres[labels] + torch.randn(n, d, generator=gen, dtype=torch.float64)


def fitted_builtin(x, k, covariance_type):
    gmm = GaussianMixture(k, x.shape[1], covariance_type, reg_covar=0.0).double()
    gmm.fit(x, max_iter=1, init="kmeans++", seed=0)
    return gmm


def full_model(x):
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    tril = pyro.param("scale_tril")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", MultivariateNormal(locs[z], scale_tril=tril[z]), obs=x)


def tied_cov_model(x):  # Pyro's own MVN, parametrised by a shared covariance matrix
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    cov = pyro.param("cov")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.MultivariateNormal(locs[z], covariance_matrix=cov), obs=x)


def diag_model(x):
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    scales = pyro.param("scales")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", DiagNormal(locs[z], scales[z]), obs=x)


def normal_to_event_model(x):  # the same diagonal GMM with Pyro's Normal
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    scales = pyro.param("scales")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


def spherical_model(x):  # one scale per component shared by the D coordinates
    weights = pyro.param("weights")
    locs = pyro.param("locs")
    scales = pyro.param("scales")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", DiagNormal(locs[z], scales[z].unsqueeze(-1).expand(locs[z].shape)),
                    obs=x)


def set_params(gmm, cov_name):
    pyro.param("weights", gmm.weights.detach().clone(), constraint=constraints.simplex)
    pyro.param("locs", gmm.means.detach().clone())
    cov = gmm.covariances.clone()
    if cov_name == "scale_tril":
        pyro.param("scale_tril", torch.linalg.cholesky(cov), constraint=constraints.lower_cholesky)
    elif cov_name == "cov":
        pyro.param("cov", cov, constraint=constraints.positive_definite)
    else:
        pyro.param("scales", cov.sqrt(), constraint=constraints.positive)


@pytest.mark.parametrize("model, covariance_type, cov_name", [
    (full_model, "full", "scale_tril"),
    (tied_cov_model, "tied", "cov"),
    (diag_model, "diag", "scales"),
    (normal_to_event_model, "diag", "scales"),
    (spherical_model, "spherical", "scales"),
])
def test_equals_builtin_gaussian_mixture(model, covariance_type, cov_name):
    x = data()
    gmm = fitted_builtin(x, 3, covariance_type)
    set_params(gmm, cov_name)
    em_generic, em_builtin = EM(model), EM(gmm.model, gmm.guide)
    for _ in range(5):
        assert em_generic.step(x) == pytest.approx(em_builtin.step(x), rel=1e-10)
    assert torch.allclose(param("weights"), gmm.weights.detach(), atol=1e-8)
    assert torch.allclose(param("locs"), gmm.means.detach(), atol=1e-8)
    if cov_name == "scale_tril":
        cov = param("scale_tril") @ param("scale_tril").mT
    elif cov_name == "cov":
        cov = param("cov")
    else:
        cov = param("scales").pow(2)
    assert torch.allclose(cov, gmm.covariances, atol=1e-8)
    assert set(em_generic.m_step.strategies.values()) <= {
        "closed-form:Categorical", "closed-form:MultivariateNormal",
        "closed-form:DiagNormal", "closed-form:Normal"}


def scalar_model(x):
    weights = pyro.param("weights", torch.tensor([0.5, 0.5], dtype=torch.float64),
                         constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 2.0], dtype=torch.float64))
    scale = pyro.param("scale", torch.tensor(1.5, dtype=torch.float64),
                       constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x)


def test_scalar_mixture_shared_scale_brute_force_and_hand_step():
    x = torch.tensor([-2.0, -0.5, 1.0, 2.5], dtype=torch.float64)
    init_params(scalar_model, x)
    post = exact_posterior(scalar_model, x)
    log_ev, configs, log_post = brute_force(scalar_model, (x,), {"z": ((4,), 2)})
    assert torch.allclose(post.log_evidence, log_ev, atol=1e-10)
    resp = marginal(configs, log_post, lambda c: one_hot(c["z"], 2))
    assert torch.allclose(post["x"].T, resp, atol=1e-10)
    EM(scalar_model).step(x)
    nk = resp.sum(0)
    locs = (resp * x[:, None]).sum(0) / nk
    var = (resp * (x[:, None] - locs) ** 2).sum() / nk.sum()  # a scale shared by components
    assert torch.allclose(param("weights"), nk / 4, atol=1e-12)
    assert torch.allclose(param("locs"), locs, atol=1e-12)
    assert torch.allclose(param("scale"), var.sqrt(), atol=1e-12)


def test_gaussian_log_prob_with_plate_expanded_parameters():
    """pyroem's Gaussians keep only the distinct parameter values of plate-expanded
    arguments; their log-prob equals torch's on the enumerated (K, N) table."""
    x = data(7)
    gen = torch.Generator().manual_seed(3)
    locs = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    a = torch.randn(3, 3, 3, generator=gen, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.mT + torch.eye(3, dtype=torch.float64))
    scales = 0.5 + torch.rand(3, 3, generator=gen, dtype=torch.float64)
    z = torch.arange(3).reshape(3, 1)
    got = MultivariateNormal(locs[z], scale_tril=tril[z]).expand((3, 7)).log_prob(x)
    ref = torch.distributions.MultivariateNormal(locs[z], scale_tril=tril[z]).log_prob(x)
    assert torch.allclose(got, ref, atol=1e-12)
    got = DiagNormal(locs[z], scales[z]).expand((3, 7)).log_prob(x)
    ref = torch.distributions.Normal(locs[z], scales[z]).log_prob(x).sum(-1)
    assert torch.allclose(got, ref, atol=1e-12)


def test_float32_generic_gmm_close_to_float64():
    x64 = data()
    gmm = fitted_builtin(x64, 3, "full")
    results = {}
    for dtype in (torch.float32, torch.float64):
        pyro.clear_param_store()
        pyro.param("weights", gmm.weights.detach().to(dtype), constraint=constraints.simplex)
        pyro.param("locs", gmm.means.detach().to(dtype))
        pyro.param("scale_tril", torch.linalg.cholesky(gmm.covariances).to(dtype),
                   constraint=constraints.lower_cholesky)
        em = EM(full_model)
        losses = [em.step(x64.to(dtype)) for _ in range(3)]
        results[dtype] = (losses, param("locs").double())
    assert results[torch.float32][0] == pytest.approx(results[torch.float64][0], rel=1e-5)
    assert torch.allclose(results[torch.float32][1], results[torch.float64][1], atol=1e-4)
