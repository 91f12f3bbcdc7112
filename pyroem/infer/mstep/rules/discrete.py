r"""
Rules for discrete families: ``Categorical`` and ``Bernoulli``, given ``probs`` or
``logits`` (the update of ``logits`` is the log of the update of ``probs``).
"""

import torch
import torch.distributions as td

from pyroem.distributions.statistics import categorical_counts
from pyroem.infer.mstep.provenance import compact
from pyroem.infer.mstep.reduce import broadcast_shapes
from pyroem.infer.mstep.rules.base import MStepRule, Stats, safe_ratio
from pyroem.infer.mstep.rules.registry import register_rule


def _given(site, normalised=False):
    """``(arg, selection)`` for whichever of ``probs``/``logits`` was given and is a
    selection of a parameter (the other one is derived from it)."""
    for arg in ("probs", "logits"):
        if arg in vars(site.fn):
            sel = site.select(arg, normalised=normalised)
            if sel is not None:
                site.ignore("probs", "logits")
                return arg, sel
    return None, None


def _pad_shape(shape, ndim):
    return torch.Size((1,) * (ndim - len(shape)) + tuple(shape))


@register_rule
class CategoricalRule(MStepRule):
    r"""
    ``Categorical(probs)`` or ``Categorical(logits)``: the weighted MLE

    .. math:: p_{bc} \propto \sum_{i \mapsto b} w_i\, [x_i = c]

    over the positions :math:`i` whose argument row is entry :math:`b` of the parameter
    (logits: :math:`\log p`). With a ``Dirichlet(alpha)`` prior the counts gain
    :math:`\alpha_c - 1` (the MAP). A row without mass keeps its old value.
    """

    types = (td.Categorical,)
    family = "Categorical"

    def statistics(self, site):
        # Categorical normalises its argument: allow that one normalisation on top.
        arg, sel = _given(site, normalised=True)
        if sel is None:
            return []
        # counts[b, c] over the (few) distinct (entry, value) pairs: one scatter-add on
        # the combined index b * C + c.
        batch, num_categories = sel.shape[:-1], sel.shape[-1]
        x = compact(site.value)
        group = broadcast_shapes(x.shape, batch)
        w_group = site.sum([site.weight], group)
        entries = torch.arange(batch.numel(), device=w_group.device).reshape(batch)
        index = (entries.reshape(_pad_shape(batch, len(group))) * num_categories
                 + x.long().reshape(_pad_shape(x.shape, len(group)))).expand(group)
        counts = categorical_counts(w_group.reshape(-1, 1), index,
                                    batch.numel() * num_categories)
        return [Stats(arg, sel, self, num=counts.reshape(sel.shape))]

    def maximize(self, arg, num, den, old):
        tiny = torch.finfo(old.dtype).tiny
        if arg == "logits":
            old = old.softmax(-1)
        num = num.clamp_min(0)
        total = num.sum(-1, keepdim=True)
        new = torch.where(total > 0, num / total.clamp_min(tiny), old).clamp_min(tiny)
        new = new / new.sum(-1, keepdim=True)
        return new.log() if arg == "logits" else new


@register_rule
class BernoulliRule(MStepRule):
    r"""
    ``Bernoulli(probs)`` or ``Bernoulli(logits)``: :math:`p = \sum w x / \sum w` (logits:
    :math:`\mathrm{logit}\, p`), kept inside :math:`[\epsilon, 1 - \epsilon]` so that the
    logits stay finite. A ``Beta(a, b)`` prior adds :math:`a - 1` and :math:`a + b - 2`.
    """

    types = (td.Bernoulli,)
    family = "Bernoulli"

    def statistics(self, site):
        arg, sel = _given(site)
        if sel is None:
            return []
        w = site.weight
        return [Stats(arg, sel, self, num=site.sum([w, site.value], sel),
                      den=site.sum([w], sel))]

    def maximize(self, arg, num, den, old):
        if arg == "logits":
            old = old.sigmoid()
        eps = torch.finfo(old.dtype).eps
        new = torch.where(den > 0, safe_ratio(num, den, old).clamp(eps, 1 - eps), old)
        return new.logit() if arg == "logits" else new
