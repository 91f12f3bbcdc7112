"""PLDA as a scikit-learn estimator: a supervised transformer (the space where the two
covariances are diagonal) and a scorer of verification trials."""

from typing import ClassVar

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

from pyroem.models import PLDA as _PLDA
from pyroem.models.plda import encode_labels
from pyroem.sklearn.base import EMEstimator, unavailable


class PLDA(TransformerMixin, EMEstimator):
    r"""
    Two-covariance PLDA, :math:`z_s \sim \mathcal N(\mu, \Sigma_b)` per speaker and
    :math:`x_i \sim \mathcal N(z_{s_i}, \Sigma_w)` per embedding, fitted by exact EM on
    embeddings ``X`` and speaker labels ``y`` (any hashable values); see
    :class:`pyroem.models.PLDA`.

    ``transform`` maps embeddings to the space where :math:`\Sigma_w = I` and
    :math:`\Sigma_b = \mathrm{diag}(\psi)` (``psi_``, descending): the usual front end of
    PLDA back-ends, keeping the ``n_components`` directions of largest between-speaker
    variance (all when ``None``). ``score(X, y)`` is the mean log-likelihood per embedding,
    :math:`\frac1N \sum_s \log p(X_s)` (higher is better, so a grid search can tune
    ``reg_covar``); ``llr(enroll, test)`` and ``score_matrix`` give verification
    log-likelihood ratios.

    :param int n_components: dimensions kept by ``transform`` (``None``: all).
    :param int rank: ``None`` (two-covariance PLDA) or the rank of the speaker subspace
        (simplified PLDA, :class:`pyroem.models.PLDA` with ``rank``).
    :param float reg_covar: added to both covariances' diagonals after each M-step.
    :param int max_iter: EM iterations at most.
    :param float tol: stop when the mean log-likelihood per embedding gains less.

    Fitted attributes: ``mean_ (D,)``, ``between_covariance_``, ``within_covariance_
    (D, D)``, ``psi_ (D,)``, ``classes_`` (the speakers), ``n_iter_``, ``converged_``,
    ``lower_bound_``, ``model_``.
    """

    _inits: ClassVar[dict] = {"scatter": "scatter"}
    _integer_params = ("max_iter",)
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"method": ("em", "svi")}
    n_init, init_params, random_state = 1, "scatter", None

    def __init__(self, n_components=None, *, rank=None, reg_covar=1e-6, max_iter=200, tol=1e-6,
                 method="em"):
        self.n_components = n_components
        self.rank = rank
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.method = method

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True  # the speaker labels
        return tags

    def _check_params(self):
        super()._check_params()
        k = self.n_components
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"n_components must be None or an integer >= 1, got {k!r}")

    def fit(self, X, y):
        """Fit on embeddings ``X (n_samples, n_features)`` with speaker labels ``y``."""
        if y is None:
            raise ValueError("PLDA requires y to be passed, but the target y is None (y: the "
                             "speaker label of each embedding)")
        return super().fit(X, None, labels=y)

    def _model_args(self, X, labels):
        y = np.asarray(labels).reshape(-1) if not isinstance(labels, list) else labels
        if len(y) != X.shape[0]:
            raise ValueError(f"y must hold one label per row of X ({X.shape[0]}), got {len(y)}")
        codes, speakers = encode_labels(list(y) if not torch.is_tensor(y) else y)
        if len(speakers) < 2:  # scikit-learn's words
            raise ValueError(f"PLDA needs embeddings of at least 2 speakers, got "
                             f"{len(speakers)} class")
        self.classes_ = np.asarray(speakers)
        return X, codes

    def _make_model(self, n_features):
        if self.n_components is not None and self.n_components > n_features:
            raise ValueError(f"n_components={self.n_components} is more than n_features = "
                             f"{n_features}")
        return _PLDA(n_features, rank=self.rank, reg_covar=self.reg_covar)

    def _export(self, model):
        self.mean_ = model.mean.detach().numpy()
        self.between_covariance_ = model.between_cov.numpy()
        self.within_covariance_ = model.within_cov.numpy()
        # simultaneous diagonalisation: T W T' = I, T B T' = diag(psi), psi descending
        # (psi has D - rank zeros for a simplified PLDA)
        w_inv_root = np.linalg.inv(np.linalg.cholesky(self.within_covariance_))
        psi, vecs = np.linalg.eigh(w_inv_root @ self.between_covariance_ @ w_inv_root.T)
        order = psi.argsort()[::-1]
        self.psi_ = psi[order]
        self._transform = vecs[:, order].T @ w_inv_root

    def transform(self, X):
        """``(X - mean_)`` in the diagonalising basis, the first ``n_components`` columns."""
        X = self._fitted(X).numpy()
        k = self.n_components or X.shape[1]
        return (X - self.mean_) @ self._transform[:k].T

    def score(self, X, y):
        """Mean log-likelihood per embedding of ``X`` with speaker labels ``y``."""
        X = self._fitted(X)
        return float(self.model_.log_prob(X, list(np.asarray(y).reshape(-1))).sum()) / len(X)

    def score_samples(self, X):
        r"""Each embedding's log-likelihood alone, :math:`\log \mathcal N(x; \mu,
        \Sigma_b + \Sigma_w)`."""
        X = self._fitted(X)
        return self.model_.log_prob(X, list(range(len(X)))).numpy()

    def llr(self, enroll, test):
        """Verification log-likelihood ratio(s): :meth:`pyroem.models.PLDA.llr`."""
        check_is_fitted(self, "model_")
        return self.model_.llr(torch.as_tensor(np.asarray(enroll, dtype=np.float64)),
                               torch.as_tensor(np.asarray(test, dtype=np.float64))).numpy()

    def score_matrix(self, enroll_sets, tests):
        """``(K, M)`` log-likelihood ratios: :meth:`pyroem.models.PLDA.score_matrix`."""
        check_is_fitted(self, "model_")
        sets = [torch.as_tensor(np.asarray(e, dtype=np.float64)) for e in enroll_sets]
        return self.model_.score_matrix(sets, torch.as_tensor(np.asarray(tests,
                                                                         dtype=np.float64))).numpy()

    predict = predict_proba = fit_predict = bic = aic = sample = unavailable(
        "PLDA's speaker variables are continuous: use transform, llr or score_matrix")
