r"""PLDA's Gaussian posteriors of the speaker latents: the two-covariance model's, stored
in the basis that diagonalises both covariances at once, and the simplified (low-rank)
model's, one covariance per distinct speaker count."""

from typing import NamedTuple

import torch

from pyroem.infer.posteriors import GaussianPosterior


class SpeakerPosterior(GaussianPosterior):
    r"""
    The Gaussian posterior :math:`q(z_s) = \mathcal N(m_s, C_{n_s})` of every speaker
    (a :class:`~pyroem.infer.posteriors.GaussianPosterior`), with the exact
    ``log_evidence`` :math:`\log p(X)`.

    The covariance depends on the speaker only through its count :math:`n_s`; it is
    stored once per distinct count, in the simultaneously diagonalising basis:
    :math:`C_n = M \operatorname{diag}(v_n) M^\top` with :math:`M = T^{-1}` and
    :math:`v_n = \psi / (1 + n \psi)`.

    :ivar torch.Tensor loc: posterior means :math:`m_s`, shape ``(S, D)``.
    :ivar torch.Tensor counts: the ``G`` distinct speaker counts, increasing.
    :ivar torch.Tensor group: ``(S,)`` index into ``counts`` of each speaker.
    :ivar torch.Tensor basis: :math:`M`, shape ``(D, D)``.
    :ivar torch.Tensor variances: :math:`v_n` per distinct count, shape ``(G, D)``.
    """

    def __init__(self, log_evidence, loc, counts, group, basis, variances):
        super().__init__(log_evidence, loc, group=group)
        self.counts = counts
        self.basis = basis
        self.variances = variances

    @property
    def covariance(self):
        """Posterior covariance per distinct count, shape ``(G, D, D)``."""
        return (self.basis * self.variances.unsqueeze(-2)) @ self.basis.T

    @property
    def scale_tril(self):
        """Lower Cholesky factor of :attr:`covariance`, shape ``(G, D, D)`` (by QR of
        :math:`\\operatorname{diag}(\\sqrt{v}) M^\\top`, so no covariance is formed)."""
        root = self.variances.sqrt().unsqueeze(-1) * self.basis.T
        r = torch.linalg.qr(root, mode="r")[1]
        sign = torch.sign(r.diagonal(dim1=-2, dim2=-1))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return (r * sign.unsqueeze(-1)).mT

    def speaker_covariance(self):
        """Posterior covariance of each speaker, shape ``(S, D, D)`` (memory ``S D^2``)."""
        return self.latent_covariance()

    def weighted_covariance_sum(self, weights):
        r""":math:`\sum_g w_g C_{n_g}` for weights ``(G,)``, in ``O(G D + D^3)``."""
        v = (weights.unsqueeze(-1) * self.variances).sum(0)
        return (self.basis * v) @ self.basis.T


class LowRankSpeakerPosterior(GaussianPosterior):
    r"""
    The Gaussian posterior :math:`q(y_s) = \mathcal N(m_s, C_{n_s})` of every speaker's
    ``r`` factors in a simplified (low-rank) PLDA, with :math:`C_n = (I + n \tilde
    V^\top \tilde V)^{-1}` stored once per distinct count (a
    :class:`~pyroem.infer.posteriors.GaussianPosterior`).

    :ivar torch.Tensor loc: posterior means :math:`m_s`, shape ``(S, r)``.
    :ivar torch.Tensor counts: the ``G`` distinct speaker counts, increasing.
    :ivar torch.Tensor group: ``(S,)`` index into ``counts`` of each speaker.
    """

    def __init__(self, log_evidence, loc, counts, group, covariance):
        super().__init__(log_evidence, loc, covariance, group)
        self.counts = counts

    def weighted_covariance_sum(self, weights):
        r""":math:`\sum_g w_g C_{n_g}` for weights ``(G,)``."""
        return (weights[:, None, None] * self.covariance).sum(0)


class _Basis(NamedTuple):
    transform: torch.Tensor  # T (D, D): T W T^T = I, T B T^T = diag(psi)
    inverse: torch.Tensor  # T^{-1} = L U
    psi: torch.Tensor  # (D,) between-speaker variances in the basis
    log_det_within: torch.Tensor  # log |W|
