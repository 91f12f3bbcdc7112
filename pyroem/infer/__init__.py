"""Exact EM inference for Pyro models."""

from pyroem.infer.decompose import Decomposition, decompose, guide_entropy
from pyroem.infer.em import EM
from pyroem.infer.estep import Posterior, exact_posterior
from pyroem.infer.history import History
from pyroem.infer.mstep import ClosedFormMStep

__all__ = ["EM", "ClosedFormMStep", "Decomposition", "History", "Posterior", "decompose",
           "exact_posterior", "guide_entropy"]
