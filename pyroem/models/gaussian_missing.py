r"""
Gaussian emissions (:mod:`~pyroem.models.gaussian_emission`: one Gaussian per component
or state, components of shape ``(K,)``) on data with missing values: the marginal
log-density of the observed part and the expected complete-data moments that make the
M-step exact (Ghahramani and Jordan, 1994), through
:mod:`pyroem.distributions.missing`. Shared by :class:`~pyroem.models.GaussianMixture`
and :class:`~pyroem.models.GaussianHMM`.
"""

import torch

from pyroem.distributions import missing


def covariance_args(module, grad=False):
    """The emission's covariances as :func:`~pyroem.distributions.missing.marginal_log_prob`
    takes them: ``{"cov": (K, D, D)}`` (full, tied) or ``{"var": (K, D)}`` (diag,
    spherical); differentiable in the parameters when ``grad``."""
    K, D = module.means.shape
    kind = module.covariance_type
    if kind in ("full", "tied"):
        tril = module.scale_tril if grad else module.scale_tril.detach()
        cov = tril @ tril.mT
        return {"cov": cov.expand(K, D, D) if kind == "tied" else cov}
    scales = module.scales if grad else module.scales.detach()
    var = scales.square()
    return {"var": var.unsqueeze(-1).expand(K, D) if kind == "spherical" else var}


def distribution(module, z, obs_mask, patterns=None):
    """The Pyro observation of the enumerated ``z``: a
    :class:`~pyroem.distributions.missing.MaskedGaussian` (marginal of the observed
    dimensions, differentiable in the parameters)."""
    return missing.MaskedGaussian(module.means, obs_mask, z, patterns=patterns,
                                  **covariance_args(module, grad=True))


def log_prob(module, x, obs_mask):
    r""":math:`\log \mathcal N(x_{n,o} | \mu_{k,o}, \Sigma_{k,oo})`, shape ``(N, K)``
    (0 for a point with no observed value)."""
    with torch.no_grad():
        return missing.marginal_log_prob(x, obs_mask, module.means.detach(),
                                         **covariance_args(module))


def moments(module, weights, x, obs_mask):
    r"""The expected complete-data moments of ``x (N, D)`` weighted by
    ``weights (N, K)`` under the current parameters (the E-step's), in the form of
    :func:`~pyroem.models.gaussian_emission.weighted_moments`: the M-step
    :func:`~pyroem.models.gaussian_emission.maximize` applied to them is exact EM."""
    args = covariance_args(module)  # diag/spherical: diagonal moments, as the M-step reads
    with torch.no_grad():
        return missing.expected_moments(x, obs_mask, weights, module.means.detach(),
                                        shift=missing.observed_mean(x, obs_mask), **args)


def imputed(x, obs_mask):
    """``x`` with each missing value replaced by its dimension's observed mean: a
    starting point for the initialisation (k-means, the first M-step), not a part of EM."""
    return torch.where(obs_mask, x, missing.observed_mean(x, obs_mask))
