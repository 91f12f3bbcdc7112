"""Speaker labels of any hashable type as the contiguous integer codes PLDA's model takes."""

import math

import numpy as np
import torch


def encode_labels(labels):
    """
    Speaker labels as contiguous integer codes.

    :param labels: a 1-d sequence, array or tensor of hashable values (integers,
        strings, ...), not necessarily contiguous.
    :returns: ``(codes, speakers)``: a ``LongTensor`` of shape ``(N,)`` with values in
        ``0..S-1`` and the list of the ``S`` distinct labels, ``speakers[codes[i]] ==
        labels[i]``. Labels are sorted when they can be compared, else kept in order of
        first appearance.
    :raises ValueError: when ``labels`` is not 1-d, is empty, or holds an unhashable
        value or NaN.
    """
    if isinstance(labels, (str, bytes)):
        raise ValueError("labels must be a sequence of labels, one per embedding, not a string")
    if torch.is_tensor(labels) or isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-dimensional, got shape {tuple(labels.shape)}")
        if not torch.is_tensor(labels) and labels.dtype.kind in "iub":
            labels = torch.as_tensor(labels)
        if torch.is_tensor(labels) and not labels.is_floating_point() and not labels.is_complex():
            # Fast path for integer labels: one sort.
            if labels.numel() == 0:
                raise ValueError("labels is empty")
            uniques, codes = torch.unique(labels.cpu(), sorted=True, return_inverse=True)
            return codes.long(), uniques.tolist()
        labels = labels.tolist()
    try:
        values = list(labels)
    except TypeError:
        raise ValueError(f"labels must be a 1-d sequence, got {type(labels).__name__}") from None
    if not values:
        raise ValueError("labels is empty")
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("labels contain NaN")
    try:
        first_seen = list(dict.fromkeys(values))
    except TypeError as e:
        raise ValueError(f"labels must be hashable values: {e}") from None
    try:
        speakers = sorted(first_seen)
    except TypeError:  # mixed types that do not compare: keep order of appearance
        speakers = first_seen
    index = {s: i for i, s in enumerate(speakers)}
    return torch.tensor([index[v] for v in values], dtype=torch.long), speakers
