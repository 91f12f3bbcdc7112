"""Gaussian mixture models."""

import contextlib

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroParam

from pyroem.distributions import gaussian_design
from pyroem.distributions.merge import sum_statistics
from pyroem.distributions.statistics import split_moments
from pyroem.infer.posteriors import DiscretePosterior
from pyroem.models import gaussian_emission as ge
from pyroem.models import gaussian_missing as gm
from pyroem.models import partial as po
from pyroem.models.base import EMModel, model_method
from pyroem.models.checks import (
    CheckedParams,
    check_finite,
    check_matrix,
    check_model_data,
    check_option,
    check_positive_int,
    check_real,
    check_reg_covar,
    check_simplex,
    make_generator,
)
from pyroem.models.gmm_scoring import MixtureScoring
from pyroem.models.kmeans import kmeans
from pyroem.models.mixture_guide import PendingResponsibilities
from pyroem.models.scaling import chunked
from pyroem.models.simplex import simplex
from pyroem.ops.scaled import flushed_exp_

COVARIANCE_TYPES = ge.COVARIANCE_TYPES


def _tiny_floor(p):
    # a 0 probability is a -inf log-weight: an emptied component could give NaN (hard EM)
    return p.clamp_min(torch.finfo(p.dtype).tiny)


class GaussianMixture(PendingResponsibilities, MixtureScoring, CheckedParams, EMModel):
    r"""
    A mixture of ``K`` Gaussians in ``D`` dimensions,

    .. math::

        z_n \sim \mathrm{Categorical}(\pi), \qquad
        x_n | z_n \sim \mathcal N(\mu_{z_n}, \Sigma_{z_n}), \qquad n = 1..N,

    written as a Pyro model (``pyro.plate`` over points, ``z`` enumerated) with a guide
    that holds :math:`q(z_n)` per point. EM's closed-form M-step is

    .. math::

        N_k = \sum_n r_{nk}, \quad \pi_k = N_k / N, \quad
        \mu_k = \frac{1}{N_k} \sum_n r_{nk} x_n, \quad
        \Sigma_k = \frac{1}{N_k} \sum_n r_{nk} x_n x_n^\top - \mu_k \mu_k^\top + \epsilon I,

    with responsibilities :math:`r_{nk} = q(z_n = k)` from the E-step (one-hot with
    ``method="viterbi"``) and :math:`\epsilon` = ``reg_covar``; ``tied`` pools the
    covariances, ``diag`` keeps their diagonals, ``spherical`` the mean of the diagonal.

    :param int num_components: ``K``.
    :param int dim: ``D``.
    :param str covariance_type: ``"full"`` (``covariances`` of shape ``(K, D, D)``),
        ``"diag"`` (``(K, D)``), ``"spherical"`` (``(K,)``) or ``"tied"`` (``(D, D)``).
    :param float reg_covar: added to the covariance diagonals after each M-step.

    Parameters (scikit-learn's shapes, readable and settable): ``weights (K,)``,
    ``means (K, D)``, ``covariances``. A value that is set is checked (shape, finite,
    ``weights`` a probability vector summing to 1, covariances symmetric positive
    definite); a refused value raises ``ValueError`` and changes nothing.

    Data: ``(N, D)`` (``(N,)`` when ``D = 1``); integer or boolean data become float64.
    The Pyro ``model``, ``guide`` and :meth:`expected_statistics` take the prepared tensor
    (:meth:`prepare`) and refuse any other shape or dtype.
    """

    inits = ("kmeans++", "random", "given")
    checked_params = ("weights", "means")
    default_init = "kmeans++"
    guide_params = {"q_probs": (simplex, 1)}
    batch_kind = "matrix"  # fit takes a list or DataLoader of (n, D) batches

    def __init__(self, num_components, dim=1, covariance_type="full", reg_covar=1e-6):
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.dim = check_positive_int("dim", dim)
        self.covariance_type = check_option("covariance_type", covariance_type, COVARIANCE_TYPES)
        self.reg_covar = check_reg_covar(reg_covar)
        K, D = self.num_components, self.dim
        self.weights = PyroParam(torch.full((K,), 1.0 / K), constraint=simplex)
        ge.init_params(self, covariance_type, (K,), D)
        # The guide's q_probs (N, K) is created on first use, sized for the data.

    # ------------------------------------------------------------------ parameters
    @property
    def covariances(self):
        """Covariances in scikit-learn's shape for ``covariance_type``."""
        return ge.get_covariances(self)

    @covariances.setter
    def covariances(self, value):
        ge.set_covariances(self, value, (self.num_components,))

    def _check_param(self, name, value):
        K, D = self.num_components, self.dim
        if name == "weights":
            return _tiny_floor(check_simplex(value, "weights", (K,), self.dtype))
        return check_real(value, "means", (K, D), self.dtype)

    def _check_x(self, x):
        """The model's argument: the prepared ``(N, D)`` tensor in the model's dtype
        (``(N,)`` too when ``D = 1``), never reshaped into other points."""
        if torch.is_tensor(x) and x.dim() == 1 and self.dim == 1:
            x = x.unsqueeze(-1)
        return check_model_data(x, (None, self.dim), self.dtype, "x", "gmm.prepare(x)")

    def _check_partial(self, x, obs_mask, labels, sample_weight):
        """The partial-observation arguments of the Pyro model and the statistics, as
        :meth:`prepare` returns them (bool mask of ``x``'s shape, long labels in
        ``[-1, K)``, ``(N,)`` weights >= 0 in the model's dtype)."""
        if obs_mask is not None:
            po.check_obs_mask(obs_mask, x.shape)
        if labels is not None:
            po.check_labels(labels, x.shape[:1], self.num_components)
        if sample_weight is not None:
            po.check_sample_weight(sample_weight, x.shape[0], self.dtype)

    def _emission(self, z, obs_mask=None):
        if obs_mask is None:
            return ge.distribution(self, (z,))
        return gm.distribution(self, z, obs_mask)

    # ------------------------------------------------------------------ model and guide
    @model_method
    def model(self, x, obs_mask=None, labels=None, sample_weight=None):
        r"""``z_n ~ Categorical(weights)``, ``x_n ~ N(means[z_n], covariances[z_n])``.

        :param torch.Tensor x: ``(N, D)`` in the model's dtype (as :meth:`prepare`
            returns it); any other shape or dtype is a ``ValueError``.
        :param obs_mask: ``(N, D)`` bool, True = observed: the observation is the
            marginal of the observed dimensions
            (:class:`~pyroem.distributions.missing.MaskedGaussian`), masked out for a
            point with none.
        :param labels: ``(N,)``, ``-1`` = unknown: a factor
            :math:`\log \mathbb 1[z_n = l_n]` clamps the known components.
        :param sample_weight: ``(N,)``: ``poutine.scale`` per point (Pyro's
            ``TraceEnum_ELBO`` takes it; :meth:`e_step` applies it itself)."""
        x = self._check_x(x)
        self._check_partial(x, obs_mask, labels, sample_weight)
        with pyro.plate("data", x.shape[0]), po.weight_scale(sample_weight):
            z = pyro.sample("z", dist.Categorical(self.weights), infer={"enumerate": "parallel"})
            if labels is not None:
                clamp = po.label_clamp(labels, self.num_components, x.dtype)
                pyro.factor("labels", clamp[torch.arange(x.shape[0]), z])
            observed = None if obs_mask is None else obs_mask.any(-1)
            with poutine.mask(mask=observed) if observed is not None else contextlib.nullcontext():
                pyro.sample("x", self._emission(z, obs_mask), obs=x)

    @model_method
    def guide(self, x, obs_mask=None, labels=None, sample_weight=None):
        """``z_n ~ Categorical(q_n)``: the local posterior, one row of ``q_probs`` per point
        (set exactly by EM's E-step, trained by SVI)."""
        n = self._check_x(x).shape[0]
        self._write_pending_q()
        if self._q_rows() != n:
            init = torch.full((n, self.num_components), 1.0 / self.num_components, dtype=self.dtype)
            self.q_probs = PyroParam(init, constraint=simplex, event_dim=1)
        probs = self.q_probs
        if labels is not None:  # a labelled latent's posterior is a point mass, exactly
            onehot = torch.nn.functional.one_hot(labels.clamp_min(0), self.num_components)
            probs = torch.where((labels >= 0).unsqueeze(-1), onehot.to(probs.dtype), probs)
        with pyro.plate("data", n), po.weight_scale(sample_weight):
            pyro.sample("z", dist.Categorical(probs), infer={"enumerate": "parallel"})

    # ------------------------------------------------------------------ EM protocol
    def e_step(self, x, obs_mask=None, labels=None, sample_weight=None, hard=False):
        r"""
        The exact posterior of every :math:`z_n`, :math:`r_{nk} = p(z_n = k | x_n)`, from
        the ``(N, K)`` log-joints :math:`\log p(x_n, z_n = k)` directly (one GEMM over the
        cached data features), with ``log_evidence`` :math:`= \sum_n w_n \log p(x_n)`
        (``hard``: :math:`\max_k`). It is what Pyro's exact enumeration of :meth:`model`
        gives (:func:`~pyroem.infer.exact_posterior`; the tests hold them equal), without
        the enumeration's bookkeeping and backward pass, and in float32 with the
        exponentials kept off their slow path (:func:`~pyroem.ops.scaled.flushed_exp_`):
        both dtypes at GEMM speed.

        :returns: a :class:`~pyroem.infer.posteriors.DiscretePosterior` whose ``"x"``
            marginal is the ``(K, N)`` responsibilities.
        """
        x = self._check_x(x)
        self._check_partial(x, obs_mask, labels, sample_weight)
        if obs_mask is None:  # (masked entries may hold anything, NaN included)
            check_finite(x, "the observed value of site 'x'")
        weight = 1.0 if sample_weight is None else sample_weight
        # component-major (K, N), as the log-joints come out of their product: every pass
        # below is contiguous and reduces across rows (bench/gmm.py: the (N, K) view's
        # strided passes cost as much as the E-step's GEMM in float32)
        lj = self._log_joint(x, obs_mask, labels).T
        if hard:
            best, index = lj.max(0)
            resp = torch.nn.functional.one_hot(index, self.num_components).to(lj.dtype)
            return DiscretePosterior((weight * best).sum(), {"x": resp.T})
        top = lj.amax(0, keepdim=True)
        # in place on the fresh log-joints: a new (K, N) tensor per pass is page faults
        resp = flushed_exp_(lj.sub_(top))
        total = resp.sum(0, keepdim=True)
        norm = (top + total.log()).squeeze(0)
        resp = resp.div_(total)
        if obs_mask is not None:  # as the enumeration: no marginal where 'x' is masked out
            resp = resp * obs_mask.any(-1)
        return DiscretePosterior((weight * norm).sum(), {"x": resp})

    def _responsibilities(self, posterior, obs_mask, labels):
        """``(K, N)``: ``posterior["x"]``, and where ``x`` is masked out (a point with no
        observed value, whose 'x' has no marginal) the posterior given the label alone:
        the label's one-hot where known, the weights otherwise."""
        resp = posterior["x"]
        if obs_mask is None:
            return resp
        seen = obs_mask.any(-1)
        if bool(seen.all()):
            return resp
        fill = self.weights.detach().unsqueeze(-1).expand_as(resp)
        if labels is not None:
            onehot = torch.nn.functional.one_hot(labels.clamp_min(0), self.num_components)
            fill = torch.where(labels >= 0, onehot.T.to(resp.dtype), fill)
        return torch.where(seen, resp, fill)

    def expected_statistics(self, posterior, x, obs_mask=None, labels=None,
                            sample_weight=None):
        r"""
        Expected sufficient statistics, additive over points: ``n`` (:math:`N_k`),
        ``sx`` and ``sxx`` (first and second moments about ``shift``, the data mean;
        ``sxx`` is ``(K, D*D)`` for full/tied covariances, ``(K, D)`` otherwise); those of
        several batches merge exactly with :func:`~pyroem.distributions.merge.add_statistics`.
        Responsibilities are multiplied by ``sample_weight``; with ``obs_mask`` the
        moments are those of the complete data given the observed part
        (:func:`~pyroem.models.gaussian_missing.moments`), and a point with no observed
        value and no label counts for nothing (as if dropped).
        """
        x = self._check_x(x)
        self._check_partial(x, obs_mask, labels, sample_weight)
        resp = posterior["x"]  # (K, N): q(z_n = k), or one-hot for hard EM
        if resp.shape != (self.num_components, x.shape[0]):
            raise ValueError(f"the posterior of 'x' must have shape ({self.num_components}, "
                             f"{x.shape[0]}) for these data, got {tuple(resp.shape)}")
        resp = self._responsibilities(posterior, obs_mask, labels)
        keep = self._kept(x, obs_mask, labels, sample_weight)
        if keep is not None:
            resp = resp * keep
        if obs_mask is not None:
            return gm.moments(self, resp.T, x, obs_mask)
        kind = "full" if self.covariance_type in ("full", "tied") else "diag"
        shift, design = gaussian_design(x, kind)  # [quad, lin, 1]
        stats = split_moments(resp @ design, shift)  # every moment in one product
        # components whose covariance that product cannot resolve in this dtype (float32,
        # a component far from the data mean with a tiny spread) get theirs about their
        # own mean
        return ge.stable_moments(stats, self.covariance_type, self.reg_covar,
                                 lambda: (resp.T, x))

    @staticmethod
    def _kept(x, obs_mask, labels, sample_weight):
        """``(N,)`` weight of each point in the statistics (``None``: all 1): the sample
        weight, times 0 for a point with nothing observed (no value, no label)."""
        keep = sample_weight
        if obs_mask is not None:
            seen = obs_mask.any(-1) if labels is None else obs_mask.any(-1) | (labels >= 0)
            keep = seen.to(x.dtype) if keep is None else keep * seen
        return keep

    def maximize(self, stats):
        """M-step: the closed-form maximiser of Q (see the class docstring)."""
        # As scikit-learn: 10 eps keeps an empty component's mean finite (0/eps).
        nk = stats["n"] + 10 * torch.finfo(stats["n"].dtype).eps
        with self.internal_updates():
            ge.maximize(self, stats)
            self.weights = _tiny_floor(nk / nk.sum())

    # ------------------------------------------------------------------ fitting hooks
    partial_observation = ("obs_mask", "labels", "sample_weight")

    def _prepare(self, x, obs_mask=None, labels=None, sample_weight=None, dtype=None):
        if obs_mask is None:
            x = check_matrix(x, self.dim, "x", dtype)
        else:
            x, obs_mask = po.masked_matrix(x, obs_mask, self.dim,
                                           lambda v: check_matrix(v, self.dim, "x", dtype))
        if labels is not None:
            labels = po.check_labels(labels, x.shape[:1], self.num_components)
        if sample_weight is not None:
            sample_weight = po.check_sample_weight(sample_weight, x.shape[0], x.dtype)
        return po.trim(x, obs_mask, labels, sample_weight)

    def _check_fit(self, args):
        x, obs_mask, labels, weight = args + (None,) * (4 - len(args))
        keep = self._kept(x, obs_mask, labels, weight)
        n = x.shape[0] if keep is None else int((keep > 0).sum())
        if n < self.num_components:
            raise ValueError(f"fit needs at least num_components={self.num_components} "
                             f"points (with an observed value and a weight > 0), got {n}")

    def _check_fit_options(self, args, method, record_decomposition):
        po.check_decomposition(len(args) == 4, record_decomposition)

    def _num_items(self, args):
        x, obs_mask, labels, weight = args + (None,) * (4 - len(args))
        keep = self._kept(x, obs_mask, labels, weight)
        return x.shape[0] if keep is None else float(keep.sum())

    def _feature_width(self):
        # the cached design [vec(x x^T), x, 1] (or [x * x, x, 1]) per row
        D = self.dim
        return D * D + D + 1 if self.covariance_type in ("full", "tied") else 2 * D + 1

    def _initialize(self, args, init, generator):
        x, obs_mask, labels, weight = args + (None,) * (4 - len(args))
        if init == "given":
            return
        if obs_mask is not None:  # k-means and the first M-step on mean-imputed data
            x = gm.imputed(x, obs_mask)
        n, K = x.shape[0], self.num_components
        if init == "kmeans++" and labels is not None:  # each known class seeds its component
            resp = po.labelled_kmeans(x, labels, K, generator)
        elif init == "kmeans++":
            _, assigned = kmeans(x, K, generator)
            resp = torch.nn.functional.one_hot(assigned, K).to(x.dtype)
        else:  # "random": random responsibilities, as scikit-learn
            resp = torch.rand(n, K, generator=generator, dtype=x.dtype).to(x.device)
            resp = resp / resp.sum(-1, keepdim=True)
            if labels is not None:  # labelled rows one-hot, components renumbered to them
                resp = po.seed_responsibilities(resp, labels)
        rows = None if len(args) > 1 else self._chunk_rows(args, None)
        if rows is None:  # in one piece (always with the partial observation)
            self.maximize(self.expected_statistics(DiscretePosterior.given(x=resp.T), x, None,
                                                   None, weight))
            return
        # past the memory budget: the statistics of row chunks, merged exactly
        parts = (self.expected_statistics(DiscretePosterior.given(x=r.T), c)
                 for r, c in zip(chunked(resp, rows), chunked(x, rows)))
        self.maximize(sum_statistics(parts))

    @property
    def num_parameters(self):
        """Free parameters (as scikit-learn's ``_n_parameters``)."""
        K = self.num_components
        return ge.num_parameters(self.covariance_type, (K,), self.dim) + K - 1

    def sample(self, num_samples, seed=None):
        """Draw ``num_samples`` points; returns ``(x (n, D), z (n,))``.

        The draws come from a ``torch.Generator`` of their own (seeded with ``seed``, a
        fresh seed when ``None``): the global random state (torch's, numpy's, Python's)
        is neither read nor changed."""
        num_samples = check_positive_int("num_samples", num_samples)
        generator = make_generator(seed)
        with torch.no_grad():
            z = torch.multinomial(self.weights.detach(), num_samples, replacement=True,
                                  generator=generator)
            x = ge.sample(self, (z,), generator)
        return x, z
