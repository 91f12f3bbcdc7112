r"""Sampling from a hidden Markov model's chain (a mixin of
:class:`~pyroem.models.hmm.chain.HiddenMarkovModel`): state paths, conditioned on the final
states when there are some, then the emission's draws."""

import torch

from pyroem.models.checks import check_positive_int, make_generator


class ChainSampling:
    """``sample`` for a chain with ``start_probs``, ``trans_probs``, ``final_states``,
    ``num_states`` and an ``emission`` that samples given the states."""

    def sample(self, num_steps, num_sequences=None, seed=None):
        r"""
        Draw sequences of ``num_steps`` frames from the chain. With ``final_states`` the
        states are drawn from :math:`p(z_{1:T} | z_T \in F)`: with
        :math:`h_T = \mathbb 1_F` and :math:`h_{t-1} = A h_t`
        (:math:`h_t(k) = p(z_T \in F | z_t = k)`), :math:`z_1 \propto \pi \odot h_1` and
        :math:`z_t \propto A_{z_{t-1}} \odot h_t`.

        :returns: ``(x, z)``: ``x (T, ...)`` and states ``(T,)``, or ``(B, T, ...)`` and
            ``(B, T)`` when ``num_sequences`` is given.
        :raises ValueError: if no path of ``num_steps`` frames ends in a final state.
        """
        T = check_positive_int("num_steps", num_steps)
        B = 1 if num_sequences is None else check_positive_int("num_sequences", num_sequences)
        g = make_generator(seed)
        with torch.no_grad():
            z = self._sample_states(T, B, g)
            x = self.emission.sample(z, g)
        if num_sequences is None:
            return x[0], z[0]
        return x, z

    def _sample_states(self, T, B, g):
        """``B`` state paths of ``T`` steps ``(B, T)`` (conditioned on ``final_states``)."""
        start, trans = self.start_probs.detach(), self.trans_probs.detach()
        h = self._final_messages(trans, T)
        first = start if h is None else start * h[0]
        if not first.sum() > 0:
            raise ValueError(f"no path of num_steps={T} frames ends in a final state")
        z = [torch.multinomial(first.expand(B, -1), 1, generator=g).squeeze(-1)]
        u = torch.rand(B, T, generator=g, dtype=trans.dtype)
        cum = trans.cumsum(-1) if h is None else None
        for t in range(1, T):
            # cumulative rows + uniforms: one searchsorted per step
            row = (cum if h is None else (trans * h[t]).cumsum(-1))[z[-1]]
            nxt = torch.searchsorted(row, u[:, t:t + 1] * row[:, -1:], right=True)
            z.append(nxt.squeeze(-1).clamp_max(self.num_states - 1))
        return torch.stack(z, 1)

    def _final_messages(self, trans, T):
        r"""``h (T, K)``, :math:`h_t(k) \propto p(z_T \in F | z_t = k)` (each step rescaled
        to a maximum of one), or ``None`` without final states (then :math:`h = 1`)."""
        if self.final_states is None:
            return None
        h = [self.final_states.to(trans.dtype)]  # from t = T backwards
        for _ in range(T - 1):
            nxt = trans @ h[-1]
            h.append(nxt / nxt.max().clamp_min(torch.finfo(trans.dtype).tiny))
        return torch.stack(h[::-1])
