"""Exact EM inference for Pyro models."""

from pyroem.infer.em import EM
from pyroem.infer.estep import Posterior, exact_posterior
from pyroem.infer.history import History
from pyroem.infer.mstep import ClosedFormMStep

__all__ = ["EM", "ClosedFormMStep", "History", "Posterior", "exact_posterior"]
