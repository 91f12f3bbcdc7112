r"""
Bernoulli emissions, :math:`x_{td} | z_t = k \sim \mathrm{Bernoulli}(p_{kd})`
independently over the ``dim`` binary features of a frame, and :class:`BernoulliHMM`.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch.distributions import constraints

from pyroem.models.checks import CheckedParams, as_param_tensor
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.counts import CountEmission
from pyroem.models.hmm.probs import safe_log
from pyroem.models.kmeans import kmeans


def check_unit_interval(value, name, shape, dtype):
    """Finite values in ``[0, 1]`` of ``shape`` (Bernoulli probabilities)."""
    value = as_param_tensor(value, name, shape, dtype)
    if bool(((value < 0) | (value > 1)).any()):
        raise ValueError(f"{name} must lie in [0, 1], got values in "
                         f"[{float(value.min())}, {float(value.max())}]")
    return value


class BernoulliEmission(CheckedParams, CountEmission):
    r"""
    Independent binary features per state,

    .. math:: \log p(x | z = k) = \sum_d x_d \log p_{kd} + (1 - x_d) \log(1 - p_{kd}).

    Letter: ``e``. Statistics: :math:`n_k = \sum_t \gamma_t(k)` and
    :math:`s_k = \sum_t \gamma_t(k) x_t`; M-step :math:`p_k = s_k / n_k` (a state without
    mass keeps its probabilities). A probability of exactly 0 or 1 makes the other value
    impossible in that state.

    :param int num_states: ``K``.
    :param int dim: ``D``, binary features per frame.
    """

    letters = "e"
    support = "binary"
    inits = ("kmeans++", "random", "given")
    default_init = "kmeans++"
    checked_params = ("probs",)

    def __init__(self, num_states, dim=1):
        super().__init__(num_states, dim)
        self.probs = PyroParam(torch.full((self.num_states, self.dim), 0.5),
                               constraint=constraints.unit_interval)

    def _check_param(self, name, value):
        return check_unit_interval(value, name, (self.num_states, self.dim), self.dtype)

    def observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", dist.Bernoulli(probs=self.probs[z]).to_event(1), obs=x_t)

    def log_prob(self, x, grad=False):
        p = self.probs if grad else self.probs.detach()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            # x log p + (1 - x) log(1 - p) = x (log p - log(1 - p)) + log(1 - p), as one
            # product, except where p is 0 or 1 (then a log is -inf: keep the sum exact)
            log_p, log_q = safe_log(p), safe_log(1 - p)
            if bool(torch.isfinite(log_p).all() and torch.isfinite(log_q).all()):
                return x @ (log_p - log_q).T + log_q.sum(-1)
            terms = torch.where(x.unsqueeze(-2) > 0, log_p, log_q)  # (B, T, K, D)
            return terms.sum(-1)

    def expected_statistics(self, gamma, x):
        return self.frame_moments(gamma, x)

    def maximize(self, stats, params):
        if "e" not in params:
            return
        n = stats["n"].unsqueeze(-1)
        new = (stats["sx"] / n.clamp_min(torch.finfo(n.dtype).tiny)).clamp(0, 1)
        self._set_internal(probs=torch.where(n > 0, new, self.probs.detach()))

    def num_parameters(self, params):
        return self.num_states * self.dim if "e" in params else 0

    def initialize(self, x, lengths, init, generator, params):
        r"""``"kmeans++"``: the feature frequencies of the k-means clusters of the frames,
        smoothed (:math:`(s + 1) / (n + 2)`, so that no value starts impossible);
        ``"random"``: uniform on :math:`[0.25, 0.75]`."""
        if init == "given" or "e" not in params:
            return
        K, D = self.num_states, self.dim
        if init == "kmeans++":
            frames, _ = self.frames(x, lengths)
            _, labels = kmeans(frames, K, generator)
            onehot = torch.nn.functional.one_hot(labels, K).to(x.dtype)
            probs = (onehot.T @ frames + 1) / (onehot.sum(0).unsqueeze(-1) + 2)
        else:
            probs = 0.25 + 0.5 * torch.rand(K, D, generator=generator, dtype=x.dtype)
        self._set_internal(probs=probs)

    def sample(self, z, generator):
        return torch.bernoulli(self.probs.detach()[z], generator=generator)


class BernoulliHMM(HiddenMarkovModel):
    r"""
    HMM with independent Bernoulli features
    :math:`x_{td} | z_t = k \sim \mathrm{Bernoulli}(p_{kd})` (:class:`BernoulliEmission`);
    M-step :math:`p_k = \sum_{b,t} \gamma_{b,t}(k) x_{b,t} / \sum_{b,t} \gamma_{b,t}(k)`.

    :param int num_states: ``K``.
    :param int dim: ``D``, binary features per frame.
    :param str params: trained parameters among ``"ste"`` (start, transitions, emission
        probabilities).

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs (K,)``, ``trans_probs (K, K)``, ``probs (K, D)``. Data: 0/1 values
    (bool, integer or float tensors): ``(T, D)`` (``(T,)`` when ``D = 1``), a list of
    such, or padded ``(B, T, D)`` with ``lengths``. ``fit(init=...)``: ``"kmeans++"``
    (default), ``"random"`` or ``"given"``.
    """

    inits = BernoulliEmission.inits
    default_init = BernoulliEmission.default_init

    dim = emission_attribute("``D``, binary features per frame.")
    probs = emission_attribute("``(K, D)``: :math:`p(x_d = 1 | z = k)`.")

    def __init__(self, num_states, dim=1, **kwargs):
        super().__init__(num_states, **kwargs)
        self.emission = BernoulliEmission(self.num_states, dim)
