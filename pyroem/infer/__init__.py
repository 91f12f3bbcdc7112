"""Exact EM inference for Pyro models."""

from pyroem.infer.compare import compare
from pyroem.infer.decompose import (
    Decomposition,
    ZeroVarianceELBO,
    decompose,
    guide_entropy,
    posterior_elbo_samples,
)
from pyroem.infer.em import EM
from pyroem.infer.estep import exact_posterior
from pyroem.infer.fit import fit_em
from pyroem.infer.history import History
from pyroem.infer.mstep import AutoMStep, ClosedFormMStep, NumericalMStep, expected_log_joint
from pyroem.infer.posteriors import ChainPosterior, DiscretePosterior, GaussianPosterior, Posterior
from pyroem.infer.protocols import (
    ClosedFormProvider,
    EStepProvider,
    FusedStepProvider,
    Plan,
    PosteriorWriter,
)

__all__ = [
    "EM",
    "AutoMStep",
    "ChainPosterior",
    "ClosedFormMStep",
    "ClosedFormProvider",
    "Decomposition",
    "DiscretePosterior",
    "EStepProvider",
    "FusedStepProvider",
    "GaussianPosterior",
    "History",
    "NumericalMStep",
    "Plan",
    "Posterior",
    "PosteriorWriter",
    "ZeroVarianceELBO",
    "compare",
    "decompose",
    "exact_posterior",
    "expected_log_joint",
    "fit_em",
    "guide_entropy",
    "posterior_elbo_samples",
]
