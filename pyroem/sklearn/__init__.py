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

:class:`GaussianHMM` follows hmmlearn instead (rows are the frames of sequences given by
``lengths``; ``score`` is the total log-likelihood).

The fitted pyroem model is kept as ``model_`` (its ``history`` holds the per-iteration
log-likelihood). As scikit-learn's estimators, they raise
:class:`~sklearn.exceptions.NotFittedError` from every method before ``fit``, warn with
scikit-learn's :class:`~sklearn.exceptions.ConvergenceWarning` when a fit ends unconverged,
and leave a fitted estimator as it was when a ``fit`` is refused.
"""


from pyroem.sklearn.base import EMEstimator
from pyroem.sklearn.hmm import GMMHMM, CategoricalHMM, GaussianHMM
from pyroem.sklearn.mixture import GaussianMixture
from pyroem.sklearn.sequences import HMMEstimator

__all__ = ["GMMHMM", "CategoricalHMM", "EMEstimator", "GaussianHMM", "GaussianMixture",
           "HMMEstimator"]
