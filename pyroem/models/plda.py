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
import weakref
from typing import NamedTuple

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.infer.posteriors import GaussianPosterior
from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import as_float_tensor, check_finite, check_matrix, check_positive_int


# ---------------------------------------------------------------------- labels
def encode_labels(labels):
    """
    Speaker labels as contiguous integer codes.

    :param labels: a 1-d sequence, array or tensor of hashable values (integers,
        strings, ...), not necessarily contiguous.
    :returns: ``(codes, speakers)``: a ``LongTensor`` of shape ``(N,)`` with values in
        ``0..S-1`` and the list of the ``S`` distinct labels, ``speakers[codes[i]] ==
        labels[i]``. Labels are sorted when they can be compared, else kept in order of
        first appearance.
    :raises ValueError: when ``labels`` is not 1-d, is empty, or holds an unhashable
        value or NaN.
    """
    if isinstance(labels, (str, bytes)):
        raise ValueError("labels must be a sequence of labels, one per embedding, not a string")
    if torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-dimensional, got shape {tuple(labels.shape)}")
        if not torch.is_tensor(labels) and labels.dtype.kind in "iub":
            labels = torch.as_tensor(labels)
        if torch.is_tensor(labels) and not labels.is_floating_point() and not labels.is_complex():
            # Fast path for integer labels: one sort.
            if labels.numel() == 0:
                raise ValueError("labels is empty")
            uniques, codes = torch.unique(labels.cpu(), sorted=True, return_inverse=True)
            return codes.long(), uniques.tolist()
        labels = labels.tolist()
    try:
        values = list(labels)
    except TypeError:
        raise ValueError(f"labels must be a 1-d sequence, got {type(labels).__name__}") from None
    if not values:
        raise ValueError("labels is empty")
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("labels contain NaN")
    try:
        first_seen = list(dict.fromkeys(values))
    except TypeError as e:
        raise ValueError(f"labels must be hashable values: {e}") from None
    try:
        speakers = sorted(first_seen)
    except TypeError:  # mixed types that do not compare: keep order of appearance
        speakers = first_seen
    index = {s: i for i, s in enumerate(speakers)}
    return torch.tensor([index[v] for v in values], dtype=torch.long), speakers


# ---------------------------------------------------------------------- data summaries
class _Summary(NamedTuple):
    counts: torch.Tensor  # (S,) n_s, in the data's dtype
    means: torch.Tensor  # (S, D) speaker means minus shift
    within_scatter: torch.Tensor  # (D, D) sum_s sum_i (x_si - xbar_s)(x_si - xbar_s)^T
    shift: torch.Tensor  # (D,) data mean (centring keeps float32 well conditioned)


# (id(x), id(speaker)) -> (weakrefs, versions, summary). The data is constant across EM
# iterations and enters the E-step only through these statistics, so an iteration costs
# O(S D^2 + D^3), independent of the number of embeddings.
_CACHE = {}


def _compute_summary(x, speaker):
    if speaker.shape != x.shape[:1]:
        raise ValueError(f"speaker codes must have shape ({x.shape[0]},), got "
                         f"{tuple(speaker.shape)}")
    if speaker.numel() and int(speaker.min()) < 0:
        raise ValueError("speaker codes must be >= 0")
    counts = torch.bincount(speaker).to(x.dtype)
    if (counts == 0).any():
        raise ValueError("speaker codes must be contiguous 0..S-1 (see pyroem.models.plda."
                         "encode_labels)")
    shift = x.mean(0)
    xc = x - shift
    means = torch.zeros(counts.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, speaker, xc)
    means /= counts.unsqueeze(-1)
    resid = xc.sub_(means[speaker])  # in place: xc is ours
    return _Summary(counts, means, resid.T @ resid, shift)


def data_summary(x, speaker):
    """Speaker counts, centred speaker means and the within-speaker scatter of ``x``,
    cached while ``x`` and ``speaker`` are alive and unmodified."""
    if x.requires_grad:
        return _compute_summary(x.detach(), speaker)
    key = (id(x), id(speaker))
    hit = _CACHE.get(key)
    if hit is not None:
        (xref, sref), versions, summary = hit
        if xref() is x and sref() is speaker and versions == (x._version, speaker._version):
            return summary
    summary = _compute_summary(x, speaker)
    # the entry goes when either tensor dies
    refs = tuple(weakref.ref(t, lambda _, k=key: _CACHE.pop(k, None)) for t in (x, speaker))
    _CACHE[key] = (refs, (x._version, speaker._version), summary)
    return summary


# ---------------------------------------------------------------------- posterior
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


class _Basis(NamedTuple):
    transform: torch.Tensor  # T (D, D): T W T^T = I, T B T^T = diag(psi)
    inverse: torch.Tensor  # T^{-1} = L U
    psi: torch.Tensor  # (D,) between-speaker variances in the basis
    log_det_within: torch.Tensor  # log |W|


# ---------------------------------------------------------------------- the model
class PLDA(EMModel):
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

    Parameters (readable and settable): ``mean (D,)``, ``between_cov (D, D)``,
    ``within_cov (D, D)``. Data: embeddings ``(N, D)`` with ``(N,)`` labels of any
    hashable type; the Pyro ``model``/``guide``/``e_step`` take the contiguous codes of
    :func:`encode_labels`.
    """

    inits = ("scatter", "given")
    default_init = "scatter"
    max_plate_nesting = 1
    guide_params = {"q_loc": (constraints.real, 1), "q_scale_tril": (constraints.lower_cholesky, 2)}

    def __init__(self, dim, reg_covar=1e-6):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        if not (isinstance(reg_covar, (int, float)) and reg_covar >= 0):
            raise ValueError(f"reg_covar must be a number >= 0, got {reg_covar!r}")
        self.reg_covar = float(reg_covar)
        D = self.dim
        self.mean = PyroParam(torch.zeros(D))
        self.between_scale_tril = PyroParam(torch.eye(D), constraint=constraints.lower_cholesky)
        self.within_scale_tril = PyroParam(torch.eye(D), constraint=constraints.lower_cholesky)
        # The guide's q_loc (S, D) and q_scale_tril (G, D, D) are created on first use,
        # sized for the data; the buffer q_counts holds the distinct counts of the G groups.
        self.register_buffer("q_counts", None)

    # ------------------------------------------------------------------ parameters
    @property
    def between_cov(self):
        r"""Across-speaker covariance :math:`\Sigma_b`, shape ``(D, D)``."""
        tril = self.between_scale_tril.detach()
        return tril @ tril.T

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

    def _check_cov(self, name, value):
        value = check_finite(as_float_tensor(value, name, self.dtype), name)
        if tuple(value.shape) != (self.dim, self.dim):
            raise ValueError(f"{name} must have shape ({self.dim}, {self.dim}), got "
                             f"{tuple(value.shape)}")
        tril, info = torch.linalg.cholesky_ex(0.5 * (value + value.T))
        if info.any():
            raise ValueError(f"{name} must be symmetric positive definite")
        return tril

    def _basis(self):
        """The simultaneously diagonalising basis of the current covariances."""
        with torch.no_grad():
            lw = self.within_scale_tril.detach()
            lb = self.between_scale_tril.detach()
            # L^-1 Sigma_b L^-T = A A^T is symmetric PSD by construction.
            a = torch.linalg.solve_triangular(lw, lb, upper=False)
            psi, u = torch.linalg.eigh(a @ a.T)
            transform = torch.linalg.solve_triangular(lw.T, u, upper=True).T  # U^T L^-1
            return _Basis(transform, lw @ u, psi.clamp_min(0),
                          2 * lw.diagonal().log().sum())

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x, speaker):
        """``z_s ~ N(mean, between_cov)`` per speaker, ``x_i ~ N(z[speaker_i], within_cov)``.

        :param torch.Tensor x: embeddings ``(N, D)``.
        :param torch.LongTensor speaker: contiguous speaker codes ``(N,)``.
        """
        num_speakers = int(speaker.max()) + 1
        mean, between, within = self.mean, self.between_scale_tril, self.within_scale_tril
        with pyro.plate("speakers", num_speakers):
            z = pyro.sample("z", dist.MultivariateNormal(mean, scale_tril=between))
        with pyro.plate("embeddings", x.shape[0]):
            # validate_args=False: validation would materialise the (N, D, D) broadcast of
            # scale_tril (the constraint holds by construction: a lower_cholesky PyroParam)
            pyro.sample("x", dist.MultivariateNormal(z[speaker], scale_tril=within,
                                                     validate_args=False), obs=x)

    @model_method
    def guide(self, x, speaker):
        r"""``z_s ~ N(q_loc[s], q_scale_tril[g_s] q_scale_tril[g_s]^T)``: one Gaussian per
        speaker whose covariance is shared by the speakers of equal count (group
        :math:`g_s`). That family contains the exact posterior, whose covariance depends
        on :math:`n_s` only, and needs ``G D^2`` memory instead of ``S D^2``. Set
        exactly by EM's E-step, trained by SVI; starts at the prior."""
        counts = torch.bincount(speaker)
        distinct, group = torch.unique(counts, return_inverse=True)
        num_speakers, D = counts.shape[0], self.dim
        if (self._q_shape("q_loc") != (num_speakers, D)
                or self.q_counts is None or not torch.equal(self.q_counts, distinct)):
            loc = self.mean.detach().expand(num_speakers, D).clone()
            tril = self.between_scale_tril.detach().expand(distinct.shape[0], D, D).clone()
            self.q_loc = PyroParam(loc, event_dim=1)
            self.q_scale_tril = PyroParam(tril, constraint=constraints.lower_cholesky, event_dim=2)
            self.q_counts = distinct
        loc, tril = self.q_loc, self.q_scale_tril[group]  # read params outside the plate
        with pyro.plate("speakers", num_speakers):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=tril))

    def _q_shape(self, name):
        # shape of a guide parameter, read without building its constrained value
        q = self._parameters.get(name + "_unconstrained")
        return None if q is None else q.shape

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

    def e_step(self, x, speaker, hard=False):
        r"""
        The exact posterior of every :math:`z_s` and the exact :math:`\log p(X)`.

        :returns: a :class:`SpeakerPosterior`.
        :raises ValueError: for ``hard=True`` (no Viterbi training for continuous latents).
        """
        if hard:
            raise ValueError("PLDA's latent speaker means are continuous: there is no hard "
                             "(Viterbi) E-step; use method='em' or 'svi'")
        with torch.no_grad():
            summary = data_summary(x, speaker)
            basis = self._basis()
            lp, ybar, npsi = self._speaker_terms(summary, basis)
            t = basis.transform
            within_quad = ((t @ summary.within_scatter) * t).sum()  # tr(W^-1 S_w), W^-1 = T^T T
            loc = self.mean.detach() + (npsi / (1 + npsi) * ybar) @ basis.inverse.T
            distinct, group = torch.unique(summary.counts, return_inverse=True)
            variances = basis.psi / (1 + distinct.unsqueeze(-1) * basis.psi)
            log_evidence = lp.sum() - 0.5 * within_quad
        return SpeakerPosterior(log_evidence, loc, distinct, group, basis.inverse, variances)

    def write_posterior(self, posterior, x, speaker):
        """E-step: the guide's ``q(z_s)`` := the exact posterior."""
        post = posterior
        loc, tril = post.loc, post.scale_tril
        if self._q_shape("q_loc") != loc.shape or self._q_shape("q_scale_tril") != tril.shape:
            self.q_loc = PyroParam(loc, event_dim=1)
            self.q_scale_tril = PyroParam(tril, constraint=constraints.lower_cholesky, event_dim=2)
        else:
            self.q_loc = loc
            self.q_scale_tril = tril
        self.q_counts = post.counts.long()

    def expected_statistics(self, posterior, x, speaker):
        r"""
        Expected sufficient statistics, additive over speakers: ``num_speakers``,
        ``num_embeddings``, ``sum_z`` (:math:`\sum_s m_s`), ``sum_zz``
        (:math:`\sum_s C_{n_s} + m_s m_s^\top`) and ``sum_within``
        (:math:`\sum_s \sum_i E_q[(x_{si} - z_s)(x_{si} - z_s)^\top]`), all about
        ``shift`` (the data mean).
        """
        summary = data_summary(x, speaker)
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
        trils = []
        for name, cov in (("between_cov", between), ("within_cov", within)):
            cov = 0.5 * (cov + cov.T) + self.reg_covar * torch.eye(
                self.dim, dtype=cov.dtype, device=cov.device)
            tril, info = torch.linalg.cholesky_ex(cov)
            if info.any():
                raise ValueError(f"the M-step produced a {name} that is not positive definite; "
                                 "increase reg_covar or reduce dim (e.g. LDA projection)")
            trils.append(tril)
        self.mean = mean_c + stats["shift"]
        self.between_scale_tril, self.within_scale_tril = trils

    # ------------------------------------------------------------------ fitting hooks
    def fit(self, embeddings, labels, method="em", **kwargs):
        r"""
        Fit :math:`\mu, \Sigma_b, \Sigma_w` to labelled embeddings.

        :param embeddings: ``(N, D)`` array or tensor.
        :param labels: ``(N,)`` speaker labels, any hashable values.
        :param str method: ``"em"`` (exact EM) or ``"svi"`` (Pyro's SVI with
            ``Trace_ELBO`` on the same model and guide). ``"viterbi"`` raises
            ``ValueError``: the latents are continuous.
        :param kwargs: as :meth:`pyroem.models.EMModel.fit` (``max_iter``, ``tol``,
            ``init`` in ``("scatter", "given")``, ``seed``, ``progress``, ``lr``).
        """
        if method == "viterbi":
            raise ValueError("method='viterbi' does not apply to PLDA: its latent speaker "
                             "means are continuous (use method='em' or 'svi')")
        return super().fit(embeddings, labels, method=method, **kwargs)

    def _svi_elbo(self):
        return pyro.infer.Trace_ELBO()

    def _prepare(self, embeddings, labels, dtype=None):
        x = check_matrix(embeddings, self.dim, "embeddings", dtype)
        speaker, _ = encode_labels(labels)
        if speaker.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have one entry per embedding: got {speaker.shape[0]} "
                             f"labels for {x.shape[0]} embeddings")
        return x, speaker.to(x.device)

    def _check_fit(self, args):
        x, speaker = args
        num_speakers = int(speaker.max()) + 1
        if num_speakers < 2:
            raise ValueError("fit needs embeddings of at least 2 speakers")
        if x.shape[0] <= num_speakers:
            raise ValueError("fit needs at least one speaker with two or more embeddings "
                             "(otherwise within_cov cannot be told from between_cov)")

    def _num_items(self, args):
        return args[0].shape[0]

    def _initialize(self, args, init, generator):
        if init == "given":
            return
        summary = data_summary(*args)
        means = summary.means
        mean_c = means.mean(0)
        dev = means - mean_c
        S, N = means.shape[0], args[0].shape[0]
        self.maximize({
            "num_speakers": means.new_tensor(float(S)),
            "num_embeddings": means.new_tensor(float(N - S)),
            "sum_z": means.sum(0),
            "sum_zz": dev.T @ dev + S * torch.outer(mean_c, mean_c),
            "sum_within": summary.within_scatter,
            "shift": summary.shift,
        })

    @property
    def num_parameters(self):
        """Free parameters: the mean and two symmetric matrices."""
        D = self.dim
        return D + D * (D + 1)

    # ------------------------------------------------------------------ scoring
    def log_prob(self, embeddings, labels):
        r"""
        :math:`\log p(X_s)` of each speaker's embeddings (jointly Gaussian), shape
        ``(S,)`` in the order of :func:`encode_labels` (sorted labels).
        """
        x, speaker = self._data(embeddings, labels)
        with torch.no_grad():
            summary = data_summary(x, speaker)
            basis = self._basis()
            lp, _, _ = self._speaker_terms(summary, basis)
            resid = (x - summary.shift - summary.means[speaker]) @ basis.transform.T
            quad = torch.zeros_like(lp).index_add_(0, speaker, resid.square().sum(-1))
        return lp - 0.5 * quad

    def posterior(self, embeddings, labels):
        """The exact :class:`SpeakerPosterior` of every speaker (sorted labels)."""
        return self.e_step(*self._data(embeddings, labels))

    def sample(self, num_speakers, num_per_speaker, seed=None):
        """
        Draw embeddings from the model.

        :param int num_speakers: ``S``.
        :param num_per_speaker: an int, or ``S`` counts.
        :returns: ``(x (N, D), labels (N,), z (S, D))``.
        """
        num_speakers = check_positive_int("num_speakers", num_speakers)
        counts = torch.as_tensor(num_per_speaker).long().reshape(-1)
        if counts.numel() not in (1, num_speakers) or (counts < 1).any():
            raise ValueError(f"num_per_speaker must be an int >= 1 or {num_speakers} such counts")
        counts = counts.expand(num_speakers)
        labels = torch.repeat_interleave(torch.arange(num_speakers), counts)
        with torch.no_grad(), pyro.poutine.block():
            if seed is not None:
                pyro.set_rng_seed(seed)
            z = dist.MultivariateNormal(self.mean, scale_tril=self.between_scale_tril).sample(
                (num_speakers,))
            x = dist.MultivariateNormal(z[labels], scale_tril=self.within_scale_tril,
                                        validate_args=False).sample()
        return x, labels, z

    def score_means(self, enroll_means, enroll_counts, tests):
        r"""
        Verification log-likelihood ratios from enrolment means and counts,

        .. math::

            \mathrm{LLR}(k, t) = \log \mathcal N(x_t; m_k, C_{n_k} + \Sigma_w)
            - \log \mathcal N(x_t; \mu, \Sigma_b + \Sigma_w),

        the posterior predictive of model :math:`k` (mean :math:`\bar e_k` of
        :math:`n_k` enrolment embeddings) against the prior predictive; equal to
        :math:`\log p(E_k, x_t | \text{same}) - \log p(E_k) - \log p(x_t)`.

        :param enroll_means: ``(K, D)``.
        :param enroll_counts: ``(K,)`` numbers of enrolment embeddings (>= 1).
        :param tests: ``(M, D)`` test embeddings.
        :returns: scores ``(K, M)``.
        """
        dtype = self.dtype
        means = check_matrix(enroll_means, self.dim, "enroll_means", dtype)
        counts = check_finite(as_float_tensor(enroll_counts, "enroll_counts", dtype),
                              "enroll_counts").reshape(-1)
        if counts.shape[0] != means.shape[0] or not (counts >= 1).all():
            raise ValueError(f"enroll_counts must be {means.shape[0]} numbers >= 1")
        tests = check_matrix(tests, self.dim, "tests", dtype)
        with torch.no_grad():
            basis = self._basis()
            mu = self.mean.detach()
            ye = (means - mu) @ basis.transform.T
            yt = (tests - mu) @ basis.transform.T
            psi = basis.psi
            npsi = counts.unsqueeze(-1) * psi
            m = npsi / (1 + npsi) * ye  # posterior means, (K, D)
            a = 1 / (1 + psi / (1 + npsi))  # predictive precisions, (K, D)
            b = 1 / (1 + psi)
            yt2 = yt.square()
            # -1/2 sum_d a (y_t - m)^2 + 1/2 sum_d b y_t^2 + 1/2 log|diag a| - 1/2 log|diag b|,
            # expanded so that the (K, M) table is two matrix products
            scores = (-0.5 * (a @ yt2.T) + (a * m) @ yt.T
                      - 0.5 * (a * m.square()).sum(-1, keepdim=True) + 0.5 * (yt2 @ b)
                      + 0.5 * (a.log().sum(-1, keepdim=True) - b.log().sum()))
        return scores

    def llr(self, enroll, test):
        """
        Log-likelihood ratio of "same speaker" against "different speakers".

        :param enroll: ``(n, D)`` enrolment embeddings of one speaker (``n >= 1``;
            ``(D,)`` is one embedding).
        :param test: ``(D,)`` (returns a scalar) or ``(M, D)`` (returns ``(M,)``).
        """
        enroll = as_float_tensor(enroll, "enroll", self.dtype)
        if enroll.dim() == 1:
            enroll = enroll.unsqueeze(0)
        enroll = check_matrix(enroll, self.dim, "enroll")
        if enroll.shape[0] < 1:
            raise ValueError("enroll needs at least one embedding")
        test = as_float_tensor(test, "test", self.dtype)
        single = test.dim() == 1
        scores = self.score_means(enroll.mean(0, keepdim=True), [enroll.shape[0]],
                                  test.unsqueeze(0) if single else test)[0]
        return scores[0] if single else scores

    def score_matrix(self, enroll_sets, tests):
        """
        Scores of every enrolment set against every test embedding.

        :param enroll_sets: a list of ``K`` arrays ``(n_k, D)`` (``n_k >= 1``).
        :param tests: ``(M, D)``.
        :returns: ``(K, M)`` log-likelihood ratios.
        """
        if isinstance(enroll_sets, torch.Tensor) or not len(enroll_sets):
            raise ValueError("enroll_sets must be a non-empty list of (n_k, D) arrays")
        means, counts = [], []
        for k, e in enumerate(enroll_sets):
            e = check_matrix(e, self.dim, f"enroll_sets[{k}]", self.dtype)
            if e.shape[0] < 1:
                raise ValueError(f"enroll_sets[{k}] is empty")
            means.append(e.mean(0))
            counts.append(e.shape[0])
        return self.score_means(torch.stack(means), counts, tests)
