r"""
The simplex constraint of the built-in models' probability parameters (mixture weights,
start, transition and emission probabilities), with a softmax transform that avoids one
slow torch kernel.

A :class:`~pyro.nn.PyroParam` on :data:`torch.distributions.constraints.simplex` stores
:math:`u = \log p` and computes :math:`p = \mathrm{softmax}(u)` on every read through
:class:`torch.distributions.transforms.SoftmaxTransform`, which subtracts
``u.max(-1, keepdim=True)[0]``. That reduction returns indices too, and with more than one
torch thread it enters a parallel region even for a 2-vector: on a loaded 2-core machine a
thread wake-up costs milliseconds, so its *mean* time was 1.1 ms against 5 us for
``amax`` (bench/hmm.py ``--case tiny`` read ``start_probs``/``trans_probs`` eight times
per iteration). :data:`simplex` is the same constraint (``check``, ``event_dim``, and
``transform_to`` gives the same values) whose transform is :func:`torch.softmax`, a
fused kernel that stays on the calling thread for small tensors.

Registered for this constraint object only: ``constraints.simplex`` and every other
model keep torch's transform.
"""

import torch
from torch.distributions import constraints, transform_to
from torch.distributions.transforms import SoftmaxTransform


class _Simplex(constraints._Simplex):
    """The probability simplex of the last dimension (as ``constraints.simplex``)."""


class FusedSoftmaxTransform(SoftmaxTransform):
    r""":math:`p = \exp(u) / \sum \exp(u)` along the last dimension by
    :func:`torch.softmax` (inverse :math:`\log p`, as :class:`SoftmaxTransform`)."""

    def __eq__(self, other):
        return isinstance(other, FusedSoftmaxTransform)

    def _call(self, x):
        return torch.softmax(x, -1)


#: The simplex constraint of pyroem's built-in models (see the module docstring).
simplex = _Simplex()


@transform_to.register(_Simplex)
def _transform_to_simplex(constraint):
    return FusedSoftmaxTransform()
