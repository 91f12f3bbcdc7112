r"""
Weighted sufficient statistics shared by every closed-form M-step: the built-in models'
(:mod:`pyroem.models`) and the automatic rules' (:mod:`pyroem.infer.mstep.rules`).

Gaussian moments are taken about a fixed ``shift`` (the data mean of
:func:`~pyroem.distributions.gaussian_design`, shape ``(D,)``; or one point per
component, ``batch + (D,)``, for moments from :func:`centred_moments`): with weights
:math:`w` and :math:`x_c = x - \text{shift}`,

.. math::

    n = \sum w, \qquad s = \sum w\, x_c, \qquad S = \sum w\, x_c x_c^\top

(or :math:`\sum w\, x_c \odot x_c` for diagonal covariances). About one origin they are
additive over data; moments of two batches, each about its own mean, are not, and
:func:`~pyroem.distributions.merge.add_statistics` re-expresses one about the other's
origin first (exact), so batches, chunks and processes merge them before the maximiser.
"""

import torch


def split_moments(product, shift):
    r"""
    The moments in ``product``, a weighted sum of
    :func:`~pyroem.distributions.gaussian_design`'s rows ``[quad, lin, 1]``.

    :param torch.Tensor product: shape ``batch + (F,)``, ``F = D*D + D + 1`` (full) or
        ``2D + 1`` (diagonal).
    :param torch.Tensor shift: the design's centre, shape ``(D,)``.
    :returns: ``{"n": batch, "sx": batch + (D,), "sxx": batch + (F - D - 1,), "shift"}``
        (``sxx`` flattened: ``D*D`` for full, ``D`` for diagonal).
    :rtype: dict
    """
    dim = shift.shape[-1]
    q = product.shape[-1] - dim - 1
    return {"n": product[..., -1], "sx": product[..., q:q + dim], "sxx": product[..., :q],
            "shift": shift}


def design_moments(weights, design, shift):
    r"""
    :func:`split_moments` of :math:`W^\top \Phi` for row weights ``weights (R, C)`` (one
    column per component) and a design ``design (R, F)``: every moment of every
    component in one matrix product.

    :rtype: dict with ``(C,)``-leading moments
    """
    # (design^T @ weights)^T rather than weights^T @ design: the fast orientation for
    # R >> C (the long axis is the inner one of the product).
    return split_moments((design.T @ weights).T, shift)


def centred_moments(weights, x, refs, kind="full"):
    r"""
    The moments of each component about its own reference point, computed on centred
    data (two-pass, as scikit-learn computes covariances): for component ``c`` with
    weights :math:`w_{\cdot c}` and reference :math:`r_c`,
    :math:`n_c = \sum w`, :math:`s_c = \sum w (x - r_c)`,
    :math:`S_c = \sum w (x - r_c)(x - r_c)^\top` (or its diagonal).

    Unlike the one product with :func:`~pyroem.distributions.gaussian_design`'s matrix
    (moments about the data mean), this resolves a component whose spread is tiny
    compared with its distance from the data mean, also in float32; it costs one pass
    over the data per component.

    :param torch.Tensor weights: ``(R, C)``.
    :param torch.Tensor x: ``(R, D)``.
    :param torch.Tensor refs: ``(C, D)``, e.g. each component's mean.
    :returns: ``{"n": (C,), "sx": (C, D), "sxx": (C, D*D) or (C, D), "shift": refs}``.
    """
    num = weights.shape[1]
    dim = x.shape[-1]
    sx = x.new_empty(num, dim)
    sxx = x.new_empty(num, dim * dim if kind == "full" else dim)
    for c in range(num):
        diff = x - refs[c]
        wd = diff * weights[:, c:c + 1]
        sx[c] = wd.sum(0)
        sxx[c] = (wd.T @ diff).reshape(-1) if kind == "full" else (wd * diff).sum(0)
    return {"n": weights.sum(0), "sx": sx, "sxx": sxx, "shift": refs}


def own_mean_moments(weights, x, kind="full"):
    r"""
    :func:`centred_moments` about each component's own weighted mean
    :math:`r_c = \sum_r w_{rc} x_r / n_c`: ``s`` is then zero up to rounding and ``S`` the
    scatter about the mean, resolved in any dtype, so no rounding check is needed (for
    small problems, where a pass per component costs less than the product with the
    design matrix plus its rounding check).

    :param torch.Tensor weights: ``(R, C)``.
    :param torch.Tensor x: ``(R, D)``.
    :returns: as :func:`centred_moments`, with ``shift`` the ``(C, D)`` means (zero for a
        component without weight).
    """
    n = weights.sum(0)
    refs = (weights.T @ x) / (n + 10 * torch.finfo(n.dtype).eps).unsqueeze(-1)
    return centred_moments(weights, x, refs, kind)


def scatter_about(n, sx, sxx, mu, kind="full"):
    r"""
    The weighted scatter about ``mu`` (all quantities relative to the same shift),

    .. math::

        \sum w (x_c - \mu)(x_c - \mu)^\top = S - s\mu^\top - \mu s^\top + n\,\mu\mu^\top

    (``kind="full"``: ``n`` of the batch shape, ``sx, mu`` of shape ``batch + (D,)``,
    ``sxx`` flattened ``batch + (D*D,)``; result ``batch + (D, D)``), or its diagonal
    :math:`S - 2 s \odot \mu + n \mu^2` (``kind="diag"``: elementwise, so ``n`` must
    broadcast against ``sx``, e.g. ``n[..., None]``). Divided by :math:`n` it is the
    weighted covariance about ``mu``: the M-step's update given the new (or a frozen)
    location.
    """
    if kind == "diag":  # three operations, not six: small M-steps are counted in operations
        return torch.addcmul(torch.addcmul(sxx, sx, mu, value=-2), n * mu, mu)
    dim = sx.shape[-1]
    outer = sx.unsqueeze(-1) * mu.unsqueeze(-2)
    second = sxx.reshape(sxx.shape[:-1] + (dim, dim))
    return second - outer - outer.mT + n[..., None, None] * mu.unsqueeze(-1) * mu.unsqueeze(-2)


def categorical_counts(weights, values, num_categories):
    r"""
    Weighted category counts :math:`N_{ec} = \sum_n w_{ne}\,[x_n = c]`.

    :param torch.Tensor weights: ``(N, E)``: the weight of item ``n`` for entry ``e`` (a
        component, a state; ``E = 1`` for plain counts).
    :param torch.Tensor values: ``(N,)`` integer categories in ``[0, num_categories)``.
    :returns: ``(E, num_categories)``, in the weights' dtype.
    """
    weights = weights.reshape(values.numel(), -1)
    # one pass over the rows, each adding its E weights at its category (no one-hot)
    counts = weights.new_zeros(num_categories, weights.shape[1])
    return counts.index_add_(0, values.reshape(-1).long(), weights).T


def regularized_cholesky(cov, reg_covar, what):
    r"""
    The lower Cholesky factor of :math:`\tfrac12 (\Sigma + \Sigma^\top) + \epsilon I` (the
    M-step's covariance update, ``reg_covar`` :math:`= \epsilon` added to the diagonal),
    batched over leading dims.

    :param str what: the rest of the error message: what is not positive definite and what
        to do about it.
    :raises ValueError: when a matrix is not positive definite.
    """
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    tril, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.mT) + reg_covar * eye)
    if bool(info.any()):
        raise ValueError(f"the M-step produced {what}")
    return tril
