"""PLDA with missing embeddings and per-embedding weights: missing = dropped, integer
weights = repeated embeddings (exact, to 1e-10), monotone EM, clear errors."""

import numpy as np
import pytest
import torch

from pyroem.models import PLDA

D = 3


def _data(seed=0):
    truth = PLDA(D).double()
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    truth.between_cov = a @ a.T + torch.eye(D, dtype=torch.float64)
    truth.within_cov = 0.5 * torch.eye(D, dtype=torch.float64)
    x, labels, _ = truth.sample(8, [2, 3, 4, 5, 3, 2, 6, 4], seed=seed)
    return x, labels


def _start():
    m = PLDA(D, reg_covar=0.0).double()
    m.mean = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    m.between_cov = torch.diag(torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64))
    m.within_cov = torch.eye(D, dtype=torch.float64)
    return m


def _assert_same(a, b, h1, h2):
    np.testing.assert_allclose(h2.log_likelihood, h1.log_likelihood, rtol=0, atol=1e-10)
    for name in ("mean", "between_cov", "within_cov"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=1e-10)


def test_missing_embeddings_equal_dropping_them():
    x, labels = _data()
    mask = torch.ones(x.shape[0], dtype=torch.bool)
    mask[[0, 4, 7]] = False
    mask[labels == 5] = False  # a speaker with every embedding missing: dropped too
    a, b = _start(), _start()
    h1 = a.fit(x[mask], labels[mask], init="given", max_iter=6, tol=0)
    nan_x = x.masked_fill(~mask.unsqueeze(-1), float("nan"))
    h2 = b.fit(nan_x, labels, obs_mask=mask.unsqueeze(-1).expand_as(x), init="given",
               max_iter=6, tol=0)
    _assert_same(a, b, h1, h2)
    c = _start()
    h3 = c.fit(nan_x, labels, obs_mask=mask, init="given", max_iter=6, tol=0)  # (N,) form
    _assert_same(a, c, h1, h3)


def test_integer_weights_equal_repeated_embeddings():
    x, labels = _data(1)
    weight = torch.arange(x.shape[0]) % 3 + (torch.arange(x.shape[0]) % 5 == 0).long()
    weight[0] = 0
    a, b = _start(), _start()
    h1 = a.fit(x.repeat_interleave(weight, 0), labels.repeat_interleave(weight, 0),
               init="given", max_iter=6, tol=0)
    h2 = b.fit(x, labels, sample_weight=weight, init="given", max_iter=6, tol=0)
    _assert_same(a, b, h1, h2)
    # and the scatter initialisation sees the same data
    c, d = PLDA(D).double(), PLDA(D).double()
    c.initialize(x.repeat_interleave(weight, 0), labels.repeat_interleave(weight, 0))
    d.initialize(x, labels, sample_weight=weight)
    torch.testing.assert_close(d.within_cov, c.within_cov, rtol=0, atol=1e-12)


def test_em_with_fractional_weights_is_monotone():
    x, labels = _data(2)
    weight = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64) + 0.2
    hist = _start().fit(x, labels, sample_weight=weight, init="given", max_iter=30, tol=0)
    ll = np.array(hist.log_likelihood)
    assert np.all(np.diff(ll) >= -1e-10 * np.abs(ll[1:]))
    assert ll[-1] > ll[0]


def test_bad_partial_input_is_a_clear_error_that_changes_nothing():
    x, labels = _data()
    m = _start()
    before = {k: v.clone() for k, v in m.state_dict().items() if torch.is_tensor(v)}
    partial_rows = torch.ones_like(x, dtype=torch.bool)
    partial_rows[0, 1] = False
    n = x.shape[0]
    cases = [
        ({"obs_mask": partial_rows}, "whole embeddings"),
        ({"obs_mask": torch.ones(n - 1, dtype=torch.bool)}, "obs_mask must have the data's"),
        ({"sample_weight": -torch.ones(n)}, "finite and >= 0"),
        ({"sample_weight": torch.zeros(n)}, "zero everywhere"),
        ({"sample_weight": torch.ones(n + 1)}, "one weight per embedding"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            m.fit(x, labels, init="given", **kwargs)
    for k, v in m.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(v, before[k])
