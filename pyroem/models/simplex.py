r"""
The simplex constraint of the built-in models' probability parameters (mixture weights,
start, transition and emission probabilities), with a softmax transform that stays on
the calling thread.

A :class:`~pyro.nn.PyroParam` on :data:`torch.distributions.constraints.simplex` stores
:math:`u = \log p` and computes :math:`p = \mathrm{softmax}(u)` on every read through
:class:`torch.distributions.transforms.SoftmaxTransform`, whose ``u.max(-1, keepdim=True)``
(values and indices) enters torch's intra-op thread pool even for a 2-vector, as does
the fused :func:`torch.softmax`. With more than one torch thread on a machine whose other
cores are busy, waking the pool's threads costs milliseconds: on this project's loaded
2-core machine the *mean* time of ``torch.softmax`` on a ``(2, 2)`` tensor was 1 to 3.6
ms against a median of 2.4 us, and bench/hmm.py ``--case tiny`` (eight reads of
``start_probs``/``trans_probs`` per iteration) took 11 ms per iteration instead of 0.6.
:data:`simplex` is the same constraint (``check``, ``event_dim``; ``transform_to`` gives
the same values to rounding) whose transform is three elementwise operations and two
reductions that torch runs inline on small tensors:
:math:`e = \exp(u - \max u)`, :math:`p = e / \sum e`.

Registered for this constraint object only: ``constraints.simplex`` and every other
model keep torch's transform.
"""

from torch.distributions import constraints, transform_to
from torch.distributions.transforms import SoftmaxTransform


class _Simplex(constraints._Simplex):
    """The probability simplex of the last dimension (as ``constraints.simplex``)."""


class InlineSoftmaxTransform(SoftmaxTransform):
    r""":math:`p = \exp(u - \max u) / \sum \exp(u - \max u)` along the last dimension
    by operations that stay on the calling thread for small tensors (inverse
    :math:`\log p`, as :class:`SoftmaxTransform`)."""

    def __eq__(self, other):
        return isinstance(other, InlineSoftmaxTransform)

    def _call(self, x):
        e = (x - x.amax(-1, keepdim=True)).exp()
        return e / e.sum(-1, keepdim=True)


#: The simplex constraint of pyroem's built-in models (see the module docstring).
simplex = _Simplex()


@transform_to.register(_Simplex)
def _transform_to_simplex(constraint):
    return InlineSoftmaxTransform()
