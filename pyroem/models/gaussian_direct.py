r"""
Gaussian emission log-densities and moments computed directly, for small problems: a few
elementwise passes instead of a product with the cached design matrix, whose fixed cost
(a dozen small torch calls and a rounding check) dominates a tiny iteration. The
parameters are those of :mod:`pyroem.models.gaussian_emission`.
"""

import math

import torch

from pyroem.distributions.statistics import own_mean_moments
from pyroem.models import raw
from pyroem.ops import compiled_gaussian as cg

#: Frames x states x dimensions up to which :func:`direct_log_prob` replaces the product
#: with the cached design (bench/hmm.py ``--case tiny``, K=2, D=1, T=300: the product's
#: fixed cost, a dozen small torch calls plus the rounding check, was 4 times the whole
#: recursion; the direct form is a few elementwise passes, exact in any dtype).
DIRECT_MAX_ENTRIES = 1 << 15


def direct_applies(module, x):
    """Whether :func:`direct_log_prob` takes the emission log-densities of ``x (B, T, D)``
    (a problem of at most :data:`DIRECT_MAX_ENTRIES` frame-state-dimension entries)."""
    return x.numel() * module.num_states <= DIRECT_MAX_ENTRIES


def direct_log_prob(module, x):
    r"""
    ``log N(x_{bt} | mu_k, Sigma_k)`` of ``x (B, T, D)`` under components of shape
    ``(K,)``, ``(B, T, K)`` contiguous, computed directly:

    .. math::

        \log p(x | k) = -\tfrac12 \lVert L_k^{-1}(x - \mu_k) \rVert^2
        - \sum_d \log L_{k,dd} - \tfrac D2 \log 2\pi,

    with :math:`L_k` the Cholesky factor of :math:`\Sigma_k` (the standard deviations
    for ``diag``/``spherical``, where the solve is a division). No expanded quadratic
    form, so no rounding check; differentiable in the parameters.
    """
    # outside a Pyro model (the E-step) each parameter is read once, without the attribute
    # machinery; inside one (SVI) through it, so that it is a param site
    read = getattr if torch.is_grad_enabled() else raw.value
    means = read(module, "means")
    B, T, D = x.shape
    if module.covariance_type in ("diag", "spherical"):
        scales = read(module, "scales")
        if module.covariance_type == "spherical":
            scales = scales.unsqueeze(-1).expand(means.shape)
        if cg.applies(x, means, scales):  # one compiled pass (pyroem.ops.compiled_gaussian)
            return cg.diag_log_prob(x.reshape(B * T, D), means, scales).reshape(B, T, -1)
    diff = x.unsqueeze(-2) - means  # (B, T, K, D)
    if module.covariance_type in ("full", "tied"):
        tril = read(module, "scale_tril")
        eye = torch.eye(D, dtype=tril.dtype, device=tril.device)
        inv = torch.linalg.solve_triangular(tril, eye, upper=False)  # (K, D, D) or (D, D)
        z = (diff.unsqueeze(-2) * inv).sum(-1) if D > 1 else diff * inv[..., 0]
        half_log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    else:
        half_log_det = scales.log().sum(-1)
        z = diff / scales
    return -0.5 * z.square().sum(-1) - (half_log_det + 0.5 * D * math.log(2 * math.pi))


def direct_moments(module, gamma, x):
    r"""
    The weighted moments of ``x (B, T, D)`` under ``gamma (B, T, K)`` (zero on padding)
    for the M-step of :func:`~pyroem.models.gaussian_emission.maximize`, each state's
    about its own weighted mean (:func:`~pyroem.distributions.statistics.own_mean_moments`:
    two passes, resolved in any dtype, so without
    :func:`~pyroem.models.gaussian_emission.stable_moments`' rounding check). For
    problems that :func:`direct_applies` to.
    """
    kind = "full" if module.covariance_type in ("full", "tied") else "diag"
    weights, frames = gamma.reshape(-1, gamma.shape[-1]), x.reshape(-1, x.shape[-1])
    if frames.shape[-1] <= cg.MAX_DIM and cg.applies(weights, frames):
        return cg.own_mean_moments(weights, frames, kind)  # one compiled call
    return own_mean_moments(weights, frames, kind)
