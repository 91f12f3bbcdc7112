r"""
The emission protocol: what an emission family plugs into the chain of
:class:`~pyroem.models.hmm.chain.HiddenMarkovModel`.

An HMM is a chain (start, transition and final states) composed with an emission
:math:`p(x_t | z_t = k, \theta)`; each part has its own parameters, expected statistics
and M-step, as in dynamax. The chain's E-step needs the emission only through its
log-densities :math:`\log b_t(k) = \log p(x_t | z_t = k)`, and EM's M-step factorises:

.. math::

    Q(\eta) = \sum_k \gamma_1(k) \log \pi_k + \sum_{t,i,j} \xi_t(i, j) \log A_{ij}
    + \sum_{t,k} \gamma_t(k) \log p(x_t | z_t = k, \theta),

so the emission's M-step maximises its own term given the per-frame posteriors
:math:`\gamma_t(k)`. A new family is one subclass of :class:`Emission` (and a thin model
class that attaches it to the chain, e.g. :class:`~pyroem.models.GaussianHMM`).
"""

import torch
from pyro.nn import PyroModule

from pyroem.models.checks import check_positive_int
from pyroem.models.raw import DetachedReads


class Emission(DetachedReads, PyroModule):
    r"""
    Base class of the emission families of a hidden Markov model with ``num_states``
    states: a :class:`~pyro.nn.PyroModule` that holds the family's parameters (as
    ``PyroParam`` attributes; under the model they are the sites ``emission.<name>``)
    and implements the methods below. Data reach it padded, ``x (B, T, ...)`` with
    ``lengths (B,)`` (as :meth:`pack` returns them); padded frames hold harmless values
    (zeros) and get zero weight in ``gamma``.

    Class attributes:

    - ``letters``: one letter per parameter group, for the model's ``params=`` string
      (e.g. ``"mc"`` for means and covariances); the chain uses ``s`` and ``t``.
    - ``inits``, ``default_init``: the accepted ``fit(init=...)`` values (``"given"``
      keeps the parameters as set) and the default.

    :param int num_states: ``K``, the number of hidden states.
    """

    letters = ""
    inits = ("given",)
    default_init = "given"

    def __init__(self, num_states):
        super().__init__()
        self.num_states = check_positive_int("num_states", num_states)

    @property
    def dtype(self):
        """The dtype of the parameters (the dtype of the computation)."""
        own = self._parameters  # its own first (read on every check of the data), then any
        return next(iter(own.values())).dtype if own else next(self.parameters()).dtype

    def pack(self, x, lengths=None, dtype=None):
        """Validate sequence data (one sequence, a list, or a padded batch with
        ``lengths``) and return ``(padded, lengths, form)`` as
        :func:`~pyroem.models.hmm.sequences.pack_sequences` does, for this family's kind of
        frame (float vectors in ``dtype``, or integer symbols)."""
        raise NotImplementedError

    def check(self, x, lengths):
        """Refuse padded data that :meth:`pack` would not have returned (another frame
        shape or dtype, NaN/inf, symbols out of range, bad lengths), with a
        ``ValueError`` naming what was expected
        (:func:`~pyroem.models.hmm.sequences.check_padded`). The chain calls it in its
        ``model``, ``e_step`` and statistics, so that ``EM.step`` on wrong data changes
        nothing."""
        raise NotImplementedError

    def observe(self, t, z, x_t):
        """The emission of step ``t`` in the Pyro model: observe ``x_t`` (the frames of all
        sequences at time ``t``) given the state ``z`` (enumerated) with a ``pyro.sample``
        site named ``x_{t}``; latent sites of the emission itself (e.g. a mixture
        component ``m_{t}``) are enumerated too."""
        raise NotImplementedError

    def log_prob(self, x, grad=False):
        r""":math:`\log p(x_{b,t} | z = k)` for every frame and state, shape
        ``(B, T, K)``; it may be a strided view (the recursions read a state-major
        ``(T, K, B)`` layout fastest). Differentiable in the parameters when ``grad``
        (for SVI); otherwise computed without a graph."""
        raise NotImplementedError

    def log_prob_table(self):
        r"""For emissions over ``M`` discrete symbols, the ``(M, K)`` table
        :math:`\log p(x = m | z = k)` that the data index (then the E-step looks frames up
        in it instead of building :meth:`log_prob`'s ``(B, T, K)`` tensor); ``None``
        (the default) for other emissions."""
        return None

    def expected_statistics(self, gamma, x):
        r"""Expected sufficient statistics under the per-frame posteriors
        ``gamma (B, T, K)`` (:math:`\gamma_{b,t}(k)`, zero on padding; possibly a view
        of a state-major tensor, as the recursions return it): a dict of tensors that
        are additive over sequences (whatever origin they are taken about is part of the
        dict). Its keys must differ from the chain's ``"start"`` and ``"trans"``."""
        raise NotImplementedError

    def maximize(self, stats, params):
        r"""M-step: set the parameters whose letter is in ``params`` to
        :math:`\arg\max_\theta \sum_{t,k} \gamma_t(k) \log p(x_t | z_t = k, \theta)`
        given ``stats`` (those of :meth:`expected_statistics`, possibly summed over
        batches); the others stay as they are (frozen)."""
        raise NotImplementedError

    def initialize(self, x, lengths, init, generator, params):
        """Starting values from the data for the parameters whose letter is in ``params``
        (``init`` is one of :attr:`inits`; ``"given"`` changes nothing), drawing any
        randomness from ``generator``."""
        raise NotImplementedError

    def sample(self, z, generator):
        """One frame per state in ``z`` (any shape ``S``): a tensor ``S + event_shape``."""
        raise NotImplementedError

    def num_parameters(self, params):
        """Free parameters among those whose letter is in ``params`` (for BIC/AIC)."""
        raise NotImplementedError

    @staticmethod
    def frames(x, lengths):
        """The frames of padded data that are not padding, ``(N, ...)``, and the mask
        ``(B, T)`` that picks them."""
        mask = torch.arange(x.shape[1]) < lengths.unsqueeze(-1)
        return x[mask], mask
