"""Distributions whose ``log_prob`` is fast under Pyro's parallel enumeration.

When a discrete latent ``z`` with ``K`` values is enumerated, an emission such as
``MultivariateNormal(means[z], scale_tril[z])`` is evaluated for every pair of
(value of ``z``, data point): a ``(K, N)`` table.  Written as
``log N(x | mu, Sigma) = -1/2 <phi(x), w(mu, Sigma)> + c(mu, Sigma)`` with data
features ``phi(x) = [vec(x x^T), x]`` and parameter weights
``w = [vec(Lambda), -2 Lambda mu]`` (``Lambda = Sigma^-1``), the whole table is one
matrix product.  The data features are constant across EM iterations and are cached.
"""

from pyroem.distributions.features import gaussian_design, gaussian_features
from pyroem.distributions.gaussian import DiagNormal, MultivariateNormal

__all__ = ["DiagNormal", "MultivariateNormal", "gaussian_design", "gaussian_features"]
