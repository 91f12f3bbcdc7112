r"""
Rules for Gaussian families: ``Normal`` (and :class:`~pyroem.distributions.DiagNormal`,
``Normal(...).to_event(n)``) and ``MultivariateNormal`` (``scale_tril``,
``covariance_matrix`` or ``precision_matrix``). Locations are updated in the first phase,
covariances in the second, about the new locations:

.. math::

    \mu = \frac{\sum w \Lambda x}{\sum w \Lambda}, \qquad
    \Sigma = \frac{\sum w (x - \mu)(x - \mu)^\top}{\sum w}

(:math:`\Lambda` the fixed precision of each position; for a multivariate location it must
be the same at every position that shares a location entry). The moments are those of
:mod:`pyroem.distributions.statistics`, as in the built-in models.
"""

import torch
import torch.distributions as td

from pyroem.distributions import DiagNormal, gaussian_design, gaussian_features
from pyroem.distributions.statistics import (
    regularized_cholesky,
    scatter_about,
    split_moments,
)
from pyroem.infer.mstep.provenance import compact
from pyroem.infer.mstep.reduce import broadcast_shapes
from pyroem.infer.mstep.rules.base import MStepRule, Stats, safe_ratio
from pyroem.infer.mstep.rules.registry import register_rule

# In the order that finds the argument given to the constructor: the lazily derived
# ``scale_tril`` may also be present once something has read it.
_COVARIANCES = ("covariance_matrix", "precision_matrix", "scale_tril")


def _pad_shape(shape, ndim):
    return torch.Size((1,) * (ndim - len(shape)) + tuple(shape))


def _shape(sel, tensor, event_dims):
    """The batch layout of an argument: its selection's, or that of its distinct values."""
    shape = sel.shape if sel is not None else compact(tensor.detach()).shape
    return shape[:len(shape) - event_dims]


def _new_loc(sel, fn, current):
    """The location of ``fn`` after the first phase: its selection of a parameter pushed
    from that parameter's new value, or (not a selection: then no closed form of this
    M-step changed it) its value in the trace."""
    if sel is None:
        return compact(fn.loc.detach())
    return sel.push(current(sel.name))


@register_rule
class NormalRule(MStepRule):
    r"""
    ``Normal(loc, scale)`` (or ``DiagNormal``): :math:`\mu = \sum w x/\sigma^2 \,/\, \sum
    w/\sigma^2`, :math:`\sigma^2 = \sum w (x - \mu)^2 / \sum w`. A ``Normal(m, s)`` prior
    on a location adds :math:`m/s^2` and :math:`1/s^2`.
    """

    types = (td.Normal, DiagNormal)
    second_phase = ("scale",)

    def statistics(self, site):
        fn = site.fn
        loc_sel, scale_sel = site.select("loc"), site.select("scale")
        if loc_sel is None and scale_sel is None:
            return []
        shape = broadcast_shapes(_shape(loc_sel, fn.loc, 0), _shape(scale_sel, fn.scale, 0))
        w = site.weight.reshape(site.weight.shape + (1,) * len(fn.event_shape))
        center, sq, lin = self._features(site.value, fn)
        w0, x1, x2 = (site.sum(ops, shape) for ops in ([w], [w, lin], [w, sq]))
        stats = []
        if loc_sel is not None:
            prec = compact(fn.scale.detach()).pow(-2)
            num = (prec * (x1 + center * w0)).expand(shape)
            stats.append(Stats("loc", loc_sel, self, num=site.sum([num], loc_sel),
                               den=site.sum([(prec * w0).expand(shape)], loc_sel)))
        if scale_sel is not None:
            den = site.sum([w0], scale_sel)

            def later(current):
                mu = _new_loc(loc_sel, fn, current) - center
                scatter = scatter_about(w0, x1, x2, mu, "diag").expand(shape)
                return site.sum([scatter], scale_sel), den
            stats.append(Stats("scale", scale_sel, self, later=later))
        return stats

    @staticmethod
    def _features(value, fn):
        if not value.requires_grad and isinstance(fn, DiagNormal):
            return gaussian_features(value, "diag")  # cached across iterations
        # One shift for all entries keeps the moments well conditioned (float32).
        center = value.detach().mean()
        lin = value - center
        return center, lin * lin, lin

    def maximize(self, arg, num, den, old):
        ratio = safe_ratio(num, den, old)
        if arg == "loc":
            return ratio
        return torch.where(den > 0, ratio.clamp_min(torch.finfo(old.dtype).tiny).sqrt(), old)


@register_rule
class MultivariateNormalRule(MStepRule):
    r"""
    ``MultivariateNormal(loc, scale_tril | covariance_matrix | precision_matrix)``:
    :math:`\mu = \sum w x / \sum w`, :math:`\Sigma = \sum w (x - \mu)(x - \mu)^\top /
    \sum w` (returned as the argument that was given: its Cholesky factor, itself, or its
    inverse). All moments come from one product with the cached design matrix.
    """

    types = (td.MultivariateNormal,)
    second_phase = _COVARIANCES
    family = "MultivariateNormal"

    def statistics(self, site):
        fn = site.fn
        cov_arg = next(a for a in _COVARIANCES if a in vars(fn))
        site.ignore(*(a for a in _COVARIANCES if a != cov_arg))  # derived from cov_arg
        cov = vars(fn)[cov_arg]
        loc_sel, cov_sel = site.select("loc"), site.select(cov_arg)
        if (loc_sel is None and cov_sel is None) or site.value.requires_grad:
            return []
        loc_batch, cov_batch = _shape(loc_sel, fn.loc, 1), _shape(cov_sel, cov, 2)
        shape = broadcast_shapes(loc_batch, cov_batch)
        # sum w x / sum w maximises Q only if the covariance is the same at all positions
        # sharing a location entry: it may vary only along dims where the location does.
        lb = _pad_shape(loc_batch, len(shape))
        cb = _pad_shape(compact(cov.detach()).shape[:-2], len(shape))
        if any(c > 1 and l == 1 for l, c in zip(lb, cb)):
            loc_sel = None
        if loc_sel is None and cov_sel is None:
            return []
        center, design = gaussian_design(site.value, "full")  # [quad, lin, 1]: one product
        m = split_moments(site.sum([site.weight.unsqueeze(-1), design],
                                   shape + design.shape[-1:]), center)
        n, sx, dim = m["n"], m["sx"], center.shape[-1]
        stats = []
        if loc_sel is not None:
            num = site.sum([sx + center * n.unsqueeze(-1)], loc_sel)
            den = site.sum([n.unsqueeze(-1).expand(shape + (dim,))], loc_sel)
            stats.append(Stats("loc", loc_sel, self, num=num, den=den))
        if cov_sel is not None:
            den = site.sum([n[..., None, None].expand(shape + (dim, dim))], cov_sel)

            def later(current):
                mu = (_new_loc(loc_sel, fn, current) - center).expand(shape + (dim,))
                return site.sum([scatter_about(n, sx, m["sxx"], mu)], cov_sel), den
            stats.append(Stats(cov_arg, cov_sel, self, later=later))
        return stats

    def maximize(self, arg, num, den, old):
        if arg == "loc":
            return safe_ratio(num, den, old)
        cov = num / den.clamp_min(torch.finfo(old.dtype).tiny)
        cov = 0.5 * (cov + cov.mT)
        if arg == "covariance_matrix":
            new = cov
        else:
            tril = regularized_cholesky(
                cov, 0.0, "a covariance that is not positive definite (a component collapsed "
                "onto too few points); use fewer components or more data")
            new = tril if arg == "scale_tril" else torch.cholesky_inverse(tril)
        keep = ~(den > 0).all(-1).all(-1)
        return torch.where(keep[..., None, None], old, new)
