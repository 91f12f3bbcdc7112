"""Exact EM inference for Pyro models."""

from pyroem.infer.auto_mstep import AutoMStep
from pyroem.infer.compare import compare
from pyroem.infer.decompose import (
    Decomposition,
    ZeroVarianceELBO,
    decompose,
    guide_entropy,
    posterior_elbo_samples,
)
from pyroem.infer.em import EM
from pyroem.infer.estep import Posterior, exact_posterior
from pyroem.infer.fit import fit_em
from pyroem.infer.history import History
from pyroem.infer.mstep import ClosedFormMStep
from pyroem.infer.numerical_mstep import NumericalMStep, expected_log_joint

__all__ = ["EM", "AutoMStep", "ClosedFormMStep", "Decomposition", "History", "NumericalMStep",
           "Posterior", "ZeroVarianceELBO", "compare", "decompose", "exact_posterior",
           "expected_log_joint", "fit_em", "guide_entropy", "posterior_elbo_samples"]
