r"""
The marginal and the posterior of one factor analyser, in :math:`O(N D L)`.

With loadings :math:`W` of shape ``(L, D)`` (rows are the factors, as scikit-learn's
``components_``), mean :math:`\mu` and diagonal noise :math:`\Psi`,

.. math::

    z \sim \mathcal N(0, I_L), \qquad x | z \sim \mathcal N(W^\top z + \mu, \Psi),
    \qquad x \sim \mathcal N(\mu, W^\top W + \Psi).

Everything goes through the ``L x L`` matrix :math:`M = I + W \Psi^{-1} W^\top`:

- posterior: :math:`p(z | x) = \mathcal N(M^{-1} W \Psi^{-1} (x - \mu), M^{-1})`;
- determinant lemma: :math:`|W^\top W + \Psi| = |\Psi|\,|M|`;
- Woodbury, written as a sum of squares (no cancellation in float32):
  :math:`(x - \mu)^\top (W^\top W + \Psi)^{-1} (x - \mu) = \|x - \mu - W^\top m\|^2_{\Psi^{-1}}
  + \|m\|^2` with :math:`m` the posterior mean (the minimiser of that sum).
"""

import math
from typing import NamedTuple

import torch


class FactorTerms(NamedTuple):
    """What one pass over the data gives for one factor analyser."""

    log_prob: torch.Tensor  #: :math:`\log p(x_n)`, ``(N,)``
    loc: torch.Tensor  #: posterior means :math:`m_n`, ``(N, L)``
    covariance: torch.Tensor  #: the shared posterior covariance :math:`M^{-1}`, ``(L, L)``


def precision_factor(loadings, noise):
    r"""The Cholesky factor of :math:`M = I + W \Psi^{-1} W^\top` and :math:`W \Psi^{-1}`.

    :param torch.Tensor loadings: :math:`W`, ``(L, D)``.
    :param torch.Tensor noise: the diagonal of :math:`\Psi`, ``(D,)``.
    :returns: ``(chol (L, L), scaled (L, D))``.
    """
    scaled = loadings / noise
    eye = torch.eye(loadings.shape[0], dtype=loadings.dtype, device=loadings.device)
    chol, info = torch.linalg.cholesky_ex(eye + scaled @ loadings.T)
    if info.any():  # M >= I in exact arithmetic: only NaN or overflow gets here
        raise ValueError("the factor model's parameters are not finite (I + W Psi^-1 W^T "
                         "is not positive definite)")
    return chol, scaled


def factor_terms(x, loadings, mean, noise):
    r"""
    :math:`\log p(x_n)` and the exact posterior :math:`p(z_n | x_n)` of every point.

    :param torch.Tensor x: data ``(N, D)``.
    :param torch.Tensor loadings: :math:`W`, ``(L, D)``.
    :param torch.Tensor mean: :math:`\mu`, ``(D,)``.
    :param torch.Tensor noise: the diagonal of :math:`\Psi`, ``(D,)``, positive.
    :returns: :class:`FactorTerms`.
    """
    chol, scaled = precision_factor(loadings, noise)
    centred = x - mean
    loc = torch.cholesky_solve((centred @ scaled.T).T, chol).T  # M^-1 W Psi^-1 (x - mu)
    resid = centred - loc @ loadings
    quad = (resid.square() / noise).sum(-1) + loc.square().sum(-1)
    log_det = noise.log().sum() + 2 * chol.diagonal().log().sum()
    log_prob = -0.5 * (quad + log_det + x.shape[-1] * math.log(2 * math.pi))
    return FactorTerms(log_prob, loc, torch.cholesky_inverse(chol))


def ppca_closed_form(covariance, latent_dim):
    r"""
    Tipping and Bishop's (1999) maximum-likelihood PPCA for a sample covariance
    :math:`S = U \Lambda U^\top` (eigenvalues decreasing):
    :math:`\sigma^2 = \frac{1}{D - L} \sum_{j > L} \lambda_j` and
    :math:`W^\top = U_L (\Lambda_L - \sigma^2 I)^{1/2}` (up to a rotation).

    :param torch.Tensor covariance: :math:`S`, ``(..., D, D)``.
    :param int latent_dim: ``L < D``.
    :returns: ``(loadings (..., L, D), sigma2 (...))``.
    """
    values, vectors = torch.linalg.eigh(covariance)  # increasing
    values, vectors = values.flip(-1), vectors.flip(-1)
    sigma2 = values[..., latent_dim:].mean(-1).clamp_min(0)
    scale = (values[..., :latent_dim] - sigma2.unsqueeze(-1)).clamp_min(0).sqrt()
    return scale.unsqueeze(-1) * vectors[..., :latent_dim].mT, sigma2
