r"""Typed posteriors of the factor models: a Gaussian per point whose covariance is shared
by all points (factor analysis), and its mixture (a mixture of factor analysers)."""

import torch

from pyroem.infer.posteriors import GaussianPosterior, Posterior


class FactorPosterior(GaussianPosterior):
    r"""
    The exact posterior :math:`q(z_n) = \mathcal N(m_n, C)` of a factor analyser, with
    :math:`C = (I + W \Psi^{-1} W^\top)^{-1}` the same for every point: stored once
    (``covariance`` is ``(1, L, L)``, ``group`` all zeros).

    :ivar torch.Tensor loc: posterior means :math:`m_n`, ``(N, L)``.
    :ivar torch.Tensor log_prob: :math:`\log p(x_n)`, ``(N,)``; ``log_evidence`` is its sum.
    """

    def __init__(self, log_prob, loc, covariance):
        group = torch.zeros(loc.shape[0], dtype=torch.long, device=loc.device)
        super().__init__(log_prob.sum(), loc, covariance.unsqueeze(0), group)
        self.log_prob = log_prob


class MixtureFactorPosterior(Posterior):
    r"""
    The exact posterior of a mixture of factor analysers: per point
    :math:`q(k_n, z_n) = q(k_n)\, \mathcal N(z_n;\, m_{nk}, C_k)`, a discrete
    component and, given it, a Gaussian latent whose covariance depends on the
    component only.

    :ivar torch.Tensor responsibilities: :math:`q(k_n = k)`, ``(N, K)``.
    :ivar torch.Tensor loc: :math:`m_{nk}`, ``(N, K, L)``.
    :ivar torch.Tensor covariance: :math:`C_k`, ``(K, L, L)``.
    :ivar torch.Tensor log_prob: :math:`\log p(x_n)`, ``(N,)``; ``log_evidence`` is its sum.
    """

    def __init__(self, log_prob, responsibilities, loc, covariance):
        super().__init__(log_prob.sum())
        self.log_prob = log_prob
        self.responsibilities = responsibilities
        self.loc = loc
        self.covariance = covariance

    @property
    def scale_tril(self):
        """Lower Cholesky factors of :attr:`covariance`, ``(K, L, L)``."""
        return torch.linalg.cholesky(self.covariance)

    def conditional(self, k):
        r"""The Gaussian :math:`q(z_n | k_n = k)` of every point, a
        :class:`FactorPosterior` (its ``log_prob`` is :math:`\log p(x_n)`)."""
        return FactorPosterior(self.log_prob, self.loc[:, k], self.covariance[k])

    def mean(self):
        r""":math:`E_q[z_n] = \sum_k q(k_n = k)\, m_{nk}`, ``(N, L)``."""
        return (self.responsibilities.unsqueeze(-1) * self.loc).sum(-2)
