"""pyroem: exact Expectation-Maximisation for Pyro models."""

__version__ = "0.1.0"


def save(model, path):
    """Write a built-in model's checkpoint to ``path`` (see
    :mod:`pyroem.models.checkpoint`)."""
    model.save(path)


def load(path):
    """The built-in model saved at ``path`` (of whichever class it was)."""
    import pyroem.models  # noqa: F401 (registers the model classes)
    from pyroem.models.checkpoint import load as _load

    return _load(path)
