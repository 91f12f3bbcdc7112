r"""
The guide of a mixture, :math:`q(z_n) = \mathrm{Categorical}(q_n)` with one row of
``q_probs (N, K)`` per point, written by EM's E-step lazily.

EM's E-step sets :math:`q_n := p(z_n | x_n)` (KL = 0). Written eagerly, that is four
passes over the ``(N, K)`` table per iteration (floor, sum, divide, and the logarithm that
stores a simplex parameter), which a fit never reads: bench/gmm.py (N = 1e5, K = 32)
spent them on every iteration. The E-step hands its posterior over instead, and ``q`` is
computed from it when next needed: when the guide runs (SVI, a decomposition), when
``m.q_probs`` is read or set, and by ``state_dict`` (a state always holds the current
``q``). Loading a state drops the pending posterior (the state's ``q``, or none, is the
guide's).
"""

import torch
from pyro.nn import PyroParam

from pyroem.models.simplex import simplex


class PendingResponsibilities:
    """Mixin of :class:`~pyroem.models.GaussianMixture`: ``write_posterior`` and the lazy
    ``q_probs`` (the model supplies ``_responsibilities(posterior, obs_mask, labels)``,
    the ``(K, N)`` posterior of every point)."""

    def write_posterior(self, posterior, x, obs_mask=None, labels=None, sample_weight=None):
        """E-step: the guide's ``q(z_n)`` := the exact posterior (computed when next read)."""
        object.__setattr__(self, "_pending_q", (posterior, obs_mask, labels))

    def _write_pending_q(self):
        """Set ``q_probs`` from the pending posterior of the last E-step, if any."""
        pending = self.__dict__.get("_pending_q")
        if pending is None:
            return
        object.__setattr__(self, "_pending_q", None)
        with torch.no_grad():
            # floored: a 0 probability is a -inf log (an emptied component under hard EM)
            q = self._responsibilities(*pending).T
            q = q.clamp_min(torch.finfo(q.dtype).tiny)
            q = q / q.sum(-1, keepdim=True)
        if self._q_rows() != q.shape[0]:
            self.q_probs = PyroParam(q, constraint=simplex, event_dim=1)
        else:
            self.q_probs = q

    def _q_rows(self):
        # rows of the guide's q_probs, read without building the constrained value
        q = self._parameters.get("q_probs_unconstrained")
        return None if q is None else q.shape[0]

    def __getattr__(self, name):
        if name == "q_probs":
            self._write_pending_q()
        return super().__getattr__(name)

    def __setattr__(self, name, value):
        if name == "q_probs":  # a value set now replaces the pending one
            self._write_pending_q()
        super().__setattr__(name, value)

    def state_dict(self, *args, **kwargs):
        self._write_pending_q()  # the state holds the guide's current q
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        object.__setattr__(self, "_pending_q", None)  # the state's q (or none) is the guide's
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
