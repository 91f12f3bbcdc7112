"""Exact EM inference for Pyro models."""

from pyroem.infer.compare import compare
from pyroem.infer.decompose import (Decomposition, ZeroVarianceELBO, decompose, guide_entropy,
                                     posterior_elbo_samples)
from pyroem.infer.em import EM
from pyroem.infer.estep import Posterior, exact_posterior
from pyroem.infer.history import History
from pyroem.infer.mstep import ClosedFormMStep

__all__ = ["EM", "ClosedFormMStep", "Decomposition", "History", "Posterior", "ZeroVarianceELBO",
           "compare", "decompose", "exact_posterior", "guide_entropy", "posterior_elbo_samples"]
