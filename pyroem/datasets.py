"""Small real data sets shipped inside the package (no download at run time)."""

from importlib import resources

import numpy as np
import torch


def load_old_faithful(dtype=torch.float64):
    """
    The Old Faithful geyser data: 272 eruptions of the geyser in Yellowstone National
    Park, columns ``eruptions`` (duration, minutes) and ``waiting`` (time to the next
    eruption, minutes). Source: Azzalini and Bowman (1990), *A look at some data on the
    Old Faithful geyser*, Applied Statistics 39, 357-365, as distributed in R's
    ``datasets`` package (``faithful``); public domain.

    :param torch.dtype dtype: dtype of the result.
    :returns: a ``(272, 2)`` tensor.
    """
    path = resources.files("pyroem").joinpath("data/old_faithful.csv")
    with path.open() as f:
        values = np.loadtxt(f, delimiter=",", comments="#", skiprows=5)
    return torch.as_tensor(values, dtype=dtype)
