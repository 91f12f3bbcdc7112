r"""
A built-in model's parameters read and written on the per-iteration path of EM, without
the attribute machinery that a user's ``m.means`` / ``m.means = value`` goes through.

A :class:`~pyro.nn.PyroParam` lives as its unconstrained tensor ``<name>_unconstrained``
and ``m.<name>`` is computed on every read (:class:`~pyro.nn.PyroModule`'s
``__getattr__``: the module's and its mixins' lookups, a ``transform_to`` registry call, a
weak reference attached to the result); ``m.<name> = value`` goes through the user-facing
checks of :class:`~pyroem.models.checks.CheckedParams` and the same lookups. On a tiny
problem (bench/hmm.py ``--case tiny``: a Gaussian HMM with 2 states, 300 frames) those
round trips cost more than the forward-backward recursion. The E-step and the closed-form
M-step read each parameter once with :func:`value` and write their results with
:func:`assign`: the same values and the same tensors (``assign`` replaces the data of the
registered unconstrained tensor, as ``PyroModule.__setattr__`` does), without re-validating
what the M-step produced by construction. A user's assignment still goes through the
checks, and the EM step still checks every parameter for finiteness after the M-step.

Outside a Pyro model or guide only: inside one (``SVI``) parameters must be read as
attributes, so that they appear as ``param`` sites.
"""

import math

import torch
from torch.distributions import constraints, transform_to

from pyroem.models.simplex import InlineSoftmaxTransform, simplex


def _same(x):
    return x


#: constraint object -> ``(to_constrained, to_unconstrained)``: ``transform_to`` looked up
#: once per constraint, and the plain functions where the transform is one: ``real``'s is
#: the identity, ``positive``'s ``exp`` composed with an affine map of offset 0 and scale 1
#: (two more operations that change no bit), the built-in simplex's an inline softmax with
#: inverse ``log``.
_MAPS = {constraints.real: (_same, _same), constraints.positive: (torch.exp, torch.log),
         simplex: (InlineSoftmaxTransform()._call, torch.log)}


def _maps(constraint):
    maps = _MAPS.get(constraint)
    if maps is None:
        transform = transform_to(constraint)
        maps = _MAPS[constraint] = (transform, transform.inv)
    return maps  # (a few constraint objects, each a module-level constant: the dict stays small)


def value(module, name):
    """The constrained value of ``module``'s ``PyroParam`` ``name``, detached."""
    constraint, _ = module._pyro_params[name]
    return _maps(constraint)[0](module._parameters[name + "_unconstrained"].detach())


def support(module, name):
    """``value(module, name) > 0`` of a ``PyroParam`` on the simplex, from the logarithms
    it stores (one comparison instead of a softmax): where they are above ``-inf``."""
    return module._parameters[name + "_unconstrained"].detach() > -math.inf


def child(module, name):
    """The submodule ``name`` of ``module`` (``module.name`` without the lookups of
    :class:`~pyro.nn.PyroModule`'s ``__getattr__``)."""
    return module._modules[name]


def assign(module, name, new):
    """Set ``module``'s ``PyroParam`` ``name`` to the constrained value ``new`` (its
    unconstrained tensor keeps its identity; no user-facing check)."""
    constraint, _ = module._pyro_params[name]
    module._parameters[name + "_unconstrained"].data = _maps(constraint)[1](new.detach())


class DetachedReads:
    """
    Mixin of a built-in model's :class:`~pyro.nn.PyroModule` (placed before it): a
    ``PyroParam`` read as an attribute outside the Pyro model and guide (``m.weights``,
    ``m.means``) is the plain value, detached: no ``grad_fn``, not a ``Parameter``
    (``.numpy()`` works), like scikit-learn's and hmmlearn's attributes. Inside the model
    or guide (``SVI``, ``decompose``) the read is Pyro's ``param`` site, differentiable,
    so that SVI trains the parameters. The unconstrained tensors
    (``<name>_unconstrained``) are the module's ``Parameter`` objects as before.
    """

    def __getattr__(self, name):
        value = super().__getattr__(name)
        if torch.is_tensor(value) and value.requires_grad \
                and name in self.__dict__.get("_pyro_params", ()) \
                and not self.__dict__["_pyro_context"].active:
            return value.detach()
        return value
