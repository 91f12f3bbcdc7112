r"""
Conjugate priors written in the model as a factor on the parameter,
``pyro.sample("prior", Dirichlet(alpha), obs=pyro.param("weights"))``: the update becomes the
MAP, :math:`\arg\max_\eta Q(q, \eta) + \log p(\eta)`. Each rule adds its terms to the
statistics of the likelihood's rule (its ``solver``), with weight :math:`w` (1, or the
marginal when the factor sits under an enumerated variable).
"""

import torch.distributions as td

from pyroem.infer.mstep.rules.base import MStepRule, Stats
from pyroem.infer.mstep.rules.discrete import BernoulliRule, CategoricalRule
from pyroem.infer.mstep.rules.gaussian import NormalRule
from pyroem.infer.mstep.rules.rates import RateRule
from pyroem.infer.mstep.rules.registry import register_rule


@register_rule
class DirichletPrior(MStepRule):
    r"""``Dirichlet(alpha)`` on Categorical ``probs``: counts :math:`+\ \alpha_c - 1`."""

    types = (td.Dirichlet,)
    prior = True

    def statistics(self, site):
        sel = site.select_value()
        alpha = site.fn.concentration.detach()
        return [Stats("probs", sel, CategoricalRule,
                      num=site.sum([site.weight.unsqueeze(-1), alpha - 1], sel))]


@register_rule
class BetaPrior(MStepRule):
    r"""``Beta(a, b)`` on Bernoulli ``probs``: :math:`+\ a - 1` and :math:`+\ a + b - 2`."""

    types = (td.Beta,)
    prior = True

    def statistics(self, site):
        sel, w = site.select_value(), site.weight
        a, b = site.fn.concentration1.detach(), site.fn.concentration0.detach()
        return [Stats("probs", sel, BernoulliRule, num=site.sum([w, a - 1], sel),
                      den=site.sum([w, a + b - 2], sel))]


@register_rule
class GammaPrior(MStepRule):
    r"""``Gamma(a, b)`` on a rate: :math:`+\ a - 1` and :math:`+\ b`."""

    types = (td.Gamma,)
    prior = True

    def statistics(self, site):
        sel, w = site.select_value(), site.weight
        a, b = site.fn.concentration.detach(), site.fn.rate.detach()
        return [Stats("rate", sel, RateRule, num=site.sum([w, a - 1], sel),
                      den=site.sum([w, b], sel))]


@register_rule
class NormalPrior(MStepRule):
    r"""``Normal(m, s)`` on a Normal location: :math:`+\ m/s^2` and :math:`+\ 1/s^2`."""

    types = (td.Normal,)
    prior = True

    def statistics(self, site):
        sel, w = site.select_value(), site.weight
        prec = site.fn.scale.detach().pow(-2)
        return [Stats("loc", sel, NormalRule, num=site.sum([w, prec, site.fn.loc.detach()], sel),
                      den=site.sum([w, prec], sel))]
