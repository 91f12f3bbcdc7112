r"""
The M-step: :math:`\eta_{new} = \arg\max_\eta Q(q, \eta)` with the posterior :math:`q` held
fixed, by one of three strategies:

1. :class:`ClosedFormMStep`: the model's own closed form (built-in models);
2. :class:`AutoMStep`: an automatic closed form for recognised sites of a user's model,
   one :class:`~pyroem.infer.mstep.rules.MStepRule` per distribution family, chosen by
   type from a registry (:func:`register_rule` adds a family);
3. :class:`NumericalMStep`: L-BFGS on :func:`expected_log_joint` (generalised EM), for
   every other parameter.
"""

from pyroem.infer.mstep.auto import AutoMStep
from pyroem.infer.mstep.closed_form import ClosedFormMStep
from pyroem.infer.mstep.numerical import NumericalMStep, expected_log_joint
from pyroem.infer.mstep.rules import MStepRule, Stats, WeightedSite, register_rule, registry

__all__ = ["AutoMStep", "ClosedFormMStep", "MStepRule", "NumericalMStep", "Stats",
           "WeightedSite", "expected_log_joint", "register_rule", "registry"]
