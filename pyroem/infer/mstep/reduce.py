"""Weighted sums of broadcast products, reduced to a target shape by one ``einsum``."""

import math

import torch

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def broadcast_shapes(*shapes):
    """``torch.broadcast_shapes`` of plain shapes, in Python (a few microseconds where
    torch's takes tens: it is called several times per site and rule)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[i] not in (1, size):
                    raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
                out[i] = size
    return torch.Size(out)


def _pad(tensor, ndim):
    return tensor.reshape((1,) * (ndim - tensor.dim()) + tuple(tensor.shape))


def weighted_sum(operands, shape):
    r"""
    :math:`\sum` of the broadcast product of ``operands`` over every dim, except that the
    result keeps the dims where ``shape`` is larger than 1:

    .. math:: \mathrm{out}[j] = \sum_{i \mapsto j} \prod_o \mathrm{operand}_o[i].

    Written as one ``einsum`` over the distinct values of each operand (expanded dims are
    not materialised), so that e.g. responsibilities ``(K, N)`` times data ``(N, D)``
    reduced to ``(K, 1, D)`` is one matrix product, never a ``(K, N, D)`` temporary.

    :param list operands: tensors broadcastable against each other.
    :param shape: target shape; operands are aligned to its right, and every dim of
        ``shape`` larger than 1 must be 1 or equal in the broadcast operands.
    :rtype: torch.Tensor
    """
    shape = torch.Size(shape)
    if len(operands) == 1 and operands[0].shape == shape:
        return operands[0]  # nothing to reduce
    ndim = max([len(shape)] + [o.dim() for o in operands])
    if ndim > len(_LETTERS):
        raise ValueError(f"weighted_sum supports at most {len(_LETTERS)} dims, got {ndim}")
    full = (1,) * ndim
    full = broadcast_shapes(full, *[o.shape for o in operands])
    out = (1,) * (ndim - len(shape)) + tuple(shape)
    ops, subs, used = [], [], set()
    for operand in operands:
        operand = _pad(operand, ndim)
        for dim, (size, stride) in enumerate(zip(operand.shape, operand.stride())):
            if stride == 0 and size > 1:
                operand = operand.narrow(dim, 0, 1)
        keep = [d for d in range(ndim) if operand.shape[d] > 1]
        ops.append(operand.squeeze(tuple(d for d in range(ndim) if operand.shape[d] == 1))
                   if len(keep) < ndim else operand)
        subs.append("".join(_LETTERS[d] for d in keep))
        used.update(keep)
    factor = 1
    for d in range(ndim):
        if out[d] > 1 and full[d] > 1 and out[d] != full[d]:
            raise ValueError(f"cannot reduce shape {tuple(full)} to {tuple(shape)}")
        if d not in used and out[d] == 1:
            factor *= full[d]  # a dim that was only expanded: its sum is a multiple
    kept = [d for d in range(ndim) if d in used and out[d] > 1]
    result = torch.einsum(",".join(subs) + "->" + "".join(_LETTERS[d] for d in kept), *ops)
    result = result.reshape([out[d] if d in kept else 1 for d in range(ndim)])
    if factor != 1:
        result = result * factor
    return result.expand(out).reshape(shape) if math.prod(out) else result.reshape(shape)
