r"""
Online EM (Cappé and Moulines, 2009, *On-line expectation-maximization algorithm for
latent data models*, JRSS B 71(3)).

Batch EM alternates the exact E-step over *all* the data with the M-step. Online EM keeps a
running average :math:`s` of the expected sufficient statistics per data item and, for
each incoming batch :math:`X_t` (of :math:`n_t` items),

.. math::

    \bar s_t = \frac{1}{n_t} E_{p(Z_t | X_t, \eta_{t-1})}[T(X_t, Z_t)], \qquad
    s_t = (1 - \rho_t)\, s_{t-1} + \rho_t\, \bar s_t, \qquad
    \eta_t = \arg\max_\eta Q(s_t),

with step sizes :math:`\rho_t = (t + t_0)^{-\kappa}`, :math:`\kappa \in (0.5, 1]`, so that
:math:`\sum_t \rho_t = \infty` and :math:`\sum_t \rho_t^2 < \infty` (the Robbins-Monro
conditions under which :math:`\eta_t` converges to a stationary point of the
log-likelihood). The first batch sets :math:`s_1 = \bar s_1`. Statistics with a shift are
combined exactly (:func:`~pyroem.distributions.merge.add_statistics`).

Because :math:`s` is a per-item average, a Dirichlet prior of the M-step counts as that
many *items*, not as that many pseudo-counts over the whole stream.
"""

import math

from pyroem.distributions.merge import add_statistics, scale_statistics


def check_schedule(kappa, t0):
    """``kappa`` in (0.5, 1] and ``t0 >= 0``, else ``ValueError``."""
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not 0.5 < kappa <= 1:
        raise ValueError(f"kappa must be a number in (0.5, 1], got {kappa!r}")
    if isinstance(t0, bool) or not isinstance(t0, (int, float)) or not 0 <= t0 < math.inf:
        raise ValueError(f"t0 must be a finite number >= 0, got {t0!r}")
    return float(kappa), float(t0)


class OnlineStatistics:
    r"""
    The running average of Cappé and Moulines' online EM.

    :param float kappa: the step-size exponent, in (0.5, 1].
    :param float t0: the step-size offset, >= 0 (larger: smaller early steps).

    :ivar int t: batches seen.
    :ivar dict stats: :math:`s_t` (``None`` before the first batch).
    """

    def __init__(self, kappa=0.6, t0=0.0):
        self.kappa, self.t0 = check_schedule(kappa, t0)
        self.t = 0
        self.stats = None

    def step_size(self, t):
        r""":math:`\rho_t = (t + t_0)^{-\kappa}` (1 for the first batch)."""
        return 1.0 if t == 1 else (t + self.t0) ** -self.kappa

    def proposal(self, batch_stats, num_items):
        """The running average after a batch of ``num_items`` items with statistics
        ``batch_stats`` (summed over the batch), without committing it (see
        :meth:`commit`), so that a refused M-step leaves the average as it was."""
        mean = scale_statistics(batch_stats, 1.0 / num_items)
        rho = self.step_size(self.t + 1)
        if self.stats is None or rho == 1.0:
            return mean
        return add_statistics(scale_statistics(self.stats, 1.0 - rho),
                              scale_statistics(mean, rho))

    def commit(self, stats):
        """Take ``stats`` (from :meth:`proposal`) as :math:`s_t`."""
        self.stats = stats
        self.t += 1
