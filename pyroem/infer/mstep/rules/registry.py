"""The registry of M-step rules, and the dispatch of a site to its rule by type."""

from pyroem.infer.mstep.rules.base import WeightedSite


class RuleRegistry:
    """
    Maps distribution classes to rules: one table for likelihood sites, one for conjugate
    priors (a ``Gamma`` site can be either). A distribution finds its rule through its
    class's MRO, so a subclass of a registered distribution uses the parent's rule unless
    it has its own.
    """

    def __init__(self):
        self._tables = {False: {}, True: {}}

    def register(self, rule, types=None):
        """Register ``rule`` (an :class:`~pyroem.infer.mstep.rules.MStepRule` subclass or
        instance) for ``types`` (default: its :attr:`types`), replacing any rule for the
        same types. Returns ``rule``, so that it can decorate a class."""
        instance = rule() if isinstance(rule, type) else rule
        types = tuple(instance.types if types is None else types)
        if not types:
            raise ValueError(f"{type(instance).__name__} names no distribution types")
        for cls in types:
            self._tables[bool(instance.prior)][cls] = instance
        return rule

    def unregister(self, types, prior=False):
        """Remove the rules of ``types`` (a class or a tuple of classes)."""
        for cls in types if isinstance(types, tuple) else (types,):
            self._tables[prior].pop(cls, None)

    def lookup(self, fn, prior=False):
        """The rule for the distribution ``fn`` (first match along ``type(fn).__mro__``),
        or ``None``."""
        table = self._tables[prior]
        for cls in type(fn).__mro__:
            rule = table.get(cls)
            if rule is not None:
                return rule
        return None

    def site_statistics(self, site, weight, names, chain=None):
        """``(stats, other)``: the :class:`~pyroem.infer.mstep.rules.Stats` of a sample
        site from its rule, and the names of the parameters it reaches in any other way
        (those go to the numerical M-step). ``chain``: the E-step's chain statistics of
        a ``DiscreteHMM`` site."""
        return self.view_statistics(WeightedSite(site, weight, names, chain))

    def view_statistics(self, view):
        """:meth:`site_statistics` of a :class:`~pyroem.infer.mstep.rules.WeightedSite`
        (one site, or repeats stacked by :mod:`~pyroem.infer.mstep.grouping`)."""
        if view.reaches(view.value):
            stats, used = self._prior_statistics(view), ()
        else:
            rule = self.lookup(view.fn)
            stats = [] if rule is None else list(rule.statistics(view))
            for s in stats:  # a nested distribution's statistics keep their family
                s.family = s.family or rule.family or type(view.fn).__name__
            used = {s.arg for s in stats}
        other = set(view.other)
        for tensor in view.arguments(skip=used).values():
            other |= view.reaches(tensor)
        if not stats:
            other |= view.reaches(view.value)
        # a safety net: a parameter that reaches the site in any way (derived attributes
        # included) and got no statistics from it is maximised numerically, never left
        # untouched
        other |= view.reaches(view.fn) - {s.param for s in stats}
        return stats, other

    def _prior_statistics(self, view):
        # A factor on a parameter is a conjugate prior only when its value is a selection
        # of one parameter and its own arguments are fixed.
        rule = self.lookup(view.fn, prior=True)
        if (rule is None or view.select_value() is None
                or any(view.reaches(t) for t in view.arguments().values())):
            return []
        stats = list(rule.statistics(view))
        for s in stats:
            s.family, s.prior = rule.family or type(view.fn).__name__, True
        return stats


#: The rules the automatic M-step uses.
registry = RuleRegistry()


def register_rule(rule, types=None):
    """
    Register an M-step rule with the automatic M-step (usable as a class decorator).

    :param rule: an :class:`~pyroem.infer.mstep.rules.MStepRule` subclass (instantiated
        without arguments) or instance.
    :param tuple types: the distribution classes it handles; default ``rule.types``.
    :returns: ``rule``.
    """
    return registry.register(rule, types)
