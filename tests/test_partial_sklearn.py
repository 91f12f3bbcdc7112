"""The scikit-learn wrappers take sample_weight in fit: integer weights equal repeated
samples (per sample for the mixture, per sequence for the HMM)."""

import numpy as np
import pytest

from pyroem.sklearn import GaussianHMM, GaussianMixture


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 1.0, size=(40, 2)) for c in ([0, 0], [5, 1], [1, 6])])


def test_mixture_weights_equal_repeated_samples():
    x = _blobs()
    weight = np.arange(x.shape[0]) % 3
    a = GaussianMixture(3, random_state=0, tol=0, max_iter=10).fit(np.repeat(x, weight, 0))
    b = GaussianMixture(3, random_state=0, tol=0, max_iter=10)
    b.fit(x, sample_weight=weight)
    # k-means starts from other rows, but on well separated blobs both fits reach the same
    # optimum of the same objective
    np.testing.assert_allclose(np.sort(b.means_[:, 0]), np.sort(a.means_[:, 0]), atol=1e-6)
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, abs=1e-8)


def test_hmm_sequence_weights_equal_repeated_sequences():
    rng = np.random.default_rng(1)
    seqs = [np.concatenate([rng.normal(0, 1, (n, 1)), rng.normal(6, 1, (n, 1))])
            for n in (20, 15, 25)]
    weight = [2, 1, 3]
    rep = [s for s, w in zip(seqs, weight) for _ in range(w)]
    a = GaussianHMM(2, n_iter=30, tol=0, random_state=0, init_params="kmeans")
    a.fit(np.concatenate(rep), lengths=[len(s) for s in rep])
    b = GaussianHMM(2, n_iter=30, tol=0, random_state=0, init_params="kmeans")
    b.fit(np.concatenate(seqs), lengths=[len(s) for s in seqs], sample_weight=weight)
    order_a, order_b = np.argsort(a.means_[:, 0]), np.argsort(b.means_[:, 0])
    np.testing.assert_allclose(b.means_[order_b], a.means_[order_a], atol=1e-6)
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-9)


def test_bad_weights_are_refused_and_change_nothing():
    x = _blobs()
    est = GaussianMixture(3, random_state=0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        est.fit(x, sample_weight=-np.ones(x.shape[0]))
    assert not hasattr(est, "means_")
