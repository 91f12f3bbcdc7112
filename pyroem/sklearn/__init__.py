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

:class:`GaussianHMM`, :class:`CategoricalHMM`, :class:`GMMHMM`, :class:`PoissonHMM`,
:class:`MultinomialHMM` and :class:`BernoulliHMM` follow hmmlearn instead
(rows are the frames of sequences given by ``lengths``; ``score`` is the total
log-likelihood), and so does :class:`LinearGaussianSSM` (pykalman's parameters; its
``transform`` gives the smoothed states). :class:`FactorAnalysis` is
:class:`sklearn.decomposition.FactorAnalysis`'s API (a transformer); :class:`PLDA` is a
supervised transformer (``fit(X, y)`` with speaker labels) and a scorer of verification
trials (``llr``, ``score_matrix``). Each passes scikit-learn's estimator checks, except
those listed with their reasons in ``tests/test_sklearn*.py`` (rows of a sequence are not
exchangeable; an HMM of symbols or counts takes integers).

The fitted pyroem model is kept as ``model_`` (its ``history`` holds the per-iteration
log-likelihood). As scikit-learn's estimators, they raise
:class:`~sklearn.exceptions.NotFittedError` from every method before ``fit``, warn with
scikit-learn's :class:`~sklearn.exceptions.ConvergenceWarning` when a fit ends unconverged,
and leave a fitted estimator as it was when a ``fit`` is refused.
"""

try:
    import sklearn  # noqa: F401
except ImportError:  # say which extra brings it, not only that the import failed
    raise ImportError("pyroem.sklearn needs scikit-learn, which is not installed: "
                      "pip install 'pyroem[sklearn]' (or pip install scikit-learn)") from None

from pyroem.sklearn.base import EMEstimator
from pyroem.sklearn.counts import BernoulliHMM, MultinomialHMM, PoissonHMM
from pyroem.sklearn.factor import FactorAnalysis
from pyroem.sklearn.hmm import GMMHMM, CategoricalHMM, GaussianHMM
from pyroem.sklearn.mixture import GaussianMixture
from pyroem.sklearn.plda import PLDA
from pyroem.sklearn.sequences import HMMEstimator
from pyroem.sklearn.ssm import LinearGaussianSSM

__all__ = ["GMMHMM", "PLDA", "BernoulliHMM", "CategoricalHMM", "EMEstimator", "FactorAnalysis",
           "GaussianHMM", "GaussianMixture", "HMMEstimator", "LinearGaussianSSM",
           "MultinomialHMM", "PoissonHMM"]
