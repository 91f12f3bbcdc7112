"""Factor analysis, probabilistic PCA and mixtures of factor analysers, trained by exact EM."""

from pyroem.models.factor.analysis import PPCA, FactorAnalysis
from pyroem.models.factor.mixture import MixtureOfFactorAnalyzers
from pyroem.models.factor.posterior import FactorPosterior, MixtureFactorPosterior

__all__ = ["PPCA", "FactorAnalysis", "FactorPosterior", "MixtureFactorPosterior",
           "MixtureOfFactorAnalyzers"]
