"""A closed-form M-step rule for a family pyroem does not know: Geometric(probs)."""

import torch
import torch.distributions as td

from pyroem.infer.mstep import MStepRule, Stats, register_rule


@register_rule
class GeometricRule(MStepRule):
    r"""``Geometric(probs)``: :math:`\log p(x) = \log p + x \log(1 - p)`, so
    :math:`Q = \sum w \log p + \sum w x \log(1 - p)` is maximal at
    :math:`p = \sum w / \sum w (1 + x)`."""

    types = (td.Geometric,)  # Pyro's Geometric is a subclass: it is found through the MRO

    def statistics(self, site):
        sel = site.select("probs")  # None unless probs is a pyro.param (or p[z], ...)
        if sel is None:
            return []  # e.g. logits: that parameter then goes to the numerical M-step
        w, x = site.weight, site.value  # posterior weight of each position, observed value
        return [Stats("probs", sel, self, num=site.sum([w], sel), den=site.sum([w, 1 + x], sel))]

    def maximize(self, arg, num, den, old):
        eps = torch.finfo(old.dtype).eps  # p = 1 would put log(1 - p) at -inf
        return torch.where(den > 0, num / den.clamp_min(eps), old).clamp(eps, 1 - eps)
