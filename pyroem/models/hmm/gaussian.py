r"""
Gaussian emissions, :math:`x_t | z_t = k \sim \mathcal N(\mu_k, \Sigma_k)`, and
:class:`GaussianHMM`.
"""

import pyro
import torch

from pyroem.distributions import missing
from pyroem.models import gaussian_direct as gd
from pyroem.models import gaussian_emission as ge
from pyroem.models import gaussian_missing as gm
from pyroem.models.checks import (
    CheckedParams,
    check_option,
    check_positive_int,
    check_real,
    check_reg_covar,
)
from pyroem.models.hmm import fused
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.sequences import check_padded, pack_sequences
from pyroem.models.kmeans import kmeans


class GaussianEmission(CheckedParams, Emission):
    r"""
    One Gaussian per state, :math:`p(x | z = k) = \mathcal N(x | \mu_k, \Sigma_k)`, with
    the scikit-learn/hmmlearn covariance shapes (:mod:`~pyroem.models.gaussian_emission`,
    shared with :class:`~pyroem.models.GaussianMixture`). Letters: ``m`` means, ``c``
    covariances.

    Statistics: with :math:`\gamma_t(k)` as responsibilities, the weighted moments
    :math:`n_k = \sum_t \gamma_t(k)`, :math:`s_k = \sum_t \gamma_t(k) x_t`,
    :math:`S_k = \sum_t \gamma_t(k) x_t x_t^\top` (about a fixed shift); the M-step is the
    Gaussian mixture one (:func:`~pyroem.models.gaussian_emission.maximize`). Log-densities
    and moments are computed state-major, ``(T, K, B)``, the recursions' layout.

    :param int num_states: ``K``.
    :param int dim: ``D``.
    :param str covariance_type: ``"full"`` (``covariances (K, D, D)``), ``"diag"``
        (``(K, D)``), ``"spherical"`` (``(K,)``) or ``"tied"`` (``(D, D)``).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    """

    letters = "mc"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"
    checked_params = ("means",)

    def __init__(self, num_states, dim=1, covariance_type="full", reg_covar=1e-6):
        super().__init__(num_states)
        self.dim = check_positive_int("dim", dim)
        self.covariance_type = check_option("covariance_type", covariance_type, ge.COVARIANCE_TYPES)
        self.reg_covar = check_reg_covar(reg_covar)
        ge.init_params(self, covariance_type, (self.num_states,), self.dim)

    @property
    def covariances(self):
        """Covariances in hmmlearn's/scikit-learn's shape for ``covariance_type``."""
        return ge.get_covariances(self)

    @covariances.setter
    def covariances(self, value):
        ge.set_covariances(self, value, (self.num_states,))

    def _check_param(self, name, value):
        return check_real(value, "means", (self.num_states, self.dim), self.dtype)

    def pack(self, x, lengths=None, dtype=None):
        return pack_sequences(x, lengths, dim=self.dim, dtype=dtype)

    def check(self, x, lengths):
        return check_padded(x, lengths, dim=self.dim, dtype=self.dtype)

    def observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", ge.distribution(self, (z,)), obs=x_t)

    def log_prob(self, x, grad=False):
        # computed state-major, (T, K, B), the layout of the forward-backward recursion
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            if gd.direct_applies(self, x):  # small: a few elementwise passes
                return gd.direct_log_prob(self, x)
            return ge.state_major_log_prob(self, x).permute(2, 0, 1)

    def observe_masked(self, t, z, x_t, mask_t):
        """Step ``t`` with some dimensions missing: the marginal of the observed ones."""
        pyro.sample(f"x_{t}", gm.distribution(self, z, mask_t), obs=x_t)

    def masked_log_prob(self, x, obs_mask, grad=False):
        r""":math:`\log \mathcal N(x_{b,t,o} | \mu_{k,o}, \Sigma_{k,oo})` for the observed
        dimensions :math:`o` of every frame, ``(B, T, K)`` (0 on a frame with none)."""
        B, T, D = x.shape
        flat, mask = x.reshape(B * T, D), obs_mask.reshape(B * T, D)
        if grad and torch.is_grad_enabled():
            lp = missing.marginal_log_prob(flat, mask, self.means,
                                           **gm.covariance_args(self, grad=True))
        else:
            lp = gm.log_prob(self, flat, mask)
        return lp.reshape(B, T, self.num_states)

    def masked_statistics(self, gamma, x, obs_mask):
        """The expected complete-data moments given the observed dimensions of each frame
        (Ghahramani and Jordan, 1994; :func:`~pyroem.models.gaussian_missing.moments`)."""
        D = self.dim
        return gm.moments(self, gamma.reshape(-1, self.num_states), x.reshape(-1, D),
                          obs_mask.reshape(-1, D))

    def expected_statistics(self, gamma, x):
        if gd.direct_applies(self, x):  # small: two elementwise passes, no rounding check
            return gd.direct_moments(self, gamma, x)
        # gamma from forward_backward is a (B, T, K) view of a state-major tensor
        stats = ge.state_major_moments(gamma.permute(1, 2, 0), x, self.covariance_type)
        return ge.stable_moments(stats, self.covariance_type, self.reg_covar,
                                 lambda: (gamma.reshape(-1, self.num_states),
                                          x.reshape(-1, self.dim)))

    def maximize(self, stats, params):
        if "m" in params or "c" in params:
            ge.maximize(self, stats, "m" in params, "c" in params)

    def num_parameters(self, params):
        K, D = self.num_states, self.dim
        full = ge.num_parameters(self.covariance_type, (K,), D)
        return (K * D if "m" in params else 0) + (full - K * D if "c" in params else 0)

    def initialize(self, x, lengths, init, generator, params):
        r"""``"kmeans++"``: means and covariances of the k-means clusters of the frames;
        ``"random"``: the M-step from random responsibilities."""
        if init == "given" or not ("m" in params or "c" in params):
            return
        frames, mask = self.frames(x, lengths)
        K = self.num_states
        if init == "kmeans++":
            _, labels = kmeans(frames, K, generator)
            resp = torch.nn.functional.one_hot(labels, K).to(x.dtype)
        else:
            resp = torch.rand(frames.shape[0], K, generator=generator, dtype=x.dtype).to(x.device)
            resp = resp / resp.sum(-1, keepdim=True)
        gamma = x.new_zeros(mask.shape + (K,))
        gamma[mask] = resp
        self.maximize(self.expected_statistics(gamma, x), params)

    def sample(self, z, generator):
        return ge.sample(self, (z,), generator)


class GaussianHMM(HiddenMarkovModel):
    r"""
    HMM with Gaussian emissions :math:`x_t | z_t = k \sim \mathcal N(\mu_k, \Sigma_k)`
    (:class:`GaussianEmission`).

    The emission M-step is the Gaussian mixture one with :math:`\gamma_t(k)` as
    responsibilities (see :func:`pyroem.models.gaussian_emission.maximize`).

    :param int num_states: ``K``.
    :param int dim: ``D``.
    :param str covariance_type: ``"full"`` (``covariances (K, D, D)``), ``"diag"``
        (``(K, D)``), ``"spherical"`` (``(K,)``) or ``"tied"`` (``(D, D)``).
    :param float reg_covar: added to the covariance diagonals after each M-step.
    :param str params: trained parameters among ``"stmc"`` (start, transitions, means,
        covariances); default all.

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs (K,)``, ``trans_probs (K, K)``, ``means (K, D)``, ``covariances``.
    ``fit(init=...)``: ``"kmeans++"`` (default; means and covariances from k-means
    clusters of the frames), ``"random"`` (from random responsibilities) or ``"given"``;
    initialisation sets only trained emission parameters, start and transition
    probabilities start as set (uniform by default).
    """

    inits = GaussianEmission.inits
    default_init = GaussianEmission.default_init

    dim = emission_attribute("``D``, the dimension of a frame.")
    covariance_type = emission_attribute("``full``, ``diag``, ``spherical`` or ``tied``.")
    reg_covar = emission_attribute("Added to the covariance diagonals after each M-step.")
    means = emission_attribute("``(K, D)``.")
    covariances = emission_attribute("Covariances in hmmlearn's/scikit-learn's shape for "
                                     "``covariance_type``.")

    def __init__(self, num_states, dim=1, covariance_type="full", reg_covar=1e-6, **kwargs):
        super().__init__(num_states, **kwargs)
        self.emission = GaussianEmission(self.num_states, dim, covariance_type, reg_covar)

    def fused_step(self, x, lengths, obs_mask=None, labels=None, sample_weight=None,
                   hard=False):
        """The E-step and M-step of a small problem in one compiled call, or ``None`` where
        that does not apply (:func:`~pyroem.models.hmm.fused.fused_step`)."""
        return fused.fused_step(self, x, lengths, obs_mask, labels, sample_weight, hard)
