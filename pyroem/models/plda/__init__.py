"""Probabilistic linear discriminant analysis (two-covariance and simplified low-rank
PLDA), trained by exact EM."""

from pyroem.models.plda.labels import encode_labels
from pyroem.models.plda.lowrank import LowRankPLDA
from pyroem.models.plda.model import PLDA
from pyroem.models.plda.posterior import LowRankSpeakerPosterior, SpeakerPosterior
from pyroem.models.plda.summary import data_summary

__all__ = ["PLDA", "LowRankPLDA", "LowRankSpeakerPosterior", "SpeakerPosterior", "data_summary", "encode_labels"]
