r"""
The exact E-step of a linear-Gaussian Pyro model: its latents, stacked in :math:`z`
(``d`` values), have a joint Gaussian posterior found by conditioning.

With the weighted whitened residuals of :mod:`pyroem.infer.gaussian.trace`,
:math:`\log p(X, z) = -\frac12 \|r(z)\|^2 - c` and :math:`r(z) = r_0 + B (z - z_0)`
(``B``, ``(M, d)``, by forward-mode differentiation: one vectorised pass of
``torch.func.jacfwd``). With :math:`B = Q R` (QR, ``R`` upper triangular ``(d, d)``),

.. math::

    p(z | X) = \mathcal N\big(m,\; (R^\top R)^{-1}\big), \qquad
    m = z_0 - R^{-1} Q^\top r_0,

    \log p(X) = -\tfrac12 \|r_0 + B (m - z_0)\|^2 - c + \tfrac d2 \log 2\pi
    - \log |\det R|,

least squares in the whitened residuals (no normal equations are formed). The
assumptions are checked at a probe point drawn from the posterior (a generator of its
own): every site's residuals must be the linear prediction and its constant unchanged;
otherwise a :class:`~pyroem.infer.gaussian.NotLinearGaussianError` names the site.
"""

import math

import pyro
import torch

from pyroem.infer.gaussian.trace import (
    LatentLayout,
    NotLinearGaussianError,
    residuals,
    site_terms,
    trace_model,
)
from pyroem.infer.posteriors import GaussianPosterior


class JointGaussianPosterior(GaussianPosterior):
    r"""
    The exact joint posterior :math:`\mathcal N(m, C)` of all latents of a
    linear-Gaussian model, stacked in one vector of ``d`` values (``loc (1, d)``,
    ``covariance (1, d, d)``).

    :ivar layout: the :class:`~pyroem.infer.gaussian.trace.LatentLayout`: where each
        latent site's values sit.
    :ivar torch.Tensor free: ``(d,)`` bool, the latent values that some factor of the
        model depends on; the others (e.g. the entries of ``obs_mask``'s
        ``<name>_unobserved`` latent where the data are observed) integrate to one and
        keep their prior mean, with variance 0.
    :ivar torch.Tensor precision_factor: ``R``, upper triangular over the free values,
        :math:`C_{free}^{-1} = R^\top R`.
    :ivar torch.Tensor root: ``(d, d)``, a square root of :math:`C` (:math:`R^{-1}` on the
        free values, zero elsewhere).

    ``posterior["u"]`` is the posterior mean of site ``u`` in the site's shape and
    :meth:`variance` its marginal variances.
    """

    def __init__(self, log_evidence, loc, precision_factor, layout, free):
        eye = torch.eye(precision_factor.shape[-1], dtype=loc.dtype, device=loc.device)
        inverse = torch.linalg.solve_triangular(precision_factor, eye, upper=True)  # R^-1
        root = loc.new_zeros(loc.shape[-1], loc.shape[-1])
        index = free.nonzero().squeeze(-1)
        root[index.unsqueeze(-1), index] = inverse
        super().__init__(log_evidence, loc.unsqueeze(0), (root @ root.T).unsqueeze(0))
        self.precision_factor = precision_factor
        self.root = root
        self.layout = layout
        self.free = free

    def __getitem__(self, name):
        return self.layout.split(self.loc[0])[name]

    def variance(self, name):
        """The posterior variances of the values of site ``name``, in its shape."""
        return self.layout.split(self.covariance[0].diagonal())[name]

    def entropy(self):
        r""":math:`H(q) = \frac d2 (1 + \log 2\pi) - \log |\det R|` over the ``d`` free
        values."""
        d = self.precision_factor.shape[-1]
        return 0.5 * d * (1 + math.log(2 * math.pi)) \
            - self.precision_factor.diagonal().abs().log().sum()


def residual_jacobian(model, layout, z, args, kwargs):
    r""":math:`(r(z), c, B)`: the residuals, the constant and :math:`\partial r /
    \partial z` ``(M, d)`` (forward mode, vectorised over the ``d`` directions)."""
    def r_only(point):
        r, c = residuals(model, layout, point, args, kwargs)
        return r, (r, c)

    # validation would test constraints on batched tangents (data-dependent control flow)
    with pyro.validation_enabled(False):
        try:
            jac, (r, c) = torch.func.jacfwd(r_only, has_aux=True)(z)
        except RuntimeError as e:
            raise ValueError(
                "the Gaussian E-step differentiates the model in forward mode, vectorised "
                f"over its latent values, and this model does not allow it ({e}). Write it "
                "with tensor operations only (no Python control flow or .item() on latent "
                "values), or give its owner an own e_step returning a GaussianPosterior "
                "(tutorial 05)") from e
    return r.detach(), c.detach(), jac.detach()


def gaussian_posterior(model, *args, hard=False, **kwargs):
    r"""
    The exact posterior of every latent of a linear-Gaussian ``model`` and
    :math:`\log p(X)` (see the module docstring).

    :returns: a :class:`JointGaussianPosterior`.
    :raises ~pyroem.infer.gaussian.NotLinearGaussianError: (a ``ValueError``) naming
        the first site that is not Normal/MultivariateNormal, whose location is not affine
        in the latents or whose scale depends on them.
    :raises ValueError: for ``hard=True``, or a posterior that is not proper.
    """
    if hard:
        raise ValueError("the model's latents are continuous (the Gaussian E-step): there "
                         "is no hard (Viterbi) E-step; use EM without hard=True")
    with torch.no_grad():
        sites = trace_model(model, args, kwargs)
        for site in sites:
            site_terms(site)  # each family checked before anything is differentiated
        layout = LatentLayout(sites)
        z0 = layout.origin
        r0, c, jac = residual_jacobian(model, layout, z0, args, kwargs)
        free = jac.abs().amax(0) > 0  # values no factor depends on integrate to one
        used = jac[:, free]
        q, factor = torch.linalg.qr(used)
        diag = factor.diagonal().abs()
        if not bool((diag > used.shape[0] * torch.finfo(used.dtype).eps * diag.max()).all()):
            raise ValueError("the posterior of the latents is not proper (some combination "
                             "of latent values is determined neither by a prior nor by the "
                             "data): give every latent a Normal prior")
        step = -torch.linalg.solve_triangular(factor, (q.T @ r0).unsqueeze(-1),
                                              upper=True).squeeze(-1)
        loc = z0.to(r0.dtype, copy=True)  # the model may mix dtypes
        loc[free] += step
        fit = r0 + used @ step
        log_evidence = (-0.5 * fit.square().sum() - c
                        + 0.5 * step.shape[0] * math.log(2 * math.pi) - diag.log().sum())
        posterior = JointGaussianPosterior(log_evidence, loc, factor, layout, free)
        _check_affine(model, layout, posterior, (r0, c, jac), args, kwargs)
    return posterior


def _check_affine(model, layout, posterior, at_origin, args, kwargs):
    """The residuals at a posterior draw must be the linear prediction, site by site."""
    r0, _, jac = at_origin
    generator = torch.Generator(device="cpu").manual_seed(0)
    eps = torch.randn(layout.size, generator=generator, dtype=r0.dtype).to(r0.device)
    z1 = posterior.loc[0] + posterior.root @ eps + 0.5 * (posterior.loc[0] - layout.origin)
    z0_sites, z1_sites = [], []
    residuals(model, layout, layout.origin, args, kwargs, by_site=z0_sites)
    r1, _ = residuals(model, layout, z1, args, kwargs, by_site=z1_sites)
    predicted = r0 + jac @ (z1 - layout.origin)
    tol = 100 * torch.finfo(r0.dtype).eps ** 0.5
    start = 0
    for (name, size, c0), (_, _, c1) in zip(z0_sites, z1_sites):
        got, want = r1[start:start + size], predicted[start:start + size]
        start += size
        if abs(float(c1 - c0)) > tol * (1 + abs(float(c0))):
            raise NotLinearGaussianError(name, "has a scale that depends on the latents")
        scale = 1 + want.abs().max() + got.abs().max()
        if (got - want).abs().max() > tol * scale:
            raise NotLinearGaussianError(name, "has a location that is not affine in the "
                                         "latents (at a probe point its residuals differ "
                                         "from the linear prediction)")
