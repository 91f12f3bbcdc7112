"""
Hidden Markov models: a chain (:mod:`~pyroem.models.hmm.chain`) composed with an emission
family (:mod:`~pyroem.models.hmm.emissions`), fitted by Baum-Welch (exact EM), Viterbi
training or SVI, with the vectorised recursions of :mod:`~pyroem.models.hmm.recursions`.

================================  ===============================================
module                            what it holds
================================  ===============================================
:mod:`~pyroem.models.hmm.chain`   :class:`HiddenMarkovModel`: start, transitions,
                                  final states, data, the Pyro model, E-step,
                                  decoding, sampling
``emissions``                     the protocol an emission family implements
``gaussian``, ``categorical``,    one family each: its emission and its model
``gmm``                           (:class:`GaussianHMM`, :class:`CategoricalHMM`,
                                  :class:`GMMHMM`)
``recursions``                    forward-backward and Viterbi (pure functions),
                                  with ``scaled`` (one block) and ``blocked``
                                  (:math:`O(\\sqrt T)` Python steps)
``sequences``                     sequence data: one, a list, or padded + lengths
``probs``                         probability rows: checks, Dirichlet MAP
================================  ===============================================
"""

from pyroem.models.hmm.categorical import CategoricalEmission, CategoricalHMM
from pyroem.models.hmm.chain import HiddenMarkovModel
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.gaussian import GaussianEmission, GaussianHMM
from pyroem.models.hmm.gmm import GMMHMM, GMMEmission

__all__ = ["HiddenMarkovModel", "GaussianHMM", "CategoricalHMM", "GMMHMM", "Emission",
           "GaussianEmission", "CategoricalEmission", "GMMEmission"]
