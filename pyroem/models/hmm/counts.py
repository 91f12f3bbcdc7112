r"""
Count-valued frames for the emission families of counts and binary features
(:mod:`~pyroem.models.hmm.poisson`, :mod:`~pyroem.models.hmm.bernoulli`,
:mod:`~pyroem.models.hmm.multinomial`): vectors of ``dim`` values per frame, integer or
floating tensors (integers become float64, as numpy and scikit-learn promote them),
checked to lie in the family's support before anything changes.
"""

import torch

from pyroem.models.checks import check_positive_int
from pyroem.models.hmm.emissions import Emission
from pyroem.models.hmm.sequences import check_padded, pack_sequences


def check_support(x, support, name="x"):
    """Refuse values outside ``support``: ``"counts"`` (integers >= 0) or ``"binary"``
    (0 or 1), with a ``ValueError`` naming the first bad value. Padding is checked too:
    :func:`~pyroem.models.hmm.sequences.pack_sequences` sets it to zero, a valid value."""
    if support == "binary":
        bad = (x != 0) & (x != 1)
        what = "0 or 1"
    else:
        bad = (x < 0) | (torch.frac(x) != 0)
        what = "non-negative integer counts"
    if bool(bad.any()):
        raise ValueError(f"{name} must hold {what}, got {float(x[bad][0])}")
    return x


class CountEmission(Emission):
    """An emission over vectors of ``dim`` counts (or binary values) per frame: the data
    handling shared by the count families. Subclasses set :attr:`support`."""

    #: ``"counts"`` or ``"binary"``
    support = "counts"

    def __init__(self, num_states, dim):
        super().__init__(num_states)
        self.dim = check_positive_int("dim", dim)

    def pack(self, x, lengths=None, dtype=None):
        padded, lengths, form = pack_sequences(x, lengths, dim=self.dim, dtype=dtype)
        check_support(padded, self.support)
        return padded, lengths, form

    def check(self, x, lengths):
        check_padded(x, lengths, dim=self.dim, dtype=self.dtype)
        return check_support(x, self.support), lengths

    def frame_moments(self, gamma, x):
        r""":math:`n_k = \sum_{b,t} \gamma_{b,t}(k)` and
        :math:`s_k = \sum_{b,t} \gamma_{b,t}(k) x_{b,t}`: ``(K,)`` and ``(K, D)``."""
        g = gamma.reshape(-1, self.num_states)
        return {"n": g.sum(0), "sx": g.T @ x.reshape(-1, self.dim)}
