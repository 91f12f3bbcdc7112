"""The shared base of the scikit-learn estimators: validation, seeding, one ``fit`` through
the model's own, and the scoring methods."""

import math
import numbers
import warnings
from typing import ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from pyroem.infer.loop import ConvergenceWarning


class EMEstimator(DensityMixin, BaseEstimator):
    """
    Shared base of the scikit-learn estimators: input validation, seeding, the fit call
    and the scoring methods. A subclass names its pyroem model by implementing

    - ``_make_model(n_features)``: a fresh pyroem model for data with ``n_features``
      columns, built from the estimator's parameters;
    - ``_export(model)``: set the fitted attributes (``weights_``, ...) from the model;

    and may override ``_model_args(X, **fit_params)`` (the model's data arguments, e.g.
    an HMM's sequence lengths), ``_max_iter``, ``_model_tol``, ``_lower_bound`` and
    ``_inits`` (scikit-learn's ``init_params`` values and the model's ``init`` for
    each), and declare its parameters' constraints in ``_integer_params``,
    ``_nonnegative_params`` and ``_choices`` (checked by ``fit`` before anything else, with
    messages in the estimator's own names). Data are validated by scikit-learn (float64 or
    float32 kept, NaN/inf and wrong numbers of features rejected) and copied into a tensor
    of the same dtype.

    A ``fit`` that raises leaves the estimator as it was (a fitted one keeps its fitted
    attributes). An unconverged fit warns with scikit-learn's
    :class:`~sklearn.exceptions.ConvergenceWarning` (once per fit), so it is filtered as for
    scikit-learn's own estimators. Every method of an unfitted estimator raises
    :class:`~sklearn.exceptions.NotFittedError`.
    """

    #: ``init_params`` -> the model's ``fit(init=...)``
    _inits: ClassVar[dict] = {"kmeans": "kmeans++", "k-means++": "kmeans++", "kmeans++": "kmeans++",
              "random": "random"}
    #: parameters that are integers >= 1
    _integer_params = ()
    #: parameters that are finite numbers >= 0
    _nonnegative_params = ()
    #: parameters that take one of a few strings, with their values
    _choices: ClassVar[dict] = {}

    def _make_model(self, n_features):
        raise NotImplementedError

    def _export(self, model):
        raise NotImplementedError

    def _check_params(self):
        """Check the estimator's parameters (``ValueError`` naming the parameter)."""
        for name in self._integer_params:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                    or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in self._nonnegative_params:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name, choices in self._choices.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of "
                                 f"{sorted(choices)}")
        self._init_option()

    def _init_option(self):
        """The model's ``fit(init=...)`` value for ``init_params``."""
        if self.init_params not in self._inits:
            raise ValueError(f"unknown init_params {self.init_params!r}; expected one of "
                             f"{sorted(self._inits)}")
        return self._inits[self.init_params]

    def _validate(self, X, reset):
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                          ensure_min_samples=1)
        # a copy: the estimator never aliases (or warns about read-only) user arrays
        return torch.tensor(X)

    def _model_args(self, X, **fit_params):
        return (X,)

    def _seed(self, random_state=None):
        """An int seed drawn from ``random_state`` (else the estimator's)."""
        rs = self.random_state if random_state is None else random_state
        return int(check_random_state(rs).randint(np.iinfo(np.int32).max))

    def _max_iter(self):
        return self.max_iter

    def _model_tol(self, n_samples):
        """The model's ``tol`` (per data item) for scikit-learn's ``tol`` (per sample:
        the change of the mean log-likelihood, as :class:`sklearn.mixture.GaussianMixture`)."""
        return self.tol

    def _lower_bound(self, history, n_samples):
        """``lower_bound_``: the final mean log-likelihood per sample (scikit-learn's
        meaning)."""
        return float(history.final_log_likelihood) / n_samples

    def fit(self, X, y=None, sample_weight=None, **fit_params):
        r"""
        Fit by ``method`` (``"em"``, ``"viterbi"`` or ``"svi"``) with ``n_init``
        initialisations, keeping the best; an unconverged fit warns with scikit-learn's
        :class:`~sklearn.exceptions.ConvergenceWarning`. A fit that raises leaves the
        estimator as it was.

        :param X: data, ``(n_samples, n_features)``.
        :param y: ignored (scikit-learn's API).
        :param sample_weight: weights ``>= 0``, one per sample (per sequence for an HMM):
            the objective is :math:`\sum_n w_n \log p(x_n)`, so an integer weight is the
            sample repeated; ``lower_bound_`` is then per unit of weight.
        :param fit_params: the model's further data arguments (e.g. an HMM's ``lengths``).
        :returns: ``self``.
        """
        before = dict(self.__dict__)
        try:
            with warnings.catch_warnings(record=True) as caught:
                # pyroem's warning is always caught here, to be re-emitted as scikit-learn's
                warnings.simplefilter("always", ConvergenceWarning)
                self._fit(X, fit_params, sample_weight)
        except BaseException:  # a refused or failed fit changes nothing
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
        self._reemit(caught)
        return self

    def _fit(self, X, fit_params, sample_weight=None):
        self._check_params()
        X = self._validate(X, reset=True)
        k = getattr(self, "n_components", None) or 1  # PLDA's may be None
        if X.shape[0] < k:  # scikit-learn's words
            raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                             f"{k}, n_samples = {X.shape[0]}")
        tol = self._model_tol(X.shape[0])
        data = self._model_args(X, **fit_params)
        model = self._make_model(X.shape[1] if X.dim() > 1 else 1)
        history = model.fit(*data, method=self.method, max_iter=self._max_iter(), tol=tol,
                            init=self._init_option(), num_restarts=self.n_init,
                            seed=self._seed(), sample_weight=sample_weight)
        self.model_ = model
        self.converged_ = bool(history.converged)
        self.n_iter_ = int(history.num_iters)
        self.lower_bound_ = self._lower_bound(history, X.shape[0] if sample_weight is None
                                              else model._num_items(model.prepare(
                                                  *data, sample_weight=sample_weight)))
        self._export(model)

    def _reemit(self, caught):
        """The warnings of a fit: pyroem's :class:`~pyroem.infer.loop.ConvergenceWarning`
        (one per unconverged initialisation) as one scikit-learn
        :class:`~sklearn.exceptions.ConvergenceWarning`, the others unchanged."""
        unconverged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
        for w in caught:
            if not issubclass(w.category, ConvergenceWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)
        if unconverged:
            w = unconverged[-1]
            message = str(w.message)
            if len(unconverged) > 1:
                message = (f"{len(unconverged)} of {self.n_init} initialisations did not "
                           f"converge; the last: {message}")
            warnings.warn_explicit(message, SklearnConvergenceWarning, w.filename, w.lineno)

    def fit_predict(self, X, y=None, **fit_params):
        """Fit, then :meth:`predict` ``X``."""
        return self.fit(X, y, **fit_params).predict(X)

    def _fitted(self, X):
        check_is_fitted(self, "model_")
        return self._validate(X, reset=False)

    def score_samples(self, X):
        """Per-sample log-likelihood :math:`\\log p(x_n)`, shape ``(n_samples,)``."""
        X = self._fitted(X)
        return self.model_.log_prob(X).numpy()

    def score(self, X, y=None):
        """Mean per-sample log-likelihood (higher is better)."""
        return float(self.score_samples(X).mean())

    def predict(self, X):
        """Most probable latent state of each sample, shape ``(n_samples,)``."""
        X = self._fitted(X)
        return self.model_.predict(X).numpy()

    def predict_proba(self, X):
        """Posterior probabilities of the latent states, shape ``(n_samples, n_components)``."""
        X = self._fitted(X)
        return self.model_.posterior(X).numpy()

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        X = self._fitted(X)
        return self.model_.bic(X)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        X = self._fitted(X)
        return self.model_.aic(X)

    def sample(self, n_samples=1):
        """
        Draw samples, seeded from ``random_state`` without touching the global random
        state.

        :returns: ``(X (n_samples, n_features), y (n_samples,))``, ``y`` the latent states.
        """
        check_is_fitted(self, "model_")
        _check_n_samples(n_samples)
        with torch.random.fork_rng(devices=[]):
            X, y = self.model_.sample(n_samples, seed=self._seed())
        return X.numpy(), y.numpy()


def _check_n_samples(n_samples):
    """``n_samples`` of ``sample``: an integer >= 1 (``ValueError`` in scikit-learn's name)."""
    if (isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral)
            or n_samples < 1):
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")


class unavailable:  # lower case: read like a method name in the class bodies
    """A method of the base that a subclass does not have: reading it raises
    ``AttributeError`` with ``reason``, so ``hasattr`` is False (scikit-learn's tags)."""

    def __init__(self, reason):
        self.reason = reason

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        raise AttributeError(self.reason)
