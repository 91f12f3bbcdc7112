"""scikit-learn's :class:`~sklearn.mixture.GaussianMixture` API on pyroem's model."""

from typing import ClassVar

from pyroem.models import GaussianMixture as _GaussianMixture
from pyroem.models.gmm import COVARIANCE_TYPES
from pyroem.sklearn.base import EMEstimator


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

    _integer_params = ("n_components", "max_iter", "n_init")
    _nonnegative_params = ("tol", "reg_covar")
    _choices: ClassVar[dict] = {"covariance_type": COVARIANCE_TYPES, "method": ("em", "viterbi", "svi")}

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

    def _export(self, model):
        self.weights_ = model.weights.detach().numpy()
        self.means_ = model.means.detach().numpy()
        self.covariances_ = model.covariances.numpy()
