r"""The Gaussian posterior of the state chains of a linear-Gaussian state-space model."""

import torch

from pyroem.infer.posteriors import GaussianPosterior


def safe_cholesky(cov):
    """Lower Cholesky factors of positive semi-definite matrices ``(..., S, S)``; a matrix
    that rounding left (numerically) singular gets a jitter of a few units of rounding of
    its largest diagonal entry."""
    tril, info = torch.linalg.cholesky_ex(cov)
    if not bool(info.any()):
        return tril
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    scale = cov.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(torch.finfo(cov.dtype).tiny)
    jitter = 16 * torch.finfo(cov.dtype).eps * scale[..., None, None] * eye
    return torch.linalg.cholesky_ex(cov + jitter)[0]


class StatePosterior(GaussianPosterior):
    r"""
    The exact posterior :math:`p(z_{1:T_b} | x_{1:T_b})` of every sequence ``b``: a
    Gaussian Markov chain, given by its smoothed marginals and pairwise covariances, and
    (for the guide) its backward factorisation

    .. math::

        p(z_{1:T} | x) = p(z_T | x) \prod_{t < T} \mathcal N\big(z_t;\,
        m_{t|T} + J_t (z_{t+1} - m_{t+1|T}),\, \Sigma_t\big).

    :ivar torch.Tensor loc: smoothed means :math:`m_{t|T}`, ``(B, T, S)`` (zero on padding).
    :ivar torch.Tensor log_prob: :math:`\log p(x_b)` per sequence ``(B,)``;
        ``log_evidence`` is their sum.
    :ivar torch.Tensor lengths: ``(B,)``.
    :ivar torch.Tensor group: ``(B,)`` index of each sequence's length among the distinct
        lengths, by which covariances are stored (they depend on the length only).
    :ivar torch.Tensor gain: :math:`J_t`, ``(T - 1, S, S)``, shared by the sequences.
    :ivar torch.Tensor cond_cov: :math:`\Sigma_t`, ``(T - 1, S, S)``, shared.
    :ivar torch.Tensor filtered_cov: :math:`P_{t|t}`, ``(T, S, S)``, shared.
    """

    def __init__(self, log_prob, smoothed, filtered_cov, lengths):
        super().__init__(log_prob.sum(), smoothed.mean, group=smoothed.group)
        self.log_prob = log_prob
        self.lengths = lengths
        self.gain = smoothed.gain
        self.cond_cov = smoothed.cond_cov
        self.filtered_cov = filtered_cov
        self._by_length = smoothed.cov
        self._cross_by_length = smoothed.cross

    @property
    def covariance(self):
        r"""Smoothed covariances :math:`P_{t|T}`, ``(B, T, S, S)`` (zero on padding)."""
        return self._by_length[self.group]

    @property
    def cross_covariance(self):
        r""":math:`\mathrm{Cov}(z_{t+1}, z_t | x)` for :math:`t = 1..T-1` (0-based index
        ``t - 1``), ``(B, T - 1, S, S)`` (zero where :math:`z_{t+1}` is padding); with the
        means, :math:`E[z_{t+1} z_t^\top] = \mathrm{Cov} + m_{t+1|T} m_{t|T}^\top`."""
        return self._cross_by_length[self.group]

    @property
    def scale_tril(self):
        """Lower Cholesky factors of :attr:`covariance` (identity on padding)."""
        cov = self._by_length
        pad = (cov.diagonal(dim1=-2, dim2=-1) == 0).all(-1)[..., None, None]
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return safe_cholesky(torch.where(pad, eye, cov))[self.group]

    def latent_covariance(self):
        return self.covariance

    def counts(self):
        """How many sequences have each distinct length, ``(G,)``, in the data's dtype."""
        return torch.bincount(self.group, minlength=self._by_length.shape[0]).to(self.loc.dtype)

    def summed_covariance(self):
        r""":math:`\sum_b P_{t|T}^{(b)}` per step ``(T, S, S)`` and
        :math:`\sum_b \mathrm{Cov}(z_{t+1}, z_t|x_b)` ``(T - 1, S, S)``, in
        ``O(G T S^2)`` (not ``B T S^2``)."""
        w = self.counts()
        return (torch.einsum("g,gtij->tij", w, self._by_length),
                torch.einsum("g,gtij->tij", w, self._cross_by_length))

    def last_covariance_sum(self):
        r""":math:`\sum_b P_{T_b|T_b}`, the smoothed covariances of the last frames, ``(S, S)``."""
        distinct = torch.unique(self.lengths)  # sorted, the order of ``group``
        ends = self._by_length[torch.arange(distinct.shape[0]), distinct - 1]
        return torch.einsum("g,gij->ij", self.counts(), ends)

    def chain(self):
        r"""The backward chain as the guide holds it: ``gain (B, T, S, S)`` (:math:`J_t`
        before each sequence's last frame, zero from it on) and ``scale_tril
        (B, T, S, S)`` (Cholesky factors of :math:`\Sigma_t` before the last frame, of
        :math:`P_{T_b|T_b}` at it, identity after)."""
        T, S = self.loc.shape[1], self.loc.shape[2]
        dtype, device = self.loc.dtype, self.loc.device
        t = torch.arange(T, device=device)
        inner = (t < self.lengths.unsqueeze(-1) - 1)[..., None, None]  # (B, T, 1, 1)
        last = (t == self.lengths.unsqueeze(-1) - 1)[..., None, None]
        zero = torch.zeros(1, S, S, dtype=dtype, device=device)
        gain = torch.where(inner, torch.cat([self.gain, zero]), 0)
        eye = torch.eye(S, dtype=dtype, device=device)
        cond = safe_cholesky(torch.cat([self.cond_cov, eye.unsqueeze(0)]))
        end = safe_cholesky(self.filtered_cov)
        tril = torch.where(inner, cond, torch.where(last, end, eye))
        return gain, tril
