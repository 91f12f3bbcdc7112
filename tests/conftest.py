import numpy as np
import pytest
import torch


@pytest.fixture
def blobs():
    """Three well-separated 2-D Gaussian blobs (variance far above reg_covar), float64."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    x = np.concatenate([rng.normal(c, s, size=(n, 2))
                        for c, s, n in zip(centers, [1.0, 0.7, 1.3], [120, 80, 100])])
    return torch.as_tensor(x, dtype=torch.float64)
