import numpy as np
import pytest
import torch

from pyroem.preprocessing import LDA, Center, LengthNorm, Pipeline, Whiten


def _data(seed=0, n_per=20, speakers=6, d=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (speakers, d))
    mix = rng.normal(size=(d, d))
    labels = np.repeat(np.arange(speakers), n_per)
    x = (centres[labels] + rng.normal(size=(labels.size, d))) @ mix + 4.0
    return torch.as_tensor(x), labels


@pytest.mark.parametrize("kind", ["pca", "zca"])
def test_whiten_gives_identity_covariance_on_training_data(kind):
    x, _ = _data()
    y = Whiten(kind).fit_transform(x)
    cov = (y - y.mean(0)).T @ (y - y.mean(0)) / y.shape[0]
    assert torch.allclose(cov, torch.eye(5, dtype=cov.dtype), atol=1e-8)
    if kind == "zca":  # the symmetric whitening matrix
        w = Whiten(kind).fit(x).matrix
        assert torch.allclose(w, w.T, atol=1e-10)


def test_lda_spans_sklearn_subspace_and_whitens_within_scatter():
    sklearn_lda = pytest.importorskip("sklearn.discriminant_analysis")
    x, labels = _data()
    lda = LDA(3).fit(x, labels)
    y = lda.transform(x)
    ref = sklearn_lda.LinearDiscriminantAnalysis(n_components=3, solver="eigen").fit(
        x.numpy(), labels).transform(x.numpy())
    # same subspace: regressing scikit-learn's projection on ours leaves no residual
    coef, *_ = np.linalg.lstsq(np.c_[y.numpy(), np.ones(len(y))], ref, rcond=None)
    assert np.allclose(np.c_[y.numpy(), np.ones(len(y))] @ coef, ref, atol=1e-8)
    # within-speaker scatter of the projection is the identity, eigenvalues decrease
    codes = torch.as_tensor(labels)
    means = torch.stack([y[codes == s].mean(0) for s in range(6)])
    resid = y - means[codes]
    assert torch.allclose(resid.T @ resid / len(y), torch.eye(3, dtype=y.dtype), atol=1e-5)
    assert (lda.eigenvalues[:-1] >= lda.eigenvalues[1:]).all()


def test_pipeline_is_fitted_on_training_data_only():
    x, labels = _data()
    train, test = x[:80], x[80:]
    pipe = Pipeline(Center(), LDA(2), LengthNorm()).fit(train, labels[:80])
    out = pipe.transform(test)
    # by hand with the training statistics
    manual = (test - train.mean(0))
    lda = LDA(2).fit(train - train.mean(0), labels[:80])
    manual = lda.transform(manual)
    manual = np.sqrt(2) * manual / manual.norm(dim=-1, keepdim=True)
    assert torch.allclose(out, manual, atol=1e-10)
    assert torch.allclose(out.norm(dim=-1), torch.full((40,), np.sqrt(2), dtype=out.dtype))


def test_preprocessing_bad_inputs():
    x, labels = _data()
    with pytest.raises(ValueError):
        Center().transform(x)  # not fitted
    with pytest.raises(ValueError):
        Center().fit(x).transform(x[:, :3])  # wrong width
    with pytest.raises(ValueError):
        LDA(2).fit(x)  # no labels
    with pytest.raises(ValueError):
        LDA(9).fit(x, labels)  # dim > D
    with pytest.raises(ValueError):
        Whiten("bad")
    with pytest.raises(ValueError):
        Pipeline()
    with pytest.raises(ValueError):
        Center().fit(torch.full((3, 2), float("nan")))
