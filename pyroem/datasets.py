"""Real data sets shipped with pyroem (offline)."""

from pathlib import Path

import numpy as np
import torch

DATA_DIR = Path(__file__).resolve().parent / "data"


def load_old_faithful(dtype=torch.float64):
    r"""
    The Old Faithful geyser data (Azzalini and Bowman, 1990; R's ``faithful``): 272
    eruptions of the geyser in Yellowstone National Park, columns ``eruptions`` (eruption
    time, minutes) and ``waiting`` (waiting time to the next eruption, minutes). The
    classic two-cluster example for Gaussian mixtures and EM (Bishop, 2006, fig. 9.8).

    :param torch.dtype dtype: the tensor's dtype.
    :returns: a tensor of shape ``(272, 2)``.
    """
    lines = (DATA_DIR / "old_faithful.csv").read_text().splitlines()
    # Comment lines start with '#'; the first other line is the header.
    rows = [line for line in lines if line.strip() and not line.startswith("#")][1:]
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    return torch.as_tensor(values, dtype=dtype)
