"""hmmlearn's API for the HMMs of counts and binary frames: :class:`PoissonHMM`,
:class:`MultinomialHMM` (as :class:`hmmlearn.hmm.PoissonHMM` and
:class:`hmmlearn.hmm.MultinomialHMM`) and :class:`BernoulliHMM`."""

from typing import ClassVar

from pyroem.models import BernoulliHMM as _BernoulliHMM
from pyroem.models import MultinomialHMM as _MultinomialHMM
from pyroem.models import PoissonHMM as _PoissonHMM
from pyroem.sklearn.sequences import HMMEstimator


class _CountHMM(HMMEstimator):
    """Frames of counts: rows of non-negative integers (``binary``: 0 or 1)."""

    _integer_params = ("n_components", "n_iter", "n_init")
    _nonnegative_params = ("tol",)
    _choices: ClassVar[dict] = {"method": ("em", "viterbi", "svi"), "algorithm": ("viterbi", "map")}
    binary = False

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # counts
        return tags

    def _validate(self, X, reset):
        x = super()._validate(X, reset)
        if (x < 0).any():  # scikit-learn's words
            raise ValueError(f"Negative values in data passed to {type(self).__name__}: X "
                             "must hold counts")
        if ((x != x.round()) | ((x > 1) if self.binary else False)).any():
            raise ValueError(f"X must hold {'0/1 values' if self.binary else 'counts'} "
                             f"(integers >= 0{', at most 1' if self.binary else ''})")
        return x

    def _chain_kwargs(self):
        return {"params": self.params, "start_concentration": self.startprob_prior,
                "trans_concentration": self.transmat_prior}

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, params=None,
                 init_params=None, n_init=1, method="em"):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.params = params
        self.init_params = init_params
        self.n_init = n_init
        self.method = method

    def _init_option(self):
        value = self.init_params or self._default_init
        if value not in self._inits:
            raise ValueError(f"unknown init_params {value!r}; expected one of "
                             f"{sorted(self._inits)}")
        return self._inits[value]


class PoissonHMM(_CountHMM):
    r"""
    An HMM with Poisson counts, :math:`x_{td} | z_t = k \sim \mathrm{Poisson}(\lambda_{kd})`,
    with the API of :class:`hmmlearn.hmm.PoissonHMM`; see :class:`pyroem.models.PoissonHMM`.

    Parameters as :class:`~pyroem.sklearn.GaussianHMM`'s (``params``: letters of
    ``"str"``, ``r`` the rates; ``init_params``: ``"kmeans"`` (default) or ``"random"``).
    Fitted attributes: ``startprob_``, ``transmat_``, ``lambdas_ (K, D)`` (hmmlearn's
    name), ``converged_``, ``n_iter_``, ``lower_bound_``, ``model_``.
    """

    _inits: ClassVar[dict] = {"kmeans": "kmeans++", "kmeans++": "kmeans++", "random": "random"}
    _default_init = "kmeans"

    def _make_model(self, n_features):
        return _PoissonHMM(self.n_components, n_features, **self._chain_kwargs()).double()

    def _export(self, model):
        self._export_chain(model)
        self.lambdas_ = model.rates.detach().numpy()


class BernoulliHMM(_CountHMM):
    r"""
    An HMM with independent binary features, :math:`x_{td} | z_t = k \sim
    \mathrm{Bernoulli}(p_{kd})`; see :class:`pyroem.models.BernoulliHMM`. hmmlearn has no
    such model; the API is that of its other HMMs (``params``: letters of ``"ste"``).
    Fitted attributes: ``startprob_``, ``transmat_``, ``emissionprob_ (K, D)``,
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``model_``.
    """

    _inits: ClassVar[dict] = {"kmeans": "kmeans++", "kmeans++": "kmeans++", "random": "random"}
    _default_init = "kmeans"
    binary = True

    def _make_model(self, n_features):
        return _BernoulliHMM(self.n_components, n_features, **self._chain_kwargs()).double()

    def _export(self, model):
        self._export_chain(model)
        self.emissionprob_ = model.probs.detach().numpy()


class MultinomialHMM(_CountHMM):
    r"""
    An HMM whose frames are counts over ``n_features`` symbols out of ``n_trials`` draws,
    with the API of :class:`hmmlearn.hmm.MultinomialHMM`; see
    :class:`pyroem.models.MultinomialHMM`.

    :param int n_trials: draws per frame (``None``: each frame's own total).

    Fitted attributes: ``startprob_``, ``transmat_``, ``emissionprob_ (K, n_features)``,
    ``converged_``, ``n_iter_``, ``lower_bound_``, ``model_``.
    """

    _inits: ClassVar[dict] = {"random": "random"}
    _default_init = "random"

    def __init__(self, n_components=1, n_trials=None, startprob_prior=1.0, transmat_prior=1.0,
                 *, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, params=None,
                 init_params=None, n_init=1, method="em"):
        super().__init__(n_components, startprob_prior, transmat_prior, algorithm=algorithm,
                         random_state=random_state, n_iter=n_iter, tol=tol, params=params,
                         init_params=init_params, n_init=n_init, method=method)
        self.n_trials = n_trials

    def _make_model(self, n_features):
        return _MultinomialHMM(self.n_components, n_features, self.n_trials,
                               **self._chain_kwargs()).double()

    def _export(self, model):
        self._export_chain(model)
        self.emissionprob_ = model.emission_probs.detach().numpy()
