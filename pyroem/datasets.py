"""Small real data sets shipped inside the package (no download at run time)."""

import importlib.util
import os
from importlib import resources
from typing import NamedTuple

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


def load_lynx(dtype=torch.float64):
    """
    The Canadian lynx series: the numbers of lynx trapped each year in the Mackenzie River
    district of north-west Canada, 1821-1934 (114 years), the classic example of a
    population cycle (about ten years). Source: Elton and Nicholson (1942), *The ten-year
    cycle in numbers of the lynx in Canada*, J. Animal Ecology 11, 215-244; Campbell and
    Walker (1977), J. Royal Statistical Society A 140, 411-431; as distributed in R's
    ``datasets`` package (``lynx``); public domain. Bundled as ``pyroem/data/lynx.csv``.

    :param torch.dtype dtype: dtype of the result.
    :returns: ``(years, counts)``: two ``(114,)`` tensors.
    """
    path = resources.files("pyroem").joinpath("data/lynx.csv")
    with path.open() as f:
        values = np.loadtxt(f, delimiter=",", comments="#", skiprows=6)
    return torch.as_tensor(values[:, 0], dtype=dtype), torch.as_tensor(values[:, 1], dtype=dtype)


class JapaneseVowels(NamedTuple):
    """The Japanese Vowels data as returned by :func:`load_japanese_vowels`."""

    #: training utterances: ``(270, 24)`` embeddings, or a list of ``(T_i, 12)`` frames
    train: object
    #: ``(270,)`` speaker labels (``LongTensor``, values ``1..9``)
    train_labels: torch.Tensor
    #: evaluation utterances: ``(370, 24)`` embeddings, or a list of ``(T_i, 12)`` frames
    test: object
    #: ``(370,)`` speaker labels (``LongTensor``, values ``1..9``)
    test_labels: torch.Tensor


def _sktime_data_file(folder, name, loader):
    # find_spec locates the installed package without importing it (sktime's import
    # is slow and pulls in pandas); only its data file is read.
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{loader} reads the data shipped inside the sktime package, "
                          "which is not installed: pip install sktime")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", folder, name)
    if not os.path.isfile(path):
        raise ImportError(f"the installed sktime lacks the data of {loader} ({path} is "
                          "missing): pip install --upgrade sktime")
    return path


def _japanese_vowels_file(split):
    return _sktime_data_file("JapaneseVowels", f"JapaneseVowels_{split}.ts",
                             "load_japanese_vowels")


class Seatbelts(NamedTuple):
    """The monthly road casualties returned by :func:`load_seatbelts`."""

    #: ``(192,)`` counts, January 1969 to December 1984 (``LongTensor``)
    counts: torch.Tensor
    #: ``(192,)`` ``True`` from February 1983, when wearing front seat belts became law
    law: torch.Tensor


def load_seatbelts():
    """
    Car drivers killed or seriously injured in Great Britain, monthly, January 1969 to
    December 1984 (192 months): a count series with seasons and a change of regime, the
    compulsory wearing of front seat belts from 31 January 1983. Source: Harvey and
    Durbin (1986), *The effects of seat belt legislation on British road casualties*,
    Journal of the Royal Statistical Society A 149, 187-227, as R's ``UKDriverDeaths``
    (the ``drivers`` column of ``Seatbelts``); the file ships inside the ``sktime``
    wheel (``sktime/datasets/data/seatbelts/``); nothing is downloaded and sktime is not
    imported.

    :returns: a :class:`Seatbelts` named tuple ``(counts, law)``.
    :raises ImportError: when sktime (the package carrying the data) is not installed.
    """
    path = _sktime_data_file("seatbelts", "seatbelts.csv", "load_seatbelts")
    rows = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2), dtype=np.int64)
    # the file labels the month of the change (February 1983); the law holds from then on
    return Seatbelts(torch.as_tensor(rows[:, 0]), torch.as_tensor(np.cumsum(rows[:, 1]) > 0))


def _read_ts(path):
    """Parse a multivariate sktime ``.ts`` file (header lines start with ``#`` or ``@``;
    after ``@data`` one case per line, dimensions separated by ``:``, values by ``,``,
    the class label last): a list of ``(T_i, D)`` arrays and the labels."""
    series, labels = [], []
    with open(path) as f:
        in_data = False
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *dims, label = line.split(":")
            series.append(np.array([[float(v) for v in d.split(",")] for d in dims]).T)
            labels.append(int(label))
    return series, torch.tensor(labels, dtype=torch.long)


def load_japanese_vowels(kind="embeddings", dtype=torch.float64):
    r"""
    The Japanese Vowels speaker data: nine male speakers each say the Japanese vowels
    /ae/; every utterance is a sequence of 7-29 frames of 12 LPC cepstral coefficients
    (Kudo, Toyama and Shimbo, 1999, *Multidimensional curve classification using
    passing-through regions*, Pattern Recognition Letters 20, 1103-1111; UCI Machine
    Learning Repository, CC BY 4.0).

    The standard split: 270 training utterances (30 per speaker, recorded first) and
    370 evaluation utterances (24-88 per speaker, recorded later). The files ship inside
    the ``sktime`` wheel (``sktime/datasets/data/JapaneseVowels/``): install it with
    ``pip install sktime``; nothing is downloaded and sktime is not imported.

    With ``kind="embeddings"`` each utterance becomes one fixed-length vector, the
    mean and the (population) standard deviation of its frames,

    .. math::

        e = \Big(\frac1T \sum_t f_t,\;
        \sqrt{\frac1T \sum_t (f_t - \bar f)^2}\Big) \in \mathbb R^{24},

    a tiny analogue of the statistics pooling of x-vector speaker embeddings.

    :param str kind: ``"embeddings"`` (``(N, 24)`` tensors) or ``"frames"`` (lists of
        ``(T_i, 12)`` tensors, one per utterance).
    :param torch.dtype dtype: floating dtype of the returned features.
    :returns: a :class:`JapaneseVowels` named tuple ``(train, train_labels, test,
        test_labels)``; the labels are ``LongTensor`` speaker numbers ``1..9``.
    :raises ImportError: when sktime (the package carrying the data) is not installed.
    :raises ValueError: for an unknown ``kind``.
    """
    if kind not in ("embeddings", "frames"):
        raise ValueError(f"unknown kind {kind!r}; expected one of ['embeddings', 'frames']")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    parts = []
    for split in ("TRAIN", "TEST"):
        series, labels = _read_ts(_japanese_vowels_file(split))
        if kind == "frames":
            features = [torch.as_tensor(s, dtype=dtype) for s in series]
        else:
            features = torch.as_tensor(np.stack([np.r_[s.mean(0), s.std(0)] for s in series]),
                                       dtype=dtype)
        parts += [features, labels]
    return JapaneseVowels(*parts)
