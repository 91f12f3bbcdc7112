r"""Simplified PLDA: a speaker subspace of rank ``r`` and a full within-speaker
covariance, trained by exact EM through the factor-analysis M-step.

Every speaker :math:`s` has ``r`` latent factors and each of its :math:`n_s` embeddings
scatters around the point they select in the subspace spanned by the columns of
:math:`V` (``(D, r)``),

.. math::

    y_s \sim \mathcal N(0, I_r), \qquad
    x_{si} | y_s \sim \mathcal N(\mu + V y_s, \Sigma_w), \qquad i = 1..n_s,

so that the speaker means :math:`\mu + V y_s` have the between-speaker covariance
:math:`\Sigma_b = V V^\top` (of rank ``r``) of the two-covariance model. With
:math:`r = D` it is the two-covariance model in another parametrisation: the same
likelihood, the same maximum, other EM iterates.

**E-step.** In the coordinates whitened by :math:`\Sigma_w = L L^\top`
(:math:`\tilde x = L^{-1} x`, :math:`\tilde V = L^{-1} V`) a speaker's :math:`n_s`
embeddings are, through their mean :math:`\bar x_s`, one observation of a factor
analyser with loadings :math:`\tilde V^\top` and isotropic noise :math:`I / n_s`: its
posterior :math:`p(y_s | X_s) = \mathcal N(m_s, C_{n_s})`,
:math:`C_n = (I + n \tilde V^\top \tilde V)^{-1}`,
:math:`m_s = n_s C_{n_s} \tilde V^\top (\tilde{\bar x}_s - \tilde \mu)`, and
:math:`\log \mathcal N(\bar x_s; \mu, \Sigma_b + \Sigma_w / n_s)` come from
:func:`~pyroem.models.factor.gaussian.factor_terms`, once per distinct count. The
evidence of a speaker adds the within-speaker part,

.. math::

    \log p(X_s) = \log \mathcal N(\bar x_s; \mu, \Sigma_b + \Sigma_w / n_s)
    - \tfrac12 \Big[\operatorname{tr}(\Sigma_w^{-1} S_s) + (n_s - 1) \log|2\pi\Sigma_w|
    + D \log n_s\Big],

with :math:`S_s = \sum_i (x_{si} - \bar x_s)(x_{si} - \bar x_s)^\top`.

**M-step** (the factor-analysis update with a full noise covariance,
:func:`~pyroem.models.factor.mstep.maximize_full_noise`): with
:math:`\tilde y = (y, 1)` and :math:`\tilde V = (V, \mu)`,

.. math::

    \tilde V = \Big(\sum_s n_s \bar x_s E[\tilde y_s]^\top\Big)
    \Big(\sum_s n_s E[\tilde y_s \tilde y_s^\top]\Big)^{-1}, \qquad
    \Sigma_w = \frac1N \Big(\sum_{s,i} x_{si} x_{si}^\top
    - \tilde V \sum_s n_s E[\tilde y_s] \bar x_s^\top\Big) + \epsilon I.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam

from pyroem.distributions.statistics import regularized_cholesky
from pyroem.models.base import model_method
from pyroem.models.checks import as_float_tensor, check_finite, check_positive_int
from pyroem.models.factor.gaussian import factor_terms
from pyroem.models.factor.mstep import factor_statistics, maximize_full_noise
from pyroem.models.plda.model import PLDA
from pyroem.models.plda.posterior import LowRankSpeakerPosterior
from pyroem.models.plda.summary import data_summary


def check_rank(rank, dim):
    """``rank`` as an int with ``1 <= rank <= dim``."""
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise ValueError(f"rank must be an int between 1 and dim={dim} (or None for the "
                         f"two-covariance model), got {rank!r}")
    if not 1 <= rank <= dim:
        raise ValueError(f"rank must be between 1 and dim={dim} (the speaker subspace lies "
                         f"in the embedding space), got {rank}")
    return rank


class LowRankPLDA(PLDA):
    r"""
    Simplified PLDA (a speaker subspace of rank ``r``; see the module docstring), made by
    ``PLDA(dim, rank=r)``: the model and guide, fitting, scoring (``llr``,
    ``score_matrix``, ``log_prob``), sampling and checkpoints of :class:`PLDA`, with the
    between-speaker covariance :math:`\Sigma_b = V V^\top`.

    The Pyro model samples ``z`` (``r`` factors per speaker, :math:`\mathcal N(0, I)`) in
    a plate over speakers and the embeddings around :math:`\mu + V z_s`; the guide holds
    :math:`q(z_s) = \mathcal N(m_s, C_{g_s})`, one covariance per distinct speaker count,
    set exactly by the E-step.

    **Initialisation** (``init="scatter"``): :math:`\mu` the mean of the speaker means,
    :math:`V` the top ``r`` eigenpairs of their covariance (:math:`V = U_r
    \Lambda_r^{1/2}`), :math:`\Sigma_w` the pooled within-speaker scatter divided by
    :math:`N - S`, plus ``reg_covar``.

    :param int dim: ``D``.
    :param int rank: ``r``, ``1 <= r <= D``.
    :param float reg_covar: added to the diagonal of :math:`\Sigma_w` after each M-step
        (:math:`\Sigma_b` needs no floor: it is singular by design when ``r < D``).

    Parameters (readable and settable, validated): ``mean (D,)``, ``speaker_loadings``
    :math:`V` ``(D, r)``, ``within_cov (D, D)``; ``between_cov`` (:math:`V V^\top`) may
    also be set to a positive semi-definite matrix of rank at most ``r``.
    """

    def __init__(self, dim, rank, reg_covar=1e-6):
        # read by _init_between during PLDA.__init__, before nn.Module's own attributes exist
        object.__setattr__(self, "_rank", check_rank(rank, check_positive_int("dim", dim)))
        super().__init__(dim, reg_covar)
        self.rank = self._rank

    def _init_between(self):
        self.loadings = PyroParam(torch.eye(self.dim, self._rank))

    # ------------------------------------------------------------------ parameters
    @property
    def speaker_loadings(self):
        r"""The speaker subspace :math:`V`, shape ``(D, r)``."""
        return self.loadings.detach()

    @speaker_loadings.setter
    def speaker_loadings(self, value):
        value = check_finite(as_float_tensor(value, "speaker_loadings", self.dtype),
                             "speaker_loadings")
        if value.shape != (self.dim, self.rank):
            raise ValueError(f"speaker_loadings must have shape ({self.dim}, {self.rank}), "
                             f"got {tuple(value.shape)}")
        self.loadings = value.clone()

    @PLDA.between_cov.setter
    def between_cov(self, value):
        value = check_finite(as_float_tensor(value, "between_cov", self.dtype), "between_cov")
        if value.shape != (self.dim, self.dim) or not torch.allclose(value, value.T):
            raise ValueError(f"between_cov must be a symmetric ({self.dim}, {self.dim}) "
                             "matrix")
        values, vectors = torch.linalg.eigh(0.5 * (value + value.T))  # increasing
        tol = self.dim * torch.finfo(value.dtype).eps * values.abs().max()
        if values[0] < -tol or (self.rank < self.dim and values[-self.rank - 1] > tol):
            raise ValueError(f"between_cov of a rank-{self.rank} PLDA must be positive "
                             f"semi-definite of rank <= {self.rank}; its eigenvalues are "
                             f"{values.tolist()} (set speaker_loadings instead)")
        top = values[-self.rank:].clamp_min(0).sqrt()
        self.loadings = (vectors[:, -self.rank:] * top).contiguous()

    def _between_root(self):
        return self.loadings.detach()

    _latent_size = property(lambda self: self.rank)

    def _prior_q(self, num_speakers, num_groups):
        r = self.rank
        eye = torch.eye(r, dtype=self.dtype, device=self.loadings.device)
        return self.mean.detach().new_zeros(num_speakers, r), eye.expand(num_groups, r, r).clone()

    # ------------------------------------------------------------------ model
    @model_method
    def model(self, x, speaker):
        """``z_s ~ N(0, I_r)`` per speaker, ``x_i ~ N(mean + V z[speaker_i], within_cov)``.

        :param torch.Tensor x: embeddings ``(N, D)``.
        :param torch.LongTensor speaker: contiguous speaker codes ``(N,)``.
        """
        self._check_args(x, speaker)
        num_speakers = int(speaker.max()) + 1
        loadings, mean, within = self.loadings, self.mean, self.within_scale_tril
        prior = dist.Normal(x.new_zeros(self.rank), 1.0).to_event(1)
        with pyro.plate("speakers", num_speakers):
            z = pyro.sample("z", prior)
        with pyro.plate("embeddings", x.shape[0]):
            pyro.sample("x", dist.MultivariateNormal(mean + z[speaker] @ loadings.T,
                                                     scale_tril=within, validate_args=False),
                        obs=x)

    # ------------------------------------------------------------------ EM protocol
    def e_step(self, x, speaker, hard=False):
        r"""The exact posterior of every speaker's factors and :math:`\log p(X)`: a
        :class:`~pyroem.models.plda.LowRankSpeakerPosterior`.

        :raises ValueError: for ``hard=True`` (no Viterbi training for continuous latents).
        """
        if hard:
            raise ValueError("PLDA's latent speaker factors are continuous: there is no hard "
                             "(Viterbi) E-step; use method='em' or 'svi'")
        self._check_args(x, speaker)
        with torch.no_grad():
            summary = data_summary(x, speaker)
            lw = self.within_scale_tril.detach()
            whiten = torch.linalg.solve_triangular(lw, torch.eye(self.dim, dtype=lw.dtype,
                                                                 device=lw.device),
                                                   upper=False)  # L^-1
            loadings = (whiten @ self.loadings.detach()).T  # (r, D): V~^T
            ybar = (summary.means - (self.mean.detach() - summary.shift)) @ whiten.T
            distinct, group = torch.unique(summary.counts, return_inverse=True)
            loc, log_prob, covariance = self._group_terms(ybar, loadings, distinct, group)
            log_det_w = 2 * lw.diagonal().log().sum()
            n = summary.counts
            D = self.dim
            log_prob = (log_prob - 0.5 * log_det_w  # N(xbar; mu, B + W/n) from whitened
                        - 0.5 * ((n - 1) * (D * math.log(2 * math.pi)
                                            + log_det_w) + D * n.log()))
            within_quad = ((whiten @ summary.within_scatter) * whiten).sum()
        return LowRankSpeakerPosterior(log_prob.sum() - 0.5 * within_quad, loc, distinct,
                                       group, covariance)

    def _group_terms(self, ybar, loadings, distinct, group):
        """Factor-analysis terms of the whitened speaker means, one count at a time."""
        S, (r, D) = ybar.shape[0], loadings.shape
        loc, log_prob = ybar.new_empty(S, r), ybar.new_empty(S)
        covariance = ybar.new_empty(distinct.shape[0], r, r)
        origin = ybar.new_zeros(D)
        for g, n in enumerate(distinct.tolist()):
            index = (group == g).nonzero().squeeze(-1)
            terms = factor_terms(ybar[index], loadings, origin, ybar.new_full((D,), 1 / n))
            log_prob[index], loc[index], covariance[g] = terms
        return loc, log_prob, covariance

    def expected_statistics(self, posterior, x, speaker):
        r"""The factor-analysis statistics of the speaker means weighted by their counts
        (:func:`~pyroem.models.factor.mstep.factor_statistics` with a full ``sxx``, to
        which the within-speaker scatter is added), additive over speakers, about
        ``shift`` (the data mean)."""
        self._check_args(x, speaker)
        summary = data_summary(x, speaker)
        post = posterior
        sizes = torch.bincount(post.group, minlength=post.counts.shape[0]).to(x.dtype)
        n = summary.counts
        # sum_s n_s C_{n_s} / N: factor_statistics multiplies one covariance by N
        covariance = post.weighted_covariance_sum(sizes * post.counts) / n.sum()
        stats = factor_statistics(summary.means, n.unsqueeze(0), post.loc.unsqueeze(0),
                                  covariance.unsqueeze(0), torch.zeros_like(summary.shift),
                                  full_noise=True)
        stats["sxx"] = stats["sxx"] + summary.within_scatter
        stats["shift"] = summary.shift
        return stats

    def maximize(self, stats):
        """M-step: :math:`V`, :math:`\\mu` and :math:`\\Sigma_w` (module docstring)."""
        loadings, means, within = maximize_full_noise(stats)
        tril = regularized_cholesky(within, self.reg_covar,
                                    "a within_cov that is not positive definite; increase "
                                    "reg_covar or reduce dim (e.g. LDA projection)")
        with self.internal_updates():
            self.loadings = loadings[0].T.contiguous()
            self.mean = means[0]
            self.within_scale_tril = tril

    # ------------------------------------------------------------------ fitting hooks
    def _initialize(self, args, init, generator):
        if init == "given":
            return
        summary = data_summary(*args)
        means = summary.means
        dev = means - means.mean(0)
        values, vectors = torch.linalg.eigh(dev.T @ dev / means.shape[0])
        top = values[-self.rank:].clamp_min(0).sqrt()
        within = summary.within_scatter / (args[0].shape[0] - means.shape[0])
        tril = regularized_cholesky(within, self.reg_covar,
                                    "a within-speaker scatter that is not positive definite "
                                    "at initialisation; increase reg_covar")
        with self.internal_updates():
            self.mean = means.mean(0) + summary.shift
            self.loadings = (vectors[:, -self.rank:] * top).contiguous()
            self.within_scale_tril = tril

    @property
    def num_parameters(self):
        r"""Free parameters: the mean, :math:`Dr - r(r-1)/2` loadings (up to rotation) and
        the symmetric within covariance."""
        D, r = self.dim, self.rank
        return D + D * r - r * (r - 1) // 2 + D * (D + 1) // 2
