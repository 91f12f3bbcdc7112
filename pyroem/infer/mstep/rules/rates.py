r"""
Rules for a ``rate`` argument: ``Poisson``, ``Exponential`` and ``Gamma`` (fixed
concentration). Each contributes a numerator and a denominator to

.. math:: \lambda = \frac{\sum \text{num}}{\sum \text{den}},

so one rate may be shared by several of these families (and a ``Gamma`` prior):
:math:`Q` is :math:`\text{num} \log\lambda - \text{den}\,\lambda` summed over them.
"""

import torch
import torch.distributions as td

from pyroem.infer.mstep.rules.base import MStepRule, Stats, safe_ratio
from pyroem.infer.mstep.rules.registry import register_rule


class RateRule(MStepRule):
    r"""A rate :math:`\lambda` whose expected log-likelihood is
    :math:`\text{num}\log\lambda - \text{den}\,\lambda`: the maximiser is their ratio."""

    def rate_statistics(self, site):
        """``(num, den)`` laid out like the argument, as the operands of weighted sums."""
        raise NotImplementedError

    def statistics(self, site):
        sel = site.select("rate")
        if sel is None:
            return []
        num, den = self.rate_statistics(site)
        return [Stats("rate", sel, self, num=site.sum(num, sel), den=site.sum(den, sel))]

    def maximize(self, arg, num, den, old):
        tiny = torch.finfo(old.dtype).tiny
        return torch.where(den > 0, safe_ratio(num, den, old).clamp_min(tiny), old)


@register_rule
class PoissonRule(RateRule):
    r"""``Poisson(rate)``: :math:`\lambda = \sum w x / \sum w`."""

    types = (td.Poisson,)

    def rate_statistics(self, site):
        return [site.weight, site.value], [site.weight]


@register_rule
class ExponentialRule(RateRule):
    r"""``Exponential(rate)``: :math:`\lambda = \sum w / \sum w x`."""

    types = (td.Exponential,)

    def rate_statistics(self, site):
        return [site.weight], [site.weight, site.value]


@register_rule
class GammaRule(RateRule):
    r"""``Gamma(concentration, rate)`` with a fixed concentration :math:`\alpha`:
    :math:`\beta = \sum w \alpha / \sum w x`."""

    types = (td.Gamma,)

    def statistics(self, site):
        if site.reaches(site.fn.concentration):
            return []  # a learnt concentration has no closed form: both go numerical
        return super().statistics(site)

    def rate_statistics(self, site):
        return [site.weight, site.fn.concentration.detach()], [site.weight, site.value]
