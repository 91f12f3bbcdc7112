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
import weakref

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyroem.distributions.statistics import split_moments

# id(mask) -> (weakref, version, patterns): a mask is constant across EM iterations
_PATTERNS = {}


def observation_patterns(mask):
    r"""
    The distinct rows of the bool ``mask (N, D)`` (True = observed) as
    ``(patterns (P, D), inverse (N,))``, ``mask == patterns[inverse]``; cached per mask
    tensor while it is alive and unmodified.
    """
    # a view (e.g. a reshaped mask) is a new object on every call: key on the tensor
    # that owns the memory plus the view's geometry
    base = mask if mask._base is None else mask._base
    key = (id(base), mask.storage_offset(), tuple(mask.shape), mask.stride())
    hit = _PATTERNS.get(key)
    if hit is not None and hit[0]() is base and hit[1] == mask._version:
        return hit[2]
    value = torch.unique(mask, dim=0, return_inverse=True)
    _PATTERNS[key] = (weakref.ref(base, lambda _, k=key: _PATTERNS.pop(k, None)),
                      mask._version, value)
    return value


def _embedded(cov, patterns):
    r"""``(P, C, D, D)``: :math:`\tilde\Sigma = M \Sigma M + (I - M)` per pattern and
    component (:math:`M` the pattern's diagonal 0/1 matrix): the observed block
    :math:`\Sigma_{oo}` with an identity in place of the missing one, so that its
    Cholesky factor, solves and log-determinant are those of :math:`\Sigma_{oo}`, for
    every pattern in one batched call."""
    m = patterns.to(cov.dtype)  # (P, D)
    outer = m.unsqueeze(-1) * m.unsqueeze(-2)  # (P, D, D)
    eye = torch.diag_embed(1 - m)
    return cov.unsqueeze(0) * outer.unsqueeze(1) + eye.unsqueeze(1)


#: entries of a chunk's per-point factor tensor ``(n, C, D, D)`` (bounds memory)
CHUNK_ENTRIES = 2**22


def _chunks(n, per_row):
    size = max(1, CHUNK_ENTRIES // max(1, per_row))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def _diag_log_prob(x, mask, loc, var):
    """``(N, C)``: the observed dimensions' log-density under diagonal Gaussians."""
    m = mask.to(x.dtype)
    prec = var.reciprocal()  # (C, D)
    quad = (x * x * m) @ prec.T - 2 * (x * m) @ (prec * loc).T + m @ (prec * loc * loc).T
    norm = m @ (var.log() + math.log(2 * math.pi)).T
    return -0.5 * (quad + norm)


def _full_log_prob(x, mask, patterns, loc, cov):
    """``(N, C)``: the observed block's log-density under full covariances, every
    pattern's factorisation in one batched Cholesky (:func:`_embedded`)."""
    patterns, inverse = patterns
    tril = torch.linalg.cholesky(_embedded(cov, patterns))  # (P, C, D, D)
    half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (P, C)
    m = mask.to(x.dtype)
    C, D = loc.shape
    out = x.new_zeros(x.shape[0], C)
    for rows, p in _groups(inverse, patterns.shape[0], C * D * D):
        diff = (x[rows].unsqueeze(1) - loc) * m[rows].unsqueeze(1)  # (n, C, D)
        sol = _solve(tril, inverse, rows, p, diff, torch.linalg.solve_triangular)
        out[rows] = -0.5 * (sol.square().sum(-1) + m[rows].sum(-1, keepdim=True)
                            * math.log(2 * math.pi)) - half_log_det[inverse[rows]]
    return out


#: up to this many patterns, the points are solved pattern by pattern against one shared
#: factor; beyond, each point's factor is gathered (no loop over patterns)
FEW_PATTERNS = 32


def _groups(inverse, num_patterns, per_row):
    """``(rows, pattern)`` blocks of points: by pattern when there are few patterns
    (``pattern`` the index), else in chunks of any patterns (``pattern`` is ``None``)."""
    if num_patterns <= FEW_PATTERNS:
        for p in range(num_patterns):
            index = (inverse == p).nonzero().squeeze(-1)
            for chunk in _chunks(index.shape[0], per_row):
                yield index[chunk], p
    else:
        for chunk in _chunks(inverse.shape[0], per_row):
            yield chunk, None


def _solve(factor, inverse, rows, p, diff, solver):
    """``solver`` (a triangular or a Cholesky solve) of ``diff (n, C, D)`` against the
    factors of its points' patterns: one shared factor ``factor[p]`` (the points as
    columns), or each point's gathered factor."""
    if p is None:
        if solver is torch.linalg.solve_triangular:
            return solver(factor[inverse[rows]], diff.unsqueeze(-1), upper=False).squeeze(-1)
        return solver(diff.unsqueeze(-1), factor[inverse[rows]]).squeeze(-1)
    columns = diff.permute(1, 2, 0)  # (C, D, n)
    if solver is torch.linalg.solve_triangular:
        return solver(factor[p], columns, upper=False).permute(2, 0, 1)
    return solver(columns, factor[p]).permute(2, 0, 1)


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
    return _full_log_prob(x, mask, patterns, loc, cov)


def _diag_moments(x, mask, weights, loc, var, shift):
    m = mask.to(x.dtype)
    xc = x - shift
    mu = loc - shift  # (C, D)
    n = weights.sum(0)  # (C,)
    # E[x_d - shift_d] is x_d where observed, mu_d where missing (independent dims)
    sx = weights.T @ (xc * m) + (weights.T @ (1 - m)) * mu
    sxx = weights.T @ (xc * xc * m) + (weights.T @ (1 - m)) * (mu * mu + var)
    return n, sx, sxx


def _full_moments(x, mask, patterns, weights, loc, cov, shift):
    r"""Moments with full covariances: with :math:`s = \tilde\Sigma^{-1} M (x - \mu)`
    (:func:`_embedded`), :math:`\hat x = \mu + \Sigma M s` (the observed entries come
    back as they are, the missing ones as :math:`\hat x_m`), and the conditional
    covariance :math:`\Sigma - \Sigma M \tilde\Sigma^{-1} M \Sigma` (zero outside the
    missing block) per pattern, weighted by the pattern's total weight."""
    patterns, inverse = patterns
    C, D = loc.shape
    factor = torch.linalg.cholesky(_embedded(cov, patterns))  # (P, C, D, D)
    m = mask.to(x.dtype)
    sx = x.new_zeros(C, D)
    sxx = x.new_zeros(C, D, D)
    mu = loc - shift
    for rows, p in _groups(inverse, patterns.shape[0], C * D * D):
        diff = (x[rows].unsqueeze(1) - loc) * m[rows].unsqueeze(1)  # (n, C, D)
        sol = _solve(factor, inverse, rows, p, diff, torch.cholesky_solve)
        filled = mu + ((sol * m[rows].unsqueeze(1)).unsqueeze(-2) @ cov.mT).squeeze(-2)
        weighted = filled * weights[rows].unsqueeze(-1)  # (n, C, D)
        sx += weighted.sum(0)
        sxx += torch.bmm(weighted.permute(1, 2, 0), filled.transpose(0, 1))
    # sum_n w_nc C_{p(n) c} = sum_p W_pc C_pc with W the weight of each pattern
    pattern_weight = weights.new_zeros(patterns.shape[0], C).index_add_(0, inverse, weights)
    pm = patterns.to(x.dtype).unsqueeze(1)  # (P, 1, D)
    masked_cov = cov * pm.unsqueeze(-1)  # M Sigma, (P, C, D, D)
    gain = torch.cholesky_solve(masked_cov, factor)  # tilde Sigma^-1 M Sigma
    cond = cov - masked_cov.mT @ gain  # Sigma - Sigma M tilde Sigma^-1 M Sigma
    sxx += torch.bmm(pattern_weight.T.unsqueeze(1), cond.transpose(0, 1).reshape(
        C, -1, D * D)).reshape(C, D, D)
    return weights.sum(0), sx, sxx.reshape(C, D * D)


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
        n, sx, sxx = _full_moments(x, mask, patterns, weights, loc, cov, shift)
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
