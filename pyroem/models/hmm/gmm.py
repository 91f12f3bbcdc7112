r"""
Gaussian-mixture emissions, :math:`x_t | z_t = k \sim \sum_m w_{km} \mathcal N(\mu_{km},
\Sigma_{km})`, and :class:`GMMHMM`.
"""

import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam

from pyroem.models import gaussian_emission as ge
from pyroem.models.checks import (
    CheckedParams,
    check_option,
    check_positive_int,
    check_real,
    check_reg_covar,
    check_simplex,
)
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.probs import map_probs, safe_log
from pyroem.models.hmm.sequences import check_padded, pack_sequences
from pyroem.models.kmeans import kmeans
from pyroem.models.simplex import simplex


class GMMEmission(CheckedParams, Emission):
    r"""
    A mixture of ``num_components`` Gaussians per state,

    .. math:: p(x | z = k) = \sum_m w_{km} \mathcal N(x | \mu_{km}, \Sigma_{km}),

    written in the Pyro model with the component :math:`m_t` as a second enumerated
    latent of each step. Letters: ``w`` weights, ``m`` means, ``c`` covariances.

    Statistics: :math:`\gamma_t(k)` split over the components by their
    responsibilities :math:`r_t(k, m) \propto w_{km} \mathcal N(x_t | \mu_{km},
    \Sigma_{km})`, and the Gaussian moments weighted by :math:`\gamma_t(k) r_t(k, m)`;
    the M-step is the Gaussian mixture one per state with
    :math:`w_{km} \propto \sum_t \gamma_t(k) r_t(k, m)`.

    :param int num_states: ``K``.
    :param int num_components: ``M``.
    :param int dim: ``D``.
    :param str covariance_type: hmmlearn's shapes: ``"full"`` ``(K, M, D, D)``, ``"diag"``
        ``(K, M, D)``, ``"spherical"`` ``(K, M)``, ``"tied"`` ``(K, D, D)`` (shared by the
        components of a state).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    """

    letters = "wmc"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"
    checked_params = ("weights", "means")

    def __init__(self, num_states, num_components=1, dim=1, covariance_type="diag",
                 reg_covar=1e-6):
        super().__init__(num_states)
        self.num_components = M = check_positive_int("num_components", num_components)
        self.dim = check_positive_int("dim", dim)
        self.covariance_type = check_option("covariance_type", covariance_type, ge.COVARIANCE_TYPES)
        self.reg_covar = check_reg_covar(reg_covar)
        K = self.num_states
        self.weights = PyroParam(torch.full((K, M), 1.0 / M), constraint=simplex)
        ge.init_params(self, covariance_type, (K, M), self.dim)

    def _check_param(self, name, value):
        K, M = self.num_states, self.num_components
        if name == "weights":
            return check_simplex(value, "weights", (K, M), self.dtype)
        return check_real(value, "means", (K, M, self.dim), self.dtype)

    @property
    def covariances(self):
        """Covariances in hmmlearn's ``GMMHMM`` shape for ``covariance_type``."""
        return ge.get_covariances(self)

    @covariances.setter
    def covariances(self, value):
        ge.set_covariances(self, value, (self.num_states, self.num_components))

    def pack(self, x, lengths=None, dtype=None):
        return pack_sequences(x, lengths, dim=self.dim, dtype=dtype)

    def check(self, x, lengths):
        return check_padded(x, lengths, dim=self.dim, dtype=self.dtype)

    def observe(self, t, z, x_t):
        m = pyro.sample(f"m_{t}", dist.Categorical(self.weights[z]),
                        infer={"enumerate": "parallel"})
        pyro.sample(f"x_{t}", ge.distribution(self, (z, m)), obs=x_t)

    def _joint_component(self, x, grad=False):
        # log w_km + log N(x_t | mu_km, Sigma_km): (B, T, K, M)
        weights = self.weights if grad else self.weights.detach()
        return ge.component_log_prob(self, x, grad) + safe_log(weights)

    def log_prob(self, x, grad=False):
        return self._joint_component(x, grad).logsumexp(-1)

    def expected_statistics(self, gamma, x):
        resp = self._joint_component(x).softmax(-1)
        return self._moments(gamma.unsqueeze(-1) * resp, x)

    def _moments(self, weights, x):
        """Gaussian moments of ``x (B, T, D)`` under ``weights (B, T, K, M)``, stable in
        the working dtype (:func:`~pyroem.models.gaussian_emission.stable_moments`)."""
        stats = ge.weighted_moments(weights, x, self.covariance_type)
        C = self.num_states * self.num_components
        return ge.stable_moments(stats, self.covariance_type, self.reg_covar,
                                 lambda: (weights.reshape(-1, C), x.reshape(-1, self.dim)))

    def maximize(self, stats, params):
        if "w" in params:
            old = self.weights.detach()
            self._set_internal(weights=map_probs(stats["n"], old.new_ones(()), old))
        if "m" in params or "c" in params:
            ge.maximize(self, stats, "m" in params, "c" in params)

    def num_parameters(self, params):
        K, M, D = self.num_states, self.num_components, self.dim
        full = ge.num_parameters(self.covariance_type, (K, M), D)
        return ((K * (M - 1) if "w" in params else 0) + (K * M * D if "m" in params else 0)
                + (full - K * M * D if "c" in params else 0))

    def initialize(self, x, lengths, init, generator, params):
        r"""``"kmeans++"``: ``K`` k-means clusters of the frames for the states, each split
        into ``M`` clusters for its components; ``"random"``: random responsibilities.
        Means and covariances are the M-step of those; the weights start as set."""
        if init == "given" or not ("m" in params or "c" in params):
            return
        frames, mask = self.frames(x, lengths)
        K, M = self.num_states, self.num_components
        if init == "kmeans++":
            labels = self._nested_kmeans(frames, generator)
            resp = torch.nn.functional.one_hot(labels, K * M).to(x.dtype)
        else:
            resp = torch.rand(frames.shape[0], K * M, generator=generator,
                              dtype=x.dtype).to(x.device)
            resp = resp / resp.sum(-1, keepdim=True)
        weights = x.new_zeros(mask.shape + (K * M,))
        weights[mask] = resp
        stats = self._moments(weights.reshape(mask.shape + (K, M)), x)
        ge.maximize(self, stats, "m" in params, "c" in params)

    def _nested_kmeans(self, frames, generator):
        """Labels ``k * M + m``: state ``k`` from ``K`` clusters of all frames, component
        ``m`` from ``M`` clusters of that state's frames (random when it has fewer)."""
        K, M = self.num_states, self.num_components
        _, state = kmeans(frames, K, generator)
        labels = state * M
        for k in range(K):
            sel = state == k
            if int(sel.sum()) >= M:
                labels[sel] += kmeans(frames[sel], M, generator)[1]
            else:
                labels[sel] += torch.randint(M, (int(sel.sum()),), generator=generator)
        return labels

    def sample(self, z, generator):
        w = self.weights.detach()[z.reshape(-1)]
        m = torch.multinomial(w, 1, generator=generator).reshape(z.shape)
        return ge.sample(self, (z, m), generator)


class GMMHMM(HiddenMarkovModel):
    r"""
    HMM whose emission in state ``k`` is a mixture of ``M`` Gaussians
    (:class:`GMMEmission`),

    .. math:: x_t | z_t = k \sim \sum_m w_{km} \mathcal N(\mu_{km}, \Sigma_{km}),

    written in the Pyro model with the component :math:`m_t` as a second enumerated
    latent of each step. The E-step splits :math:`\gamma_t(k)` over the components by
    their responsibilities :math:`r_t(k, m)`; the M-step is the Gaussian mixture one per
    state with :math:`w_{km} \propto \sum_t \gamma_t(k) r_t(k, m)`.

    :param int num_states: ``K``.
    :param int num_components: ``M`` (Pyro's name; ``num_mix``, hmmlearn's, is a
        deprecated alias).
    :param int dim: ``D``.
    :param str covariance_type: hmmlearn's shapes: ``"full"`` ``(K, M, D, D)``, ``"diag"``
        ``(K, M, D)``, ``"spherical"`` ``(K, M)``, ``"tied"`` ``(K, D, D)`` (shared by the
        components of a state).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    :param str params: trained parameters among ``"stwmc"`` (``w``: mixture weights).

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs``, ``trans_probs``, ``weights (K, M)``, ``means (K, M, D)``,
    ``covariances``. ``fit(init=...)``: ``"kmeans++"`` (default; ``K`` k-means clusters
    for the states, each split into ``M`` clusters for its components), ``"random"`` or
    ``"given"``.
    """

    inits = GMMEmission.inits
    default_init = GMMEmission.default_init

    num_components = emission_attribute("``M``, the mixture components per state.")
    dim = emission_attribute("``D``, the dimension of a frame.")
    covariance_type = emission_attribute("``full``, ``diag``, ``spherical`` or ``tied``.")
    reg_covar = emission_attribute("Added to the covariance diagonals after each M-step.")
    weights = emission_attribute("``(K, M)`` mixture weights of each state.")
    means = emission_attribute("``(K, M, D)``.")
    covariances = emission_attribute("Covariances in hmmlearn's ``GMMHMM`` shape for "
                                     "``covariance_type``.")

    def __init__(self, num_states, num_components=1, dim=1, covariance_type="diag",
                 reg_covar=1e-6, **kwargs):
        if "num_mix" in kwargs:
            num_mix = kwargs.pop("num_mix")
            if num_components != 1:
                raise TypeError("give num_components or its deprecated alias num_mix, not both")
            warnings.warn("GMMHMM(num_mix=...) is deprecated; use num_components=...",
                          FutureWarning, stacklevel=2)
            num_components = num_mix
        super().__init__(num_states, **kwargs)
        self.emission = GMMEmission(self.num_states, num_components, dim, covariance_type,
                                    reg_covar)

    @property
    def num_mix(self):
        """Deprecated alias of :attr:`num_components` (read-only)."""
        warnings.warn("GMMHMM.num_mix is deprecated; use num_components", FutureWarning,
                      stacklevel=2)
        return self.num_components
