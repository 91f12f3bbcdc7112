r"""
Exponential emissions, :math:`x_{td} | z_t = k \sim \mathrm{Exponential}(\lambda_{kd})`
independently over the ``dim`` features of a frame (durations, waiting times), the family
``HMM(num_states, emission="exponential")``.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.checks import CheckedParams, check_finite, check_positive
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.sequences import check_padded, pack_sequences


def _check_non_negative(x, lengths):
    keep = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
    frames = x[keep]
    if bool((frames < 0).any()):
        raise ValueError(f"x must be >= 0 for exponential emissions, got {float(frames.min())}")
    return x


class ExponentialEmission(CheckedParams, Emission):
    r"""
    Independent exponential features per state,
    :math:`\log p(x | z = k) = \sum_d \log\lambda_{kd} - \lambda_{kd} x_d`.

    Letter: ``r`` (rates). Statistics :math:`n_k = \sum_t \gamma_t(k)`,
    :math:`s_k = \sum_t \gamma_t(k) x_t`; M-step :math:`\lambda_k = n_k / s_k` (the
    automatic M-step's ``Exponential`` rule; a state without mass keeps its rates).

    :param int num_states: ``K``.
    :param int dim: ``D``.
    """

    letters = "r"
    inits = ("random", "given")
    default_init = "random"
    checked_params = ("rates",)

    def __init__(self, num_states, dim=1):
        super().__init__(num_states)
        self.dim = dim
        self.rates = PyroParam(torch.ones(self.num_states, dim), constraint=constraints.positive)

    def _check_param(self, name, value):
        return check_positive(value, name, (self.num_states, self.dim), self.dtype)

    def pack(self, x, lengths=None, dtype=None):
        padded, lengths, form = pack_sequences(x, lengths, dim=self.dim, dtype=dtype)
        return _check_non_negative(padded, lengths), lengths, form

    def check(self, x, lengths):
        check_padded(x, lengths, dim=self.dim, dtype=self.dtype)
        return _check_non_negative(check_finite(x), lengths), lengths

    def observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", dist.Exponential(self.rates[z]).to_event(1), obs=x_t)

    def log_prob(self, x, grad=False):
        rates = self.rates if grad else self.rates.detach()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return rates.log().sum(-1) - x @ rates.T

    def expected_statistics(self, gamma, x):
        g = gamma.reshape(-1, self.num_states)
        return {"n": g.sum(0), "sx": g.T @ x.reshape(-1, self.dim)}

    def maximize(self, stats, params):
        if "r" not in params:
            return
        n, sx = stats["n"].unsqueeze(-1), stats["sx"]
        ok = (n > 0) & (sx > 0)
        new = n / torch.where(ok, sx, torch.ones_like(sx))
        self._set_internal(rates=torch.where(ok, new, self.rates.detach()))

    def num_parameters(self, params):
        return self.num_states * self.dim if "r" in params else 0

    def initialize(self, x, lengths, init, generator, params):
        """``"random"``: the inverse mean of the frames times a uniform factor in
        ``[0.5, 1.5]`` per state and feature."""
        if init == "given" or "r" not in params:
            return
        frames, _ = self.frames(x, lengths)
        base = 1 / frames.mean(0).clamp_min(torch.finfo(x.dtype).tiny)
        u = 0.5 + torch.rand(self.num_states, self.dim, generator=generator, dtype=x.dtype)
        self._set_internal(rates=base * u)

    def sample(self, z, generator):
        u = torch.rand(z.shape + (self.dim,), generator=generator, dtype=self.rates.dtype)
        return -torch.log1p(-u) / self.rates.detach()[z]
