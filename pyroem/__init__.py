"""pyroem: exact Expectation-Maximisation for Pyro models."""

__version__ = "0.1.0"
