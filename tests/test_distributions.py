import pyro.distributions as dist
import pytest
import torch

from pyroem.distributions import DiagNormal, MultivariateNormal, gaussian_design, gaussian_features


@pytest.fixture
def params():
    g = torch.Generator().manual_seed(0)
    k, d = 4, 3
    loc = torch.randn(k, 1, d, generator=g, dtype=torch.float64) + 10
    a = torch.randn(k, 1, d, d, generator=g, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.mT + torch.eye(d))
    scale = torch.rand(k, 1, d, generator=g, dtype=torch.float64) + 0.5
    x = torch.randn(50, d, generator=g, dtype=torch.float64) * 3 + 10
    return loc, tril, scale, x


def test_mvn_log_prob_matches_pyro_under_broadcast_and_expand(params):
    loc, tril, _, x = params
    ref = dist.MultivariateNormal(loc, scale_tril=tril).log_prob(x)
    ours = MultivariateNormal(loc, scale_tril=tril)
    torch.testing.assert_close(ours.log_prob(x), ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ours.expand((4, 50)).log_prob(x), ref, rtol=1e-12, atol=1e-10)
    # shared (tied) scale_tril
    ref = dist.MultivariateNormal(loc, scale_tril=tril[0, 0]).log_prob(x)
    torch.testing.assert_close(MultivariateNormal(loc, scale_tril=tril[0, 0]).log_prob(x), ref,
                               rtol=1e-12, atol=1e-10)


def test_diag_normal_matches_independent_normal(params):
    loc, _, scale, x = params
    ref = dist.Normal(loc, scale).to_event(1).log_prob(x)
    torch.testing.assert_close(DiagNormal(loc, scale).log_prob(x), ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(DiagNormal(loc, scale).expand((4, 50)).log_prob(x), ref,
                               rtol=1e-12, atol=1e-10)
    # a scale expanded along the event dim (spherical covariance)
    sph = scale[..., :1].expand(loc.shape)
    ref = dist.Normal(loc, sph).to_event(1).log_prob(x)
    torch.testing.assert_close(DiagNormal(loc, sph).log_prob(x), ref, rtol=1e-12, atol=1e-10)
    d = DiagNormal(loc, scale)
    assert d.sample((7,)).shape == (7, 4, 1, 3)
    assert d.entropy().shape == (4, 1)
    torch.testing.assert_close(d.entropy(), dist.Normal(loc, scale).to_event(1).entropy())


def test_feature_cache_sees_in_place_changes_and_views(params):
    *_, x = params
    x = x.clone()
    c1, q1, l1 = gaussian_features(x.reshape(-1, 3))
    _c2, q2, _ = gaussian_features(x.reshape(-1, 3))  # a new view of the same data: cache hit
    assert q1.data_ptr() == q2.data_ptr()
    assert gaussian_design(x.reshape(-1, 3))[1] is gaussian_design(x.reshape(-1, 3))[1]
    x.mul_(2.0)  # in-place change bumps the version counter: recomputed
    c3, q3, l3 = gaussian_features(x.reshape(-1, 3))
    torch.testing.assert_close(c3, 2 * c1)
    torch.testing.assert_close(l3, 2 * l1)
    torch.testing.assert_close(q3, 4 * q1)


def test_gradients_flow_to_parameters(params):
    loc, tril, _, x = params
    loc = loc.clone().requires_grad_()
    MultivariateNormal(loc, scale_tril=tril).log_prob(x).sum().backward()
    loc_ref = loc.detach().clone().requires_grad_()
    dist.MultivariateNormal(loc_ref, scale_tril=tril).log_prob(x).sum().backward()
    torch.testing.assert_close(loc.grad, loc_ref.grad, rtol=1e-10, atol=1e-10)
