r"""
What a fitted :class:`~pyroem.models.LinearGaussianSSM` computes on data: the
log-likelihood per sequence, the filtered and smoothed state distributions, and samples.
Results per frame come back in the form the data came in (one sequence, a list, or a
padded batch).
"""

import torch

from pyroem.models.checks import check_positive_int
from pyroem.models.hmm.sequences import pack_sequences, unpack, unpack_scalar
from pyroem.models.ssm.kalman import kalman_filter
from pyroem.models.ssm.scan import linear_recurrence


class SSMScoring:
    """Mixin of :class:`~pyroem.models.LinearGaussianSSM`: scoring and sampling."""

    def _scoring(self, x, lengths):
        return pack_sequences(x, lengths, dim=self.obs_dim, dtype=self.dtype)

    def log_prob(self, x, lengths=None):
        r""":math:`\log p(x_{1:T})` of each sequence (``(B,)``; a 0-dim tensor for one
        sequence), by the Kalman filter (summed in float64)."""
        padded, lengths, form = self._scoring(x, lengths)
        with torch.no_grad():
            log_prob = kalman_filter(self.linear_gaussian(), padded, lengths).log_prob
        return unpack_scalar(log_prob, form)

    def posterior(self, x, lengths=None):
        """The exact :class:`~pyroem.models.ssm.StatePosterior` of a padded batch (one
        sequence is a batch of one)."""
        padded, lengths, _ = self._scoring(x, lengths)
        return self.e_step(padded, lengths)

    def smooth(self, x, lengths=None):
        r"""
        Smoothed state distributions :math:`p(z_t | x_{1:T}) = \mathcal N(m_{t|T},
        P_{t|T})`.

        :returns: ``(means, covariances)``: ``(T, S)`` and ``(T, S, S)`` for one sequence,
            lists for a list, ``(B, T, S)`` and ``(B, T, S, S)`` (zero on padding) for a
            padded batch.
        """
        padded, lengths, form = self._scoring(x, lengths)
        post = self.e_step(padded, lengths)
        return unpack(post.loc, lengths, form), unpack(post.covariance, lengths, form)

    def filter(self, x, lengths=None):
        r"""
        Filtered state distributions :math:`p(z_t | x_{1:t}) = \mathcal N(m_{t|t},
        P_{t|t})`, in the form of :meth:`smooth`.
        """
        padded, lengths, form = self._scoring(x, lengths)
        with torch.no_grad():
            filtered = kalman_filter(self.linear_gaussian(), padded, lengths)
        T = padded.shape[1]
        valid = (torch.arange(T) < lengths.unsqueeze(-1))[..., None, None]
        cov = torch.where(valid, filtered.cov.filtered, 0)
        return unpack(filtered.mean, lengths, form), unpack(cov, lengths, form)

    def sample(self, num_steps, num_sequences=None, seed=None):
        r"""
        Draw sequences from the model (:math:`z_t = A z_{t-1} + w_t`, a linear recurrence
        in the noise).

        :param int num_steps: ``T``.
        :param int num_sequences: ``B``; ``None`` for one sequence.
        :param int seed: seed of a :class:`torch.Generator` (a fresh one when ``None``);
            the global random state is not used.
        :returns: ``(x, z)``: ``(T, O)`` and ``(T, S)``, or ``(B, T, O)`` and
            ``(B, T, S)`` when ``num_sequences`` is given.
        """
        T = check_positive_int("num_steps", num_steps)
        B = 1 if num_sequences is None else check_positive_int("num_sequences", num_sequences)
        g = torch.Generator()
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed))
        p = self.linear_gaussian()
        S, O, dtype = self.state_dim, self.obs_dim, self.dtype
        with torch.no_grad():
            w = torch.randn(T, B, S, generator=g, dtype=dtype)
            v = torch.randn(T, B, O, generator=g, dtype=dtype)
            noise = torch.cat([p.initial_mean + w[:1] @ self.initial_scale_tril.detach().T,
                               w[1:] @ self.transition_scale_tril.detach().T])
            F = p.transition_matrix.expand(T, S, S)
            z = linear_recurrence(F, noise)
            x = z @ p.observation_matrix.T + v @ self.observation_scale_tril.detach().T
        z, x = z.transpose(0, 1), x.transpose(0, 1)
        if num_sequences is None:
            return x[0], z[0]
        return x, z
