"""
Hidden Markov models: a chain (:mod:`~pyroem.models.hmm.chain`) composed with an emission
family (:mod:`~pyroem.models.hmm.emissions`), fitted by Baum-Welch (exact EM), Viterbi
training or SVI, with the vectorised recursions of :mod:`~pyroem.ops.recursions` (shared
with the generic engine, so they live a layer below the models).

- :mod:`~pyroem.models.hmm.chain`: :class:`HiddenMarkovModel`, the chain (start,
  transitions, final states), the data, the Pyro model, the E-step, decoding, sampling;
- :mod:`~pyroem.models.hmm.emissions`: the protocol an emission family implements;
- :mod:`~pyroem.models.hmm.gaussian`, :mod:`~pyroem.models.hmm.categorical`,
  :mod:`~pyroem.models.hmm.gmm`: one family each, its emission and its model
  (:class:`GaussianHMM`, :class:`CategoricalHMM`, :class:`GMMHMM`);
- :mod:`~pyroem.models.hmm.poisson`, :mod:`~pyroem.models.hmm.bernoulli`,
  :mod:`~pyroem.models.hmm.multinomial`, :mod:`~pyroem.models.hmm.exponential`: count,
  binary and duration families (:class:`PoissonHMM`, :class:`BernoulliHMM`,
  :class:`MultinomialHMM`), sharing :mod:`~pyroem.models.hmm.counts`;
- :mod:`~pyroem.models.hmm.family`: :class:`HMM`, the emission family as an argument;
- :mod:`~pyroem.models.hmm.sequences`: sequence data (one, a list, or padded with lengths);
- :mod:`~pyroem.models.hmm.probs`: probability rows (checks, Dirichlet MAP).
"""

from pyroem.models.hmm.bernoulli import BernoulliEmission, BernoulliHMM
from pyroem.models.hmm.categorical import CategoricalEmission, CategoricalHMM
from pyroem.models.hmm.chain import HiddenMarkovModel
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.exponential import ExponentialEmission
from pyroem.models.hmm.family import HMM, register_emission
from pyroem.models.hmm.gaussian import GaussianEmission, GaussianHMM
from pyroem.models.hmm.gmm import GMMHMM, GMMEmission
from pyroem.models.hmm.multinomial import MultinomialEmission, MultinomialHMM
from pyroem.models.hmm.poisson import PoissonEmission, PoissonHMM

__all__ = ["GMMHMM", "HMM", "BernoulliEmission", "BernoulliHMM", "CategoricalEmission",
           "CategoricalHMM", "Emission", "ExponentialEmission", "GMMEmission",
           "GaussianEmission", "GaussianHMM", "HiddenMarkovModel", "MultinomialEmission",
           "MultinomialHMM", "PoissonEmission", "PoissonHMM", "register_emission"]
