"""Built-in latent-variable models written as Pyro programs."""

from pyroem.models.base import EMModel
from pyroem.models.factor import PPCA, FactorAnalysis, MixtureOfFactorAnalyzers
from pyroem.models.gmm import GaussianMixture
from pyroem.models.hmm import GMMHMM, CategoricalHMM, GaussianHMM, HiddenMarkovModel
from pyroem.models.plda import PLDA
from pyroem.models.ssm import LinearGaussianSSM

__all__ = ["EMModel", "GaussianMixture", "GaussianHMM", "CategoricalHMM", "GMMHMM",
           "HiddenMarkovModel", "PLDA", "FactorAnalysis", "PPCA", "MixtureOfFactorAnalyzers",
           "LinearGaussianSSM"]
