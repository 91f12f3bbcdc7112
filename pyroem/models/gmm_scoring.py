r"""Scoring with a Gaussian mixture (a mixin of :class:`~pyroem.models.GaussianMixture`):
:math:`\log p(x_n, z_n = k)` of the (observed part of the) data, reduced to per-point
log-likelihoods, responsibilities or the most probable component, in row chunks within the
memory budget."""

import torch

from pyroem.models import gaussian_emission as ge
from pyroem.models import gaussian_missing as gm
from pyroem.models import partial as po
from pyroem.models.scaling import cat_chunks


class MixtureScoring:
    """``log_prob``, ``posterior`` and ``predict`` of a mixture with ``weights``,
    ``num_components`` and ``_emission(z)``."""

    def _log_joint(self, x, obs_mask=None, labels=None):
        r"""``log p(x_n, z_n = k)`` as an ``(N, K)`` tensor (the observed part of
        ``x_n`` with ``obs_mask``; :math:`-\infty` off a known label)."""
        with torch.no_grad():
            if obs_mask is None:
                # data and parameters are checked already (prepare, the setters): no
                # validation passes over the data on every E-step
                z = torch.arange(self.num_components).unsqueeze(-1)
                emission = ge.distribution(self, (z,), validate_args=False)
                lp = emission.log_prob(x).add_(self.weights.log().unsqueeze(-1)).T
            else:
                lp = gm.log_prob(self, x, obs_mask) + self.weights.log()
            if labels is not None:
                lp = lp + po.label_clamp(labels, self.num_components, lp.dtype)
        return lp

    def _scored(self, x, chunk_size, reduce, obs_mask=None, labels=None):
        """``reduce(log p(x_n, z_n = k))`` in row chunks (``chunk_size`` as in
        :meth:`fit`: ``None`` keeps the data whole within the memory budget; the partial
        observation is scored whole)."""
        args = self._data(x, obs_mask=obs_mask, labels=labels)
        if len(args) > 1:
            return reduce(self._log_joint(*args))
        rows = self._chunk_rows(args, chunk_size)
        return cat_chunks(lambda c: reduce(self._log_joint(c)), args[0], rows)

    def log_prob(self, x, obs_mask=None, labels=None, chunk_size=None):
        r"""Per-point :math:`\log p(x_n) = \log \sum_k \pi_k N(x_n|\mu_k, \Sigma_k)`,
        shape ``(N,)``; with ``obs_mask`` of the observed part (0 for a point with none),
        with ``labels`` :math:`\log p(x_n, z_n = l_n)` where the label is known (computed
        in chunks of ``chunk_size`` rows, as :meth:`fit`)."""
        return self._scored(x, chunk_size, lambda lp: lp.logsumexp(-1), obs_mask, labels)

    def posterior(self, x, obs_mask=None, labels=None, chunk_size=None):
        """Responsibilities :math:`p(z_n = k | x_n)`, shape ``(N, K)`` (given the observed
        part with ``obs_mask``; one-hot where ``labels`` are known; in chunks as
        :meth:`log_prob`)."""
        return self._scored(x, chunk_size, lambda lp: lp.softmax(-1), obs_mask, labels)

    def predict(self, x, obs_mask=None, labels=None, chunk_size=None):
        """Most probable component of each point, shape ``(N,)`` (in chunks as
        :meth:`log_prob`)."""
        return self._scored(x, chunk_size, lambda lp: lp.argmax(-1), obs_mask, labels)

