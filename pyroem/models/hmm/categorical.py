r"""
Categorical emissions, :math:`x_t | z_t = k \sim \mathrm{Cat}(E_k)` over integer
symbols, and :class:`CategoricalHMM`.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam

from pyroem.distributions.statistics import categorical_counts
from pyroem.models.checks import CheckedParams, check_positive_int, check_simplex
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.probs import EmissionProbsMStep, safe_log
from pyroem.models.hmm.sequences import check_padded, pack_sequences
from pyroem.models.simplex import simplex


class CategoricalEmission(EmissionProbsMStep, CheckedParams, Emission):
    r"""
    A categorical distribution over ``num_symbols`` symbols per state,
    :math:`p(x = m | z = k) = E_{km}`. Letter: ``e``.

    Statistics: the expected counts :math:`N_{km} = \sum_{b,t} \gamma_{b,t}(k)
    [x_{b,t} = m]`; M-step :math:`E_{km} \propto N_{km}` (zeros stay zero).

    :param int num_states: ``K``.
    :param int num_symbols: ``M``.
    """

    letters = "e"
    inits = ("random", "given")
    default_init = "random"
    checked_params = ("emission_probs",)

    def __init__(self, num_states, num_symbols):
        super().__init__(num_states)
        self.num_symbols = M = check_positive_int("num_symbols", num_symbols)
        self.emission_probs = PyroParam(torch.full((self.num_states, M), 1.0 / M),
                                        constraint=simplex)

    def _check_param(self, name, value):
        return check_simplex(value, name, (self.num_states, self.num_symbols), self.dtype)

    def pack(self, x, lengths=None, dtype=None):
        # symbols are integers whatever the dtype of the computation
        return pack_sequences(x, lengths, num_symbols=self.num_symbols)

    def check(self, x, lengths):
        return check_padded(x, lengths, num_symbols=self.num_symbols)

    def observe(self, t, z, x_t):
        pyro.sample(f"x_{t}", dist.Categorical(self.emission_probs[z]), obs=x_t)

    def log_prob(self, x, grad=False):
        probs = self.emission_probs if grad else self.emission_probs.detach()
        return safe_log(probs).T[x]

    def log_prob_table(self):
        return safe_log(self.emission_probs.detach()).T

    def expected_statistics(self, gamma, x):
        counts = categorical_counts(gamma.reshape(-1, self.num_states), x, self.num_symbols)
        return {"emission": counts}

    def initialize(self, x, lengths, init, generator, params):
        """``"random"``: each row of ``emission_probs`` drawn from a flat Dirichlet."""
        if init == "given" or "e" not in params:
            return
        e = -torch.rand(self.num_states, self.num_symbols, generator=generator,
                        dtype=self.dtype).log()
        self._set_internal(emission_probs=e / e.sum(-1, keepdim=True))

    def sample(self, z, generator):
        probs = self.emission_probs.detach()[z.reshape(-1)]
        return torch.multinomial(probs, 1, generator=generator).reshape(z.shape)


class CategoricalHMM(HiddenMarkovModel):
    r"""
    HMM with categorical emissions :math:`x_t | z_t = k \sim \mathrm{Cat}(E_k)` over
    ``num_symbols`` symbols (:class:`CategoricalEmission`); M-step
    :math:`E_{km} \propto \sum_{b,t} \gamma_{b,t}(k) [x_{b,t} = m]` (zeros stay zero).

    :param int num_states: ``K``.
    :param int num_symbols: ``M``.
    :param str params: trained parameters among ``"ste"`` (start, transitions, emissions).

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. Parameters:
    ``start_probs (K,)``, ``trans_probs (K, K)``, ``emission_probs (K, M)``. Data are
    integer symbols: ``(T,)``, a list of such, or padded ``(B, T)`` with ``lengths``. The
    dtype of the parameters (``.double()``) is the dtype of the computation.
    ``fit(init=...)``: ``"random"`` (default; emission rows drawn from a flat Dirichlet)
    or ``"given"``.
    """

    inits = CategoricalEmission.inits
    default_init = CategoricalEmission.default_init

    num_symbols = emission_attribute("``M``, the number of symbols.")
    emission_probs = emission_attribute("``(K, M)``: row ``k`` is :math:`p(x | z = k)`.")

    def __init__(self, num_states, num_symbols, **kwargs):
        super().__init__(num_states, **kwargs)
        self.emission = CategoricalEmission(self.num_states, num_symbols)
