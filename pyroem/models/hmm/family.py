r"""
:class:`HMM`: a hidden Markov model whose emission family is a constructor argument,
``HMM(num_states, emission="poisson")`` or ``HMM(num_states, emission=dist.Poisson)``.

The families are those with a closed-form M-step (the automatic M-step's rules,
:mod:`pyroem.infer.mstep.rules`), each an :class:`~pyroem.models.hmm.emissions.Emission`
registered here under a name and its Pyro distribution class:

=========================  ==============================  ======================
``emission=``              distribution of a frame          parameters
=========================  ==============================  ======================
``"normal"``               ``Normal`` per feature (diag)    ``means``, ``covariances (K, D)``
``"multivariate_normal"``  ``MultivariateNormal``           ``means``, ``covariances (K, D, D)``
``"poisson"``              ``Poisson`` per feature          ``rates (K, D)``
``"exponential"``          ``Exponential`` per feature      ``rates (K, D)``
``"bernoulli"``            ``Bernoulli`` per feature        ``probs (K, D)``
``"categorical"``          ``Categorical`` over symbols     ``emission_probs (K, M)``
``"multinomial"``          ``Multinomial`` counts           ``emission_probs (K, M)``
=========================  ==============================  ======================

The configuration stores the family's *name* (a string), so that ``config()``,
``state_dict`` and checkpoints round-trip without pickling a class. A new family is an
``Emission`` subclass registered with :func:`register_emission`.
"""

import pyro.distributions as dist

from pyroem.models.checks import check_positive_int
from pyroem.models.hmm.bernoulli import BernoulliEmission
from pyroem.models.hmm.categorical import CategoricalEmission
from pyroem.models.hmm.chain import HiddenMarkovModel, emission_attribute
from pyroem.models.hmm.exponential import ExponentialEmission
from pyroem.models.hmm.gaussian import GaussianEmission
from pyroem.models.hmm.multinomial import MultinomialEmission
from pyroem.models.hmm.poisson import PoissonEmission

#: name -> (factory(num_states, dim, num_symbols), Pyro distribution class)
EMISSIONS = {}


def register_emission(name, factory, distribution=None):
    """
    Make ``HMM(num_states, emission=name)`` (and ``emission=distribution``) use
    ``factory(num_states, dim, num_symbols)``, which returns an
    :class:`~pyroem.models.hmm.emissions.Emission`.

    :param str name: the name stored in the model's configuration.
    :param distribution: the Pyro distribution class that also selects it, or ``None``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an emission family's name must be a non-empty string, got {name!r}")
    EMISSIONS[name] = (factory, distribution)


def emission_name(emission):
    """The registered name of ``emission`` (a name, or a Pyro distribution class)."""
    if isinstance(emission, str) and emission in EMISSIONS:
        return emission
    for name, (_, cls) in EMISSIONS.items():
        if cls is not None and emission is cls:
            return name
    names = ", ".join(repr(n) for n in EMISSIONS)
    raise ValueError(f"emission must be one of {names} or their Pyro distribution classes, "
                     f"got {emission!r}")


register_emission("normal", lambda K, D, M: GaussianEmission(K, D, "diag"), dist.Normal)
register_emission("multivariate_normal", lambda K, D, M: GaussianEmission(K, D, "full"),
                  dist.MultivariateNormal)
register_emission("poisson", lambda K, D, M: PoissonEmission(K, D), dist.Poisson)
register_emission("exponential", lambda K, D, M: ExponentialEmission(K, D), dist.Exponential)
register_emission("bernoulli", lambda K, D, M: BernoulliEmission(K, D), dist.Bernoulli)
register_emission("categorical", lambda K, D, M: CategoricalEmission(K, M), dist.Categorical)
register_emission("multinomial", lambda K, D, M: MultinomialEmission(K, M), dist.Multinomial)


class HMM(HiddenMarkovModel):
    r"""
    A hidden Markov model with the emission family ``emission``: the chain of
    :class:`~pyroem.models.HiddenMarkovModel` composed with that family's emission, its
    closed-form M-step and initialisation (the same as the specific classes:
    ``HMM(K, emission="poisson", dim=D)`` fits exactly as ``PoissonHMM(K, D)``).

    :param int num_states: ``K``.
    :param emission: a family name (see :mod:`~pyroem.models.hmm.family`) or its Pyro
        distribution class (``dist.Poisson``); the configuration stores the name.
    :param int dim: ``D``, features per frame (vector families).
    :param int num_symbols: ``M`` (``"categorical"`` and ``"multinomial"``).

    Other arguments as :class:`~pyroem.models.HiddenMarkovModel`. The emission's
    parameters are the model's attributes (``rates``, ``probs``, ``means``, ...; reading
    one that the family does not have raises ``AttributeError``), and ``params`` letters
    are the family's. ``fit(init=...)`` takes the family's initialisations.
    """

    not_config = ("name", "emission", "dim", "num_symbols")

    dim = emission_attribute("``D``, features per frame (vector families).")
    num_symbols = emission_attribute("``M`` (categorical and multinomial families).")
    means = emission_attribute("``(K, D)`` (normal families).")
    covariances = emission_attribute("``(K, D)`` (normal) or ``(K, D, D)`` "
                                     "(multivariate_normal).")
    rates = emission_attribute("``(K, D)`` (poisson, exponential).")
    probs = emission_attribute("``(K, D)`` (bernoulli).")
    emission_probs = emission_attribute("``(K, M)`` (categorical, multinomial).")

    def __init__(self, num_states, emission, dim=1, num_symbols=None, **kwargs):
        name = emission_name(emission)
        factory = EMISSIONS[name][0]
        needs_symbols = name in ("categorical", "multinomial")
        if needs_symbols and num_symbols is None:
            raise ValueError(f"emission={name!r} needs num_symbols")
        symbols = None if num_symbols is None else check_positive_int("num_symbols",
                                                                      num_symbols)
        super().__init__(num_states, **kwargs)
        self.family = name
        self.emission = factory(self.num_states, check_positive_int("dim", dim), symbols)
        self.inits = self.emission.inits
        self.default_init = self.emission.default_init
        self._dim, self._num_symbols = dim, num_symbols

    def config(self):
        """The constructor's arguments, the emission family as its name."""
        config = super().config()
        config.update(emission=self.family, dim=self._dim, num_symbols=self._num_symbols)
        return config
