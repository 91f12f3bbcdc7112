r"""Probabilistic linear discriminant analysis: the two-covariance model of speaker
embeddings, trained by exact EM.

Every speaker :math:`s` has a latent mean :math:`z_s` and each of its :math:`n_s`
embeddings scatters around it,

.. math::

    z_s \sim \mathcal N(\mu, \Sigma_b), \qquad
    x_{si} | z_s \sim \mathcal N(z_s, \Sigma_w), \qquad i = 1..n_s.

The latent is continuous and conjugate, so the E-step posterior is Gaussian in closed form
and everything is cheap in the basis that diagonalises both covariances at once
(Ioffe, 2006): with :math:`\Sigma_w = L L^\top` and
:math:`L^{-1} \Sigma_b L^{-\top} = U \operatorname{diag}(\psi) U^\top`, the map
:math:`T = U^\top L^{-1}` gives :math:`T \Sigma_w T^\top = I` and
:math:`T \Sigma_b T^\top = \operatorname{diag}(\psi)`. One Cholesky factorisation and one
symmetric eigendecomposition per iteration replace a factorisation per distinct
speaker count: :math:`\Sigma_b + \Sigma_w / n` is diagonal, :math:`\operatorname{diag}
(\psi + 1/n)`, in that basis for every :math:`n` (the matrix determinant lemma and Woodbury
identity become per-dimension scalar formulas), and a singular :math:`\Sigma_b`
(:math:`\psi_d = 0`) needs no inverse.
"""


import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.distributions.statistics import regularized_cholesky
from pyroem.models import partial as po
from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import (
    CheckedParams,
    check_covariance,
    check_model_data,
    check_positive_int,
    check_real,
    check_reg_covar,
)
from pyroem.models.factor.common import DataSizedGuide
from pyroem.models.plda import partial as plda_partial
from pyroem.models.plda.batches import summarised_arguments
from pyroem.models.plda.labels import encode_labels
from pyroem.models.plda.posterior import SpeakerPosterior, _Basis
from pyroem.models.plda.sampling import PLDASampling
from pyroem.models.plda.scoring import PLDAScoring
from pyroem.models.plda.summary import data_summary, scatter_statistics


class PLDA(CheckedParams, PLDAScoring, PLDASampling, DataSizedGuide, EMModel):
    r"""
    Two-covariance PLDA,

    .. math::

        z_s \sim \mathcal N(\mu, \Sigma_b), \qquad
        x_{si} | z_s \sim \mathcal N(z_s, \Sigma_w),

    written as a Pyro model (``pyro.plate`` over speakers for ``z``, a plate over
    embeddings whose ``z`` is picked by speaker label) with a guide that holds one
    Gaussian :math:`q(z_s)` per speaker.

    **E-step.** :math:`p(z_s | X_s) = \mathcal N(m_s, C_{n_s})` with
    :math:`C_n = (\Sigma_b^{-1} + n \Sigma_w^{-1})^{-1}` and
    :math:`m_s = \mu + \Sigma_b (\Sigma_b + \Sigma_w / n_s)^{-1} (\bar x_s - \mu)`; the
    evidence of one speaker, whose :math:`n_s` embeddings are jointly Gaussian with
    covariance :math:`I \otimes \Sigma_w + 1 1^\top \otimes \Sigma_b`, is

    .. math::

        \log p(X_s) = -\tfrac12 \Big[\sum_i (x_{si} - \bar x_s)^\top \Sigma_w^{-1}
        (x_{si} - \bar x_s) + (\bar x_s - \mu)^\top (\Sigma_b + \Sigma_w / n_s)^{-1}
        (\bar x_s - \mu) + (n_s - 1) \log|2\pi\Sigma_w| + \log|2\pi(\Sigma_b + \Sigma_w / n_s)|
        + D \log n_s\Big],

    all evaluated in the basis that diagonalises :math:`\Sigma_w` and :math:`\Sigma_b`
    at once (see the module docstring).

    **M-step** (:math:`S` speakers, :math:`N` embeddings, :math:`\epsilon` = ``reg_covar``):

    .. math::

        \mu = \frac1S \sum_s m_s, \quad
        \Sigma_b = \frac1S \sum_s (C_{n_s} + m_s m_s^\top) - \mu\mu^\top + \epsilon I, \quad
        \Sigma_w = \frac1N \sum_s \Big[\sum_i (x_{si} - \bar x_s)(x_{si} - \bar x_s)^\top
        + n_s (\bar x_s - m_s)(\bar x_s - m_s)^\top + n_s C_{n_s}\Big] + \epsilon I.

    **Initialisation** (``init="scatter"``): :math:`\mu` the mean of the speaker means,
    :math:`\Sigma_b` their (biased) covariance and :math:`\Sigma_w` the pooled
    within-speaker scatter divided by :math:`N - S`, each plus ``reg_covar``.

    :param int dim: ``D``, the embedding dimension.
    :param float reg_covar: added to both covariance diagonals after each M-step.
    :param int rank: ``None`` (default) for this two-covariance model; an int ``r`` gives
        the simplified PLDA of :class:`~pyroem.models.plda.LowRankPLDA` (a speaker
        subspace of rank ``r``, :math:`\Sigma_b = V V^\top`).

    Parameters (readable and settable): ``mean (D,)``, ``between_cov (D, D)``,
    ``within_cov (D, D)``; a value that is set is checked (shape, finite, covariances
    symmetric positive definite) and a refused one changes nothing. Data: embeddings
    ``(N, D)`` with ``(N,)`` labels of any hashable type (integer or boolean embeddings
    become float64); the Pyro ``model``/``guide``/``e_step`` take the prepared tensors
    (:meth:`prepare`: the contiguous codes of :func:`encode_labels`) and refuse others.
    """

    inits = ("scatter", "given")
    default_init = "scatter"
    max_plate_nesting = 1
    checked_params = ("mean",)
    guide_params = {"q_loc": (constraints.real, 1),
                    "q_scale_tril": (constraints.lower_cholesky, 2)}

    def __new__(cls, dim=None, reg_covar=1e-6, rank=None, **kwargs):
        # PLDA(dim, rank=r) is the simplified model, a subclass of its own module
        if cls is PLDA and rank is not None:
            from pyroem.models.plda.lowrank import LowRankPLDA
            return super().__new__(LowRankPLDA)
        return super().__new__(cls)

    def __init__(self, dim, reg_covar=1e-6, rank=None):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.reg_covar = check_reg_covar(reg_covar)
        self.rank = None
        D = self.dim
        self.mean = PyroParam(torch.zeros(D))
        self._init_between()
        self.within_scale_tril = PyroParam(torch.eye(D), constraint=constraints.lower_cholesky)
        # The guide's q_loc (S, D) and q_scale_tril (G, D, D) are created on first use,
        # sized for the data; the buffer q_counts holds the distinct counts of the G groups.
        self.register_buffer("q_counts", None)

    def _init_between(self):
        eye = torch.eye(self.dim)
        self.between_scale_tril = PyroParam(eye, constraint=constraints.lower_cholesky)

    # ------------------------------------------------------------------ parameters
    @property
    def between_cov(self):
        r"""Across-speaker covariance :math:`\Sigma_b`, shape ``(D, D)``."""
        root = self._between_root()
        return root @ root.T

    @between_cov.setter
    def between_cov(self, value):
        self.between_scale_tril = self._check_cov("between_cov", value)

    @property
    def within_cov(self):
        r"""Within-speaker covariance :math:`\Sigma_w`, shape ``(D, D)``."""
        tril = self.within_scale_tril.detach()
        return tril @ tril.T

    @within_cov.setter
    def within_cov(self, value):
        self.within_scale_tril = self._check_cov("within_cov", value)

    def _between_root(self):
        r"""A factor :math:`R` of :math:`\Sigma_b = R R^\top`: ``(D, D)`` lower triangular
        here, ``(D, rank)`` loadings for :class:`~pyroem.models.plda.LowRankPLDA`."""
        return self.between_scale_tril.detach()

    def _check_cov(self, name, value):
        return check_covariance(value, name, (self.dim, self.dim), self.dtype)

    def _check_param(self, name, value):
        return check_real(value, "mean", (self.dim,), self.dtype)

    def _check_args(self, x, speaker, sample_weight=None):
        """The arguments of the Pyro ``model``/``guide``/``e_step``/statistics: the
        prepared embeddings ``(N, D)`` in the model's dtype and speaker codes ``(N,)``
        (finiteness and contiguous codes are checked with the data summary, once per
        data tensor)."""
        prepare = "plda.prepare(embeddings, labels)"
        check_model_data(x, (None, self.dim), self.dtype, "x", prepare)
        if not torch.is_tensor(speaker) or speaker.shape != x.shape[:1] \
                or speaker.is_floating_point() or speaker.is_complex() \
                or speaker.dtype == torch.bool:
            got = (f"shape {tuple(speaker.shape)}, dtype {speaker.dtype}"
                   if torch.is_tensor(speaker) else type(speaker).__name__)
            raise ValueError(f"speaker must be integer codes of shape ({x.shape[0]},), one "
                             f"per embedding, got {got} (use {prepare})")
        if sample_weight is not None:
            po.check_sample_weight(sample_weight, x.shape[0], self.dtype, per="embedding")

    def _basis(self):
        """The simultaneously diagonalising basis of the current covariances."""
        with torch.no_grad():
            lw = self.within_scale_tril.detach()
            lb = self._between_root()
            # L^-1 Sigma_b L^-T = A A^T is symmetric PSD by construction.
            a = torch.linalg.solve_triangular(lw, lb, upper=False)
            psi, u = torch.linalg.eigh(a @ a.T)
            transform = torch.linalg.solve_triangular(lw.T, u, upper=True).T  # U^T L^-1
            return _Basis(transform, lw @ u, psi.clamp_min(0),
                          2 * lw.diagonal().log().sum())

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x, speaker, sample_weight=None):
        """``z_s ~ N(mean, between_cov)`` per speaker, ``x_i ~ N(z[speaker_i], within_cov)``.

        :param torch.Tensor x: embeddings ``(N, D)``.
        :param torch.LongTensor speaker: contiguous speaker codes ``(N,)``.
        :param sample_weight: ``(N,)`` weights > 0 (``poutine.scale`` per embedding).
        """
        self._check_args(x, speaker, sample_weight)
        num_speakers = int(speaker.max()) + 1
        mean, between, within = self.mean, self.between_scale_tril, self.within_scale_tril
        with pyro.plate("speakers", num_speakers):
            z = pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=between))
        with pyro.plate("embeddings", x.shape[0]), po.weight_scale(sample_weight):
            # validate_args=False: validation would materialise the (N, D, D) broadcast of
            # scale_tril (the constraint holds by construction: a lower_cholesky PyroParam)
            pyro.sample("x", dist.MultivariateNormal(z[speaker], scale_tril=within,
                                                     validate_args=False), obs=x)

    @model_method
    def guide(self, x, speaker, sample_weight=None):
        r"""``z_s ~ N(q_loc[s], q_scale_tril[g_s] q_scale_tril[g_s]^T)``: one Gaussian per
        speaker whose covariance is shared by the speakers of equal count (group
        :math:`g_s`). That family contains the exact posterior, whose covariance depends
        on :math:`n_s` only, and needs ``G D^2`` memory instead of ``S D^2``. Set
        exactly by EM's E-step, trained by SVI; starts at the prior."""
        self._check_args(x, speaker, sample_weight)
        counts = torch.bincount(speaker) if sample_weight is None else \
            torch.bincount(speaker, weights=sample_weight).to(self.dtype)  # as the E-step's
        distinct, group = torch.unique(counts, return_inverse=True)
        num_speakers = counts.shape[0]
        if (self._q_shape("q_loc") != (num_speakers, self._latent_size)
                or self.q_counts is None or not torch.equal(self.q_counts, distinct)):
            loc, tril = self._prior_q(num_speakers, distinct.shape[0])
            self._set_q(q_loc=loc, q_scale_tril=tril)
            self.q_counts = distinct
        loc, tril = self.q_loc, self.q_scale_tril[group]  # read params outside the plate
        with pyro.plate("speakers", num_speakers):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=tril))

    _latent_size = property(lambda self: self.dim, doc="the size of one speaker's latent")

    def _prior_q(self, num_speakers, num_groups):
        """The guide's starting value (the prior): ``(loc (S, D), scale_tril (G, D, D))``."""
        D = self.dim
        return (self.mean.detach().expand(num_speakers, D).clone(),
                self.between_scale_tril.detach().expand(num_groups, D, D).clone())

    # ------------------------------------------------------------------ EM protocol
    def _speaker_terms(self, summary, basis):
        """Per-speaker ``log p(X_s)`` without the within-speaker quadratic form, and the
        speaker means in the basis."""
        n = summary.counts.unsqueeze(-1)
        ybar = (summary.means - (self.mean.detach() - summary.shift)) @ basis.transform.T
        npsi = n * basis.psi
        D = self.dim
        lp = -0.5 * ((ybar.square() * n / (1 + npsi)).sum(-1) + torch.log1p(npsi).sum(-1)
                     + summary.counts * (D * math.log(2 * math.pi) + basis.log_det_within))
        return lp, ybar, npsi

    def e_step(self, x, speaker, sample_weight=None, hard=False):
        r"""
        The exact posterior of every :math:`z_s` and the exact :math:`\log p(X)`.

        :returns: a :class:`SpeakerPosterior`.
        :raises ValueError: for ``hard=True`` (no Viterbi training for continuous latents).
        """
        if hard:
            raise ValueError("PLDA's latent speaker means are continuous: there is no hard "
                             "(Viterbi) E-step; use method='em' or 'svi'")
        self._check_args(x, speaker, sample_weight)
        with torch.no_grad():
            summary = data_summary(x, speaker, sample_weight)
            basis = self._basis()
            lp, ybar, npsi = self._speaker_terms(summary, basis)
            t = basis.transform
            within_quad = ((t @ summary.within_scatter) * t).sum()  # tr(W^-1 S_w), W^-1 = T^T T
            loc = self.mean.detach() + (npsi / (1 + npsi) * ybar) @ basis.inverse.T
            distinct, group = torch.unique(summary.counts, return_inverse=True)
            variances = basis.psi / (1 + distinct.unsqueeze(-1) * basis.psi)
            log_evidence = lp.sum() - 0.5 * within_quad
        return SpeakerPosterior(log_evidence, loc, distinct, group, basis.inverse, variances)

    def write_posterior(self, posterior, x, speaker, sample_weight=None):
        """E-step: the guide's ``q(z_s)`` := the exact posterior."""
        self._set_q(q_loc=posterior.loc, q_scale_tril=posterior.scale_tril)
        # weighted counts are real numbers; whole counts stay integers, as the guide's
        self.q_counts = posterior.counts.long() if sample_weight is None else posterior.counts

    def expected_statistics(self, posterior, x, speaker, sample_weight=None):
        r"""
        Expected sufficient statistics, additive over speakers: ``num_speakers``,
        ``num_embeddings``, ``sum_z`` (:math:`\sum_s m_s`), ``sum_zz``
        (:math:`\sum_s C_{n_s} + m_s m_s^\top`) and ``sum_within``
        (:math:`\sum_s \sum_i E_q[(x_{si} - z_s)(x_{si} - z_s)^\top]`), all about
        ``shift`` (the data mean).
        """
        self._check_args(x, speaker, sample_weight)
        summary = data_summary(x, speaker, sample_weight)
        post = posterior
        m = post.loc - summary.shift
        sizes = torch.bincount(post.group, minlength=post.counts.shape[0]).to(m.dtype)
        resid = summary.means - m
        n = summary.counts
        return {
            "num_speakers": n.new_tensor(float(n.shape[0])),
            "num_embeddings": n.sum(),
            "sum_z": m.sum(0),
            "sum_zz": m.T @ m + post.weighted_covariance_sum(sizes),
            "sum_within": (summary.within_scatter + (resid * n.unsqueeze(-1)).T @ resid
                           + post.weighted_covariance_sum(sizes * post.counts)),
            "shift": summary.shift,
        }

    def maximize(self, stats):
        """M-step: the closed-form maximiser of Q (see the class docstring)."""
        mean_c = stats["sum_z"] / stats["num_speakers"]
        between = stats["sum_zz"] / stats["num_speakers"] - torch.outer(mean_c, mean_c)
        within = stats["sum_within"] / stats["num_embeddings"]
        trils = [regularized_cholesky(cov, self.reg_covar,
                                      f"a {name} that is not positive definite; increase "
                                      "reg_covar or reduce dim (e.g. LDA projection)")
                 for name, cov in (("between_cov", between), ("within_cov", within))]
        with self.internal_updates():
            self.mean = mean_c + stats["shift"]
            self.between_scale_tril, self.within_scale_tril = trils

    # ------------------------------------------------------------------ fitting hooks
    #: fit takes a list or DataLoader of (embeddings, labels) batches
    batch_kind = "labelled"

    def _summarised_arguments(self, source):
        return summarised_arguments(self, source)

    def fit(self, embeddings, labels=None, method="em", **kwargs):
        r"""
        Fit :math:`\mu, \Sigma_b, \Sigma_w` to labelled embeddings.

        :param embeddings: ``(N, D)`` array or tensor.
        :param labels: ``(N,)`` speaker labels, any hashable values (``None`` when
            ``embeddings`` is a list or ``DataLoader`` of ``(embeddings, labels)`` batches:
            exact EM on the summary that one pass accumulates,
            :mod:`pyroem.models.plda.batches`).
        :param str method: ``"em"`` (exact EM) or ``"svi"`` (Pyro's SVI with
            ``Trace_ELBO`` on the same model and guide). ``"viterbi"`` raises
            ``ValueError``: the latents are continuous.
        :param kwargs: as :meth:`pyroem.models.EMModel.fit` (``max_iter``, ``tol``,
            ``init`` in ``("scatter", "given")``, ``seed``, ``progress``, ``lr``;
            ``obs_mask``, ``sample_weight``: :mod:`pyroem.models.plda.partial`).
        """
        if method == "viterbi":
            raise ValueError("method='viterbi' does not apply to PLDA: its latent speaker "
                             "means are continuous (use method='em' or 'svi')")
        data = (embeddings,) if labels is None else (embeddings, labels)
        return super().fit(*data, method=method, **kwargs)

    def _svi_elbo(self):
        return pyro.infer.Trace_ELBO()

    partial_observation = ("obs_mask", "sample_weight")

    def _prepare(self, embeddings, labels, obs_mask=None, sample_weight=None, dtype=None):
        # missing embeddings (and zero weights) are dropped: see plda/partial.py
        speaker, _ = encode_labels(labels)
        return plda_partial.prepare(embeddings, speaker, obs_mask, sample_weight, self.dim,
                                    dtype)

    def _check_fit(self, args):
        x, speaker = args[:2]
        num_speakers = int(speaker.max()) + 1
        if num_speakers < 2:
            raise ValueError("fit needs embeddings of at least 2 speakers")
        if x.shape[0] <= num_speakers:
            raise ValueError("fit needs at least one speaker with two or more embeddings "
                             "(otherwise within_cov cannot be told from between_cov)")

    def _num_items(self, args):
        return args[0].shape[0] if len(args) == 2 else float(args[2].sum())

    def _check_fit_options(self, args, method, record_decomposition):
        po.check_decomposition(len(args) == 3, record_decomposition)

    def _initialize(self, args, init, generator):
        if init != "given":
            self.maximize(scatter_statistics(data_summary(*args)))

    @property
    def num_parameters(self):
        """Free parameters: the mean and two symmetric matrices."""
        D = self.dim
        return D + D * (D + 1)
