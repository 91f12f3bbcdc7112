r"""
The closed-form M-step of factor analysis and of a mixture of factor analysers
(Rubin and Thayer, 1982; Ghahramani and Hinton, 1996), from additive statistics.

The mean is estimated jointly with the loadings through the augmented latent
:math:`\tilde z = (z, 1)`: with :math:`\tilde W_k = (W_k^\top, \mu_k)` of shape
``(D, L + 1)`` the model reads :math:`x | z, k \sim \mathcal N(\tilde W_k \tilde z, \Psi)`,
and maximising :math:`Q` gives, with responsibilities :math:`r_{nk}` (all ones for one
factor analyser) and the posterior moments :math:`E[\tilde z | x_n, k]`,
:math:`E[\tilde z \tilde z^\top | x_n, k]`,

.. math::

    \tilde W_k = \Big(\sum_n r_{nk}\, x_n E[\tilde z]^\top\Big)
    \Big(\sum_n r_{nk}\, E[\tilde z \tilde z^\top]\Big)^{-1}, \qquad
    \Psi = \frac1N \operatorname{diag}\Big(\sum_n x_n x_n^\top
    - \sum_k \tilde W_k \sum_n r_{nk} E[\tilde z] x_n^\top\Big) + \epsilon I,

and :math:`\sigma^2 = \operatorname{tr}(\Psi) / D` for isotropic noise (PPCA,
Tipping and Bishop, 1999); :math:`\epsilon` is ``reg_covar``. With a full noise covariance
(simplified PLDA's within-speaker covariance) the same update keeps the whole matrix
instead of its diagonal (:func:`maximize_full_noise`). The sums are additive over
points; the data enter about a fixed ``shift`` (the data mean) for accuracy.
"""

import torch


def factor_statistics(x, resp, loc, covariance, shift, full_noise=False):
    r"""
    Expected sufficient statistics, additive over points.

    :param torch.Tensor x: data ``(N, D)``.
    :param torch.Tensor resp: :math:`r_{nk}`, ``(K, N)``.
    :param torch.Tensor loc: posterior means :math:`E[z | x_n, k]`, ``(K, N, L)``.
    :param torch.Tensor covariance: posterior covariances, ``(K, L, L)``.
    :param torch.Tensor shift: ``(D,)``, the origin of the data moments.
    :param bool full_noise: ``sxx`` as the full ``(D, D)`` :math:`\sum_n x x^\top`
        (for a full noise covariance, :func:`maximize_full_noise`).
    :returns: ``dict`` with ``n (K,)``, ``sxz (K, D, L+1)`` (:math:`\sum_n r x
        E[\tilde z]^\top`), ``szz (K, L+1, L+1)`` (:math:`\sum_n r E[\tilde z \tilde
        z^\top]`), ``sxx (D,)`` (:math:`\sum_n \operatorname{diag}(x x^\top)`) and
        ``shift``.
    """
    xc = x - shift
    n = resp.sum(-1)
    weighted = torch.cat([resp.unsqueeze(-1) * loc, resp.unsqueeze(-1)], -1)  # r E[z~]
    sxz = torch.matmul(xc.T, weighted)
    szz = torch.matmul(torch.cat([loc, torch.ones_like(loc[..., :1])], -1).mT, weighted)
    L = loc.shape[-1]
    szz[:, :L, :L] += n[:, None, None] * covariance  # E[z z^T] = C + m m^T
    weight = resp.sum(0).unsqueeze(-1)
    sxx = (weight * xc).T @ xc if full_noise else (weight * xc.square()).sum(0)
    return {"n": n, "sxz": sxz, "szz": szz, "sxx": sxx, "shift": shift}


def maximize_factors(stats, reg_covar, isotropic=False):
    r"""
    The maximiser of :math:`Q` given :func:`factor_statistics` (summed over batches).

    :returns: ``(loadings (K, L, D), means (K, D), noise (D,))``; ``noise`` has one
        value for ``isotropic``, shape ``(1,)``.
    :raises ValueError: when the noise is not positive (a Heywood case or data on a
        subspace): a positive ``reg_covar`` is the floor that prevents it.
    """
    tilde = _regression(stats)
    explained = (tilde * stats["sxz"].mT).sum((0, 1))  # diag(sum_k W~_k sxz_k^T)
    total = stats["n"].sum()
    noise = (stats["sxx"] - explained) / total
    # a difference at the rounding level of the data's variance is zero noise
    resolution = 10 * torch.finfo(noise.dtype).eps * stats["sxx"] / total
    noise = torch.where(noise > resolution, noise, torch.zeros_like(noise))
    if isotropic:
        noise = noise.mean().unsqueeze(0)
    noise = noise.clamp_min(0) + reg_covar
    if not (torch.isfinite(noise).all() and (noise > 0).all()):
        raise ValueError("the M-step produced a noise variance that is zero or not finite "
                         "(the data lie on a subspace, or a Heywood case): use reg_covar > 0")
    # contiguous: a checkpoint round trip then reproduces every later result bit for bit
    return tilde[:, :-1].contiguous(), tilde[:, -1] + stats["shift"], noise


def _regression(stats):
    r""":math:`\tilde W_k^\top = (\sum_n r E[\tilde z \tilde z^\top])^{-1}
    \sum_n r E[\tilde z] x^\top`, ``(K, L+1, D)``."""
    szz = stats["szz"]
    # An empty component (n_k = 0) has szz = 0; a ridge of a few ulps keeps it finite
    # without moving any other component measurably.
    eye = torch.eye(szz.shape[-1], dtype=szz.dtype, device=szz.device)
    return torch.linalg.solve(szz + 10 * torch.finfo(szz.dtype).eps * eye, stats["sxz"].mT)


def maximize_full_noise(stats):
    r"""
    The maximiser of :math:`Q` when the noise covariance :math:`\Psi` is a full matrix
    (the within-speaker covariance of simplified PLDA): the same :math:`\tilde W_k`,
    and

    .. math::

        \Psi = \frac1N \Big(\sum_n x_n x_n^\top
        - \sum_k \tilde W_k \sum_n r_{nk} E[\tilde z] x_n^\top\Big),

    symmetrised, with no floor (the caller adds ``reg_covar`` and factorises it).

    :param dict stats: :func:`factor_statistics` with ``full_noise=True``.
    :returns: ``(loadings (K, L, D), means (K, D), noise (D, D))``.
    """
    tilde = _regression(stats)
    explained = torch.matmul(stats["sxz"], tilde).sum(0)  # sum_k W~_k sxz_k^T
    noise = (stats["sxx"] - explained) / stats["n"].sum()
    return tilde[:, :-1].contiguous(), tilde[:, -1] + stats["shift"], 0.5 * (noise + noise.T)
