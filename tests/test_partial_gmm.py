"""Partial observation on the Gaussian mixture: missing values (obs_mask), partial labels,
sample weights; every check against an independent reference (per-point loops with
torch's MultivariateNormal, brute-force conditional moments, dropped or repeated rows)."""

import warnings

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal as TorchMVN

from pyroem.infer import EM
from pyroem.models import GaussianMixture

COV_TYPES = ["full", "diag", "spherical", "tied"]


def _data(n=60, d=3, seed=0, frac=0.35):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-1.0, 5.0, 2.0]])[:, :d]
    z = torch.arange(n) % 3
    x = (centers[z] + torch.randn(n, d, generator=g)).double()
    mask = torch.rand(n, d, generator=g) > frac
    return x, mask, z


def _started(covariance_type, d=3, seed=1, k=3):
    """A model at a generic (random, not fitted) point, float64."""
    g = torch.Generator().manual_seed(seed)
    gmm = GaussianMixture(k, d, covariance_type, reg_covar=0.0).double()
    gmm.weights = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)[:k]
    gmm.means = torch.randn(k, d, generator=g, dtype=torch.float64) * 2
    full = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    full = full @ full.mT + torch.eye(d, dtype=torch.float64)
    gmm.covariances = {"full": full, "tied": full[0], "diag": full.diagonal(dim1=-2, dim2=-1),
                       "spherical": full.diagonal(dim1=-2, dim2=-1).mean(-1)}[covariance_type]
    return gmm


def _full_covariances(gmm):
    cov, k, d = gmm.covariances, gmm.num_components, gmm.dim
    return {"full": cov, "tied": cov.expand(k, d, d), "diag": torch.diag_embed(cov),
            "spherical": cov[:, None, None] * torch.eye(d, dtype=cov.dtype)}[gmm.covariance_type]


@torch.no_grad()
def _brute_log_joint(gmm, x, mask):
    """log p(x_o, z = k) per point, from torch's MVN on the observed sub-vector."""
    cov = _full_covariances(gmm)
    out = torch.zeros(x.shape[0], gmm.num_components, dtype=torch.float64)
    for n in range(x.shape[0]):
        o = mask[n].nonzero().squeeze(-1)
        for k in range(gmm.num_components):
            lp = gmm.weights[k].log()
            if o.numel():
                lp = lp + TorchMVN(gmm.means[k, o], cov[k][o][:, o]).log_prob(x[n, o])
            out[n, k] = lp
    return out


@torch.no_grad()
def _brute_em_step(gmm, x, mask):
    """One exact EM step of Ghahramani and Jordan (1994), per point and component."""
    cov, mu = _full_covariances(gmm), gmm.means
    k_, d = gmm.num_components, gmm.dim
    resp = _brute_log_joint(gmm, x, mask).softmax(-1)
    keep = mask.any(-1)
    n = torch.zeros(k_, dtype=torch.float64)
    s1 = torch.zeros(k_, d, dtype=torch.float64)
    s2 = torch.zeros(k_, d, d, dtype=torch.float64)
    for i in range(x.shape[0]):
        if not keep[i]:
            continue
        o, m = mask[i].nonzero().squeeze(-1), (~mask[i]).nonzero().squeeze(-1)
        for k in range(k_):
            e, v = mu[k].clone(), torch.zeros(d, d, dtype=torch.float64)
            e[o] = x[i, o]
            if m.numel():
                gain = cov[k][m][:, o] @ torch.linalg.inv(cov[k][o][:, o])
                e[m] = mu[k, m] + gain @ (x[i, o] - mu[k, o])
                v[m.unsqueeze(-1), m] = cov[k][m][:, m] - gain @ cov[k][o][:, m]
            r = resp[i, k]
            n[k] += r
            s1[k] += r * e
            s2[k] += r * (torch.outer(e, e) + v)
    means = s1 / n[:, None]
    covs = s2 / n[:, None, None] - means[:, :, None] * means[:, None, :]
    kind = gmm.covariance_type
    if kind == "tied":
        covs = (covs * n[:, None, None]).sum(0) / n.sum()
    elif kind == "diag":
        covs = covs.diagonal(dim1=-2, dim2=-1)
    elif kind == "spherical":
        covs = covs.diagonal(dim1=-2, dim2=-1).mean(-1)
    return n / n.sum(), means, covs


@pytest.mark.parametrize("few_patterns", [32, 0], ids=["by-pattern", "gathered"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_prob_is_the_marginal_of_the_observed_part(covariance_type, few_patterns,
                                                        monkeypatch):
    # both routes of pyroem.distributions.missing: points solved pattern by pattern, or
    # with each point's factor gathered
    monkeypatch.setattr("pyroem.distributions.missing.FEW_PATTERNS", few_patterns)
    x, mask, _ = _data()
    mask[0] = False  # a point with nothing observed: log p = 0
    gmm = _started(covariance_type)
    nan_x = x.masked_fill(~mask, float("nan"))
    expected = _brute_log_joint(gmm, x, mask).logsumexp(-1)
    got = gmm.log_prob(nan_x, obs_mask=mask)
    assert float(got[0]) == 0.0
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(gmm.posterior(nan_x, obs_mask=mask),
                               _brute_log_joint(gmm, x, mask).softmax(-1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("few_patterns", [32, 0], ids=["by-pattern", "gathered"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_one_em_step_is_the_exact_em_of_ghahramani_and_jordan(covariance_type, few_patterns,
                                                               monkeypatch):
    monkeypatch.setattr("pyroem.distributions.missing.FEW_PATTERNS", few_patterns)
    x, mask, _ = _data()
    mask[:3] = False
    gmm = _started(covariance_type)
    weights, means, covs = _brute_em_step(gmm, x, mask)
    hist = gmm.fit(x.masked_fill(~mask, float("nan")), obs_mask=mask, init="given",
                   max_iter=1, tol=0)
    # the recorded objective is the marginal likelihood of the observed part
    assert hist.log_likelihood[0] == pytest.approx(
        float(_brute_log_joint(_started(covariance_type), x, mask).logsumexp(-1).sum()), abs=1e-9)
    torch.testing.assert_close(gmm.weights, weights, rtol=0, atol=1e-10)
    torch.testing.assert_close(gmm.means, means, rtol=0, atol=1e-10)
    torch.testing.assert_close(gmm.covariances, covs, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_with_missing_values_is_monotone(covariance_type):
    x, mask, _ = _data(n=150, frac=0.4)
    gmm = GaussianMixture(3, 3, covariance_type, reg_covar=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = gmm.fit(x, obs_mask=mask, max_iter=30, tol=0, seed=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert ll[-1] > ll[0]


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_whole_rows_missing_equal_dropping_them(covariance_type):
    x, mask, _ = _data(n=90, frac=0.0)
    mask[::4] = False  # every fourth point entirely missing
    keep = mask.any(-1)
    dropped, masked = _started(covariance_type), _started(covariance_type)
    h1 = dropped.fit(x[keep], init="given", max_iter=8, tol=0)
    h2 = masked.fit(x.masked_fill(~mask, float("nan")), obs_mask=mask, init="given",
                    max_iter=8, tol=0)
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-10)
    for name in ("weights", "means", "covariances"):
        torch.testing.assert_close(getattr(masked, name), getattr(dropped, name),
                                   rtol=0, atol=1e-10)


def test_a_fully_observed_mask_changes_nothing():
    x, _, _ = _data(n=80)
    mask = torch.ones_like(x, dtype=torch.bool)
    a, b = _started("full"), _started("full")
    h1 = a.fit(x, init="given", max_iter=5, tol=0)
    h2 = b.fit(x, obs_mask=mask, init="given", max_iter=5, tol=0)
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-9)
    torch.testing.assert_close(a.covariances, b.covariances, rtol=0, atol=1e-10)


def test_float32_with_missing_values_runs_and_agrees_with_float64():
    x, mask, _ = _data(n=120)
    a = GaussianMixture(3, 3, "full")
    b = GaussianMixture(3, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(x, obs_mask=mask, max_iter=10, tol=0, seed=0)
        b.fit(x.float(), obs_mask=mask, max_iter=10, tol=0, seed=0)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.means.double(), a.means, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------- labels
def test_fully_labelled_data_give_the_supervised_mle_in_one_iteration():
    x, _, z = _data(n=90)
    gmm = _started("full")  # far from the answer: labels alone decide
    gmm.fit(x, labels=z, init="given", max_iter=1, tol=0)
    for k in range(3):
        xk = x[z == k]
        torch.testing.assert_close(gmm.means[k], xk.mean(0), rtol=0, atol=1e-10)
        torch.testing.assert_close(gmm.covariances[k],
                                   torch.cov(xk.T, correction=0), rtol=0, atol=1e-10)
    torch.testing.assert_close(gmm.weights, torch.bincount(z).double() / 90, rtol=0, atol=1e-12)


def test_partial_labels_clamp_the_e_step_exactly():
    x, mask, z = _data(n=40)
    labels = torch.where(torch.arange(40) % 3 == 0, z, -1)
    gmm = _started("diag")
    lj = _brute_log_joint(gmm, x, torch.ones_like(mask))
    lj[labels >= 0] = torch.where(
        torch.nn.functional.one_hot(labels[labels >= 0], 3).bool(), lj[labels >= 0],
        torch.tensor(-torch.inf, dtype=torch.float64))
    post = EM(gmm.model).e_step(*gmm.prepare(x, labels=labels))
    assert float(post.log_evidence) == pytest.approx(float(lj.logsumexp(-1).sum()), abs=1e-9)
    torch.testing.assert_close(post["x"].T, lj.softmax(-1), rtol=0, atol=1e-10)
    torch.testing.assert_close(gmm.posterior(x, labels=labels), lj.softmax(-1), rtol=0, atol=1e-10)


def test_labels_seed_the_initialisation():
    """Labels decide which component is which class: with one labelled point per class,
    numbered in a permuted order, component perm[c] starts at class c."""
    x, _, z = _data(n=90)
    centers = torch.stack([x[z == c].mean(0) for c in range(3)])
    perm = torch.tensor([2, 0, 1])
    labels = torch.full((90,), -1)
    labels[:3] = perm[z[:3]]  # points 0, 1, 2 are of classes 0, 1, 2
    for seed in range(5):
        gmm = GaussianMixture(3, 3).initialize(x, labels=labels, seed=seed)
        dist = torch.cdist(gmm.means, centers)  # (component, class)
        assert torch.equal(dist.argmin(-1)[perm], torch.arange(3))


def test_seed_responsibilities_matches_clusters_to_labels():
    from pyroem.models.partial import seed_responsibilities

    clusters = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    resp = torch.nn.functional.one_hot(clusters, 3).double()
    labels = torch.tensor([2, -1, 0, -1, -1, 1, -1])  # cluster 0 is class 2, 1 is 0, 2 is 1
    seeded = seed_responsibilities(resp, labels)
    assert torch.equal(seeded.argmax(-1), torch.tensor([2, 2, 0, 0, 1, 1, 1]))
    # a class with no label takes the component left over
    labels = torch.tensor([-1, -1, 1, -1, -1, -1, -1])
    assert torch.equal(seed_responsibilities(resp, labels).argmax(-1),
                       torch.tensor([0, 0, 1, 1, 2, 2, 2]))


# ---------------------------------------------------------------------- sample weights
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_integer_weights_equal_repeated_rows(covariance_type):
    x, _mask, _ = _data(n=45)
    weight = torch.arange(45) % 3  # 0, 1 or 2 copies
    repeated = x.repeat_interleave(weight, 0)
    a, b = _started(covariance_type), _started(covariance_type)
    h1 = a.fit(repeated, init="given", max_iter=6, tol=0)
    h2 = b.fit(x, sample_weight=weight, init="given", max_iter=6, tol=0)
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-9)
    for name in ("weights", "means", "covariances"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=1e-10)


def test_weights_with_missing_values_equal_repeated_rows():
    x, mask, _ = _data(n=45)
    weight = (torch.arange(45) % 3).double()
    a, b = _started("full"), _started("full")
    h1 = a.fit(x.repeat_interleave(weight.long(), 0), obs_mask=mask.repeat_interleave(
        weight.long(), 0), init="given", max_iter=4, tol=0)
    h2 = b.fit(x, obs_mask=mask, sample_weight=weight, init="given", max_iter=4, tol=0)
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-9)
    torch.testing.assert_close(b.covariances, a.covariances, rtol=0, atol=1e-10)


def test_weighted_e_step_equals_the_enumeration_with_unit_weights():
    x, mask, _ = _data(n=30)
    gmm = _started("tied")
    args = gmm.prepare(x, obs_mask=mask)
    generic = gmm.e_step(*args)
    weighted = gmm.e_step(*args, None, torch.ones(30, dtype=torch.float64))
    assert float(weighted.log_evidence) == pytest.approx(float(generic.log_evidence), abs=1e-10)
    torch.testing.assert_close(weighted["x"], generic["x"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- bad input
def _bad_inputs(x, mask):
    return [
        ({"obs_mask": mask[:-1]}, "obs_mask must have the data's shape"),
        ({"obs_mask": mask.long()}, "obs_mask must be a boolean"),
        ({"labels": torch.full((60,), 3)}, r"labels must lie in \[-1, 3\)"),
        ({"labels": torch.zeros(59, dtype=torch.long)}, "labels must have shape"),
        ({"sample_weight": -torch.ones(60)}, "finite and >= 0"),
        ({"sample_weight": torch.full((60,), float("nan"))}, "finite and >= 0"),
        ({"sample_weight": torch.zeros(60)}, "zero everywhere"),
        ({"obs_mask": torch.zeros_like(mask)}, "at least num_components"),
    ]


def test_bad_partial_input_is_a_clear_error_that_changes_nothing():
    x, mask, _ = _data()
    nan_x = x.masked_fill(~mask, float("nan"))
    gmm = _started("full")
    before = {k: v.clone() for k, v in gmm.state_dict().items() if torch.is_tensor(v)}
    data_before = nan_x.clone()
    for kwargs, message in _bad_inputs(x, mask):
        with pytest.raises(ValueError, match=message):
            gmm.fit(x, **kwargs)
    with pytest.raises(ValueError, match="obs_mask"):
        gmm.fit(nan_x)  # NaN without a mask names the mechanism
    with pytest.raises(ValueError, match="record_decomposition"):
        gmm.fit(x, sample_weight=torch.ones(60), record_decomposition=True)
    for k, v in gmm.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k])
    assert torch.equal(nan_x.isnan(), data_before.isnan())
    assert torch.equal(nan_x.nan_to_num(), data_before.nan_to_num())


def test_the_e_step_closes_the_gap_with_missing_values():
    """KL(q || p(z | X)) = 0 after each E-step and ELBO = log p(X) (the decomposition of
    the Pyro model and guide), with values missing and a point with none."""
    x, mask, _ = _data(n=40)
    mask[5] = False
    gmm = _started("full")
    hist = gmm.fit(x, obs_mask=mask, init="given", max_iter=3, tol=0,
                   record_decomposition=True)
    for record, ll in zip(hist.records["e_step"], hist.log_likelihood):
        assert abs(float(record.kl)) < 1e-9
        assert float(record.elbo) == pytest.approx(ll, abs=1e-9)
