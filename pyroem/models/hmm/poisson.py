r"""
Poisson emissions, :math:`x_{td} | z_t = k \sim \mathrm{Poisson}(\lambda_{kd})`
independently over the ``dim`` features of a frame, and :class:`PoissonHMM`.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.checks import CheckedParams, check_positive
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.counts import CountEmission
from pyroem.models.kmeans import kmeans


def _floor(rates):
    # a rate of exactly zero would make any positive count impossible (log 0)
    return rates.clamp_min(torch.finfo(rates.dtype).tiny)


class PoissonEmission(CheckedParams, CountEmission):
    r"""
    Independent Poisson counts per state,

    .. math:: \log p(x | z = k) = \sum_d x_d \log\lambda_{kd} - \lambda_{kd} - \log x_d!.

    Letter: ``r`` (rates). Statistics: :math:`n_k = \sum_t \gamma_t(k)` and
    :math:`s_k = \sum_t \gamma_t(k) x_t`; M-step :math:`\lambda_k = s_k / n_k` (hmmlearn's
    ``PoissonHMM`` without a prior; a state without mass keeps its rates).

    :param int num_states: ``K``.
    :param int dim: ``D``, counts per frame.
    """

    letters = "r"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"
    checked_params = ("rates",)

    def __init__(self, num_states, dim=1):
        super().__init__(num_states, dim)
        self.rates = PyroParam(torch.ones(self.num_states, self.dim),
                               constraint=constraints.positive)

    def _check_param(self, name, value):
        return check_positive(value, name, (self.num_states, self.dim), self.dtype)

    def observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", dist.Poisson(self.rates[z]).to_event(1), obs=x_t)

    def log_prob(self, x, grad=False):
        rates = self.rates if grad else self.rates.detach()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            # sum_d x_d log(rate_kd) as one product; log x! once per frame
            log_norm = torch.lgamma(x + 1).sum(-1, keepdim=True)
            return x @ rates.log().T - rates.sum(-1) - log_norm

    def expected_statistics(self, gamma, x):
        return self.frame_moments(gamma, x)

    def maximize(self, stats, params):
        if "r" not in params:
            return
        n = stats["n"].unsqueeze(-1)
        old = self.rates.detach()
        self._set_internal(rates=torch.where(n > 0, _floor(stats["sx"] / n.clamp_min(
            torch.finfo(n.dtype).tiny)), old))

    def num_parameters(self, params):
        return self.num_states * self.dim if "r" in params else 0

    def initialize(self, x, lengths, init, generator, params):
        r"""``"kmeans++"``: the mean counts of the k-means clusters of the frames;
        ``"random"``: rates drawn from a Gamma distribution matching the mean and variance
        of the counts (as hmmlearn)."""
        if init == "given" or "r" not in params:
            return
        frames, _ = self.frames(x, lengths)
        if init == "kmeans++":
            centers, _ = kmeans(frames, self.num_states, generator)
            rates = centers
        else:
            mean, var = frames.mean(), frames.var().clamp_min(torch.finfo(x.dtype).eps)
            shape = torch.full((self.num_states, self.dim), float(mean ** 2 / var),
                               dtype=x.dtype)
            rates = torch._standard_gamma(shape, generator=generator) * (var / mean)
        # a cluster of zeros: a small rate, not an impossible one
        self._set_internal(rates=rates.clamp_min(1e-3 * float(frames.mean().clamp_min(1))))

    def sample(self, z, generator):
        return torch.poisson(self.rates.detach()[z], generator=generator)


class PoissonHMM(HiddenMarkovModel):
    r"""
    HMM with Poisson emissions :math:`x_{td} | z_t = k \sim \mathrm{Poisson}(\lambda_{kd})`
    (:class:`PoissonEmission`); M-step
    :math:`\lambda_k = \sum_{b,t} \gamma_{b,t}(k) x_{b,t} / \sum_{b,t} \gamma_{b,t}(k)`.

    :param int num_states: ``K``.
    :param int dim: ``D``, counts per frame.
    :param str params: trained parameters among ``"str"`` (start, transitions, rates).

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs (K,)``, ``trans_probs (K, K)``, ``rates (K, D)``. Data: counts,
    integer or float tensors of non-negative integers: ``(T, D)`` (``(T,)`` when
    ``D = 1``), a list of such, or padded ``(B, T, D)`` with ``lengths``.
    ``fit(init=...)``: ``"kmeans++"`` (default), ``"random"`` or ``"given"``.
    """

    inits = PoissonEmission.inits
    default_init = PoissonEmission.default_init

    dim = emission_attribute("``D``, counts per frame.")
    rates = emission_attribute("``(K, D)``: the Poisson rates of each state.")

    def __init__(self, num_states, dim=1, **kwargs):
        super().__init__(num_states, **kwargs)
        self.emission = PoissonEmission(self.num_states, dim)
