import numpy as np
import pyro
import pytest
import torch

# The tests check numbers, not speed: one intra-op thread keeps the many tiny tensor
# operations of small test problems from spinning on a shared 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clear_param_store():
    """Every test starts with an empty Pyro param store: no ``pyro.param`` left by an
    earlier test leaks into it (tests need not reset the store themselves)."""
    pyro.clear_param_store()


@pytest.fixture
def blobs():
    """Three well-separated 2-D Gaussian blobs (variance far above reg_covar), float64."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    x = np.concatenate([rng.normal(c, s, size=(n, 2))
                        for c, s, n in zip(centers, [1.0, 0.7, 1.3], [120, 80, 100])])
    return torch.as_tensor(x, dtype=torch.float64)
