r"""
Repeated sites of one trace, found once per E-step and shared with the M-step.

The steps of a ``pyro.markov`` loop are the same factor over and over: sites whose
distributions are the same function of the parameters
(:func:`~pyroem.infer.mstep.grouping.trace_site_key`: same type and wrappers, every
argument computed by the same autograd graph from the same parameters and constants),
with values of one shape. For such a group the first site's distribution *is* every
other's, so

.. math:: \log p_g(x_g) = \log p_1(x_g) \quad \text{for every member } g,

and the log-probs of all members come from one call on their values stacked along a new
leading dim, instead of one call (with its validation and broadcasting) per site. The
contraction of a first-order chain (:mod:`pyroem.infer.chain_contract`) and the automatic
M-step (:mod:`pyroem.infer.mstep.auto`) take the group stacked as well.
"""

from collections import OrderedDict

import torch


class SiteGroup:
    r"""
    Repeats of one factor in a trace.

    :ivar list sites: the sample sites (trace order).
    :ivar torch.Tensor log_prob: their unscaled log-probs stacked, ``(G,) + shape``, or
        ``None`` when the stacked call failed (each site then has its own).
    :ivar torch.Tensor marginal: their posterior marginals stacked like ``log_prob``,
        once an E-step has computed them (else ``None``).
    """

    def __init__(self, sites):
        self.sites = sites
        self.log_prob = None
        self.marginal = None

    @property
    def names(self):
        return [s["name"] for s in self.sites]

    def stacked_values(self):
        """The members' values stacked along a new dim left of every batch and event dim
        of their distribution (the values are padded with leading ones to that depth)."""
        fn = self.sites[0]["fn"]
        values = torch.stack([s["value"] for s in self.sites])
        depth = max(values.dim() - 1, len(fn.batch_shape) + len(fn.event_shape))
        return values.reshape((len(self.sites),) + (1,) * (depth + 1 - values.dim())
                              + tuple(values.shape[1:]))


def find_groups(sites, names):
    """The groups of at least two repeats among ``sites`` (a tracked trace's sample sites
    before their log-probs are computed; ``names``: ``{id(leaf): parameter name}``), in
    the order of their first site."""
    from pyroem.infer.mstep.grouping import trace_site_key  # the M-step imports estep

    groups = OrderedDict()
    for site in sites:
        key = trace_site_key(site, names)
        if key is not None:
            groups.setdefault(key, []).append(site)
    return [SiteGroup(members) for members in groups.values() if len(members) > 1]


def compute_log_probs(groups):
    """Set ``unscaled_log_prob`` and ``log_prob`` of every member of ``groups`` (no mask,
    no scale: they are equal) from one ``log_prob`` call per group; a group whose call
    raises is left to the trace's own ``compute_log_prob`` (which names the site)."""
    for group in groups:
        fn = group.sites[0]["fn"]
        try:
            log_prob = fn.log_prob(group.stacked_values())
        except ValueError:
            continue
        group.log_prob = log_prob
        for site, lp in zip(group.sites, log_prob.unbind(0)):
            site["unscaled_log_prob"] = lp
            site["log_prob"] = lp
