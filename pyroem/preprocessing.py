r"""Embedding preprocessing for PLDA: centring, whitening, LDA projection and length
normalisation, composable in a :class:`Pipeline` that is fitted on training data only
and then applied unchanged to enrolment and test data.

Each step has ``fit(x, labels=None)`` (returns the step), ``transform(x)`` and
``fit_transform(x, labels=None)``; ``x`` is ``(N, D)`` (array or tensor), the output a
tensor. The usual recipe before PLDA (Garcia-Romero and Espy-Wilson, 2011) is
``Pipeline(Center(), LDA(dim), Whiten(), LengthNorm())``.
"""

import math

import torch

from pyroem.models.checks import as_float_tensor, check_finite, check_positive_int
from pyroem.models.plda import encode_labels


def _matrix(x, name="x", dim=None, dtype=None):
    x = check_finite(as_float_tensor(x, name, dtype), name)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (as the data it was fitted on), "
                         f"got {x.shape[1]}")
    return x


class Transform:
    """Base class: a fitted map of embeddings."""

    #: input dimension seen by :meth:`fit` (``None`` before fitting)
    dim_in = None

    def fit(self, x, labels=None):
        x = _matrix(x)
        self.dim_in = x.shape[1]
        self._fit(x, labels)
        return self

    def transform(self, x):
        if self.dim_in is None:
            raise ValueError(f"{type(self).__name__} is not fitted: call fit() on training data")
        return self._transform(_matrix(x, dim=self.dim_in, dtype=self._dtype))

    def fit_transform(self, x, labels=None):
        return self.fit(x, labels).transform(x)

    _dtype = None

    def _fit(self, x, labels):
        self._dtype = x.dtype

    def _transform(self, x):
        return x


class Center(Transform):
    r"""Subtract the training mean: :math:`x \mapsto x - \bar x`."""

    def _fit(self, x, labels):
        super()._fit(x, labels)
        self.mean = x.mean(0)

    def _transform(self, x):
        return x - self.mean


class Whiten(Transform):
    r"""
    Whitening with the training covariance :math:`\Sigma = V \Lambda V^\top`:
    :math:`x \mapsto \Lambda^{-1/2} V^\top (x - \bar x)` (``kind="pca"``) or
    :math:`V \Lambda^{-1/2} V^\top (x - \bar x)` (``kind="zca"``, closest to the input).

    :param str kind: ``"pca"`` or ``"zca"``.
    :param float eps: added to the eigenvalues (relative to their mean) so that a
        rank-deficient covariance can be whitened (``0``: raise ``ValueError`` instead).
    """

    def __init__(self, kind="zca", eps=0.0):
        if kind not in ("pca", "zca"):
            raise ValueError(f"unknown kind {kind!r}; expected one of ['pca', 'zca']")
        self.kind = kind
        self.eps = float(eps)

    def _fit(self, x, labels):
        super()._fit(x, labels)
        if x.shape[0] < 2:
            raise ValueError("Whiten needs at least 2 embeddings")
        self.mean = x.mean(0)
        xc = x - self.mean
        evals, evecs = torch.linalg.eigh(xc.T @ xc / x.shape[0])
        evals = evals.clamp_min(0) + self.eps * evals.mean().clamp_min(torch.finfo(x.dtype).tiny)
        if not (evals > 0).all():
            raise ValueError("the training covariance is singular: pass eps > 0 or reduce "
                             "the dimension first (e.g. LDA)")
        w = evecs * evals.rsqrt()
        self.matrix = w @ evecs.T if self.kind == "zca" else w  # x_c @ matrix

    def _transform(self, x):
        return (x - self.mean) @ self.matrix


class LDA(Transform):
    r"""
    Linear discriminant analysis: the projection :math:`x \mapsto V^\top (x - \bar x)`
    onto the ``dim`` directions that maximise between-speaker over within-speaker
    scatter, :math:`S_b v = \lambda S_w v`, scaled so that :math:`V^\top S_w V = I`
    (within-speaker scatter whitened), directions by decreasing :math:`\lambda`.

    :param int dim: output dimension (at most ``D``; only ``S - 1`` directions carry
        between-speaker scatter).
    :param float reg: added to :math:`S_w`'s diagonal, relative to its mean diagonal
        (``0``: a singular :math:`S_w` raises ``ValueError``).
    """

    def __init__(self, dim, reg=0.0):
        self.dim = check_positive_int("dim", dim)
        self.reg = float(reg)

    def fit(self, x, labels=None):
        if labels is None:
            raise ValueError("LDA needs the speaker labels of the training embeddings")
        return super().fit(x, labels)

    def _fit(self, x, labels):
        super()._fit(x, labels)
        n, d = x.shape
        if self.dim > d:
            raise ValueError(f"LDA dim={self.dim} exceeds the input dimension {d}")
        codes, speakers = encode_labels(labels)
        if codes.shape[0] != n:
            raise ValueError(f"labels must have one entry per embedding: got {codes.shape[0]} "
                             f"for {n}")
        if len(speakers) < 2:
            raise ValueError("LDA needs at least 2 speakers")
        self.mean = x.mean(0)
        xc = x - self.mean
        counts = torch.bincount(codes).to(x.dtype)
        means = torch.zeros(len(speakers), d, dtype=x.dtype).index_add_(0, codes, xc)
        means /= counts.unsqueeze(-1)
        resid = xc - means[codes]
        within = resid.T @ resid / n
        between = (means * counts.unsqueeze(-1)).T @ means / n
        within = within + self.reg * within.diagonal().mean() * torch.eye(d, dtype=x.dtype)
        tril, info = torch.linalg.cholesky_ex(within)
        if info.any():
            raise ValueError("the within-speaker scatter is singular (fewer embeddings than "
                             "dimensions?): pass reg > 0 or reduce the dimension first")
        a = torch.linalg.solve_triangular(tril, between, upper=False)
        m = torch.linalg.solve_triangular(tril, a.T, upper=False)  # L^-1 S_b L^-T
        evals, evecs = torch.linalg.eigh(0.5 * (m + m.T))
        order = evals.argsort(descending=True)[: self.dim]
        self.eigenvalues = evals[order]
        self.matrix = torch.linalg.solve_triangular(tril.T, evecs[:, order], upper=True)

    def _transform(self, x):
        return (x - self.mean) @ self.matrix


class LengthNorm(Transform):
    r"""
    Length normalisation :math:`x \mapsto r\, x / \|x\|` with radius :math:`r = \sqrt D`
    by default (the expected norm of a whitened embedding); nothing to fit.
    """

    def __init__(self, radius=None):
        self.radius = radius

    def transform(self, x):
        if self.dim_in is None:  # nothing to fit: any width is fine
            return self._transform(_matrix(x))
        return super().transform(x)

    def _transform(self, x):
        r = math.sqrt(x.shape[1]) if self.radius is None else self.radius
        return r * x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


class Pipeline(Transform):
    """
    Steps applied in order; :meth:`fit` fits each step on the output of the steps
    before it (training data only), :meth:`transform` applies the fitted steps.

    :param steps: :class:`Transform` instances.
    """

    def __init__(self, *steps):
        if not steps or not all(isinstance(s, Transform) for s in steps):
            raise ValueError("Pipeline needs one or more Transform steps")
        self.steps = list(steps)

    def _fit(self, x, labels):
        super()._fit(x, labels)
        for step in self.steps:
            x = step.fit(x, labels).transform(x)

    def _transform(self, x):
        for step in self.steps:
            x = step.transform(x)
        return x
