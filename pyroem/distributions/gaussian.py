"""Gaussian distributions with a matrix-product ``log_prob`` (see the package docstring)."""

import math

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints

from pyroem.distributions.features import data_radius, gaussian_design

#: Largest bound (nats) on the rounding error of the expanded quadratic form that
#: ``log_prob`` accepts; parameter settings above it get their log-density computed
#: directly, on data centred on their own mean (see :func:`design_error`).
ROUNDING_TOLERANCE = 1e-2


def _dot(a, b):
    # Batched dot product over the last dim; broadcasting batch dims that are 1 on one
    # side becomes a single matrix product inside einsum.
    return torch.einsum("...f,...f->...", a, b)


def _unexpand(t, event_dim=1):
    """The smallest tensor that broadcasts to ``t``: undo ``expand`` (stride-0 batch dims).

    Pyro's plates ``expand`` a distribution to the full batch shape; working on the
    unexpanded parameters keeps the per-component work per component, not per point.
    """
    batch = t.dim() - event_dim
    for dim, (size, stride) in enumerate(zip(t.shape[:batch], t.stride()[:batch])):
        if stride == 0 and size > 1:
            t = t.narrow(dim, 0, 1)
    return t


def design_error(loc, prec_norm, center, radius):
    r"""
    A bound on the rounding error (nats) of the expanded log-density: the three terms
    :math:`x_c^\top \Lambda x_c`, :math:`2 x_c^\top \Lambda \mu_c` and
    :math:`\mu_c^\top \Lambda \mu_c` are each at most
    :math:`\lVert\Lambda\rVert (\lVert x_c\rVert + \lVert\mu_c\rVert)^2`, and they
    are rounded relative to that size while their sum (the Mahalanobis distance) may be
    much smaller: a covariance that is nearly singular (large :math:`\Lambda`) far from
    the data mean, in float32. The bound is
    :math:`\epsilon\, \lVert\Lambda\rVert (r + \lVert\mu - \text{center}\rVert)^2`
    with :math:`r` the data's radius about ``center`` and :math:`\epsilon` the dtype's eps.

    :param loc: means, ``batch + (D,)``.
    :param prec_norm: a bound on :math:`\lVert\Lambda\rVert` per batch entry.
    """
    offset = (loc - center).norm(dim=-1)
    return torch.finfo(loc.dtype).eps * prec_norm * (radius + offset).square()


def _refined(d, value, center, out):
    """``out`` (the expanded log-densities) with the entries of the parameter settings
    whose :func:`design_error` exceeds :data:`ROUNDING_TOLERANCE` recomputed directly
    (``d._direct_log_prob``, on data centred on each setting's mean)."""
    loc, factor, prec_norm = d._direct_params()
    with torch.no_grad():
        risky = design_error(loc.detach(), prec_norm.detach(), center,
                             data_radius(value)) > ROUNDING_TOLERANCE
    if not bool(risky.any()):
        return out
    params = loc.shape[:-1]
    values = value.shape[:value.dim() - 1]
    ndim = out.dim()
    p = (1,) * (ndim - len(params)) + tuple(params)
    v = (1,) * (ndim - len(values)) + tuple(values)
    if any(a > 1 and b > 1 for a, b in zip(p, v)):  # overlapping batch dims: all at once
        direct = d._direct_log_prob(value, loc, factor)
        return torch.where(risky.reshape(p), direct, out)
    out = out.clone()
    own = [i for i in range(ndim) if p[i] > 1]  # the parameters' batch dims
    rest = tuple(v[i] for i in range(ndim) if i not in own)
    flat_value = value.reshape(rest + value.shape[-1:])
    flat_loc = loc.reshape((-1,) + loc.shape[-1:])
    flat_factor = factor.reshape((-1,) + factor.shape[len(params):])
    sizes = [p[i] for i in own]
    for index in risky.reshape(sizes).nonzero().tolist():
        at = [slice(None)] * ndim
        flat = 0
        for dim, i, n in zip(own, index, sizes):
            at[dim] = i
            flat = flat * n + i
        target = out[tuple(at)]
        lp = d._direct_log_prob(flat_value, flat_loc[flat], flat_factor[flat])
        out[tuple(at)] = lp.reshape(target.shape) if lp.numel() == target.numel() \
            else lp.expand(target.shape)
    return out


class MultivariateNormal(dist.MultivariateNormal):
    r"""
    :class:`pyro.distributions.MultivariateNormal` whose ``log_prob`` is

    .. math::

        \log N(x|\mu, \Sigma) = -\tfrac12 \left[\mathrm{vec}(x_c x_c^\top)^\top
        \mathrm{vec}(\Lambda) - 2 x_c^\top \Lambda \mu_c + \mu_c^\top \Lambda \mu_c\right]
        - \tfrac12 \log|2\pi\Sigma|,

    with :math:`\Lambda = \Sigma^{-1}` and :math:`x_c, \mu_c` centred on the data mean.
    When the value and the parameters broadcast against each other (the enumerated
    emission of a mixture), this is a matrix product, not a ``(K, N, D)`` temporary.
    Same constructor, sampling and support as the parent class.
    """

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        center, design = gaussian_design(value, "full")
        return _refined(self, value, center, _dot(design, self.design_weights(center)))

    def _direct_params(self):
        r"""``(loc, scale_tril, prec_norm)`` broadcast to the unexpanded parameter batch,
        with :math:`\lVert L^{-1} \rVert_F^2 \ge \lVert\Lambda\rVert_2`."""
        tril = self._unbroadcasted_scale_tril
        loc = _unexpand(self.loc)
        batch = torch.broadcast_shapes(tril.shape[:-2], loc.shape[:-1])
        dim = tril.shape[-1]
        with torch.no_grad():
            eye = torch.eye(dim, dtype=tril.dtype, device=tril.device)
            inv = torch.linalg.solve_triangular(tril.detach(), eye, upper=False)
            norm = inv.square().sum((-2, -1)).expand(batch)
        return loc.expand(batch + (dim,)), tril.expand(batch + (dim, dim)), norm

    @staticmethod
    def _direct_log_prob(value, loc, tril):
        """``log N(value | loc, tril tril^T)`` for one parameter setting, on the data
        centred on ``loc`` (no expanded quadratic form)."""
        diff = value - loc
        sol = torch.linalg.solve_triangular(tril, diff.reshape(-1, diff.shape[-1]).T,
                                            upper=False)
        maha = sol.square().sum(0).reshape(diff.shape[:-1])
        dim = loc.shape[-1]
        half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (maha + dim * math.log(2 * math.pi)) - half_log_det

    def design_weights(self, center):
        r"""
        Weights ``w`` of shape ``batch_shape + (D*D + D + 1,)`` such that
        :math:`\log N(x | \mu, \Sigma) = \langle [\mathrm{vec}(x_c x_c^\top), x_c, 1], w
        \rangle` with :math:`x_c = x - \text{center}`:
        :math:`w = -\tfrac12 [\mathrm{vec}(\Lambda), -2\Lambda\mu_c,
        \mu_c^\top\Lambda\mu_c + \log|2\pi\Sigma|]` (batch dims that Pyro's plates
        only expanded are dropped). Multiplying :func:`~pyroem.distributions.gaussian_design`'s
        matrix by ``w`` gives the log-density table in whichever orientation suits.
        """
        tril = self._unbroadcasted_scale_tril
        dim = tril.shape[-1]
        eye = torch.eye(dim, dtype=tril.dtype, device=tril.device)
        inv_tril = torch.linalg.solve_triangular(tril, eye, upper=False)
        prec = inv_tril.mT @ inv_tril
        loc = _unexpand(self.loc) - center
        prec_loc = (prec @ loc.unsqueeze(-1)).squeeze(-1)
        half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        # weights of [vec(x_c x_c^T), x_c, 1]: the whole log-density is one product
        const = (loc * prec_loc).sum(-1) + dim * math.log(2 * math.pi) + 2 * half_log_det
        batch = torch.broadcast_shapes(prec.shape[:-2], prec_loc.shape[:-1])
        weights = torch.cat([prec.flatten(-2).expand(batch + (dim * dim,)),
                             -2 * prec_loc.expand(batch + (dim,)),
                             const.expand(batch).unsqueeze(-1)], dim=-1)
        return weights.mul_(-0.5)  # on the (small) weights, not on the log-density table


class DiagNormal(TorchDistribution):
    r"""
    A multivariate normal with diagonal covariance, ``N(x | loc, diag(scale^2))``, as one
    distribution of event dim 1 (equal in law to ``Normal(loc, scale).to_event(1)``).
    Its ``log_prob`` is two matrix products under broadcasting:

    .. math::

        \log p(x) = -\tfrac12 \sum_d \lambda_d (x_{c,d}^2 - 2 x_{c,d} \mu_{c,d} + \mu_{c,d}^2)
        - \sum_d \log \sigma_d - \tfrac{D}{2}\log 2\pi, \qquad \lambda_d = \sigma_d^{-2}.

    :param torch.Tensor loc: mean, shape ``batch_shape + (D,)``.
    :param torch.Tensor scale: standard deviations, broadcastable to ``loc``.
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape + self.event_shape)
        super(DiagNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.pow(2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * self.scale

    def entropy(self):
        return self.scale.log().sum(-1) + 0.5 * self.event_shape[0] * (1 + math.log(2 * math.pi))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        center, design = gaussian_design(value, "diag")
        return _refined(self, value, center, _dot(design, self.design_weights(center)))

    def _direct_params(self):
        """``(loc, scale, prec_norm)`` broadcast to the unexpanded parameter batch."""
        scale, loc = _unexpand(self.scale), _unexpand(self.loc)
        batch = torch.broadcast_shapes(scale.shape[:-1], loc.shape[:-1])
        dim = loc.shape[-1]
        with torch.no_grad():
            norm = scale.detach().pow(-2).sum(-1).expand(batch)
        return loc.expand(batch + (dim,)), scale.expand(batch + (dim,)), norm

    @staticmethod
    def _direct_log_prob(value, loc, scale):
        """``log N(value | loc, diag(scale^2))`` for one parameter setting, on the data
        centred on ``loc``."""
        z = (value - loc) / scale
        dim = loc.shape[-1]
        return -0.5 * (z.square().sum(-1) + dim * math.log(2 * math.pi)) - scale.log().sum(-1)

    def design_weights(self, center):
        r"""
        Weights ``w`` of shape ``batch_shape + (2D + 1,)`` such that
        :math:`\log p(x) = \langle [x_c \odot x_c, x_c, 1], w \rangle` with
        :math:`x_c = x - \text{center}`: :math:`w = -\tfrac12 [\lambda, -2\lambda\odot\mu_c,
        \sum_d \lambda_d\mu_{c,d}^2 + \log(2\pi\sigma_d^2)]` (see
        :meth:`MultivariateNormal.design_weights`).
        """
        scale = _unexpand(self.scale)
        prec = scale.pow(-2)
        loc = _unexpand(self.loc) - center
        prec_loc = prec * loc
        dim = self.event_shape[0]
        const = (loc * prec_loc).sum(-1) + dim * math.log(2 * math.pi) + 2 * scale.log().sum(-1)
        batch = torch.broadcast_shapes(prec.shape[:-1], prec_loc.shape[:-1])
        weights = torch.cat([prec.expand(batch + (dim,)), -2 * prec_loc.expand(batch + (dim,)),
                             const.expand(batch).unsqueeze(-1)], dim=-1)
        return weights.mul_(-0.5)
