r"""
Gaussians with missing dimensions: the marginal density of the observed part and the
conditional moments of the missing part, the two ingredients of exact EM with missing
values (Ghahramani and Jordan, 1994).

For a point :math:`x` whose dimensions split into observed :math:`o` and missing
:math:`m` and a Gaussian :math:`\mathcal N(\mu, \Sigma)`,

.. math::

    \log p(x_o) = \log \mathcal N(x_o | \mu_o, \Sigma_{oo}), \qquad
    x_m | x_o \sim \mathcal N(\hat x_m, C), \quad
    \hat x_m = \mu_m + \Sigma_{mo} \Sigma_{oo}^{-1} (x_o - \mu_o), \quad
    C = \Sigma_{mm} - \Sigma_{mo} \Sigma_{oo}^{-1} \Sigma_{om}.

The expected sufficient statistics of the complete point are then
:math:`E[x] = \hat x` (observed entries as they are) and
:math:`E[x x^\top] = \hat x \hat x^\top + C` (``C`` in the missing block): the M-step
of the complete-data model applied to them is the exact M-step.

Points are grouped by their pattern of observed dimensions, so the factorisations cost
one per (pattern, component), not one per (point, component). A point with no observed
dimension has :math:`\log p(x_o) = 0` and :math:`\hat x = \mu`, :math:`C = \Sigma`.
Diagonal covariances need no factorisation: the dimensions are independent.
"""

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyroem.distributions.statistics import split_moments


def observation_patterns(mask):
    r"""
    The distinct rows of the bool ``mask (N, D)`` (True = observed): a list of
    ``(rows, observed, missing)`` index tensors, one per pattern, in order of the
    patterns' first appearance being irrelevant (sorted by :func:`torch.unique`).
    """
    patterns, inverse = torch.unique(mask, dim=0, return_inverse=True)
    out = []
    for p, pattern in enumerate(patterns):
        rows = (inverse == p).nonzero().squeeze(-1)
        out.append((rows, pattern.nonzero().squeeze(-1), (~pattern).nonzero().squeeze(-1)))
    return out


def _diag_log_prob(x, mask, loc, var):
    """``(N, C)``: the observed dimensions' log-density under diagonal Gaussians."""
    m = mask.to(x.dtype)
    prec = var.reciprocal()  # (C, D)
    quad = (x * x * m) @ prec.T - 2 * (x * m) @ (prec * loc).T + m @ (prec * loc * loc).T
    norm = m @ (var.log() + math.log(2 * math.pi)).T
    return -0.5 * (quad + norm)


def _full_log_prob(x, patterns, loc, cov):
    """``(N, C)``: the observed block's log-density under full covariances, one
    Cholesky factorisation per pattern and component."""
    out = x.new_zeros(x.shape[0], loc.shape[0])
    for rows, obs, _ in patterns:
        if obs.numel() == 0:
            continue  # nothing observed: the marginal density is 1
        tril = torch.linalg.cholesky(cov[:, obs][:, :, obs])  # (C, o, o)
        diff = x[rows][:, obs].T.unsqueeze(0) - loc[:, obs].unsqueeze(-1)  # (C, o, n)
        sol = torch.linalg.solve_triangular(tril, diff, upper=False)
        half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (C,)
        lp = -0.5 * (sol.square().sum(-2) + obs.numel() * math.log(2 * math.pi)) \
            - half_log_det.unsqueeze(-1)
        out = out.index_put((rows,), lp.T)
    return out


def marginal_log_prob(x, mask, loc, cov=None, var=None, patterns=None):
    r"""
    :math:`\log \mathcal N(x_{n,o} | \mu_{c,o}, \Sigma_{c,oo})` for every point ``n`` and
    component ``c``, with :math:`o` the point's observed dimensions: shape ``(N, C)``.
    Entries of ``x`` that ``mask`` marks missing are never read (they may hold NaN).

    :param torch.Tensor x: ``(N, D)``.
    :param torch.Tensor mask: ``(N, D)`` bool, True = observed.
    :param torch.Tensor loc: ``(C, D)``.
    :param torch.Tensor cov: ``(C, D, D)`` full covariances, or
    :param torch.Tensor var: ``(C, D)`` variances (diagonal covariances).
    :param patterns: :func:`observation_patterns` of ``mask`` (computed when ``None``).
    """
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype))
    if var is not None:
        return _diag_log_prob(x, mask, loc, var)
    patterns = observation_patterns(mask) if patterns is None else patterns
    return _full_log_prob(x, patterns, loc, cov)


def _diag_moments(x, mask, weights, loc, var, shift):
    m = mask.to(x.dtype)
    xc = x - shift
    mu = loc - shift  # (C, D)
    n = weights.sum(0)  # (C,)
    # E[x_d - shift_d] is x_d where observed, mu_d where missing (independent dims)
    sx = weights.T @ (xc * m) + (weights.T @ (1 - m)) * mu
    sxx = weights.T @ (xc * xc * m) + (weights.T @ (1 - m)) * (mu * mu + var)
    return n, sx, sxx


def _full_moments(x, patterns, weights, loc, cov, shift):
    C, D = loc.shape
    sx = x.new_zeros(C, D)
    sxx = x.new_zeros(C, D, D)
    xc, mu = x - shift, loc - shift
    for rows, obs, mis in patterns:
        w = weights[rows]  # (n, C)
        filled = _conditional_means(xc[rows], obs, mis, mu, cov)  # (C, n, D)
        wf = filled * w.T.unsqueeze(-1)
        sx += wf.sum(1)
        sxx += wf.mT @ filled
        if mis.numel():
            cond = _conditional_cov(obs, mis, cov)  # (C, m, m)
            block = w.sum(0)[:, None, None] * cond
            sxx[:, mis.unsqueeze(-1), mis] += block
    return weights.sum(0), sx, sxx.reshape(C, D * D)


def _conditional_means(xc, obs, mis, mu, cov):
    r"""``(C, n, D)``: the points with their missing entries replaced by
    :math:`\hat x_m` under each component (all relative to the same shift)."""
    C = mu.shape[0]
    filled = xc.unsqueeze(0).expand(C, -1, -1).clone()
    if mis.numel() == 0:
        return filled
    if obs.numel() == 0:
        filled[:, :, mis] = mu[:, mis].unsqueeze(1)
        return filled
    tril = torch.linalg.cholesky(cov[:, obs][:, :, obs])
    diff = xc[:, obs].T.unsqueeze(0) - mu[:, obs].unsqueeze(-1)  # (C, o, n)
    solved = torch.cholesky_solve(diff, tril)  # Sigma_oo^-1 (x_o - mu_o)
    filled[:, :, mis] = (mu[:, mis].unsqueeze(-1) + cov[:, mis][:, :, obs] @ solved).mT
    return filled


def _conditional_cov(obs, mis, cov):
    r"""``(C, m, m)``: :math:`\Sigma_{mm} - \Sigma_{mo}\Sigma_{oo}^{-1}\Sigma_{om}`."""
    s_mm = cov[:, mis][:, :, mis]
    if obs.numel() == 0:
        return s_mm
    tril = torch.linalg.cholesky(cov[:, obs][:, :, obs])
    half = torch.linalg.solve_triangular(tril, cov[:, obs][:, :, mis], upper=False)
    return s_mm - half.mT @ half


def expected_moments(x, mask, weights, loc, cov=None, var=None, shift=None, patterns=None):
    r"""
    Expected weighted moments of the complete data given the observed part, per
    component, about ``shift``:
    :math:`n_c = \sum_n w_{nc}`, :math:`s_c = \sum_n w_{nc} E_c[x_n - \text{shift}]`,
    :math:`S_c = \sum_n w_{nc} E_c[(x_n - \text{shift})(x_n - \text{shift})^\top]`
    (flattened ``D*D``; with ``var`` its diagonal ``(C, D)``), the expectations under
    component ``c``'s conditional of the missing entries (see the module docstring).
    Returned as :func:`~pyroem.distributions.statistics.split_moments` does, so the
    complete-data M-step applies unchanged.

    :param torch.Tensor weights: ``(N, C)``, e.g. responsibilities.
    :param torch.Tensor shift: ``(D,)`` origin of the moments (the mean of the observed
        values per dimension when ``None``).
    """
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype))
    if shift is None:
        shift = observed_mean(x, mask)
    if var is not None:
        n, sx, sxx = _diag_moments(x, mask, weights, loc, var, shift)
    else:
        patterns = observation_patterns(mask) if patterns is None else patterns
        n, sx, sxx = _full_moments(x, patterns, weights, loc, cov, shift)
    return split_moments(torch.cat([sxx, sx, n.unsqueeze(-1)], -1), shift)


def observed_mean(x, mask):
    """``(D,)``: the mean of the observed values of each dimension (0 where none is)."""
    m = mask.to(x.dtype)
    x = torch.where(mask, x, torch.zeros((), dtype=x.dtype))
    return x.sum(0) / m.sum(0).clamp_min(1)


class MaskedGaussian(TorchDistribution):
    r"""
    A Gaussian over ``D``-vectors of which only the entries that ``obs_mask`` marks
    observed count: ``log_prob(x)`` is :math:`\log \mathcal N(x_o | \mu_o, \Sigma_{oo})`
    for each point's observed dimensions :math:`o` (0 for a point with none), the exact
    marginal likelihood of the observed part. For a mixture's enumerated emission:
    ``loc`` and the covariance hold one row per component, ``index`` (the enumerated
    value, e.g. of shape ``(K, 1)``) picks the component of each batch entry, and
    ``log_prob(x)`` of ``x (N, D)`` is the ``(K, N)`` table of
    :func:`marginal_log_prob` (differentiable in the parameters).

    :param torch.Tensor loc: ``(C, D)`` component means.
    :param torch.Tensor cov: ``(C, D, D)`` covariances, or
    :param torch.Tensor var: ``(C, D)`` variances.
    :param torch.Tensor obs_mask: ``(N, D)`` bool.
    :param torch.Tensor index: component of each batch entry, broadcastable to ``(N,)``.
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, loc, obs_mask, index, cov=None, var=None, patterns=None):
        self.loc, self.cov, self.var, self.obs_mask, self.index = loc, cov, var, obs_mask, index
        self._patterns = patterns
        batch = torch.broadcast_shapes(index.shape, obs_mask.shape[:-1])
        super().__init__(batch, loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(MaskedGaussian, _instance)
        new.loc, new.cov, new.var = self.loc, self.cov, self.var
        new.obs_mask, new.index, new._patterns = self.obs_mask, self.index, self._patterns
        super(MaskedGaussian, new).__init__(torch.Size(batch_shape), self.event_shape,
                                            validate_args=False)
        return new

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("MaskedGaussian is an observation model; sample the "
                                  "complete-data Gaussian instead")

    def log_prob(self, value):
        table = marginal_log_prob(value, self.obs_mask, self.loc, self.cov, self.var,
                                  self._patterns)  # (N, C)
        index = self.index.expand(self.batch_shape)
        rows = torch.arange(value.shape[0]).expand(self.batch_shape)
        return table[rows, index]
