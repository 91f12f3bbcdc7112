r"""
scikit-learn estimators wrapping the built-in models.

They take scikit-learn's names (``n_components``, ``random_state``, ``n_init``, ...), store
the fitted parameters as NumPy arrays with a trailing underscore, and work inside
:class:`~sklearn.pipeline.Pipeline` and :class:`~sklearn.model_selection.GridSearchCV`
(``score`` is the mean log-likelihood per sample, so a grid search picks the model that
generalises best)::

    from sklearn.model_selection import GridSearchCV
    from pyroem.sklearn import GaussianMixture

    search = GridSearchCV(GaussianMixture(), {"n_components": [1, 2, 3]}).fit(x)

The fitted pyroem model is kept as ``model_`` (its ``history`` holds the per-iteration
log-likelihood).
"""

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from pyroem.models import GaussianMixture as _GaussianMixture

__all__ = ["EMEstimator", "GaussianMixture"]


class EMEstimator(DensityMixin, BaseEstimator):
    """
    Shared base of the scikit-learn estimators: input validation, seeding, the fit call
    and the scoring methods. A subclass names its pyroem model by implementing

    - ``_make_model(n_features)``: a fresh pyroem model for data with ``n_features``
      columns, built from the estimator's parameters;
    - ``_init_option()``: the model's ``fit(init=...)`` value for ``init_params``;
    - ``_export(model)``: set the fitted attributes (``weights_``, ...) from the model;

    and may override ``_model_args(X, **fit_params)`` (the model's data arguments, e.g.
    an HMM's sequence lengths). Data are validated by scikit-learn (float64 or float32
    kept, NaN/inf and wrong numbers of features rejected) and copied into a tensor of
    the same dtype.
    """

    def _validate(self, X, reset):
        X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                          ensure_min_samples=1)
        # a copy: the estimator never aliases (or warns about read-only) user arrays
        return torch.tensor(X)

    def _model_args(self, X, **fit_params):
        return (X,)

    def _seed(self):
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def fit(self, X, y=None, **fit_params):
        """
        Fit by ``method`` (``"em"``, ``"viterbi"`` or ``"svi"``) with ``n_init``
        initialisations, keeping the best.

        :param X: data, ``(n_samples, n_features)``.
        :param y: ignored (scikit-learn's API).
        :returns: ``self``.
        """
        X = self._validate(X, reset=True)
        model = self._make_model(X.shape[1])
        history = model.fit(*self._model_args(X, **fit_params), method=self.method,
                            max_iter=self.max_iter, tol=self.tol, init=self._init_option(),
                            num_restarts=self.n_init, seed=self._seed())
        self.model_ = model
        self.converged_ = bool(history.converged)
        self.n_iter_ = int(history.num_iters)
        # mean log-likelihood per sample under the final parameters (scikit-learn's meaning)
        self.lower_bound_ = float(history.final_log_likelihood) / X.shape[0]
        self._export(model)
        return self

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
        return self.model_.bic(self._fitted(X))

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        return self.model_.aic(self._fitted(X))

    def sample(self, n_samples=1):
        """
        Draw samples, seeded from ``random_state`` without touching the global random
        state.

        :returns: ``(X (n_samples, n_features), y (n_samples,))``, ``y`` the latent states.
        """
        check_is_fitted(self, "model_")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed())
            X, y = self.model_.sample(n_samples)
        return X.numpy(), y.numpy()


class GaussianMixture(EMEstimator):
    r"""
    A Gaussian mixture fitted by exact EM (or Viterbi training, or SVI), with the API of
    :class:`sklearn.mixture.GaussianMixture`; see :class:`pyroem.models.GaussianMixture`
    for the model and its updates.

    :param int n_components: number of mixture components.
    :param str covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
    :param float tol: stop when the mean log-likelihood per sample changes by less.
    :param float reg_covar: added to the covariance diagonals after each M-step.
    :param int max_iter: EM iterations at most.
    :param int n_init: initialisations; the best fit is kept.
    :param str init_params: ``"kmeans"`` (k-means from k-means++ seeds) or ``"random"``
        (random responsibilities).
    :param random_state: ``None``, an int or a :class:`numpy.random.RandomState`.
    :param str method: ``"em"``, ``"viterbi"`` or ``"svi"``.

    Fitted attributes: ``weights_ (K,)``, ``means_ (K, D)``, ``covariances_`` (shape by
    ``covariance_type``, as scikit-learn), ``converged_``, ``n_iter_``, ``lower_bound_``
    (final mean log-likelihood per sample), ``n_features_in_`` and ``model_``.
    """

    _inits = {"kmeans": "kmeans++", "k-means++": "kmeans++", "kmeans++": "kmeans++",
              "random": "random"}

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", random_state=None,
                 method="em"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.method = method

    def _make_model(self, n_features):
        return _GaussianMixture(self.n_components, n_features, self.covariance_type,
                                self.reg_covar)

    def _init_option(self):
        if self.init_params not in self._inits:
            raise ValueError(f"unknown init_params {self.init_params!r}; expected one of "
                             f"{sorted(self._inits)}")
        return self._inits[self.init_params]

    def _export(self, model):
        self.weights_ = model.weights.detach().numpy()
        self.means_ = model.means.detach().numpy()
        self.covariances_ = model.covariances.numpy()
