"""Built-in latent-variable models written as Pyro programs."""

from pyroem.models.base import EMModel
from pyroem.models.factor import PPCA, FactorAnalysis, MixtureOfFactorAnalyzers
from pyroem.models.gmm import GaussianMixture
from pyroem.models.hmm import (
    GMMHMM,
    HMM,
    BernoulliHMM,
    CategoricalHMM,
    GaussianHMM,
    HiddenMarkovModel,
    MultinomialHMM,
    PoissonHMM,
)
from pyroem.models.plda import PLDA
from pyroem.models.ssm import LinearGaussianSSM

__all__ = ["EMModel", "GaussianMixture", "GaussianHMM", "CategoricalHMM", "GMMHMM",
           "PoissonHMM", "BernoulliHMM", "MultinomialHMM", "HMM", "HiddenMarkovModel",
           "PLDA", "FactorAnalysis", "PPCA", "MixtureOfFactorAnalyzers", "LinearGaussianSSM"]
