r"""
Multinomial emissions: each frame is a vector of counts over ``num_symbols`` symbols,
:math:`x_t | z_t = k \sim \mathrm{Multinomial}(n_t, E_k)` with :math:`n_t = \sum_m x_{tm}`
(hmmlearn's ``MultinomialHMM``), and :class:`MultinomialHMM`.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam

from pyroem.models.checks import CheckedParams, check_positive_int, check_simplex
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.counts import CountEmission
from pyroem.models.hmm.probs import EmissionProbsMStep, safe_log
from pyroem.models.simplex import simplex


class MultinomialEmission(EmissionProbsMStep, CheckedParams, CountEmission):
    r"""
    Counts over ``M`` symbols per frame,

    .. math:: \log p(x | z = k) = \log n! - \sum_m \log x_m! + \sum_m x_m \log E_{km},
        \qquad n = \sum_m x_m.

    Letter: ``e``. Statistics: :math:`N_{km} = \sum_t \gamma_t(k) x_{tm}`; M-step
    :math:`E_{km} \propto N_{km}` (zeros stay zero; a state without counts keeps its row).

    :param int num_states: ``K``.
    :param int num_symbols: ``M``.
    :param int n_trials: the count total of every frame (checked), or ``None``: each
        frame's own total (then :meth:`sample` needs it set).
    """

    letters = "e"
    inits = ("random", "given")
    default_init = "random"
    checked_params = ("emission_probs",)

    def __init__(self, num_states, num_symbols, n_trials=None):
        super().__init__(num_states, check_positive_int("num_symbols", num_symbols))
        self.num_symbols = self.dim
        self.n_trials = None if n_trials is None else check_positive_int("n_trials", n_trials)
        M = self.num_symbols
        self.emission_probs = PyroParam(torch.full((self.num_states, M), 1.0 / M),
                                        constraint=simplex)

    def _check_param(self, name, value):
        return check_simplex(value, name, (self.num_states, self.num_symbols), self.dtype)

    def _check_trials(self, x, lengths):
        if self.n_trials is None:
            return
        totals, _ = self.frames(x.sum(-1), lengths)
        if bool((totals != self.n_trials).any()):
            raise ValueError(f"x: every frame's counts must sum to n_trials={self.n_trials}, "
                             f"got a total of {float(totals[totals != self.n_trials][0])}")

    def pack(self, x, lengths=None, dtype=None):
        padded, lengths, form = super().pack(x, lengths, dtype)
        self._check_trials(padded, lengths)
        return padded, lengths, form

    def check(self, x, lengths):
        super().check(x, lengths)
        self._check_trials(x, lengths)
        return x, lengths

    def observe(self, t, z, x_t):
        # torch's Multinomial.log_prob reads the total from the value itself; the
        # total_count given is only used for sampling and support checks
        pyro.sample(f"x_{t}", dist.Multinomial(self.n_trials or 1, probs=self.emission_probs[z],
                                               validate_args=False), obs=x_t)

    def log_prob(self, x, grad=False):
        probs = self.emission_probs if grad else self.emission_probs.detach()
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            log_coef = torch.lgamma(x.sum(-1, keepdim=True) + 1) - torch.lgamma(x + 1).sum(
                -1, keepdim=True)
            log_e = safe_log(probs)
            if bool(torch.isfinite(log_e).all()):
                return x @ log_e.T + log_coef
            # a structural zero: 0 counts of that symbol contribute 0, not 0 * -inf
            terms = torch.where(x.unsqueeze(-2) > 0, x.unsqueeze(-2) * log_e, 0)
            return terms.sum(-1) + log_coef

    def expected_statistics(self, gamma, x):
        g = gamma.reshape(-1, self.num_states)
        return {"emission": g.T @ x.reshape(-1, self.num_symbols)}

    def initialize(self, x, lengths, init, generator, params):
        """``"random"``: uniform draws, each row normalised (as hmmlearn)."""
        if init == "given" or "e" not in params:
            return
        e = torch.rand(self.num_states, self.num_symbols, generator=generator, dtype=x.dtype)
        self._set_internal(emission_probs=e / e.sum(-1, keepdim=True))

    def sample(self, z, generator):
        if self.n_trials is None:
            raise ValueError("sampling multinomial frames needs their count total: "
                             "MultinomialHMM(..., n_trials=n)")
        probs = self.emission_probs.detach()[z.reshape(-1)]
        draws = torch.multinomial(probs, self.n_trials, replacement=True, generator=generator)
        counts = torch.zeros(probs.shape, dtype=probs.dtype).scatter_add_(
            -1, draws, torch.ones(draws.shape, dtype=probs.dtype))
        return counts.reshape(z.shape + (self.num_symbols,))


class MultinomialHMM(HiddenMarkovModel):
    r"""
    HMM whose frames are counts over ``num_symbols`` symbols,
    :math:`x_t | z_t = k \sim \mathrm{Multinomial}(n_t, E_k)` (:class:`MultinomialEmission`,
    hmmlearn's ``MultinomialHMM``); M-step
    :math:`E_{km} \propto \sum_{b,t} \gamma_{b,t}(k) x_{b,t,m}`.

    :param int num_states: ``K``.
    :param int num_symbols: ``M``.
    :param int n_trials: the count total of every frame, or ``None`` (each frame's own).
    :param str params: trained parameters among ``"ste"``.

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs (K,)``, ``trans_probs (K, K)``, ``emission_probs (K, M)``. Data: counts
    (integer or float tensors of non-negative integers), ``(T, M)``, a list of such, or
    padded ``(B, T, M)`` with ``lengths``. ``fit(init=...)``: ``"random"`` (default) or
    ``"given"``.
    """

    inits = MultinomialEmission.inits
    default_init = MultinomialEmission.default_init

    num_symbols = emission_attribute("``M``, the number of symbols.")
    n_trials = emission_attribute("The count total of every frame, or ``None``.")
    emission_probs = emission_attribute("``(K, M)``: row ``k`` holds the symbol "
                                        "probabilities of state ``k``.")

    def __init__(self, num_states, num_symbols, n_trials=None, **kwargs):
        super().__init__(num_states, **kwargs)
        self.emission = MultinomialEmission(self.num_states, num_symbols, n_trials)
