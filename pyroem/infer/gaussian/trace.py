r"""
A linear-Gaussian Pyro model as a function of its stacked latents.

Every sample site of such a model is a ``Normal`` or ``MultivariateNormal`` (possibly
``.to_event``, ``.mask``, under ``poutine.scale``/``poutine.mask``) whose location is
affine in the latents and whose scale does not depend on them. Its log joint density is
then a quadratic function of the vector :math:`z` of all latent values,

.. math::

    \log p(X, z) = \sum_e \omega_e \Big(-\tfrac12 w_e(z)^2 - c_e\Big)
    = -\tfrac12 \|r(z)\|^2 - c, \qquad r_e(z) = \sqrt{\omega_e}\, w_e(z),

with one *whitened residual* :math:`w_e` per element of every site (for a ``Normal``
:math:`(v - \mu) / \sigma`; for a ``MultivariateNormal`` :math:`L^{-1}(v - \mu)`), its
constant :math:`c_e` (:math:`\log \sigma + \frac12 \log 2\pi`, or a diagonal element of
:math:`\log L` plus that), and the weight :math:`\omega_e` of the site's scale and mask.
:math:`r` is affine in :math:`z`: :math:`r(z) = r(z_0) + B (z - z_0)`.

:class:`LatentLayout` finds the latent sites with one trace that draws nothing (each
latent takes its prior mean), :func:`residuals` evaluates :math:`r(z)` and :math:`c`
for given latent values, and :func:`site_terms` refuses a site of another family.
"""

import math

import torch
from pyro import poutine
from pyro.distributions import MaskedDistribution
from pyro.poutine.messenger import Messenger
from torch.distributions import Independent, MultivariateNormal, Normal

from pyroem.infer.estep import check_observed

_HELP = ("The automatic Gaussian E-step needs a linear-Gaussian model: every sample site "
         "Normal or MultivariateNormal, each location affine in the latents, each scale "
         "free of them. Otherwise give the model's owner its own e_step returning a "
         "pyroem.infer.GaussianPosterior with expected_statistics/maximize (tutorial 05), "
         "or make discrete latents enumerable.")


class NotLinearGaussianError(ValueError):
    """A site of the model breaks the linear-Gaussian assumptions (its name is ``site``)."""

    def __init__(self, site, reason):
        super().__init__(f"sample site '{site}' {reason}. {_HELP}")
        self.site = site


class _SetLatents(Messenger):
    """Give every latent sample site a value without drawing one: ``values[name]``, else
    the site distribution's mean, or a discrete site's first value (the global random
    state is never touched; :func:`site_terms` refuses the families it cannot take after
    the trace, because an error raised inside a trace is re-created by Pyro with its
    message only)."""

    def __init__(self, values=None):
        super().__init__()
        self.values = values or {}

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["value"] is not None \
                or type(msg["fn"]).__name__ == "_Subsample":
            return
        name, fn = msg["name"], msg["fn"]
        if name in self.values:
            msg["value"] = self.values[name]
        elif fn.has_enumerate_support:
            msg["value"] = fn.enumerate_support(expand=True)[0]
        else:
            msg["value"] = fn.mean.detach()


def needs_gaussian_e_step(model, args, kwargs):
    """Whether the generic E-step of ``model`` is the Gaussian one: some latent is
    continuous (other than the missing values of ``obs_mask``, which enumeration
    integrates out) and none is discrete. Found with one trace that draws nothing; a
    model that this trace cannot run (e.g. one written for enumeration's shapes) is left
    to enumeration, whose own errors then apply."""
    try:
        with torch.no_grad():
            sites = trace_model(model, args, kwargs)
    except Exception:  # noqa: BLE001 - not ours to report: enumeration reports it
        return False
    names = {s["name"] for s in sites}
    latents = [s for s in sites if not s["is_observed"]]
    if any(s["fn"].has_enumerate_support for s in latents):
        return False
    return any(not (s["name"].endswith("_unobserved")
                    and s["name"][:-11] + "_observed" in names and s["mask"] is not None)
               for s in latents)


def _unwrap(fn):
    """``(base distribution, number of reinterpreted dims, mask or None)``."""
    ndims, mask = 0, None
    while True:
        if isinstance(fn, MaskedDistribution):
            mask = fn._mask if mask is None else mask & fn._mask
            fn = fn.base_dist
        elif isinstance(fn, Independent):
            ndims += fn.reinterpreted_batch_ndims
            fn = fn.base_dist
        else:
            return fn, ndims, mask


def trace_model(model, args, kwargs, values=None, params=None):
    """The sample sites of a trace of ``model`` with the latents set to ``values`` (prior
    means where absent), without subsample and deterministic sites; the names of its
    param sites are added to the list ``params`` if given."""
    with poutine.block():
        trace = poutine.trace(_SetLatents(values)(model)).get_trace(*args, **kwargs)
    if params is not None:
        params.extend(n for n, s in trace.nodes.items() if s["type"] == "param")
    return [s for s in trace.nodes.values() if s["type"] == "sample"
            and type(s["fn"]).__name__ != "_Subsample"
            and not s["infer"].get("_deterministic")]


class LatentLayout:
    r"""
    Where each latent site's values sit in the stacked vector :math:`z` (``(d,)``).

    :ivar dict slices: site name -> ``(slice, shape)``.
    :ivar int size: :math:`d`.
    :ivar torch.Tensor origin: :math:`z_0`, the latents' prior means, stacked.
    """

    def __init__(self, sites):
        self.slices, start, parts = {}, 0, []
        for site in sites:
            if site["is_observed"]:
                continue
            value = site["value"].detach()
            self.slices[site["name"]] = (slice(start, start + value.numel()), value.shape)
            start += value.numel()
            parts.append(value.reshape(-1))
        if not parts:
            raise ValueError("the model has no latent sample site: there is nothing for an "
                             "E-step to infer")
        self.size = start
        self.origin = torch.cat(parts)

    def split(self, z):
        """The latent values of ``z`` (``(..., d)``), by site name."""
        return {name: z[..., sl].reshape(z.shape[:-1] + shape)
                for name, (sl, shape) in self.slices.items()}


def residuals(model, layout, z, args, kwargs, by_site=None):
    r""":math:`r(z)` (``(M,)``, all sites' weighted whitened residuals) and the constant
    :math:`c` (0-dim) for the latent values ``z`` (``(d,)``); differentiable in ``z`` and
    in the model's parameters. With a list ``by_site``, ``(name, size, c_site)`` of every
    site is appended to it (for diagnostics)."""
    sites = trace_model(model, args, kwargs, layout.split(z))
    parts, const = [], 0.0
    for site in sites:
        w, c, weight = site_terms(site)
        # weight 0 (masked): whatever the value holds (obs_mask's missing entries may be
        # NaN), the element contributes nothing
        kept = weight > 0
        parts.append(torch.where(kept, weight.sqrt() * w, 0.0).reshape(-1))
        c_site = torch.where(kept, weight * c, 0.0).sum()
        const = const + c_site
        if by_site is not None:
            by_site.append((site["name"], w.numel(), c_site))
    return torch.cat(parts), const


def site_terms(site):
    r"""``(w, c, weight)`` of one site, broadcast to one shape: whitened residuals, their
    constants and the weights of its scale and masks (see the module docstring).

    :raises ~pyroem.infer.gaussian.NotLinearGaussianError: for a site that is not a Normal or MultivariateNormal.
    """
    if site["is_observed"]:
        check_observed(site)
    fn, ndims, mask = _unwrap(site["fn"])
    value = site["value"]
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    if isinstance(fn, MultivariateNormal):
        diff = (value - fn.loc).unsqueeze(-1)
        tril = fn.scale_tril
        w = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)
        c = tril.diagonal(dim1=-2, dim2=-1).log() + half_log_2pi
        ndims += 1
    elif isinstance(fn, Normal):
        w = (value - fn.loc) / fn.scale
        c = fn.scale.log() + half_log_2pi
    else:
        kind = "an observed" if site["is_observed"] else "a latent"
        raise NotLinearGaussianError(site["name"], f"is {kind} {type(fn).__name__}, not a "
                                     "Normal or MultivariateNormal")
    w, c = torch.broadcast_tensors(w, c)
    weight = torch.ones((), dtype=w.dtype, device=w.device)
    for factor in (site["scale"], site["mask"], mask):
        if factor is None or factor is True:
            continue
        factor = torch.as_tensor(factor, dtype=w.dtype, device=w.device)
        weight = weight * factor.reshape(factor.shape + (1,) * ndims)
    return w, c, weight.expand(w.shape)
