"""Probabilistic linear discriminant analysis (two-covariance PLDA), trained by exact EM."""

from pyroem.models.plda.labels import encode_labels
from pyroem.models.plda.model import PLDA
from pyroem.models.plda.posterior import SpeakerPosterior
from pyroem.models.plda.summary import data_summary

__all__ = ["PLDA", "SpeakerPosterior", "data_summary", "encode_labels"]
