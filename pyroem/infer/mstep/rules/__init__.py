r"""
The rules of the automatic M-step (:class:`~pyroem.infer.mstep.AutoMStep`): one class per
distribution family, chosen by the distribution's type.

====================  ===========================================================
site                  closed-form weighted MLE, :math:`w` = E-step marginal
====================  ===========================================================
Categorical probs     :math:`p_c \propto \sum w\,[x = c]` (logits: :math:`\log p_c`)
Bernoulli probs       :math:`p = \sum w x / \sum w` (logits: :math:`\mathrm{logit}\, p`)
Poisson rate          :math:`\lambda = \sum w x / \sum w`
Exponential rate      :math:`\lambda = \sum w / \sum w x`
Gamma rate            :math:`\beta = \sum w \alpha / \sum w x` (fixed :math:`\alpha`)
Normal loc, scale     :math:`\mu = \sum w x / \sigma^2 / \sum w / \sigma^2`,
                      :math:`\sigma^2 = \sum w (x - \mu)^2 / \sum w`
MVN loc, covariance   :math:`\mu = \sum w x / \sum w`,
                      :math:`\Sigma = \sum w (x-\mu)(x-\mu)^\top / \sum w`
DiscreteHMM           initial/transition: Categorical on the expected counts of
                      :math:`z_0` and of transitions; observation distribution:
                      its own rule weighted by :math:`\gamma_t(k)`
====================  ===========================================================

with conjugate priors (``Dirichlet`` on Categorical probs, ``Beta`` on Bernoulli probs,
``Gamma`` on rates, ``Normal`` on Normal locations) giving the MAP. A new family is one
:class:`MStepRule` subclass registered with :func:`register_rule` (see the docs page
"Adding an M-step rule").
"""

from pyroem.infer.mstep.rules.base import MStepRule, Stats, WeightedSite, safe_ratio, unwrap

# The built-in rules register themselves on import.
from pyroem.infer.mstep.rules.chains import DiscreteHMMRule
from pyroem.infer.mstep.rules.discrete import BernoulliRule, CategoricalRule
from pyroem.infer.mstep.rules.gaussian import MultivariateNormalRule, NormalRule
from pyroem.infer.mstep.rules.priors import BetaPrior, DirichletPrior, GammaPrior, NormalPrior
from pyroem.infer.mstep.rules.rates import ExponentialRule, GammaRule, PoissonRule, RateRule
from pyroem.infer.mstep.rules.registry import RuleRegistry, register_rule, registry

__all__ = ["BernoulliRule", "BetaPrior", "CategoricalRule", "DirichletPrior", "DiscreteHMMRule",
           "ExponentialRule", "GammaPrior", "GammaRule", "MStepRule",
           "MultivariateNormalRule", "NormalPrior", "NormalRule", "PoissonRule", "RateRule",
           "RuleRegistry", "Stats", "WeightedSite", "register_rule", "registry",
           "safe_ratio", "unwrap"]
