"""The bundled and package-shipped real data sets: sizes, shapes, labels, errors."""

import importlib.util

import numpy as np
import pytest
import torch

from pyroem import datasets
from pyroem.datasets import load_japanese_vowels, load_old_faithful


def test_old_faithful():
    x = load_old_faithful()
    assert x.shape == (272, 2) and x.dtype == torch.float64
    assert torch.isfinite(x).all()


@pytest.fixture(scope="module")
def frames():
    if importlib.util.find_spec("sktime") is None:
        pytest.skip("the Japanese Vowels data ships in sktime (pip install sktime)")
    return load_japanese_vowels("frames")


def test_japanese_vowels_sizes_and_speakers(frames):
    # UCI: 270 training utterances (30 per speaker), 370 test utterances
    assert len(frames.train) == 270 and len(frames.test) == 370
    assert frames.train_labels.shape == (270,) and frames.test_labels.shape == (370,)
    assert frames.train_labels.dtype == torch.long
    assert sorted(frames.train_labels.unique().tolist()) == list(range(1, 10))
    assert sorted(frames.test_labels.unique().tolist()) == list(range(1, 10))
    assert (torch.bincount(frames.train_labels)[1:] == 30).all()
    # per-speaker evaluation counts documented by UCI (size_ae.test)
    assert torch.bincount(frames.test_labels)[1:].tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    lengths = [f.shape[0] for f in frames.train + frames.test]
    assert min(lengths) == 7 and max(lengths) == 29
    assert all(f.shape[1] == 12 and torch.isfinite(f).all() for f in frames.train + frames.test)


def test_japanese_vowels_embeddings_are_frame_mean_and_std(frames):
    data = load_japanese_vowels(dtype=torch.float32)
    assert data.train.shape == (270, 24) and data.test.shape == (370, 24)
    assert data.train.dtype == torch.float32
    assert torch.equal(data.train_labels, frames.train_labels)
    for emb, f in ((data.train[0], frames.train[0]), (data.test[-1], frames.test[-1])):
        f = f.numpy()
        expected = np.r_[f.mean(0), f.std(0)]
        assert np.allclose(emb.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_japanese_vowels_errors(monkeypatch):
    with pytest.raises(ValueError, match="kind"):
        load_japanese_vowels("spectrogram")
    with pytest.raises(ValueError, match="dtype"):
        load_japanese_vowels(dtype=torch.long)
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install sktime"):
        load_japanese_vowels()


def test_load_lynx():
    from pyroem.datasets import load_lynx

    years, counts = load_lynx()
    assert years.shape == counts.shape == (114,) and counts.dtype == torch.float64
    assert torch.equal(years, torch.arange(1821.0, 1935.0, dtype=torch.float64))
    # R's datasets::lynx: first and last years, and the largest count (1904)
    assert counts[0] == 269 and counts[-1] == 3396 and counts.max() == 6991
    assert int(years[counts.argmax()]) == 1904
    assert load_lynx(dtype=torch.float32)[1].dtype == torch.float32
