r"""
Gaussian emission parameters shared by :class:`~pyroem.models.GaussianMixture` and
:class:`~pyroem.models.GaussianHMM` (one Gaussian per component or state, components of
shape ``(K,)``) and :class:`~pyroem.models.GMMHMM` (a mixture per state, components of
shape ``(K, M)``): storage, the scikit-learn/hmmlearn covariance
shapes, fast log-densities and the closed-form M-step from weighted moments.

``tied`` covariances are shared along the last component axis: by all states of a
``GaussianHMM`` (``(D, D)``), by the mixture components of each state of a ``GMMHMM``
(``(K, D, D)``), as in hmmlearn.
"""

import math
import weakref

import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.distributions import DiagNormal, MultivariateNormal, gaussian_design
from pyroem.distributions.features import data_radius
from pyroem.distributions.gaussian import ROUNDING_TOLERANCE, design_error
from pyroem.distributions.statistics import (
    centred_moments,
    design_moments,
    regularized_cholesky,
    scatter_about,
    split_moments,
)
from pyroem.models import raw
from pyroem.models.checks import check_covariance, check_positive

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def covariance_shape(covariance_type, comps, dim):
    """Shape of ``covariances`` for components of shape ``comps``."""
    return {"full": comps + (dim, dim), "diag": comps + (dim,), "spherical": comps,
            "tied": comps[:-1] + (dim, dim)}[covariance_type]


def init_params(module, covariance_type, comps, dim):
    """Register ``means`` and the covariance factor (``scale_tril`` or ``scales``) on
    ``module`` (identity covariances, zero means)."""
    module.means = PyroParam(torch.zeros(comps + (dim,)))
    if covariance_type in ("full", "tied"):
        shape = covariance_shape(covariance_type, comps, dim)
        module.scale_tril = PyroParam(torch.eye(dim).expand(shape).clone(),
                                      constraint=constraints.lower_cholesky)
    else:
        module.scales = PyroParam(torch.ones(covariance_shape(covariance_type, comps, dim)),
                                  constraint=constraints.positive)


def get_covariances(module):
    if module.covariance_type in ("full", "tied"):
        tril = module.scale_tril.detach()
        return tril @ tril.mT
    return module.scales.detach().pow(2)


def full_covariances(covariances, covariance_type, comps, dim):
    """Covariances of any ``covariance_type`` as full matrices, ``comps + (dim, dim)``
    (``tied`` ones repeated along the last component axis)."""
    if covariance_type == "tied":
        return covariances.unsqueeze(-3).expand(comps + (dim, dim)).clone()
    if covariance_type == "diag":
        return torch.diag_embed(covariances)
    if covariance_type == "spherical":
        return covariances[..., None, None] * torch.eye(dim, dtype=covariances.dtype,
                                                         device=covariances.device)
    return covariances


def set_covariances(module, value, comps):
    """Set the covariances from a user's ``value`` (scikit-learn's shape for the
    covariance type), checked first (:func:`~pyroem.models.checks.check_covariance`:
    symmetric within a relative tolerance and positive definite; or
    :func:`~pyroem.models.checks.check_positive` for variances); a refused value
    changes nothing."""
    shape = covariance_shape(module.covariance_type, comps, module.dim)
    name = f"covariances (covariance_type={module.covariance_type!r})"
    if module.covariance_type in ("full", "tied"):
        module.scale_tril = check_covariance(value, name, shape, module.dtype)
    else:
        module.scales = check_positive(value, name, shape, module.dtype).sqrt()


def distribution(module, index, validate_args=None):
    """The emission distribution of component ``index`` (a tuple of index tensors that
    picks from the component axes; broadcasting under enumeration). ``validate_args=False``
    where the data and parameters are checked already: torch's validation of a
    ``(N, D)`` sample and of ``K`` Cholesky factors is several passes per call (in a
    mixture's E-step on every iteration)."""
    means = module.means[index]
    cov = module.covariance_type
    if cov == "full":
        return MultivariateNormal(means, scale_tril=module.scale_tril[index],
                                  validate_args=validate_args)
    if cov == "tied":
        return MultivariateNormal(means, scale_tril=module.scale_tril[index[:-1]],
                                  validate_args=validate_args)
    scales = module.scales[index]
    if cov == "spherical":
        scales = scales.unsqueeze(-1).expand(means.shape)
    return DiagNormal(means, scales, validate_args=validate_args)


# id(x) -> (weakref to x, x viewed with singleton component axes).  The distributions cache
# data features per tensor object; keeping one view per data tensor keeps that cache warm
# across EM iterations.
_VIEWS = {}


def _component_view(x, num_axes):
    key = (id(x), num_axes)
    hit = _VIEWS.get(key)
    if hit is not None and hit[0]() is x:
        return hit[1]
    view = x.reshape(x.shape[:-1] + (1,) * num_axes + x.shape[-1:])
    _VIEWS[key] = (weakref.ref(x, lambda _, k=key: _VIEWS.pop(k, None)), view)
    return view


def component_log_prob(module, x, grad=False):
    r"""``log N(x_{bt} | mu_c, Sigma_c)`` for every frame and component: shape
    ``(B, T) + comps``; a matrix product on cached data features (the data is viewed as
    ``(B, T, 1, ..., D)`` so that the result comes out frame-major and contiguous).
    With ``grad=True`` it is differentiable in the parameters (for SVI)."""
    comps = module.means.shape[:-1]
    flat = len(comps)
    index = tuple(torch.arange(n).reshape((-1,) + (1,) * (flat - 1 - i))
                  for i, n in enumerate(comps))
    with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
        return distribution(module, index).log_prob(_component_view(x, flat))


def weighted_moments(weights, x, covariance_type):
    r"""
    Additive statistics of ``x (B, T, D)`` weighted by ``weights (B, T) + comps``:
    ``n`` :math:`=\sum w`, ``sx`` :math:`=\sum w x_c`, ``sxx`` :math:`=\sum w x_c x_c^\top`
    (flattened ``D*D``; or :math:`x_c^2` for diagonal types), about ``shift``
    (:func:`~pyroem.distributions.statistics.design_moments`).
    """
    shift, design = gaussian_design(x, _kind(covariance_type))  # cached per data tensor
    comps = weights.shape[2:]
    w = weights.reshape(-1, math.prod(comps))  # (B*T, C)
    return _by_component(design_moments(w, design.reshape(-1, design.shape[-1]), shift), comps)


def _kind(covariance_type):
    return "full" if covariance_type in ("full", "tied") else "diag"


def _by_component(stats, comps):
    """The ``(C, ...)`` moments with the flat component axis reshaped to ``comps``."""
    return {k: v if k == "shift" else v.reshape(comps + v.shape[1:]) for k, v in stats.items()}


#: rounding of the moments about the data mean, in units of the dtype's eps times the
#: second moment: a few roundings per product term, plus the growth of a long sum
_ROUNDING = 16


def stable_moments(stats, covariance_type, reg_covar, data):
    r"""
    ``stats`` (moments about the data mean, from one product with the design matrix) with
    the moments of every component whose covariance that product cannot resolve in the
    working dtype recomputed about the component's own mean
    (:func:`~pyroem.distributions.statistics.centred_moments`, two-pass as
    scikit-learn); ``stats["shift"]`` is then per component.

    The covariance about the new mean is :math:`S/n - \bar x \bar x^\top`, both terms
    about the data mean: for a component far from the data mean with a small spread the
    subtraction cancels, and the rounding of :math:`S` (about
    :math:`\epsilon\, \mathrm{tr}(S/n)` with :math:`\epsilon` the dtype's eps, times a
    factor for long sums) can exceed the component's smallest eigenvalue plus
    ``reg_covar``: in float32 a pixel that is constant within a cluster gives a
    covariance that is not positive definite. A component is recomputed when its
    covariance plus ``reg_covar`` is not positive definite with that margin (for ``tied``
    covariances, when the pooled one is not). In float64 this is essentially never the
    case, and the moments are returned unchanged.

    :param dict stats: moments with components of shape ``comps`` and a ``(D,)`` shift.
    :param str covariance_type: as the module's.
    :param float reg_covar: as the module's.
    :param callable data: returns ``(weights (R, C), x (R, D))``, the flat components'
        weights and the data the moments were taken from; called only when a component
        is recomputed.
    """
    n, shift = stats["n"], stats["shift"]
    comps, dim = tuple(n.shape), shift.shape[-1]
    if shift.dim() != 1 or not n.is_floating_point():
        return stats
    num = math.prod(comps)
    nf, sx = n.reshape(num), stats["sx"].reshape(num, dim)
    sxx = stats["sxx"].reshape(num, -1)
    xbar = sx / (nf + 10 * torch.finfo(n.dtype).eps).unsqueeze(-1)
    risky = _unresolved(nf, sx, sxx, xbar, comps, covariance_type, reg_covar)
    if not bool(risky.any()):
        return stats
    idx = risky.nonzero().squeeze(-1)
    weights, x = data()
    refs = shift + xbar[idx]
    fixed = centred_moments(weights[:, idx], x, refs, _kind(covariance_type))
    out_n, out_sx, out_sxx = nf.clone(), sx.clone(), sxx.clone()
    out_shift = shift.expand(num, dim).clone()
    out_n[idx], out_sx[idx], out_sxx[idx], out_shift[idx] = (
        fixed["n"], fixed["sx"], fixed["sxx"], refs)
    return {"n": out_n.reshape(comps), "sx": out_sx.reshape(comps + (dim,)),
            "sxx": out_sxx.reshape(comps + (-1,)), "shift": out_shift.reshape(comps + (dim,))}


def _unresolved(nf, sx, sxx, xbar, comps, covariance_type, reg_covar):
    """``(C,)`` bool: the flat components whose covariance plus ``reg_covar`` is not
    positive definite with the rounding margin of :func:`stable_moments` (for ``tied``,
    those whose pooled covariance is not)."""
    num, dim = nf.shape[0], sx.shape[-1]
    eps = torch.finfo(nf.dtype).eps
    nk = nf + 10 * eps
    gamma = eps * (_ROUNDING + float(nf.sum()) ** 0.5)
    if _kind(covariance_type) != "full":
        second = sxx / nk.unsqueeze(-1)
        var = scatter_about(nf.unsqueeze(-1), sx, sxx, xbar, "diag") / nk.unsqueeze(-1)
        return (var + reg_covar <= gamma * second).any(-1)
    second = sxx.reshape(num, dim, dim) / nk[:, None, None]
    cov = scatter_about(nf, sx, sxx, xbar) / nk[:, None, None]
    margin = gamma * second.diagonal(dim1=-2, dim2=-1).sum(-1)
    if covariance_type == "tied":  # the pooled covariance decides, per tied group
        group = nf.reshape(comps[:-1] + (-1,))
        total = group.sum(-1, keepdim=True).clamp_min(torch.finfo(nf.dtype).tiny)
        share = (group / total).reshape(num)
        cov = (cov * share[:, None, None]).reshape(comps[:-1] + (-1, dim, dim)).sum(-3)
        margin = (margin * share).reshape(comps[:-1] + (-1,)).sum(-1)
    eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
    shifted = 0.5 * (cov + cov.mT) + (reg_covar - margin)[..., None, None] * eye
    risky = torch.linalg.cholesky_ex(shifted).info > 0
    if covariance_type == "tied":
        risky = risky.unsqueeze(-1).expand(comps).reshape(num)
    return risky


# Below this many sequences per frame the batched products of the state-major layout are
# too thin (bench/hmm.py: B = 1 is 4x slower, B = 32 already faster than one flat product).
_MIN_BATCHED = 32


def state_major_log_prob(module, x):
    r"""
    ``log N(x_{bt} | mu_k, Sigma_k)`` of sequences ``x (B, T, D)`` under components of
    shape ``(K,)``, laid out **state-major per frame**: shape ``(T, K, B)``, the layout
    of :func:`~pyroem.ops.recursions.forward_backward`'s recursion (pass it
    ``.permute(2, 0, 1)``). One batched product
    :math:`W\,\phi(x_t)^\top` per frame, with ``W`` the components'
    :meth:`~pyroem.distributions.DiagNormal.design_weights` and :math:`\phi` the cached
    design matrix of the time-major view ``x.transpose(0, 1)``. Differentiable in the
    parameters.
    """
    K = module.means.shape[0]
    time_major = x.transpose(0, 1)
    center, design = gaussian_design(time_major, _kind(module.covariance_type))
    emission = distribution(module, (torch.arange(K),))
    weights = emission.design_weights(center)
    T, B, F = design.shape
    if B < _MIN_BATCHED:
        # few sequences: one flat product; the (T, K, B) result is a view, and for one
        # sequence it is exactly the state-major layout
        out = (design.reshape(-1, F) @ weights.T).reshape(T, B, K).transpose(1, 2)
    else:
        out = torch.bmm(weights.expand(T, K, F), design.mT)
    # states whose expanded quadratic form rounds badly in this dtype (a nearly singular
    # covariance far from the data mean, in float32): their log-densities directly
    loc, factor, prec_norm = emission._direct_params()
    with torch.no_grad():
        risky = design_error(loc.detach(), prec_norm, center,
                             data_radius(time_major)) > ROUNDING_TOLERANCE
    for k in risky.nonzero().squeeze(-1).tolist():
        out[:, k, :] = emission._direct_log_prob(time_major, loc[k], factor[k])
    return out


def state_major_moments(weights, x, covariance_type):
    """:func:`weighted_moments` of ``x (B, T, D)`` with state-major weights ``(T, K, B)``
    (as :func:`state_major_log_prob`; the posteriors of
    :func:`~pyroem.ops.recursions.forward_backward` are such a tensor, viewed as
    ``(B, T, K)``): one batched product with the time-major design, summed over frames."""
    shift, design = gaussian_design(x.transpose(0, 1), _kind(covariance_type))
    _, K, B = weights.shape
    if B < _MIN_BATCHED:
        flat = weights.transpose(1, 2).reshape(-1, K)  # a view for one sequence
        return design_moments(flat, design.reshape(-1, design.shape[-1]), shift)
    return split_moments(torch.bmm(weights, design).sum(0), shift)  # (K, Q + D + 1)


def maximize(module, stats, update_means=True, update_covariances=True):
    r"""
    Closed-form M-step of the Gaussian emissions,

    .. math::

        \mu_c = \frac{s_c}{n_c}, \qquad
        \Sigma_c = \frac{S_c}{n_c} - \bar x_c \mu_c^\top - \mu_c \bar x_c^\top
        + \mu_c \mu_c^\top + \epsilon I, \quad \bar x_c = s_c / n_c,

    (the weighted covariance about the new mean, or about the frozen mean when means are
    not trained), pooled along the last component axis for ``tied`` and averaged over
    dimensions for ``spherical``; :math:`\epsilon` = ``reg_covar``.

    The fused iteration of small Gaussian HMMs computes the diagonal and spherical cases
    in C (``pyroem/ops/kernels/gaussian_hmm_step.c``, ``gauss_update``): a change here goes
    there too (tests/test_fused_step.py compares the two).
    """
    n = stats["n"]
    nk = n + 10 * torch.finfo(n.dtype).eps  # an empty component keeps a finite mean
    xbar = stats["sx"] / nk.unsqueeze(-1)
    shift = stats["shift"]  # (D,), or per component (see stable_moments)
    mu = xbar if update_means else raw.value(module, "means") - shift
    # results valid by construction: written straight into the parameters (pyroem.models.raw)
    if update_covariances:
        if module.covariance_type in ("full", "tied"):
            raw.assign(module, "scale_tril", _full_update(module, stats, mu, nk))
        else:
            raw.assign(module, "scales", _diag_update(module, stats, mu, nk))
    if update_means:
        raw.assign(module, "means", mu + shift)


def _full_update(module, stats, mu, nk):
    """The Cholesky factor of the full (or tied) covariance about ``mu``, plus reg_covar."""
    cov = scatter_about(stats["n"], stats["sx"], stats["sxx"], mu) / nk[..., None, None]
    if module.covariance_type == "tied":
        cov = (cov * nk[..., None, None]).sum(-3) / nk.sum(-1)[..., None, None]
    return regularized_cholesky(
        cov, module.reg_covar, "a covariance that is not positive definite (a component or "
        "state collapsed onto too few points); increase reg_covar or decrease the number of "
        "components or states")


def _diag_update(module, stats, mu, nk):
    """The standard deviations (diag or spherical) about ``mu``, plus reg_covar."""
    n = stats["n"].unsqueeze(-1)
    var = scatter_about(n, stats["sx"], stats["sxx"], mu, "diag").div_(nk.unsqueeze(-1))
    if module.covariance_type == "spherical":
        var = var.mean(-1)
    var = var.add_(module.reg_covar)
    if not bool((var > 0).all()):
        raise ValueError(
            "the M-step produced a non-positive variance (a component or state "
            "collapsed onto one point); increase reg_covar or decrease the number "
            "of components or states")
    return var.sqrt()


def num_parameters(covariance_type, comps, dim):
    """Free parameters of the means and covariances."""
    c = math.prod(comps)
    cov = {"full": c * dim * (dim + 1) // 2, "diag": c * dim, "spherical": c,
           "tied": math.prod(comps[:-1]) * dim * (dim + 1) // 2}[covariance_type]
    return cov + c * dim


def sample(module, index, generator):
    """Draw one vector per entry of the component ``index`` tensors."""
    means = module.means[index]
    eps = torch.randn(means.shape, generator=generator, dtype=means.dtype)
    cov = module.covariance_type
    if cov in ("full", "tied"):
        tril = module.scale_tril[index] if cov == "full" else module.scale_tril[index[:-1]]
        return means + (tril @ eps.unsqueeze(-1)).squeeze(-1)
    scales = module.scales[index]
    if cov == "spherical":
        scales = scales.unsqueeze(-1)
    return means + scales * eps
