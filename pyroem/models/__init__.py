"""Built-in latent-variable models written as Pyro programs."""

from pyroem.models.base import EMModel
from pyroem.models.gmm import GaussianMixture

__all__ = ["EMModel", "GaussianMixture"]
