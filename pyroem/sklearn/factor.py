"""scikit-learn's :class:`~sklearn.decomposition.FactorAnalysis` API on pyroem's factor
analysis (diagonal noise) and PPCA (isotropic noise)."""

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from pyroem.models import FactorAnalysis as _FactorAnalysis
from pyroem.sklearn.base import EMEstimator, unavailable


class FactorAnalysis(TransformerMixin, EMEstimator):
    r"""
    Factor analysis :math:`x = W^\top z + \mu + \epsilon`, :math:`z \sim \mathcal N(0, I)`,
    :math:`\epsilon \sim \mathcal N(0, \Psi)`, fitted by exact EM, with the API of
    :class:`sklearn.decomposition.FactorAnalysis`; see :class:`pyroem.models.FactorAnalysis`.

    :param int n_components: latent dimension ``L`` (``< n_features``).
    :param str noise: ``"diagonal"`` (factor analysis) or ``"isotropic"`` (PPCA).
    :param float tol: stop when the mean log-likelihood per sample gains less.
    :param int max_iter: EM iterations at most.
    :param str init_params: ``"pca"`` (from the top principal directions) or ``"random"``.
    :param float reg_covar: floor added to the noise variances after each M-step.
    :param int n_init: initialisations; the best is kept.
    :param random_state: ``None``, an int or a :class:`numpy.random.RandomState`.

    Fitted attributes (scikit-learn's names): ``components_ (L, D)``, ``noise_variance_
    (D,)``, ``mean_ (D,)``, ``n_iter_``, ``converged_``, ``lower_bound_``, ``model_``.
    ``transform`` gives the posterior means :math:`E[z | x]`; ``score_samples`` the exact
    :math:`\log p(x_n)`.
    """

    _inits: ClassVar[dict] = {"pca": "pca", "random": "random"}
    _integer_params = ("n_components", "max_iter", "n_init")
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"noise": ("diagonal", "isotropic"), "method": ("em", "svi")}

    def __init__(self, n_components=1, *, noise="diagonal", tol=1e-6, max_iter=1000,
                 init_params="pca", reg_covar=1e-6, n_init=1, random_state=None, method="em"):
        self.n_components = n_components
        self.noise = noise
        self.tol = tol
        self.max_iter = max_iter
        self.init_params = init_params
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.random_state = random_state
        self.method = method

    def _make_model(self, n_features):
        if self.n_components >= n_features:
            raise ValueError(f"n_components={self.n_components} must be smaller than the "
                             f"number of features, n_features = {n_features} (the model is "
                             "not identifiable otherwise)")
        return _FactorAnalysis(n_features, self.n_components, self.noise, self.reg_covar)

    def fit(self, X, y=None):
        """Fit by exact EM (``n_init`` starts, the best kept). Returns ``self``.
        (No ``sample_weight``: the factor models do not take weights.)"""
        return super().fit(X, y)

    def _model_args(self, X):
        if X.shape[0] < 2:  # scikit-learn's words
            raise ValueError(f"FactorAnalysis needs at least 2 samples, got n_samples = "
                             f"{X.shape[0]}")
        return (X,)

    def _export(self, model):
        self.components_ = model.components.detach().numpy()
        self.noise_variance_ = np.broadcast_to(model.noise_variance.detach().numpy(),
                                               (model.dim,)).copy()
        self.mean_ = model.mean.detach().numpy()

    def transform(self, X):
        """Posterior means :math:`E[z_n | x_n]`, shape ``(n_samples, n_components)``."""
        X = self._fitted(X)
        return self.model_.transform(X).numpy()

    def get_covariance(self):
        r"""The model's data covariance :math:`W^\top W + \Psi`, ``(D, D)``."""
        check_is_fitted(self, "model_")
        return self.model_.covariance.detach().numpy()

    def get_precision(self):
        """The inverse of :meth:`get_covariance`."""
        return np.linalg.inv(self.get_covariance())

    def sample(self, n_samples=1):
        """``(X (n_samples, D), Z (n_samples, L))`` drawn from the fitted model."""
        check_is_fitted(self, "model_")
        with torch.random.fork_rng(devices=[]):
            X, Z = self.model_.sample(n_samples, seed=self._seed())
        return X.numpy(), Z.numpy()

    # a factor model has no discrete latent state to predict (hasattr is then False, so
    # scikit-learn does not take it for a clusterer)
    predict = predict_proba = fit_predict = unavailable(
        "FactorAnalysis has continuous latents: use transform for E[z | x]")
