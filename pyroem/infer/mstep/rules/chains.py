r"""
The rule for a site observed through Pyro's :class:`~pyro.distributions.DiscreteHMM`,
from the chain posterior that the vectorised E-step computed
(:class:`~pyroem.infer.chains.ChainStatistics`).

With :math:`\pi` on :math:`z_0` (one step before the first observation) and :math:`A`
the transition matrix, the expected complete-data log-likelihood of the chains is

.. math::

    Q = \sum_i n^{(0)}_i \log \pi_i + \sum_{ij} n_{ij} \log A_{ij}
      + \sum_{b,t,k} \gamma_{bt}(k) \log p(x_{bt} | z_{bt} = k),

with :math:`n^{(0)}` the expected counts of :math:`z_0` and :math:`n` those of every
transition (:math:`z_0 \to z_1` included). So :math:`\pi` and :math:`A` take the
``Categorical`` maximiser of their counts (given as ``probs.log()`` of a simplex parameter,
or as logits), and the observation distribution's parameters the rule of its own family,
weighted by :math:`\gamma`.
"""

from pyro.distributions import DiscreteHMM

from pyroem.infer.mstep.provenance import compact
from pyroem.infer.mstep.rules.base import MStepRule, Stats
from pyroem.infer.mstep.rules.discrete import CategoricalRule
from pyroem.infer.mstep.rules.registry import register_rule, registry


def _counts_stats(site, attr, counts, solver):
    """``Stats`` for the parameter behind ``initial_logits``/``transition_logits`` from
    its expected ``counts``, or ``None`` when the argument is not a (log-)selection of one
    parameter entry per state (then it counts as another use)."""
    sel = site.select_log(attr)
    if sel is None or sel.shape.numel() != counts.numel():
        return None
    site.ignore(attr)
    return Stats("probs" if sel.log else "logits", sel, solver,
                 num=counts.reshape(sel.shape))


@register_rule
class DiscreteHMMRule(MStepRule):
    r"""
    ``DiscreteHMM(initial_logits, transition_logits, observation_dist)`` observed, after
    the vectorised E-step: :math:`\pi \propto n^{(0)}`, :math:`A_{i\cdot} \propto n_{i\cdot}`
    and the observation distribution's parameters by its family's rule with weights
    :math:`\gamma`. A site that took the generic E-step (its chains differ, it depends on
    an enumerated variable, it is masked) has no chain statistics: its parameters go to
    the numerical M-step, as the E-step's warning said.
    """

    types = (DiscreteHMM,)
    family = "DiscreteHMM"

    def statistics(self, site):
        chain = site.chain
        if chain is None:
            return []
        w = compact(site.weight).reshape(-1)
        if not bool((w == w[0]).all()):
            return []  # not reached: the vectorised route takes no mask
        w = w[0]
        solver = CategoricalRule()
        stats = [s for s in (_counts_stats(site, "initial_logits", w * chain.init, solver),
                             _counts_stats(site, "transition_logits", w * chain.trans, solver))
                 if s is not None]
        stats += self._observation_stats(site, chain.gamma * w)
        return stats

    @staticmethod
    def _observation_stats(site, gamma):
        """The observation distribution's statistics from its own rule, with
        :math:`\\gamma_{bt}(k)` as the weight of state ``k`` at frame ``(b, t)``."""
        obs = site.fn.observation_dist
        nested = {"name": f"{site.name}.observation_dist", "fn": obs,
                  "value": site.value.unsqueeze(-1 - obs.event_dim)}
        stats, other = registry.site_statistics(nested, gamma, site.names)
        site.ignore("observation_dist")
        site.other |= other
        return stats
